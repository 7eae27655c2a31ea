import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_threads_equal_one_worker
from threadensemble._cli import main
from threadensemble.examples import mobility


def test_threaded_ensemble_equals_one_worker_bitwise() -> None:
    spec = mobility.build(n_buildings=500, n_candidates=40, n_trips=1000)
    assert_threads_equal_one_worker(spec)


def test_places_visited_grow_as_the_epr_mean_field_predicts() -> None:
    """dS/dn = rho S**-gamma gives S(n) = ((1 + gamma) rho n + 1)**(1 / (1 + gamma))."""
    spec = mobility.build(n_trips=3000)
    habits = spec.args[1]
    ens = spec.run(12, n_workers=4, seed=5, progress=False)
    distinct = ens["distinct_places"].mean("realization")
    n = ens["trip"].values
    expected = ((1 + habits.gamma) * habits.rho * n + 1) ** (1 / (1 + habits.gamma))
    np.testing.assert_allclose(distinct[100:], expected[100:], rtol=0.05)


def test_visits_follow_the_diary_and_concentrate_on_few_places() -> None:
    spec = mobility.build(n_trips=2000)
    ens = spec.run(6, n_workers=2, seed=3, progress=False)
    for k in range(6):
        member = ens.isel(realization=k)
        counts = np.bincount(member["place"].values, minlength=member.sizes["building"])
        np.testing.assert_array_equal(counts, member["visits"].values)
        top = np.sort(counts)[::-1]
        assert top[:10].sum() > 0.15 * counts.sum()  # preferential return: a few places dominate
    assert (ens["arrival_time"].diff("trip") >= spec.args[1].min_stay).all()


def test_gravity_closure_cannot_be_pickled_and_threads_do_not_need_to(tmp_path: Path) -> None:
    spec = mobility.build(n_buildings=100, n_trips=50)
    with pytest.raises((AttributeError, pickle.PicklingError)):
        pickle.dumps(spec.args[0])
    argv = ["run", "mobility", "-n", "2", "-j", "2", "-q", "-o", str(tmp_path), "-p", "n_trips=50"]
    assert main(argv) == 0
    assert len(list(tmp_path.glob("*.nc"))) == 2
