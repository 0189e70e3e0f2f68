"""``python -m dualcalc ...``: the same command line as ``dualcalc ...``."""
import sys

from .cli import main

sys.exit(main())
