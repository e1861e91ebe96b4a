"""``python -m dualchain.cli ...``: how launchers start every process of a testbed."""

import sys

from dualchain.cli import main

sys.exit(main())
