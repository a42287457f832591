"""``python -m bonecls.phantom --task ... --layout ... OUT``."""

import sys

from bonecls.phantom.cli import main

sys.exit(main())
