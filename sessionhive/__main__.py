"""``python -m sessionhive``: the same command as the ``sessionhive`` console script."""

import sys

from sessionhive.cli import main

sys.exit(main())
