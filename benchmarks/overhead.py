"""The library's fixed costs: import, first ensemble, and µs per no-op realization.

::

    python -m benchmarks.overhead [--workers 2] [--repeats 5] [--smoke]

Each measurement runs in a fresh interpreter (``python -c``), so the first ensemble pays what
the first ensemble of a script or CLI run pays: the imports it triggers, the pool start-up.
A no-op realization returns one float, so what is timed is the library alone: seeding,
submitting, collecting, assembling (in memory) or writing and committing a file (with
``output_dir``).  Prints one table; medians over ``--repeats`` fresh interpreters.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence

from benchmarks.common import THREAD_ENV, child_env

__all__ = ["main"]

# Runs in the child: prints the seconds of each phase as JSON.
_CHILD = """
import json, sys, tempfile, time
start = time.perf_counter()
import numpy as np
import threadensemble as te
imported = time.perf_counter()
n_first, n_steady, workers, backend = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                       sys.argv[4])
output = sys.argv[5] == "files"


def noop():
    return {"x": np.zeros(1)}


def run(n):
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        te.simulate_ensemble(noop, n, n_workers=workers, seed=1, progress=False,
                             backend=backend, output_dir=tmp if output else None)
        return time.perf_counter() - began


if __name__ == "__main__":
    first = run(n_first)
    run(n_steady)  # one more, so that the steady runs below are steady
    steady = min(run(n_steady) for _ in range(3))
    print(json.dumps({"import_s": imported - start, "first_s": first, "steady_s": steady}))
"""


def _measure(
    n_first: int, n_steady: int, workers: int, backend: str, output: str
) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n_first), str(n_steady), str(workers), backend, output],
        capture_output=True, text=True, timeout=600, check=True, env=child_env(THREAD_ENV),
    )  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="fresh interpreters per row")
    parser.add_argument("--smoke", action="store_true", help="small sizes, one repeat")
    args = parser.parse_args(argv)
    repeats = 1 if args.smoke else args.repeats
    cases = [("threads", "memory", 2000), ("threads", "files", 200)]
    cases += [("processes", "memory", 2000), ("processes", "files", 200)]
    if args.smoke:
        cases = [(backend, output, n // 20) for backend, output, n in cases]
    print(f"{sys.version.split()[0]}, {args.workers} workers, median of {repeats} interpreters")
    print("| backend | output | import s | first ensemble of 8, s | steady µs per realization |")
    print("|---|---|--:|--:|--:|")
    for backend, output, n in cases:
        rows = [_measure(8, n, args.workers, backend, output) for _ in range(repeats)]
        imported = statistics.median(r["import_s"] for r in rows)
        first = statistics.median(r["first_s"] for r in rows)
        per_realization = statistics.median(r["steady_s"] for r in rows) / n * 1e6
        print(f"| {backend} | {output} | {imported:.3f} | {first:.3f} | {per_realization:.0f} |")


if __name__ == "__main__":
    main()
