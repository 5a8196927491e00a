"""``python -m core <command>``: the headless twin of every page."""

import sys

from core.cli import main

sys.exit(main())
