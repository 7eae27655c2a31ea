import numpy as np

from conftest import assert_threads_equal_one_worker
from threadensemble.examples import weather


def test_threaded_ensemble_equals_one_worker_bitwise() -> None:
    spec = weather.build(n_stations=3, n_days=120)
    assert_threads_equal_one_worker(spec)


def test_simulated_climate_matches_the_fitted_one() -> None:
    """Guards against state leaking between threads, which showed as temperatures 4x too high."""
    spec = weather.build(n_stations=2, n_days=365)
    model = spec.args[0]
    ens = spec.run(12, n_workers=4, seed=5, progress=False)
    temperature = ens["weather"].sel(variable="temperature")
    fitted = model.seasonal_mean[0::3].mean(axis=1)
    np.testing.assert_allclose(temperature.mean(("realization", "time")), fitted, atol=1.0)
    precipitation = ens["weather"].sel(variable="precipitation")
    assert (precipitation >= 0).all()
    humidity = ens["weather"].sel(variable="humidity")
    assert ((humidity >= 0) & (humidity <= 100)).all()


def test_state_is_what_each_thread_mutates() -> None:
    spec = weather.build(n_stations=2, n_days=30)
    spec.run(4, n_workers=2, seed=1, progress=False)
    assert spec.state.realizations_done == 0  # the master copy is never used directly
