"""`python -m lora_shared.accelerate_configs NAME` prints the path of a bundled config (for --config_file)."""

import sys

from . import config_path, names

if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
    print(f"usage: python -m lora_shared.accelerate_configs NAME   (NAME: {', '.join(names())})")
    sys.exit(0 if len(sys.argv) == 2 else 2)
print(config_path(sys.argv[1]))
