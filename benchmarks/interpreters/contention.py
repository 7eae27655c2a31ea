"""What sharing the model costs the threads: one model for both threads, or one model each.

::

    PYTHON_GIL=0 python -m benchmarks.interpreters.contention [--workload NAME ...] [--repeats 5]

On a free-threaded build, an object's reference count is cheap to change only for the thread
that created it; every other thread changes it with an atomic operation on a shared cache line.
Two threads that read the same Python objects in a hot loop (the floats of a shared tuple, the
values of a shared dict, even a shared object held in a local variable) keep taking that line
from each other.  For each workload this runs the same realizations

- on 1 worker (the baseline);
- on 2 workers sharing one model, as threadensemble does;
- on 2 threads that each built a model of their own and run half of the realizations through
  threadensemble with 1 worker: nothing shared, as in two processes, without their start-up.

The gap between the last two is the price of sharing on this interpreter.  Runs interleave
(median of ``--repeats``); BLAS and OpenMP pools should be limited to one thread.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Sequence

import numpy as np

import threadensemble as te
from benchmarks.interpreters.measure import SEED, calibrate, timed_run
from benchmarks.workloads import build, workloads

__all__ = ["main"]


def _private(ref: str, n: int) -> float:
    """Two threads, each with a model it built, each running half of the ``n`` realizations."""
    barrier = threading.Barrier(3)

    def half(offset: int) -> None:
        spec = build(ref)  # built by this thread: its objects are this thread's own
        barrier.wait()
        spec.run(
            n // 2,
            n_workers=1,
            seed_for=lambda j: np.random.SeedSequence(SEED, spawn_key=(offset + j,)),
            progress=False,
        )

    threads = [threading.Thread(target=half, args=(offset,)) for offset in (0, n // 2)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> None:
    """Print one row per workload: times and 2-worker speedups, shared and private."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.interpreters.contention")
    parser.add_argument("--workload", action="append", choices=list(workloads()))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="1-worker run length")
    args = parser.parse_args(argv)
    print(f"{te.runtime_info().describe()}; median of {args.repeats} runs\n")
    print("| workload | realizations | 1 worker (s) | 2 workers, one shared model (s) | "
          "speedup | 2 threads, a model each (s) | speedup |")  # fmt: skip
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name in args.workload or list(workloads()):
        ref = workloads()[name]
        per_realization = calibrate(ref, 0.25)["per_realization_s"]
        n = max(2, 2 * round(args.seconds / per_realization / 2))
        spec = build(ref)
        _private(ref, 2)  # warm-up of both ways
        timed_run(spec, 2, 2, SEED)
        times: dict[str, list[float]] = {"one": [], "shared": [], "private": []}
        for _ in range(args.repeats):
            times["one"].append(timed_run(spec, n, 1, SEED))
            times["shared"].append(timed_run(spec, n, 2, SEED))
            times["private"].append(_private(ref, n))
        one, shared, private = (statistics.median(t) for t in times.values())
        print(
            f"| {name} | {n} | {one:.3f} | {shared:.3f} | {one / shared:.2f}x | "
            f"{private:.3f} | {one / private:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
