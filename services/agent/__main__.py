"""``python -m services.agent``: the node agent (flags in :mod:`services.agent.cli`)."""

import sys

from services.agent.cli import main

sys.exit(main())
