"""Measure one workload in the running interpreter; print the result as one JSON line.

Run by `benchmarks.interpreters.compare`, one process per (interpreter, workload, worker
count), so that the peak RSS is that of one configuration::

    python -m benchmarks.interpreters.measure info
    python -m benchmarks.interpreters.measure calibrate MODULE:FACTORY --min-seconds 0.5
    python -m benchmarks.interpreters.measure time MODULE:FACTORY --realizations 32 \
        --workers 2 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import sysconfig
import time
from dataclasses import asdict
from typing import Any

import threadensemble as te
from benchmarks.common import peak_rss_bytes
from benchmarks.workloads import build

__all__ = ["SEED", "calibrate", "main", "timed_run"]

SEED = 20_240_601  # every interpreter and worker count computes the same realizations


def timed_run(spec: te.ModelSpec, n: int, workers: int, seed: int) -> float:
    """Return the wall time of an ensemble of ``n`` realizations on ``workers`` threads."""
    start = time.perf_counter()
    spec.run(n, n_workers=workers, seed=seed, progress=False)
    return time.perf_counter() - start


def info() -> dict[str, Any]:
    """Facts of this interpreter, including how it was configured."""
    return {
        **asdict(te.runtime_info()),
        "executable": sys.executable,
        "version": sys.version.replace("\n", " "),
        "config_args": sysconfig.get_config_var("CONFIG_ARGS") or "",
        "machine": platform.machine(),
    }


def calibrate(ref: str, min_seconds: float) -> dict[str, Any]:
    """Time 1, 2, 4, ... realizations on one worker until a run lasts ``min_seconds``."""
    spec = build(ref)
    timed_run(spec, 1, 1, SEED)  # warm-up: imports, caches
    n = 1
    while (elapsed := timed_run(spec, n, 1, SEED)) < min_seconds and n < 4096:
        n *= 2
    return {"per_realization_s": elapsed / n, "description": spec.description}


def time_runs(ref: str, n: int, workers: int, repeats: int) -> dict[str, Any]:
    """Time ``repeats`` runs of ``n`` realizations on ``workers`` threads (after a warm-up)."""
    spec = build(ref)
    gil_before = te.gil_enabled()
    timed_run(spec, workers, workers, SEED)  # warm-up: one realization per thread
    times = [timed_run(spec, n, workers, SEED + r) for r in range(repeats)]
    return {
        "times_s": times,
        "peak_rss_bytes": peak_rss_bytes(),
        "gil_enabled": gil_before or te.gil_enabled(),
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.interpreters.measure")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info")
    cal = sub.add_parser("calibrate")
    cal.add_argument("ref")
    cal.add_argument("--min-seconds", type=float, default=0.5)
    run = sub.add_parser("time")
    run.add_argument("ref")
    run.add_argument("--realizations", type=int, required=True)
    run.add_argument("--workers", type=int, required=True)
    run.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "info":
        result = info()
    elif args.command == "calibrate":
        result = calibrate(args.ref, args.min_seconds)
    else:
        result = time_runs(args.ref, args.realizations, args.workers, args.repeats)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
