"""Benchmark: threadensemble against process-based ensembles, on every example model.

::

    python -m benchmarks.processes --python 3.13=PATH --python 3.13t=PATH [--smoke]

For each interpreter and example, the same realizations with the same seed go through every
runner of `benchmarks.processes_runners`: a serial loop, threadensemble, `multiprocessing.Pool`
(spawn, chunksize, shared memory for large arrays), `ProcessPoolExecutor` (spawn, model
pickled with every task or rebuilt per worker) and joblib (loky, cloudpickle).  Every run is a
fresh process (so process pools pay their start-up every time, as in a real run), sampled by
psutil for the summed RSS of its whole process tree.  ``--workers`` runs are repeated and timed
(median); one run at ``--memory-workers`` measures memory.  Free-threaded interpreters run with
``PYTHON_GIL=0``; BLAS and OpenMP pools are limited to one thread.  Writes
``processes.json``, ``processes.md`` and ``processes.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.processes_report import write_report
from benchmarks.processes_runners import RUNNERS

__all__ = ["CASES", "main"]

ROOT = Path(__file__).resolve().parents[1]
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SEED = 20_250_101
SAMPLE_S = 0.025  # memory sampling period
TIMEOUT_S = 600
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


class TreeMemory:
    """Samples the summed RSS of a process and all its descendants, in a background thread."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        procs: dict[int, psutil.Process] = {}
        tick = 0
        while not self._stop.wait(SAMPLE_S):
            if tick % 4 == 0:  # listing descendants scans /proc: less often than sampling
                try:
                    tree = [self.root, *self.root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    return
                procs = {p.pid: procs.get(p.pid, p) for p in tree}
            tick += 1
            total = 0
            for proc in procs.values():
                try:
                    total += proc.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        """Stop sampling; return the peak, bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak


@dataclass(frozen=True)
class Interpreter:
    """An interpreter to benchmark."""

    label: str
    python: str
    free_threaded: bool
    version: str

    @classmethod
    def probe(cls, label: str, python: str) -> Interpreter:
        """Ask ``python`` what it is (before setting PYTHON_GIL, which standard builds refuse)."""
        code = (
            "import sys, sysconfig; print(int(bool(sysconfig.get_config_var('Py_GIL_DISABLED'))));"
            " print(sys.version.replace(chr(10), ' '))"
        )
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
        free, version = done.stdout.strip().split("\n", 1)
        return cls(label, python, free == "1", version)

    def env(self) -> dict[str, str]:
        """Return the environment of its runs."""
        env = {**os.environ, **THREAD_ENV}
        if self.free_threaded:
            env["PYTHON_GIL"] = "0"
        return env


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
) -> dict[str, Any]:
    """Run one ensemble in a fresh process; return its result with the tree's peak RSS."""
    n, params = case
    idle = gate.wait()
    command = [
        interpreter.python, "-m", "benchmarks.processes_runners", example, runner,
        f"--workers={workers}", f"--realizations={n}", f"--seed={SEED}",
        f"--params={json.dumps(params)}",
    ]  # fmt: skip
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=interpreter.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        memory = TreeMemory(proc.pid)
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        finally:
            peak = memory.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{err.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return {**result, "peak_rss": peak, "started_idle": idle}


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict[str, Any]:
    """Return what the machine is: CPU model, usable cores, memory, OS."""
    models = [
        line.partition(":")[2].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    return {
        "cpu_model": models[0] if models else platform.processor(),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
    }


def run_interpreter(interpreter: Interpreter, args: argparse.Namespace) -> dict[str, Any]:
    """Run every example and runner on one interpreter; return the rows and the load."""
    rows: list[dict[str, Any]] = []
    gate = IdleGate(IDLE_WAIT_S, IDLE_BUDGET_S)
    loadavg_before, start = _loadavg(), time.time()
    for example in args.examples:
        spec = CASES[example]
        case = (
            (spec.smoke_realizations, spec.smoke_params)
            if args.smoke
            else (spec.realizations, spec.params)
        )
        passes = {args.workers: args.repeats}
        passes.setdefault(args.memory_workers, 1)
        for workers, repeats in passes.items():
            runners = [r for r in RUNNERS if r != "serial" or workers == args.workers]
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in runners}
            for _ in range(repeats):  # interleaved, so that load from elsewhere hits all alike
                for name in runners:
                    result = measure(interpreter, example, name, workers, case, gate)
                    runs[name].append(result)
            for name, results in runs.items():
                rows.append(_row(example, name, workers, case[0], results))
                print(_describe(interpreter.label, rows[-1]), flush=True)
    return {
        "rows": rows,
        "loadavg_before": loadavg_before,
        "loadavg_after": _loadavg(),
        "duration_s": time.time() - start,
    }


def _row(
    example: str, runner: str, workers: int, n: int, results: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "example": example,
        "runner": runner,
        "workers": 1 if runner == "serial" else workers,
        "realizations": n,
        "times_s": [r["seconds"] for r in results],
        "peak_rss": max(r["peak_rss"] for r in results),
        "transfer": results[0]["transfer"],
        "fingerprints": sorted({r["fingerprint"] for r in results}),
        "gil_enabled": any(r["gil_enabled"] for r in results),
        "busy_starts": sum(not r["started_idle"] for r in results),
    }


def _describe(label: str, row: dict[str, Any]) -> str:
    times = ", ".join(f"{t:.2f}" for t in row["times_s"])
    return (
        f"{label:>6} {row['example']:>9} {row['runner']:>20} {row['workers']} workers: "
        f"{times} s, peak {row['peak_rss'] / 2**20:.0f} MB"
    )


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.processes")
    parser.add_argument(
        "--python",
        action="append",
        required=True,
        metavar="LABEL=PATH",
        help="an interpreter, e.g. 3.13t=/tmp/venv313t/bin/python (repeatable)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat")
    parser.add_argument("--workers", type=int, default=2, help="workers of the timed runs")
    parser.add_argument("--memory-workers", type=int, help="workers of the memory run (8)")
    parser.add_argument("--repeats", type=int, help="timed runs per runner (default 3, smoke 1)")
    parser.add_argument("--example", dest="examples", action="append", choices=list(CASES))
    parser.add_argument("--out", type=Path, help="default docs/benchmarks (smoke: a temp dir)")
    args = parser.parse_args(argv)
    smoke_out = Path(tempfile.gettempdir()) / "threadensemble-processes-smoke"
    args.out = args.out or (smoke_out if args.smoke else ROOT / "docs" / "benchmarks")
    args.repeats = args.repeats or (1 if args.smoke else 3)
    args.memory_workers = args.memory_workers or (args.workers if args.smoke else 8)
    args.examples = args.examples or list(CASES)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark on every interpreter; write the results and the report."""
    args = _parse(argv)
    interpreters = [Interpreter.probe(*spec.split("=", 1)) for spec in args.python]
    results: dict[str, Any] = {
        "machine": {**machine(), "date": time.strftime("%Y-%m-%d %H:%M %Z")},
        "settings": {
            "command": "python -m benchmarks.processes " + " ".join(argv or sys.argv[1:]),
            "smoke": args.smoke,
            "workers": args.workers,
            "memory_workers": args.memory_workers,
            "repeats": args.repeats,
            "seed": SEED,
            "sample_s": SAMPLE_S,
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
            **run_interpreter(interpreter, args),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "processes.json").write_text(json.dumps(results, indent=1) + "\n")
    write_report(args.out)
    print(f"wrote {args.out}/processes.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
