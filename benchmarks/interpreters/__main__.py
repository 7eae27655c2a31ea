"""``python -m benchmarks.interpreters``: see `benchmarks.interpreters.compare`."""

import sys

from benchmarks.interpreters.compare import main

sys.exit(main())
