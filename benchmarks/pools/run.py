"""Benchmark: threadensemble against thread and process pools, on every example model.

::

    python -m benchmarks.pools --python 3.13=PATH --python 3.13t=PATH [--smoke] [--long]

For each interpreter and example, the same realizations with the same seed go through every
runner of `benchmarks.pools.runners`: a serial loop; threadensemble on threads and on
processes; a hand-rolled `ThreadPoolExecutor` with a thread-local state copy (the library's own
overhead is the gap to it); joblib threads and mpire threading; `multiprocessing.Pool` with
fork and with spawn; `ProcessPoolExecutor`; joblib loky; mpire fork.  Every run is a fresh
process (interpreter start, imports, model build, pool start-up and teardown all count).
Peak memory comes from one more run per row, in which psutil samples the summed PSS of the
process tree (`benchmarks.pools.memory`); the timed runs are not sampled: reading PSS every
25 ms costs CPU in proportion to the tree's processes and pages, which slowed a pool of
several large processes by up to a fifth on 2 cores, and a thread pool's one process less.

Each example runs at two lengths: ``short`` (a few seconds serially: start-up matters) and,
with ``--long``, ``long``: realizations scaled up so that the serial loop takes at least
``--long-seconds`` (20).  ``--example`` and ``--runner`` (repeatable) restrict the run to
some examples and runners (the serial loop always runs).  ``--repeats`` interleaved runs per
row (median); the memory runs follow them, and one run per runner at ``--memory-workers``
(8) measures memory only, at the short length.  Free-threaded
interpreters run with ``PYTHON_GIL=0``; BLAS and OpenMP pools are limited to one thread.
Writes ``processes.json``, ``processes.md`` and ``processes.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import (
    ROOT,
    THREAD_ENV,
    child_env,
    cores,
    cpu_model,
    is_free_threaded,
    loadavg,
)
from benchmarks.pools.memory import SAMPLE_S, TreeMemory, memory_kind
from benchmarks.pools.report import write_report
from benchmarks.pools.runners import OPTIONAL, RUNNERS

__all__ = ["CASES", "main"]

SEED = 20_250_101
TIMEOUT_S = 1800
IDLE_CPU_PERCENT = 10.0  # a run starts once the machine is this idle...
IDLE_WAIT_S = 30.0  # ...or after waiting this long
IDLE_BUDGET_S = 240.0  # waits of all the runs of one interpreter, at most


@dataclass(frozen=True)
class Case:
    """An example's problem size: full (a few seconds serially) and smoke (a pipeline check)."""

    realizations: int
    params: dict[str, Any]
    smoke_realizations: int
    smoke_params: dict[str, Any]


CASES = {
    "weather": Case(192, {}, 8, {"n_days": 60}),
    "fire": Case(32, {"rows": 120, "cols": 160, "horizon": 480.0}, 8, {"rows": 30, "cols": 40}),
    "mobility": Case(
        16,
        {"n_buildings": 5000, "n_candidates": 200, "n_trips": 20_000},
        8,
        {"n_buildings": 300, "n_candidates": 30, "n_trips": 500},
    ),
    "levelset": Case(
        48, {"size": 2048, "window": 128}, 8, {"size": 256, "window": 32, "horizon": 30.0}
    ),
    "etas": Case(384, {}, 8, {"horizon": 3.0}),
}
"""Example -> sizes: every example of `threadensemble.examples` except none."""


@dataclass(frozen=True)
class Interpreter:
    """An interpreter to benchmark."""

    label: str
    python: str
    free_threaded: bool
    version: str

    missing: tuple[str, ...]  # optional modules it lacks (their runners are skipped)

    @classmethod
    def probe(cls, label: str, python: str) -> Interpreter:
        """Ask ``python`` what it is (before setting PYTHON_GIL, which standard builds refuse)."""
        free = is_free_threaded(python)
        code = (
            "import importlib.util, sys; print(sys.version.replace(chr(10), ' '));"
            f" print(' '.join(m for m in {sorted(set(OPTIONAL.values()))!r}"
            " if importlib.util.find_spec(m) is None))"
        )
        env = child_env({}, free)
        done = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        version, _, missing = done.stdout.rstrip("\n").partition("\n")
        return cls(label, python, free, version, tuple(missing.split()))

    def env(self) -> dict[str, str]:
        """Return the environment of its runs."""
        return child_env(THREAD_ENV, self.free_threaded)

    def runners(self) -> list[str]:
        """Return the runners it can run."""
        return [r for r in RUNNERS if OPTIONAL.get(r) not in self.missing]


class IdleGate:
    """Lets a run start once the CPUs are idle: another job on a shared machine skews numbers.

    Waits at most ``per_run_s`` per run and ``budget_s`` in all, so that a machine that is
    never idle delays the benchmark by a bounded time (the runs that started busy are counted).
    """

    def __init__(self, per_run_s: float, budget_s: float) -> None:
        self.per_run_s, self.budget_s = per_run_s, budget_s

    def wait(self) -> bool:
        """Wait for idle CPUs; return False if they were still busy when the wait ended."""
        start = time.monotonic()
        deadline = start + min(self.per_run_s, self.budget_s)
        idle = True
        while psutil.cpu_percent(interval=0.5) > IDLE_CPU_PERCENT:
            if time.monotonic() > deadline:
                idle = False
                break
        self.budget_s = max(0.0, self.budget_s - (time.monotonic() - start))
        return idle


def measure(
    interpreter: Interpreter,
    example: str,
    runner: str,
    workers: int,
    case: tuple[int, dict[str, Any]],
    gate: IdleGate,
    memory_kind: str | None,
) -> dict[str, Any]:
    """Run one ensemble in a fresh process; return its result (and the tree's peak memory).

    ``memory_kind`` None: a timed run, not sampled (sampling would slow it down).
    """
    n, params = case
    idle = gate.wait()
    command = [
        interpreter.python, "-m", "benchmarks.pools.runners", example, runner,
        f"--workers={workers}", f"--realizations={n}", f"--seed={SEED}",
        f"--params={json.dumps(params)}",
    ]  # fmt: skip
    started = time.perf_counter()
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=interpreter.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        memory = TreeMemory(proc.pid, memory_kind) if memory_kind is not None else None
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        finally:
            peak = memory.stop() if memory is not None else None
    process_s = time.perf_counter() - started  # interpreter start and imports included
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{err.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if "unavailable" in result:
        return result
    return {**result, "process_s": process_s, "peak_memory": peak, "started_idle": idle}


def machine() -> dict[str, Any]:
    """Return what the machine is: CPU model, usable cores, memory, OS."""
    return {
        "cpu_model": cpu_model(),
        "cores": cores(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
    }


def _long_realizations(short_n: int, serial_s: float, target_s: float, workers: int) -> int:
    """Return the realizations of the long length: serial at least ``target_s``."""
    scale = max(2.0, target_s / serial_s)
    return workers * math.ceil(short_n * scale / workers)


def run_interpreter(interpreter: Interpreter, args: argparse.Namespace) -> dict[str, Any]:
    """Run every example, length and runner on one interpreter; return the rows and the load."""
    rows: list[dict[str, Any]] = []
    gate = IdleGate(IDLE_WAIT_S, IDLE_BUDGET_S)
    loadavg_before, start = loadavg(), time.time()
    runners = [
        r for r in interpreter.runners() if not args.runners or r == "serial" or r in args.runners
    ]
    unavailable: dict[str, str] = {}  # "example / runner" -> why it could not run
    for example in args.examples:
        spec = CASES[example]
        n, params = (
            (spec.smoke_realizations, spec.smoke_params)
            if args.smoke
            else (spec.realizations, spec.params)
        )
        for length in args.lengths:
            if length == "long":
                serial = next(
                    r for r in rows
                    if (r["example"], r["runner"], r["length"]) == (example, "serial", "short")
                )  # fmt: skip
                serial_s = statistics.median(serial["times_s"])
                n = _long_realizations(n, serial_s, args.long_seconds, args.workers)
            passes = {args.workers: args.repeats}  # workers -> timed runs per runner
            if length == "short":
                passes.setdefault(args.memory_workers, 0)
            for workers, repeats in passes.items():
                names = [
                    r for r in runners
                    if (r != "serial" or workers == args.workers)
                    and f"{example} / {r}" not in unavailable
                ]  # fmt: skip
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
                sampled: dict[str, dict[str, Any]] = {}  # runner -> its memory run
                # Interleaved, so that load elsewhere hits all alike; the memory runs last.
                for kind in [*[None] * repeats, args.memory]:
                    for name in list(names):
                        result = measure(
                            interpreter, example, name, workers, (n, params), gate, kind
                        )
                        if "unavailable" in result:
                            unavailable[f"{example} / {name}"] = result["unavailable"]
                            names.remove(name)
                            del runs[name]
                        elif kind is None:
                            runs[name].append(result)
                        else:
                            sampled[name] = result
                for name, results in runs.items():
                    rows.append(_row(example, length, name, workers, n, results, sampled[name]))
                    print(_describe(interpreter.label, rows[-1]), flush=True)
    return {
        "rows": rows,
        "skipped_runners": [r for r in RUNNERS if r not in runners],
        "unavailable": unavailable,
        "loadavg_before": loadavg_before,
        "loadavg_after": loadavg(),
        "duration_s": time.time() - start,
    }


def _row(
    example: str,
    length: str,
    runner: str,
    workers: int,
    n: int,
    results: list[dict[str, Any]],
    sampled: dict[str, Any],
) -> dict[str, Any]:
    """Return a row: the timed runs ``results`` (none: a memory row) and the memory run."""
    return {
        "example": example,
        "length": length,
        "runner": runner,
        "workers": 1 if runner == "serial" else workers,
        "realizations": n,
        "times_s": [r["seconds"] for r in results],
        "process_times_s": [r["process_s"] for r in results],
        "peak_memory": sampled["peak_memory"],
        "transfer": sampled["transfer"],
        "fingerprints": sorted({r["fingerprint"] for r in [*results, sampled]}),
        "gil_enabled": any(r["gil_enabled"] for r in [*results, sampled]),
        "busy_starts": sum(not r["started_idle"] for r in results),
    }


def _describe(label: str, row: dict[str, Any]) -> str:
    times = ", ".join(f"{t:.2f}" for t in row["times_s"])
    return (
        f"{label:>6} {row['example']:>9} {row['length']:>5} {row['runner']:>31} "
        f"{row['workers']} workers: {times + ' s' if times else 'memory only'}, "
        f"peak {row['peak_memory'] / 2**20:.0f} MB"
    )


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pools")
    parser.add_argument(
        "--python",
        action="append",
        required=True,
        metavar="LABEL=PATH",
        help="an interpreter, e.g. 3.13t=/tmp/venv313t/bin/python (repeatable)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat")
    parser.add_argument("--long", action="store_true", help="also the long length (slow)")
    parser.add_argument("--long-seconds", type=float, help="serial run of the long length (20)")
    parser.add_argument("--workers", type=int, default=2, help="workers of the timed runs")
    parser.add_argument("--memory-workers", type=int, help="workers of the memory run (8)")
    parser.add_argument("--repeats", type=int, help="timed runs per runner (default 3, smoke 1)")
    parser.add_argument("--example", dest="examples", action="append", choices=list(CASES))
    parser.add_argument(
        "--runner",
        dest="runners",
        action="append",
        choices=list(RUNNERS),
        help="only this runner, and the serial loop (repeatable; default: all)",
    )
    parser.add_argument("--out", type=Path, help="default docs/benchmarks (smoke: a temp dir)")
    args = parser.parse_args(argv)
    smoke_out = Path(tempfile.gettempdir()) / "threadensemble-processes-smoke"
    args.out = args.out or (smoke_out if args.smoke else ROOT / "docs" / "benchmarks")
    args.repeats = args.repeats or (1 if args.smoke else 3)
    args.memory_workers = args.memory_workers or (args.workers if args.smoke else 8)
    args.examples = args.examples or list(CASES)
    args.lengths = ["short", "long"] if args.long else ["short"]
    args.long_seconds = args.long_seconds or (2.0 if args.smoke else 20.0)
    args.memory = memory_kind()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark on every interpreter; write the results and the report."""
    args = _parse(argv)
    interpreters = [Interpreter.probe(*spec.split("=", 1)) for spec in args.python]
    results: dict[str, Any] = {
        "machine": {**machine(), "date": time.strftime("%Y-%m-%d %H:%M %Z")},
        "settings": {
            "command": "python -m benchmarks.pools " + " ".join(argv or sys.argv[1:]),
            "smoke": args.smoke,
            "workers": args.workers,
            "memory_workers": args.memory_workers,
            "repeats": args.repeats,
            "seed": SEED,
            "sample_s": SAMPLE_S,
            "memory": args.memory,
            "lengths": args.lengths,
            "long_seconds": args.long_seconds,
            "idle_cpu_percent": IDLE_CPU_PERCENT,
            "idle_wait_s": IDLE_WAIT_S,
            "idle_budget_s": IDLE_BUDGET_S,
            "thread_env": " ".join(f"{k}={v}" for k, v in THREAD_ENV.items()),
            "cases": {
                name: {"realizations": c.realizations, "params": c.params}
                if not args.smoke
                else {"realizations": c.smoke_realizations, "params": c.smoke_params}
                for name, c in CASES.items()
                if name in args.examples
            },
        },
        "interpreters": {},
    }
    for interpreter in interpreters:
        print(f"{interpreter.label}: {interpreter.python}: {interpreter.version}", flush=True)
        results["interpreters"][interpreter.label] = {
            "python": interpreter.python,
            "version": interpreter.version,
            "free_threaded": interpreter.free_threaded,
            "missing": list(interpreter.missing),
            **run_interpreter(interpreter, args),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "processes.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(args.out)
    print(f"wrote {args.out}/processes.{{json,md,png}}")
    return 0
