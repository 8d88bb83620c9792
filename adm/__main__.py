"""`python -m adm <command> ...` (see adm/cli.py)."""

import sys

from adm.cli import main

sys.exit(main())
