"""``python -m staging``: the same staging code as ``invoke stage-coco``, for containers."""

import sys

from staging.cli import main

sys.exit(main())
