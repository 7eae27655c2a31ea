from pathlib import Path

import numpy as np

from conftest import assert_threads_equal_one_worker
from threadensemble._cli import main
from threadensemble.examples import etas


def test_threaded_ensemble_equals_one_worker_bitwise() -> None:
    spec = etas.build(horizon=10.0)
    assert_threads_equal_one_worker(spec, 16)


def test_catalogues_are_padded_with_nan_after_their_last_event() -> None:
    spec = etas.build()
    ens = spec.run(12, n_workers=2, seed=4, progress=False)
    n_events = ens["n_events"].values
    assert ens.sizes["event"] == n_events.max() > n_events.min()  # ragged indeed
    real = np.arange(ens.sizes["event"]) < n_events[:, None]
    for name in ("time", "latitude", "longitude", "magnitude", "generation"):
        values = ens[name].values
        assert not np.isnan(values[real]).any()
        assert np.isnan(values[~real]).all()
    for k, n in enumerate(n_events):
        time = ens["time"].values[k, :n]
        assert (np.diff(time) >= 0).all()  # each catalogue in time order
        assert time[0] >= 0 and time[-1] < spec.args[3]


def test_magnitudes_and_aftershock_counts_follow_the_model() -> None:
    spec = etas.build()
    model, _, observed, horizon = spec.args
    ens = spec.run(24, n_workers=4, seed=8, progress=False)
    magnitude = ens["magnitude"].values
    magnitude = magnitude[~np.isnan(magnitude)]
    b_value = np.log10(np.e) / (magnitude.mean() - model.m_c)  # Aki's estimator
    assert abs(b_value - model.b) < 0.05
    # direct aftershocks of the observed sequence (those of background events are few)
    first = (ens["generation"] == 1).sum("event").mean().item()
    expected = sum(
        model.expected_aftershocks(magnitude, -time, horizon - time)
        for time, _, _, magnitude, _ in observed
    )
    assert abs(first - expected) < 0.1 * expected
    assert model.branching_ratio() < 1.0


def test_runs_from_the_command_line(tmp_path: Path) -> None:
    argv = ["run", "etas", "-n", "3", "-j", "2", "-q", "-o", str(tmp_path), "-p", "horizon=5"]
    assert main(argv) == 0
    assert len(list(tmp_path.glob("*.nc"))) == 3
