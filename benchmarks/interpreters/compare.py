"""Compare interpreters on every workload and write the report (what ``nox -s compare`` runs).

::

    python -m benchmarks.interpreters --python 3.13=PATH --python 3.13t=PATH [--smoke] [--out DIR]

The first interpreter is the baseline (it sizes the runs).  Each measurement runs in its own
process (`benchmarks.interpreters.measure`), with ``PYTHON_GIL=0`` for free-threaded
interpreters and BLAS / OpenMP pools limited to one thread (`benchmarks.common.THREAD_ENV`),
so that the worker threads are the only parallelism.
``--rounds`` processes of ``--repeats`` timed runs make each row, interleaved across
interpreters.  ``python -m benchmarks.interpreters.report DIR/results.json`` redraws the report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    THREAD_ENV,
    child_env,
    cores,
    cpu_model,
    is_free_threaded,
    loadavg,
)
from benchmarks.interpreters.report import PLOT, REPORT, write_markdown, write_plot
from benchmarks.interpreters.results import Failure, Results, Run, Workload, save, speedup
from benchmarks.workloads import PURE_PYTHON, workloads

__all__ = ["main"]

TIMEOUT_S = 900


class MeasureError(RuntimeError):
    """A `benchmarks.interpreters.measure` process failed."""


def _measure(python: str, free_threaded: bool, *args: str) -> dict[str, Any]:
    env = child_env(THREAD_ENV, free_threaded)
    try:
        done = subprocess.run(
            [python, "-m", "benchmarks.interpreters.measure", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise MeasureError(f"timed out after {TIMEOUT_S} s") from exc
    if done.returncode != 0:
        raise MeasureError("\n".join(done.stderr.strip().splitlines()[-5:]))
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _cpu_seconds() -> tuple[float, float] | None:
    """Return (CPU seconds the whole machine was busy, CPU seconds of this process tree).

    Their growth over the run tells how much CPU other processes took (the load average cannot:
    it counts the benchmark's own threads).  None where /proc/stat is missing.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    own = sum(
        usage.ru_utime + usage.ru_stime
        for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    )
    return machine, own


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.interpreters")
    parser.add_argument(
        "--python",
        action="append",
        required=True,
        metavar="LABEL=PATH",
        help="an interpreter to compare, e.g. 3.13t=.nox/compare/3.13t/bin/python; the first "
        "is the baseline",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the pipeline")
    parser.add_argument("--workers", type=int, nargs="+", help="default: 1 2 4 8 and the cores")
    parser.add_argument("--repeats", type=int, help="timed runs per process (default 3, smoke 1)")
    parser.add_argument("--rounds", type=int, help="processes per row (default 2, smoke 1)")
    parser.add_argument("--target-seconds", type=float, help="1-worker run length (default 1)")
    parser.add_argument("--workload", action="append", help="only these workloads (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    if args.smoke:
        args.workers = args.workers or [1, 2]
        args.repeats = args.repeats or 1
        args.rounds = args.rounds or 1
        args.target_seconds = args.target_seconds or 0.05
    args.workers = sorted(set(args.workers or [1, 2, 4, 8, cores()]) | {1})
    args.repeats = args.repeats or 3
    args.rounds = args.rounds or 2
    args.target_seconds = args.target_seconds or 1.0
    return args


def _realizations(per_realization_s: float, target_s: float, workers: list[int]) -> int:
    """Return about ``target_s / per_realization_s``, a multiple of every worker count."""
    step = math.lcm(*workers)
    return step * max(1, round(target_s / per_realization_s / step))


def _fail(results: Results, workload: str, label: str, step: str, exc: Exception) -> None:
    failure = Failure(workload=workload, interpreter=label, step=step, error=str(exc))
    results["failures"].append(failure)
    print(f"  FAILED {workload} on {label} ({step}): {exc}", file=sys.stderr, flush=True)


def _calibrate(
    args: argparse.Namespace,
    name: str,
    ref: str,
    interpreters: dict[str, tuple[str, bool]],
    results: Results,
) -> Workload | None:
    """Size the runs of one workload on one worker of the baseline (first) interpreter."""
    label = next(iter(interpreters))
    min_s = f"--min-seconds={min(0.5, args.target_seconds / 2)}"
    try:
        cal = _measure(*interpreters[label], "calibrate", ref, min_s)
    except MeasureError as exc:
        _fail(results, name, label, "calibrate", exc)
        return None
    n = _realizations(cal["per_realization_s"], args.target_seconds, args.workers)
    print(f"{name}: {n} realizations per run ({cal['per_realization_s']:.4f} s each)")
    return Workload(
        name=name,
        ref=ref,
        description=cal["description"],
        per_realization_s=cal["per_realization_s"],
        realizations=n,
    )


def _time_workload(
    args: argparse.Namespace,
    workload: Workload,
    interpreters: dict[str, tuple[str, bool]],
    results: Results,
) -> None:
    """Time one workload: ``rounds`` passes over (workers x interpreters), alternating order.

    Each pass runs one process per configuration, of ``repeats`` timed runs; the timings of all
    passes are pooled, so a burst of load on the machine hits part of them, not a whole row.
    """
    name, labels = workload["name"], list(interpreters)
    configs = [
        (workers, label)
        for i, workers in enumerate(args.workers)
        for label in (labels if i % 2 == 0 else labels[::-1])
    ]
    runs: dict[tuple[int, str], Run] = {}
    for round_ in range(args.rounds):
        for workers, label in configs if round_ % 2 == 0 else configs[::-1]:
            python, free_threaded = interpreters[label]
            options = [
                f"--realizations={workload['realizations']}",
                f"--workers={workers}",
                f"--repeats={args.repeats}",
            ]
            try:
                out = _measure(python, free_threaded, "time", workload["ref"], *options)
            except MeasureError as exc:
                _fail(results, name, label, f"{workers} workers", exc)
                continue
            if (workers, label) not in runs:
                runs[workers, label] = Run(
                    workload=name,
                    interpreter=label,
                    workers=workers,
                    times_s=[],
                    peak_rss_bytes=out["peak_rss_bytes"],
                    gil_enabled=False,
                )
                results["runs"].append(runs[workers, label])
            run = runs[workers, label]
            run["times_s"] += out["times_s"]
            if out["peak_rss_bytes"] and out["peak_rss_bytes"] > (run["peak_rss_bytes"] or 0):
                run["peak_rss_bytes"] = out["peak_rss_bytes"]
            run["gil_enabled"] = run["gil_enabled"] or out["gil_enabled"]
            median = statistics.median(out["times_s"])
            print(f"  {label:>6} {workers:>2} workers: median {median:.3f} s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison; return the exit status (1 when a measurement failed)."""
    args = _parse(argv)
    pythons = dict(spec.split("=", 1) for spec in args.python)
    start, loadavg_before, cpu_before = time.time(), loadavg(), _cpu_seconds()
    results = Results(
        machine={
            "cpu_model": cpu_model(),
            "cores": cores(),
            "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "loadavg_before": loadavg_before,
        },
        settings={
            "smoke": args.smoke,
            "workers": args.workers,
            "repeats": args.repeats,
            "rounds": args.rounds,
            "target_seconds": args.target_seconds,
            "thread_env": " ".join(f"{k}={v}" for k, v in THREAD_ENV.items()),
        },
        interpreters={},
        workloads=[],
        runs=[],
        failures=[],
    )
    for label, python in pythons.items():
        results["interpreters"][label] = info = _measure(python, is_free_threaded(python), "info")
        print(f"{label}: {python}: Python {info['version']}, GIL enabled: {info['gil_enabled']}")
        if info["free_threaded"] and info["gil_enabled"]:
            sys.exit(f"{label}: {python} runs with the GIL enabled despite PYTHON_GIL=0")
    interpreters = {
        label: (python, results["interpreters"][label]["free_threaded"])
        for label, python in pythons.items()
    }
    for name, ref in workloads().items():
        if args.workload and name not in args.workload:
            continue
        workload = _calibrate(args, name, ref, interpreters, results)
        if workload is not None:
            results["workloads"].append(workload)
            _time_workload(args, workload, interpreters, results)
    results["machine"]["loadavg_after"] = loadavg()
    results["machine"]["duration_s"] = time.time() - start
    cpu_after = _cpu_seconds()
    if cpu_before is not None and cpu_after is not None:
        busy, own = (after - before for after, before in zip(cpu_after, cpu_before, strict=True))
        results["machine"]["others_cpu_s"] = max(0.0, busy - own)
    args.out.mkdir(parents=True, exist_ok=True)
    save(results, args.out / "results.json")
    write_markdown(results, args.out / REPORT)
    write_plot(results, args.out / PLOT)
    print(f"report: {args.out / REPORT}, plot: {args.out / PLOT}")
    for label in pythons:
        for run in results["runs"]:
            if (run["workload"], run["interpreter"], run["workers"]) == (PURE_PYTHON, label, 2):
                value = speedup(results, run)
                text = f"{value:.2f}x" if value else "n/a"
                print(f"{PURE_PYTHON} on {label}: 2-worker speedup over 1 worker: {text}")
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
