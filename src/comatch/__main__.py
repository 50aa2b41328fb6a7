"""``python -m comatch``: the command line."""

from comatch.cli import main

raise SystemExit(main())
