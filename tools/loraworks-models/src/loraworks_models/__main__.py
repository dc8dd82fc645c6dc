"""`python -m loraworks_models` is the `loraworks-models` command."""

import sys

from .cli import main

sys.exit(main())
