"""``python -m biomero_tracking``: the operator's command, as ``biomero-tracking``."""

import sys

from biomero_tracking.cli import main

sys.exit(main())
