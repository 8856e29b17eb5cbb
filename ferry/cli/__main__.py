"""``python -m ferry.cli``: the same as the ``ferry`` console script."""

import sys

from ferry.cli.app import main

sys.exit(main())
