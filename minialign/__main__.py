"""``python -m minialign ...`` is the ``minialign`` command."""

import sys

from .cli import main

sys.exit(main())
