"""`python -m vision_det` runs the CLI."""

from .cli import main

raise SystemExit(main())
