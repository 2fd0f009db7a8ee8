"""``python -m asynframe.bench``: the same as the ``asynframe-bench`` command."""

import sys

from .runner import main

sys.exit(main())
