"""``python -m plug_lite.export ...``: the same as ``plug-lite export ...``."""

from . import cli

raise SystemExit(cli())
