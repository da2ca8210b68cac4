"""``python -m plug_lite.train``: the same as ``plug-lite train`` (also under ``accelerate launch`` / ``torchrun``)."""

from .run import cli

raise SystemExit(cli())
