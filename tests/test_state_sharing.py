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

    def rare_local_writer(*, vgs: MultiSite) -> dict[str, Any]:
        """rare_writer, sent to the workers by value (cloudpickle: no source file there)."""
        out = simulate(vgs=vgs)
        if te.current_realization() == 5:
            vgs.stations[3].fitted[0] = 99.0
        return out

    for writer in (rare_writer, rare_local_writer):
        with pytest.raises(te.EnsembleError) as info:
            run(state, writer, share_state=True, n_workers=None, client=client)
        assert isinstance(info.value.failures[5], te.SharedStateWriteError)
        assert "simulate wrote into state.stations[3].fitted," in str(info.value.failures[5])


def test_check_with_sharing_names_a_write_into_a_shared_array() -> None:
    report = te.check(rare_writer, state=MultiSite(), inject="vgs", sample=6, share_state=True)
    assert not report.ok
    assert report.causes == {te.Cause.SIMULATE_RAISED}
    assert (
        "realization 5: SharedStateWriteError: simulate wrote into state.stations[3].fitted,"
        in str(report)
    )


class Held:
    """Large arrays held in a list, twice under two names, and in an xarray Dataset."""

    def __init__(self) -> None:
        self.big = np.arange(20_000.0)
        self.alias = self.big
        self.listed = [np.arange(20_000.0)]
        self.ds = xr.Dataset({"v": ("t", np.arange(20_000.0))})


def add_to_listed(held: Held) -> None:
    held.listed[0] += 1.0


def write_alias(held: Held) -> None:
    held.alias[3] = 5.0


def write_through_loc(held: Held) -> None:
    held.ds["v"].loc[{"t": 0}] = 1.0  # xarray replaces numpy's error by its own


@pytest.mark.parametrize(
    ("write", "path", "hint"),
    [
        (add_to_listed, "state.listed[0]", "state.listed[*]"),
        (write_alias, "state.alias", "state.alias"),
        (write_through_loc, "state.ds['v'].values", "state.ds['v'].values"),
    ],
)
def test_every_kind_of_write_into_a_shared_array_names_the_path_it_used(
    write: Any, path: str, hint: str
) -> None:
    def writes(*, held: Held) -> dict[str, Any]:
        write(held)
        return {"x": te.get_rng().random()}

    with pytest.raises(te.EnsembleError) as info:
        te.simulate_ensemble(
            writes, 2, state=Held(), inject="held", share_state=True, n_workers=2, progress=False
        )
    error = info.value.failures[0]
    assert isinstance(error, te.SharedStateWriteError), error
    assert f"simulate wrote into {path}," in str(error)
    assert f"private_state=[{hint!r}]" in str(error)


class Model:
    def __init__(self) -> None:
        self.t = np.zeros(3)


def copies_into_the_model(model: Model, *, held: Held) -> dict[str, Any]:
    model.t[0] = held.big[0]  # reads the shared state, writes into the shared context
    return {"x": 1.0}


def copies_into_the_table(table: np.ndarray, *, held: Held) -> dict[str, Any]:
    table[0] = held.big[1]
    return {"x": 1.0}


def test_a_write_into_a_read_only_argument_is_not_blamed_on_the_state() -> None:
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    for function, options in [
        (copies_into_the_model, {"args": (Model(),), "protect_shared": True}),
        (copies_into_the_table, {"args": (frozen,)}),  # the caller's own read-only array
    ]:
        with pytest.raises(te.EnsembleError) as info:
            te.simulate_ensemble(
                function, 1, state=Held(), inject="held", share_state=True, progress=False,
                **options,
            )  # fmt: skip
        error = info.value.failures[0]
        assert type(error) is ValueError and str(error) == "assignment destination is read-only"
        assert "state.big" not in str(info.value)
        assert not any("private_state" in note for note in getattr(error, "__notes__", []))


def test_worker_processes_name_a_write_into_a_shared_array() -> None:
    def fills_work(*, held: dict[str, Any]) -> dict[str, Any]:  # sent by value: no source there
        held["work"]["w"][:] = te.get_rng().random()
        return {"x": held["work"]["w"][:3].copy()}

    state = {"big": np.arange(20_000.0), "work": {"w": np.zeros(20_000)}}
    with pytest.raises(te.EnsembleError) as info:
        te.simulate_ensemble(
            fills_work, 2, state=state, inject="held", share_state=True, n_workers=2,
            backend="processes", progress=False,
        )  # fmt: skip
    error = info.value.failures[0]
    assert isinstance(error, te.SharedStateWriteError), error
    assert "simulate wrote into state['work']['w']," in str(error)


def add_scratch(*, vgs: MultiSite) -> None:
    for station in vgs.stations:
        station.scratch = np.zeros(N_FITTED)  # type: ignore[attr-defined]


def test_a_private_state_pattern_that_matches_no_array_is_refused(tmp_path: Path) -> None:
    state = MultiSite(2)
    unmatched = r"pattern '\*.scratch' matches no array of the state .*state.stations\[0\].fitted"
    with pytest.raises(ValueError, match=unmatched):
        run(state, share_state=True, private_state=["*.scratch"], output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was touched
    with pytest.raises(ValueError, match=unmatched):
        te.check(simulate, state=state, inject="vgs", share_state=True, private_state=["*.scratch"])
    with pytest.raises(ValueError, match=unmatched):  # checked after the warm-up
        run(state, share_state=True, private_state=["*.scratch"], warmup=True)
    # a warm-up may create the arrays a pattern names
    plain = run(state, warmup=add_scratch)
    shared = run(state, share_state=True, private_state=["*.scratch"], warmup=add_scratch)
    xr.testing.assert_identical(plain, shared)
