"""A long run to disk keeps memory bounded: results are not all held at once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import size

N_REALIZATIONS = size(1500, 10_000)
VALUES = 50_000  # float64 per realization: 400 kB each

# The peak is sampled from inside simulate (VmHWM of the process) while realizations are being
# computed and written; opening the ensemble afterwards (lazily: ~30 kB of metadata per file)
# is reported separately.
RUN = f"""
import json, sys, threading
import threadensemble as te

lock = threading.Lock()  # guards peak_kb (a measurement harness, not model state)
peak_kb = 0

def vm_hwm_kb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))

def big():
    global peak_kb
    if te.current_realization() % 100 == 99:
        with lock:
            peak_kb = max(peak_kb, vm_hwm_kb())
    return {{"x": ("i", te.get_rng().random({VALUES}))}}

ens = te.simulate_ensemble(big, {N_REALIZATIONS}, n_workers=8, seed=1, output_dir=sys.argv[1],
                           lazy=True, progress=False)
assert ens.sizes["realization"] == {N_REALIZATIONS}
print(json.dumps({{"run_mb": peak_kb / 1e3, "after_open_mb": vm_hwm_kb() / 1e3}}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.timeout(1800)
def test_memory_stays_bounded_on_a_long_run(tmp_path: Path, record: Callable[[str], None]) -> None:
    pytest.importorskip("dask")
    total_mb = N_REALIZATIONS * VALUES * 8 / 1e6
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    peaks = json.loads(done.stdout)
    assert peaks["run_mb"] < 300, f"peak RSS {peaks['run_mb']:.0f} MB for {total_mb:.0f} MB"
    record(
        f"memory: {N_REALIZATIONS} realizations, {total_mb:.0f} MB of results written to disk; "
        f"peak RSS while running {peaks['run_mb']:.0f} MB, "
        f"{peaks['after_open_mb']:.0f} MB after opening the ensemble lazily"
    )
