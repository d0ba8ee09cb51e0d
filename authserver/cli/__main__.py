"""``python -m authserver.cli``: what the ``authserver`` script runs."""

import sys

from authserver.cli import main

sys.exit(main())
