"""`python -m llm_chat` runs the CLI."""

from .cli import main

raise SystemExit(main())
