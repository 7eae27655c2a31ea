"""``share_state=True``: the threads' copies of the state share its large arrays, read-only.

The model is shaped like a fitted weather generator: stations holding fitted arrays that
``simulate`` only reads, attributes it rebinds every realization, a small buffer it writes in
place and a lazy cache it fills.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te

try:  # the LocalCluster of the dask backend's tests (2 processes of 2 threads)
    from test_distributed import client
except pytest.skip.Exception:
    client = None

N_FITTED = 12_000  # 94 KiB: above te's sharing threshold (64 KiB)


class Station:
    def __init__(self, index: int) -> None:
        rng = np.random.default_rng(index)
        self.fitted = rng.standard_normal(N_FITTED)
        self.coeffs = rng.standard_normal((N_FITTED // 4, 4))
        self.buffer = np.zeros(8)  # small: copied per thread even when sharing
        self.T_sim: np.ndarray | None = None
        self._cache: dict[str, np.ndarray] = {}

    def run(self, rng: np.random.Generator) -> np.ndarray:
        if "scale" not in self._cache:
            self._cache["scale"] = self.coeffs.std(axis=0)
        picks = rng.integers(0, N_FITTED, self.buffer.size)
        self.buffer[:] = self.fitted[picks] * self._cache["scale"].sum()
        self.T_sim = self.buffer + rng.standard_normal(self.buffer.size)  # rebound
        return self.T_sim


class MultiSite:
    def __init__(self, n_stations: int = 5) -> None:
        self.stations = [Station(i) for i in range(n_stations)]
        self.sim: np.ndarray | None = None


def simulate(*, vgs: MultiSite) -> dict[str, Any]:
    rng = te.get_rng()
    vgs.sim = np.stack([s.run(rng) for s in vgs.stations])
    return {"sim": (("station", "value"), vgs.sim)}


def run(state: Any, simulate: Any = simulate, n: int = 12, **options: Any) -> xr.Dataset:
    options = {"n_workers": 4, "seed": 11, "progress": False, **options}
    return te.simulate_ensemble(simulate, n, state=state, inject="vgs", **options)


@pytest.mark.parametrize("workers", [1, 4])
def test_sharing_gives_bitwise_the_results_of_whole_copies(workers: int) -> None:
    state = MultiSite()
    plain = run(state, n_workers=workers)
    shared = run(state, n_workers=workers, share_state=True)
    xr.testing.assert_identical(plain, shared)
    xr.testing.assert_identical(plain, run(state, n_workers=1))


def test_the_users_state_and_its_flags_are_left_alone() -> None:
    state = MultiSite()
    state.stations[0].frozen = np.arange(20_000.0)
    state.stations[0].frozen.flags.writeable = False
    before = pickle.dumps(state)
    run(state, share_state=True)
    assert pickle.dumps(state) == before  # nothing rebound, filled or written
    assert all(s.fitted.flags.writeable for s in state.stations)
    assert not state.stations[0].frozen.flags.writeable
    assert state.sim is None and state.stations[2].T_sim is None


def test_check_says_how_much_each_thread_copies() -> None:
    state = MultiSite()
    plain = te.check(simulate, state=state, inject="vgs", sample=4, n_workers=2)
    shared = te.check(simulate, state=state, inject="vgs", sample=4, n_workers=2, share_state=True)
    assert plain.ok and shared.ok, (plain, shared)
    assert plain.state is not None and shared.state is not None
    assert shared.state.shared_arrays == 10
    assert shared.state.shared_bytes == plain.state.shareable_bytes == 5 * 2 * N_FITTED * 8
    assert shared.state.copied_bytes < 0.05 * plain.state.copied_bytes
    assert "share_state=True would share 937.5 KiB" in str(plain)
    assert "and shares 937.5 KiB (10 arrays)" in str(shared)


def rare_writer(*, vgs: MultiSite) -> dict[str, Any]:
    """Writes into fitted data on one data-dependent path only (realization 5)."""
    out = simulate(vgs=vgs)
    if te.current_realization() == 5:
        vgs.stations[3].fitted[0] = 99.0
    return out


def test_a_write_into_a_shared_array_raises_naming_it_and_changes_nothing(
    tmp_path: Path,
) -> None:
    state = MultiSite()
    plain = run(state)
    with pytest.raises(te.EnsembleError) as info:
        run(state, rare_writer, share_state=True, output_dir=tmp_path)
    assert list(info.value.failures) == [5]
    error = info.value.failures[5]
    assert isinstance(error, te.SharedStateWriteError) and isinstance(error, ValueError)
    message = str(error)
    assert "simulate wrote into state.stations[3].fitted," in message
    assert "private_state=['state.stations[*].fitted']" in message
    assert state.stations[3].fitted[0] != 99.0
    # every other realization, before and after it on its thread, is the plain run's
    written = sorted(tmp_path.glob("*.nc"))
    assert len(written) == 11
    for path in written:
        with te.netcdf_lock, xr.open_dataset(path) as ds:
            k = int(ds.attrs["threadensemble_realization"])
            assert k != 5
            np.testing.assert_array_equal(ds["sim"].values, plain["sim"].values[k])


class Alias(Station):
    def run(self, rng: np.random.Generator) -> np.ndarray:
        window = self.fitted[10:20]  # a view of a shared array
        window *= 2.0
        return super().run(rng)


def test_a_write_through_a_view_names_the_shared_array() -> None:
    state = MultiSite()
    state.stations[1] = Alias(1)
    with pytest.raises(te.EnsembleError) as info:
        run(state, share_state=True, n=2, n_workers=2)
    assert "simulate wrote into state.stations[1].fitted," in str(info.value.failures[0])


class Scratch(Station):
    """Overwrites a large work array in place every realization."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.scratch = np.zeros(N_FITTED)

    def run(self, rng: np.random.Generator) -> np.ndarray:
        np.multiply(self.fitted, rng.standard_normal(), out=self.scratch)
        return super().run(rng) + self.scratch[:8]


def test_private_state_keeps_written_arrays_per_thread() -> None:
    state = MultiSite()
    state.stations = [Scratch(i) for i in range(4)]
    plain = run(state)
    with pytest.raises(te.EnsembleError, match=r"private_state=\['state.stations\[\*\].scratch'\]"):
        run(state, share_state=True)
    for private in (["state.stations[*].scratch"], ["*.scratch"]):
        xr.testing.assert_identical(plain, run(state, share_state=True, private_state=private))
    report = te.check(
        simulate, state=state, inject="vgs", sample=2, n_workers=2, share_state=True,
        private_state=["*.scratch"],
    )  # fmt: skip
    assert report.ok and report.state is not None and report.state.shared_arrays == 8


def test_state_loaded_from_a_protocol_4_pickle() -> None:
    """Arrays unpickled from protocol <= 4 are backed by bytes and can never be writeable again."""
    state = pickle.loads(pickle.dumps(MultiSite(), protocol=4))
    assert isinstance(state.stations[0].fitted.base, bytes)
    plain = run(state)
    xr.testing.assert_identical(plain, run(state, share_state=True))
    assert isinstance(state.stations[0].fitted.base, bytes)
    assert state.stations[0].fitted.flags.writeable  # as unpickled: untouched
    with pytest.raises(te.EnsembleError, match=r"wrote into state.stations\[3\].fitted,"):
        run(state, rare_writer, share_state=True)


def mutates_objects(*, vgs: MultiSite) -> dict[str, Any]:
    table = vgs.table  # type: ignore[attr-defined]
    k = te.current_realization() or 0
    table[k]["hits"] += 1  # this thread's own dict: object arrays are never shared
    return {"hits": np.array([table[k]["hits"], te.get_rng().random()])}


def test_object_arrays_are_copied_per_thread() -> None:
    state = MultiSite(1)
    state.table = np.array([{"hits": 0} for _ in range(20_000)], dtype=object)  # type: ignore[attr-defined]
    plain = run(state, mutates_objects)
    xr.testing.assert_identical(plain, run(state, mutates_objects, share_state=True))
    assert all(d["hits"] == 0 for d in state.table[:20])  # type: ignore[attr-defined]


def test_sharing_options_are_checked_before_anything_runs() -> None:
    state = MultiSite(1)
    with pytest.raises(ValueError, match="private_state was given without share_state=True"):
        run(state, private_state=["*.scratch"])
    with pytest.raises(ValueError, match="must start with 'state' or"):
        run(state, share_state=True, private_state=["stations[0].fitted"])
    with pytest.raises(TypeError, match="private_state must be a list of paths"):
        run(state, share_state=True, private_state="*.scratch")
    with pytest.raises(TypeError, match="share_state must be True or False"):
        run(state, share_state="yes")
    with pytest.raises(ValueError, match="share_state=True was given without state"):
        te.simulate_ensemble(lambda: {"x": 1.0}, 2, share_state=True, progress=False)


@pytest.mark.skipif(client is None, reason="the dask backend needs distributed")
def test_dask_workers_share_too_with_the_same_numbers(client: Any) -> None:
    state = MultiSite()
    plain = run(state)
    xr.testing.assert_identical(plain, run(state, share_state=True, n_workers=None, client=client))
    with pytest.raises(te.EnsembleError) as info:
        run(state, rare_writer, share_state=True, n_workers=None, client=client)
    assert isinstance(info.value.failures[5], te.SharedStateWriteError)
    assert "state.stations[3].fitted" in str(info.value.failures[5])


def test_check_with_sharing_names_a_write_into_a_shared_array() -> None:
    report = te.check(rare_writer, state=MultiSite(), inject="vgs", sample=6, share_state=True)
    assert not report.ok
    assert report.causes == {te.Cause.SIMULATE_RAISED}
    assert (
        "realization 5: SharedStateWriteError: simulate wrote into state.stations[3].fitted,"
        in str(report)
    )
