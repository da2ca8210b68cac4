"""``python -m plug_lite <verb> ...``: the same as ``plug-lite <verb> ...``."""

from .cli import main

raise SystemExit(main())
