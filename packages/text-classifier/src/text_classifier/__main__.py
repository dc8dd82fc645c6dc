"""`python -m text_classifier` runs the CLI."""

from .cli import main

raise SystemExit(main())
