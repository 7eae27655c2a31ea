"""What the run identity costs: the model's content fingerprint, next to one realization.

::

    python -m benchmarks.fingerprint [--megabytes 500] [--repeats 3]

A run with ``output_dir`` fingerprints ``simulate``, ``args``, ``kwargs`` and ``state`` once,
in the calling thread, before anything starts (`threadensemble.ModelSpec.fingerprint`, as
measured here); in-memory runs do not.  This prints the fingerprint's time (median of
``--repeats``) for a synthetic model of ``--megabytes`` (four large float arrays plus 100 000
small objects), for a million small objects of a class of the user's (``--objects``), for
every example model and for fire at the pool benchmark's long parameters, with the time of one
realization for scale, and the growth of the peak resident memory during the million objects'
fingerprint.
"""

from __future__ import annotations

import argparse
import functools
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import threadensemble as te
from benchmarks.workloads import build
from threadensemble.examples import EXAMPLES, fire


def _median_seconds(action: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _big_model(megabytes: int) -> dict[str, Any]:
    per_array = megabytes * 1_000_000 // 4 // 8
    rng = np.random.default_rng(0)
    return {
        "layers": [rng.standard_normal(per_array) for _ in range(4)],
        "stations": [{"id": i, "name": f"S{i}", "coef": (0.1 * i, 2.0)} for i in range(100_000)],
    }


class Station:
    """A small object of the user's code: the million-object model is a list of these."""

    def __init__(self, index: int) -> None:
        self.index, self.name, self.coef = index, f"S{index}", 0.5 * index


FIRE_LONG: dict[str, Any] = {"rows": 120, "cols": 160, "horizon": 480.0}  # the pools long case


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--objects", type=int, default=1_000_000)
    options = parser.parse_args(argv)
    print(f"{te.runtime_info().describe()}, median of {options.repeats}")
    print(f"{'model':<22} {'fingerprint s':>14} {'1 realization s':>16}")
    stations = te.ModelSpec(Station, args=([Station(i) for i in range(options.objects)],))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = _median_seconds(stations.fingerprint, options.repeats)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    label = f"{options.objects:,} objects"
    print(f"{label:<22} {seconds:>14.3f} {'':>16}   (peak RSS +{grown:.0f} MB)")
    del stations
    big = _big_model(options.megabytes)
    parts = {
        f"{options.megabytes} MB synthetic": big,
        "  its 4 arrays": big["layers"],
        "  its 100,000 dicts": big["stations"],
    }
    for label, part in parts.items():
        model = te.ModelSpec(_big_model, args=(part,))
        seconds = _median_seconds(model.fingerprint, options.repeats)
        print(f"{label:<22} {seconds:>14.3f}")
    del big, parts
    cases = [(name, build(EXAMPLES[name])) for name in EXAMPLES]
    cases.append(("fire 120x160, 480 min", fire.build(**FIRE_LONG)))
    for name, spec in cases:
        seconds = _median_seconds(spec.fingerprint, options.repeats)
        one_run = functools.partial(spec.run, 1, n_workers=1, seed=1, progress=False)
        one = _median_seconds(one_run, options.repeats)
        print(f"{name:<22} {seconds:>14.3f} {one:>16.3f}")


if __name__ == "__main__":
    main()
