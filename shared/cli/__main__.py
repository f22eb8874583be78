"""``python -m shared.cli``: the ``linkflow`` command."""

import sys

from shared.cli.main import main

sys.exit(main())
