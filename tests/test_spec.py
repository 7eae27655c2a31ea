from typing import Any

import numpy as np
import xarray as xr

import threadensemble as te


def draw(offset: float, *, counter: list[int]) -> dict[str, Any]:
    counter.append(1)
    return {"x": offset + te.get_rng().random(2)}


def test_spec_run_is_simulate_ensemble() -> None:
    spec = te.ModelSpec(draw, args=(10.0,), state=[], inject="counter", description="toy")
    direct = te.simulate_ensemble(
        draw, 5, args=(10.0,), state=[], inject="counter", seed=2, n_workers=2, progress=False
    )
    xr.testing.assert_identical(spec.run(5, seed=2, n_workers=2, progress=False), direct)
    assert (direct["x"].values >= 10).all() and np.isfinite(direct["x"].values).all()
