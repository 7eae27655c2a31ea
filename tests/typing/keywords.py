"""Checked by mypy (``nox -s lint``), never run: the keywords of the front ends are typed.

Each ``# type: ignore[...]`` marks a call mypy must refuse; with ``warn_unused_ignores`` (part
of ``--strict``) an ignore that is no longer needed, because the call type-checks, is an error.
"""

from typing import Any, Unpack, assert_type

import xarray as xr

import threadensemble as te


def simulate(scale: float, *, work: list[int]) -> dict[str, Any]:
    return {"x": scale}


spec = te.ModelSpec(simulate, args=(1.0,), state=[], inject="work")

assert_type(te.simulate_ensemble(simulate, 4, args=(1.0,), state=[], inject="work"), xr.Dataset)
assert_type(te.simulate_ensemble(spec, 4, n_workers=2, seed=1, output_dir="out"), xr.Dataset)
assert_type(spec.run(4, seed=1, progress=False, backend="processes"), xr.Dataset)
assert_type(spec.check(sample=4, n_workers=2, max_bytes=1 << 20), te.CheckReport)
assert_type(te.check(simulate, args=(1.0,), state=[], inject="work", sample=2), te.CheckReport)
assert_type(spec.fingerprint(), te.ModelFingerprint)
te.check_picklable(spec)
te.check_picklable(simulate, args=(1.0,), state=[], inject="work")

te.simulate_ensemble(simulate, 4, n_worker=2)  # type: ignore[call-arg]
te.simulate_ensemble(simulate, 4, seed="one")  # type: ignore[arg-type]
te.simulate_ensemble(simulate, 4, progress="no")  # type: ignore[arg-type]
spec.run(4, args=(2.0,))  # type: ignore[call-arg]
spec.run(4, sample=4)  # type: ignore[call-arg]
spec.check(warmup=True)  # type: ignore[call-arg]
spec.check(output_dir="out")  # type: ignore[call-arg]
te.check_picklable(simulate, seed=1)  # type: ignore[call-arg]


def my_run(n: int, **options: Unpack[te.RunOptions]) -> xr.Dataset:
    """A user's wrapper passes the typed options on."""
    return spec.run(n, **options)
