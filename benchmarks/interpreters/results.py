"""The saved results of one comparison (``results.json``): their shape, and derived numbers."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, TypedDict, cast

__all__ = ["Failure", "Results", "Run", "Workload", "load", "median", "save", "speedup"]


class Workload(TypedDict):
    """One workload and the problem size every interpreter ran."""

    name: str
    ref: str
    description: str
    per_realization_s: float  # on one worker of the first (baseline) interpreter
    realizations: int


class Run(TypedDict):
    """The timings of one (workload, interpreter, worker count)."""

    workload: str
    interpreter: str
    workers: int
    times_s: list[float]
    peak_rss_bytes: int | None
    gil_enabled: bool


class Failure(TypedDict):
    """A measurement that did not complete."""

    workload: str
    interpreter: str
    step: str
    error: str


class Results(TypedDict):
    """Everything a report is made of."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    interpreters: dict[str, dict[str, Any]]  # label -> `benchmarks.interpreters.measure.info()`
    workloads: list[Workload]
    runs: list[Run]
    failures: list[Failure]


def save(results: Results, path: Path) -> None:
    """Write ``results`` as JSON."""
    path.write_text(json.dumps(results, indent=1) + "\n")


def load(path: Path) -> Results:
    """Read results written by `save`."""
    return cast(Results, json.loads(path.read_text()))


def median(run: Run) -> float:
    """Return the median wall time of a run's repeats, in seconds."""
    return statistics.median(run["times_s"])


def speedup(results: Results, run: Run) -> float | None:
    """Return median time on 1 worker / median time of ``run`` (same interpreter and workload)."""
    for base in results["runs"]:
        if (base["workload"], base["interpreter"], base["workers"]) == (
            run["workload"],
            run["interpreter"],
            1,
        ):
            return median(base) / median(run)
    return None
