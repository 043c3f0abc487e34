"""``python -m bench.frontier [flags]``: see bench/frontier/__init__.py and ``--help``."""

from .cli import main

raise SystemExit(main())
