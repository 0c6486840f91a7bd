"""``python -m attnrec`` is the ``attnrec`` command (for environments without its script)."""

import sys

from .cli import main

sys.exit(main())
