"""``python -m benchmarks.pools``: see `benchmarks.pools.run`."""

import sys

from benchmarks.pools.run import main

sys.exit(main())
