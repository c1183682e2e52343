"""``python -m services.drills <scenario> [--all] [--duration S] [--rate R] [--json FILE]``."""

import sys

from services.drills.cli import main

sys.exit(main())
