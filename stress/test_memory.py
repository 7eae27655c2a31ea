"""A long run to disk keeps memory bounded: results are not all held at once."""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import size

N_REALIZATIONS = size(1500, 10_000)
VALUES = 50_000  # float64 per realization: 400 kB each

RUN = f"""
import sys
import numpy as np
import threadensemble as te

def big():
    return {{"x": ("i", te.get_rng().random({VALUES}))}}

ens = te.simulate_ensemble(big, {N_REALIZATIONS}, n_workers=8, seed=1, output_dir=sys.argv[1],
                           lazy=True, progress=False)
assert ens.sizes["realization"] == {N_REALIZATIONS}
"""


@pytest.mark.timeout(1800)
def test_memory_stays_bounded_on_a_long_run(tmp_path: Path, record: Callable[[str], None]) -> None:
    pytest.importorskip("dask")
    total_mb = N_REALIZATIONS * VALUES * 8 / 1e6
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e3  # kB on Linux
    assert peak_mb < 450, f"peak RSS {peak_mb:.0f} MB for {total_mb:.0f} MB of results"
    record(
        f"memory: {N_REALIZATIONS} realizations, {total_mb:.0f} MB of results written to disk; "
        f"peak RSS of the whole run {peak_mb:.0f} MB"
    )
