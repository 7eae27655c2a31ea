"""Benchmark: memory of the per-thread state copies, with and without ``share_state=True``.

::

    python -m benchmarks.state_memory [--realizations 32] [--workers 1 2 4 8]
    python -m benchmarks.state_memory one --workers 4 --share   # one configuration, as JSON

The state is shaped like a fitted multisite weather generator's (WeatherCop's ``vgs``): a
`MultiSite` of 10 `Station` objects, each holding about 10 MiB of fitted arrays (100 MiB in all)
that ``simulate`` only reads.  Each realization rebinds a few attributes (``T_sim``, ``sim``,
``_m_single``), writes one small work buffer in place and fills a lazy cache on first use.
Every configuration runs in a fresh process, sampled for its peak RSS (``ru_maxrss``) and, where
``/proc/self/smaps_rollup`` exists, its peak proportional set size; each checks that its
ensemble is bitwise identical to the one worker, unshared run's (a digest).  The table ends with
what sharing costs: the time of one thread's copy, and per realization.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import threadensemble as te
from benchmarks.common import peak_rss_bytes
from benchmarks.interpreters.measure import SEED

__all__ = ["MultiSite", "Station", "main", "simulate"]

N_STATIONS = 10
N_DAYS = 365
N_VARIABLES = 6
_SMAPS = Path("/proc/self/smaps_rollup")


class Station:
    """One station of a fitted model: ~10 MiB of fitted arrays, a few per-run attributes."""

    def __init__(self, index: int) -> None:
        rng = np.random.default_rng([SEED, index])
        # The fitted parameters (never written by simulate): 10 MiB.
        self.data_trans = rng.standard_normal((N_VARIABLES, 150_000))  # 6.9 MiB
        self.AM = rng.standard_normal((N_VARIABLES, N_VARIABLES * 3)) / 10
        self.residuals = rng.standard_normal((N_VARIABLES, 60_000))  # 2.7 MiB
        self.seasonal = rng.standard_normal((N_DAYS, 128))  # 0.4 MiB
        # Rebound by every realization.
        self.T_sim: np.ndarray | None = None
        self.sim: np.ndarray | None = None
        self._m_single: np.ndarray | None = None
        # Written in place by every realization: small, so copied per thread even when sharing.
        self._work = np.zeros(N_VARIABLES)
        self._cache: dict[str, np.ndarray] = {}  # filled lazily, from the fitted arrays only

    def _seasonal_mean(self) -> np.ndarray:
        if "mean" not in self._cache:
            self._cache["mean"] = self.seasonal[:, :N_VARIABLES].T.copy()
        return self._cache["mean"]

    def simulate(self, rng: np.random.Generator) -> np.ndarray:
        """One realization of this station: a VAR(1) driven by resampled residuals."""
        mean = self._seasonal_mean()
        picks = rng.integers(0, self.residuals.shape[1], N_DAYS)
        self._m_single = self.residuals[:, picks]
        sim = np.empty((N_VARIABLES, N_DAYS))
        self._work[:] = self.data_trans[:, int(picks[0])]
        for day in range(N_DAYS):
            self._work[:] = self.AM[:, :N_VARIABLES] @ self._work + self._m_single[:, day]
            sim[:, day] = self._work
        self.sim = sim + mean
        self.T_sim = self.sim[0]
        return self.sim


class MultiSite:
    """The fitted multisite model: the state, one copy (or not) per thread."""

    def __init__(self, n_stations: int = N_STATIONS) -> None:
        self.stations = [Station(i) for i in range(n_stations)]
        self.sim: np.ndarray | None = None


def simulate(*, vgs: MultiSite) -> dict[str, Any]:
    """One realization of every station (``vgs`` is this thread's copy of the state)."""
    rng = te.get_rng()
    vgs.sim = np.stack([station.simulate(rng) for station in vgs.stations])
    return {"sim": (("station", "variable", "day"), vgs.sim)}


def _array_bytes(state: MultiSite) -> int:
    return sum(a.nbytes for s in state.stations for a in vars(s).values() if hasattr(a, "nbytes"))


def _pss_bytes() -> int | None:
    try:
        text = _SMAPS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return None


class _PeakPss:
    """Samples this process's PSS every 20 ms in a thread of its own; keeps the peak."""

    def __init__(self) -> None:
        self.peak = _pss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            now = _pss_bytes()
            if now is not None and self.peak is not None:
                self.peak = max(self.peak, now)

    def __enter__(self) -> _PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one(workers: int, share: bool, n: int) -> dict[str, Any]:
    """Run one configuration in this process; return its memory, time and result digest."""
    state = MultiSite()
    options: dict[str, Any] = dict(state=state, inject="vgs", seed=SEED, share_state=share)
    with _PeakPss() as pss:
        start = time.perf_counter()
        ens = te.simulate_ensemble(simulate, n, n_workers=workers, progress=False, **options)
        elapsed = time.perf_counter() - start
    peak_rss = peak_rss_bytes()  # before the check below makes copies of its own
    digest = hashlib.sha256(np.ascontiguousarray(ens["sim"].values).tobytes()).hexdigest()
    per_thread = te.check(simulate, sample=2, n_workers=2, **options).state
    assert per_thread is not None
    return {
        "workers": workers,
        "share": share,
        "state_bytes": _array_bytes(state),
        "copied_bytes": per_thread.copied_bytes,
        "peak_rss_bytes": peak_rss,
        "peak_pss_bytes": pss.peak,
        "seconds": elapsed,
        "digest": digest[:16],
    }


def _copy_and_call_cost(repeats: int) -> dict[str, float]:
    """Time a run's fixed cost (its thread's copy of the state) and one more trivial realization.

    A run of 1 realization on 1 worker costs one copy of the state plus start-up; runs of 10 and
    1,010 realizations give the cost of one more realization (start-up and copies cancel).
    """
    master = copy.deepcopy(MultiSite())
    costs: dict[str, float] = {}

    def trivial(*, vgs: MultiSite) -> dict[str, Any]:
        return {"x": np.array([vgs.stations[0].AM[0, 0]])}

    options: dict[str, Any] = dict(state=master, inject="vgs", progress=False, seed=1)
    best: dict[tuple[bool, int], float] = {}
    for _ in range(repeats):  # alternating, the best of each: the machine may be busy
        for share in (False, True):
            for n in (1, 10, 1010):
                start = time.perf_counter()
                te.simulate_ensemble(trivial, n, n_workers=1, share_state=share, **options)
                elapsed = time.perf_counter() - start
                best[share, n] = min(best.get((share, n), elapsed), elapsed)
    for share in (False, True):  # the cost of one more realization: start-up and copies cancel
        marginal = (best[share, 1010] - best[share, 10]) / 1000
        costs[f"realization_us_{'shared' if share else 'plain'}"] = marginal * 1e6
        costs[f"start_ms_{'shared' if share else 'plain'}"] = best[share, 1] * 1e3
    return costs


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:,.0f}"


def table(rows: list[dict[str, Any]], costs: dict[str, float]) -> str:
    """Format the measurements as a Markdown table, with what 8 threads add over 1."""
    state_mib = rows[0]["state_bytes"] / 2**20
    reference = next(r["digest"] for r in rows if r["workers"] == 1 and not r["share"])
    lines = [
        f"State: {N_STATIONS} stations, {state_mib:.0f} MiB of fitted arrays.  Peak memory of "
        "the whole process (it also holds the user's state and the run's master copy), MiB.",
        "",
        "| share_state | workers | copied per thread | peak RSS | peak PSS | time (s) | "
        "bitwise = 1 worker |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['share']} | {r['workers']} | {r['copied_bytes'] / 2**20:.2f} MiB | "
            f"{_mib(r['peak_rss_bytes'])} | {_mib(r['peak_pss_bytes'])} | {r['seconds']:.2f} | "
            f"{'yes' if r['digest'] == reference else 'NO'} |"
        )
    lines.append("")
    for share in (False, True):
        by_workers = {r["workers"]: r for r in rows if r["share"] is share}
        if 1 in by_workers and max(by_workers) > 1:
            most = max(by_workers)
            added = by_workers[most]["peak_rss_bytes"] - by_workers[1]["peak_rss_bytes"]
            lines.append(
                f"share_state={share}: {most} workers add {added / 2**20:.1f} MiB of peak RSS "
                f"over 1 worker ({added / rows[0]['state_bytes']:.1%} of the state)."
            )
    lines.append(
        f"A run of 1 trivial realization on 1 worker (its copies of the state included): "
        f"{costs['start_ms_plain']:.1f} ms plain, {costs['start_ms_shared']:.1f} ms shared.  "
        "One more trivial realization on 1 worker "
        "(runs of 1,010 against 10, best of 5): "
        f"{costs['realization_us_plain']:.0f} us plain, {costs['realization_us_shared']:.0f} us "
        "shared."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.state_memory")
    parser.add_argument("command", nargs="?", choices=["table", "one"], default="table")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--realizations", type=int, default=32)
    parser.add_argument("--share", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "one":
        print(json.dumps(one(args.workers[0], args.share, args.realizations)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    rows = []
    for share in (False, True):
        for workers in args.workers:
            command = [sys.executable, "-m", "benchmarks.state_memory", "one"]
            command += ["--workers", str(workers), "--realizations", str(args.realizations)]
            out = subprocess.run(
                command + (["--share"] if share else []),
                env=env, check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            rows.append(json.loads(out.splitlines()[-1]))
    print(table(rows, _copy_and_call_cost(repeats=5)))


if __name__ == "__main__":
    main()
