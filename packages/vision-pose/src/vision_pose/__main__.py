"""`python -m vision_pose` runs the CLI."""

from .cli import main

raise SystemExit(main())
