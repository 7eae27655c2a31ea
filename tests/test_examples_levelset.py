from pathlib import Path

import numpy as np
import xarray as xr

import threadensemble as te
from conftest import assert_threads_equal_one_worker
from threadensemble._cli import main
from threadensemble.examples import levelset


def test_threaded_ensemble_equals_one_worker_bitwise() -> None:
    spec = levelset.build(size=256, window=64, horizon=60.0)
    assert_threads_equal_one_worker(spec)


def test_members_only_read_the_shared_layers() -> None:
    spec = levelset.build(size=256, window=64, horizon=30.0)
    layers = spec.args[0]
    assert layers.fuel.dtype == np.float32
    assert layers.nbytes == 6 * 4 * 256**2
    before = layers.fuel.copy()
    spec.run(4, n_workers=2, seed=1, protect_shared=True, progress=False)  # raises on a write
    np.testing.assert_array_equal(layers.fuel, before)


def _centroid_shift(ens: xr.Dataset, spec: te.ModelSpec) -> tuple[xr.DataArray, xr.DataArray]:
    """Return each member's burnt-area centroid minus the fire's centre (east, north), m."""
    layers, estimate = spec.args
    burnt = ens["arrival_time"].notnull()
    x = (burnt * ens["x"]).sum(("y", "x")) / burnt.sum(("y", "x"))
    y = (burnt * ens["y"]).sum(("y", "x")) / burnt.sum(("y", "x"))
    return x - estimate.col * layers.cell_size, y - estimate.row * layers.cell_size


def test_front_grows_fastest_downwind() -> None:
    calm = levelset.build(wind_speed=0.0)
    windy = levelset.build(wind_speed=8.0, wind_direction=90.0)  # towards the north
    calm_ens = calm.run(6, n_workers=2, seed=3, progress=False)
    windy_ens = windy.run(6, n_workers=2, seed=3, progress=False)
    assert (windy_ens["burnt_area"].diff("time") >= 0).all()
    assert (windy_ens["burnt_area"][:, -1] > 1.5 * calm_ens["burnt_area"][:, -1]).all()
    calm_dx, calm_dy = _centroid_shift(calm_ens, calm)
    dx, dy = _centroid_shift(windy_ens, windy)
    assert (dy - calm_dy > 2 * abs(dx - calm_dx)).all()
    assert (dy - calm_dy > 2 * windy.args[0].cell_size).all()


def test_runs_from_the_command_line(tmp_path: Path) -> None:
    argv = [
        "run",
        "levelset",
        "-n",
        "2",
        "-j",
        "2",
        "-q",
        "-o",
        str(tmp_path),
        "-p",
        "size=128",
        "-p",
        "window=32",
    ]
    assert main(argv) == 0
    assert len(list(tmp_path.glob("*.nc"))) == 2
