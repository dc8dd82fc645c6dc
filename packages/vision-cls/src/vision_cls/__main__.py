"""`python -m vision_cls` runs the CLI."""

from .cli import main

raise SystemExit(main())
