import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_threads_equal_one_worker
from threadensemble._cli import main
from threadensemble.examples import fire


def test_threaded_ensemble_equals_one_worker_bitwise() -> None:
    spec = fire.build(rows=40, cols=50)
    assert_threads_equal_one_worker(spec)


def _downwind_shift(wind_speed: float, wind_direction: float) -> np.ndarray:
    """Return each member's burnt-area centroid minus the ignition point, along the east, m."""
    spec = fire.build(wind_speed=wind_speed, wind_direction=wind_direction, spotting=0.0)
    landscape, estimate = spec.args
    ignition = landscape.cells[estimate.ignitions[4][0]]  # the centre of the 3 x 3 start
    ens = spec.run(6, n_workers=2, seed=5, progress=False)
    burnt = ens["arrival_time"].notnull()
    centroid = (burnt * ens["x"]).sum(("y", "x")) / burnt.sum(("y", "x"))
    return (centroid - ignition.col * landscape.cell_size).values


def test_wind_pushes_the_fire_downwind() -> None:
    calm = _downwind_shift(0.0, 0.0)
    assert np.ptp(calm) == 0.0  # no wind, no spotting: nothing random is left
    assert (_downwind_shift(8.0, 0.0) > calm + 100.0).all()  # wind towards the east
    assert (_downwind_shift(8.0, 180.0) < calm - 100.0).all()  # towards the west


def test_arrival_times_are_minimum_travel_times() -> None:
    """Without spotting, every burnt cell was reached from a neighbour that burnt earlier."""
    spec = fire.build(rows=30, cols=40, spotting=0.0)
    landscape, estimate = spec.args
    member = spec.run(1, n_workers=1, seed=2, progress=False)["arrival_time"][0].values
    starts = {index for index, _ in estimate.ignitions}
    for cell in landscape.cells:
        time = member[cell.row, cell.col]
        if np.isnan(time) or cell.index in starts:
            continue
        sources = [
            member[other.row, other.col]
            for other in landscape.cells
            if any(n is cell for n, _, _ in other.edges)
        ]
        assert np.nanmin(sources) < time


def test_spot_fires_only_bring_arrival_times_forward() -> None:
    """Embers draw from their own stream: each member has the same wind with or without them."""
    without = fire.build(spotting=0.0).run(8, n_workers=2, seed=9, progress=False)
    with_spots = fire.build(spotting=0.5).run(8, n_workers=2, seed=9, progress=False)
    assert int(without["spot_fires"].sum()) == 0
    assert int(with_spots["spot_fires"].sum()) > 0
    burnt = without["arrival_time"].notnull()
    earlier = with_spots["arrival_time"] <= without["arrival_time"]
    assert (earlier | ~burnt).all()
    assert (with_spots["burnt_fraction"] >= without["burnt_fraction"]).all()


def test_landscape_cannot_be_pickled_and_threads_do_not_need_to(tmp_path: Path) -> None:
    spec = fire.build(rows=12, cols=12)
    with pytest.raises((TypeError, AttributeError, pickle.PicklingError)):
        pickle.dumps(spec.args[0])
    argv = ["run", "fire", "-n", "2", "-j", "2", "-q", "-o", str(tmp_path), "-p", "rows=12"]
    assert main(argv) == 0
    assert len(list(tmp_path.glob("*.nc"))) == 2
