"""Fixed costs: a plain in-memory run imports nothing it does not need (dask.array, scipy)."""

from __future__ import annotations

import subprocess
import sys

PLAIN_RUN = """
import sys
import threadensemble as te

before = set(sys.modules)
te.simulate_ensemble(lambda: {"x": te.get_rng().random(3)}, 4, n_workers=2, progress=False)
print(" ".join(sorted(m for m in set(sys.modules) - before if m.split(".")[0] in
                      {"dask", "scipy", "distributed", "cloudpickle", "netCDF4"})))
"""


def test_a_plain_in_memory_run_imports_no_dask_and_no_scipy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_RUN], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], "xarray checked arrays against dask's (0.5 s to import)"
