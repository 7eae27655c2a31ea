"""Hidden sharing: each kind, as a careless model would have it, named by `check` with its cause
and where it is; and correct models of many shapes, which must pass, with the caller's objects
(array flags included) as they were.  Real threads, real packages written to disk."""

from __future__ import annotations

import datetime
import importlib
import pickle
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te
from threadensemble import Cause
from threadensemble._shared import fingerprint, reachable

# -- helpers -----------------------------------------------------------------------------------


def snapshot(*objects: Any) -> tuple[dict[str, str], list[tuple[str, bool]]]:
    """What the caller's objects hold, and the writeable flag of every array among them."""
    roots = {f"obj{i}": obj for i, obj in enumerate(objects)}
    flags = [(p, o.flags.writeable) for p, o in reachable(roots) if isinstance(o, np.ndarray)]
    return fingerprint(roots), flags


def run_check(simulate: Callable[..., Any], *, args: tuple[Any, ...] = (), **options: Any) -> Any:
    options.setdefault("sample", 4)
    options.setdefault("n_workers", 2)
    return te.check(simulate, args=args, **options)


def passes(simulate: Callable[..., Any], *, args: tuple[Any, ...] = (), **options: Any) -> Any:
    """Check a correct model: it passes, and leaves args and state as they were."""
    before = snapshot(args, options.get("state"))
    report = run_check(simulate, args=args, **options)
    assert report.ok, str(report)
    assert snapshot(args, options.get("state")) == before
    return report


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """Write a package of modules to disk and import it (removed from sys.modules afterwards)."""
    names: list[str] = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(name: str, modules: dict[str, str]) -> Any:
        root = tmp_path / name
        root.mkdir()
        for module, source in modules.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
        names.append(name)
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield make
    for loaded in list(sys.modules):
        if loaded.partition(".")[0] in names:
            del sys.modules[loaded]


def finding(report: Any, cause: Cause) -> str:
    """Return the detail of the report's finding of ``cause`` (it must have exactly one)."""
    details = [f.detail for f in report.findings if f.cause is cause]
    assert len(details) == 1, str(report)
    return details[0]


# -- broken models: each kind of hidden sharing, named --------------------------------------------

HELPERS = """
import random
import numpy as np

rng = np.random.default_rng(1)      # module level, in a helper module
COUNT = 0
CACHE = {}

def jitter():
    return random.gauss(0.0, 1.0)

def shared_noise(n):
    return rng.standard_normal(n)

def count():
    global COUNT
    COUNT += 1
    return COUNT

class Station:
    registry = []                   # a class attribute: shared by every instance

    def __init__(self, name):
        self.registry.append(name)

def memo_factory():
    memo = {}
    def memoized(key, make):
        return memo.setdefault(key, make())
    return memoized

memoized = memo_factory()           # a module-level function with a closure

def lookup(key, make):
    if key not in CACHE:   # filled lazily by whichever realization comes first
        CACHE[key] = make()
    return CACHE[key]
"""

SIM = """
import threadensemble as te
from . import helpers

def uses_random():
    return {"x": helpers.jitter()}

def uses_helper_rng():
    return {"x": helpers.shared_noise(3)}

def uses_counter():
    return {"x": float(helpers.count())}

def uses_registry():
    helpers.Station(str(te.current_realization()))
    return {"x": float(len(helpers.Station.registry))}

def uses_memo():
    key = int(te.get_rng().integers(0, 3))
    return {"x": helpers.memoized(key, lambda: float(te.get_rng("memo").random()))}

def uses_cache():
    key = int(te.get_rng().integers(0, 3))
    return {"x": helpers.lookup(key, lambda: float(te.get_rng("cache").random()))}
"""


@pytest.fixture
def broken(package: Callable[..., Any]) -> Any:
    package("brokenpkg", {"__init__": "", "helpers": HELPERS, "sim": SIM})
    return importlib.import_module("brokenpkg.sim")


def test_random_module_is_named_with_the_module_using_it(broken: Any) -> None:
    report = run_check(broken.uses_random)
    assert report.causes == {Cause.RANDOM_MODULE}, str(report)
    assert "random module is used in brokenpkg.helpers" in finding(report, Cause.RANDOM_MODULE)


def test_module_level_generator_in_a_helper_module_has_its_own_cause(broken: Any) -> None:
    report = run_check(broken.uses_helper_rng)
    assert report.causes == {Cause.SHARED_GENERATOR}, str(report)
    assert "brokenpkg.helpers.rng" in finding(report, Cause.SHARED_GENERATOR)
    assert "rng = threadensemble.rng" in report.findings[0].advice


def test_global_counter_is_named(broken: Any) -> None:
    report = run_check(broken.uses_counter)
    assert report.causes == {Cause.MODULE_STATE_CHANGED}, str(report)
    assert finding(report, Cause.MODULE_STATE_CHANGED).startswith("brokenpkg.helpers.COUNT: 0 ->")


def test_lazily_filled_cache_in_a_helper_module_is_named(broken: Any) -> None:
    report = run_check(broken.uses_cache)
    assert report.causes == {Cause.MODULE_STATE_CHANGED}, str(report)
    assert "brokenpkg.helpers.CACHE" in finding(report, Cause.MODULE_STATE_CHANGED)


def test_class_attribute_and_module_function_closure_are_named(broken: Any) -> None:
    report = run_check(broken.uses_registry)
    assert report.causes == {Cause.MODULE_STATE_CHANGED}, str(report)
    assert "brokenpkg.helpers.Station.registry" in finding(report, Cause.MODULE_STATE_CHANGED)
    report = run_check(broken.uses_memo)
    assert report.causes == {Cause.MODULE_STATE_CHANGED}, str(report)
    detail = finding(report, Cause.MODULE_STATE_CHANGED)
    assert detail.startswith("brokenpkg.helpers.memoized.<closure memo>")


class Level:
    def __init__(self, depth: int) -> None:
        self.inner = Level(depth - 1) if depth > 1 else None
        self.values = np.zeros(8)


def writes_deep(model: Level) -> dict[str, Any]:
    leaf = model.inner.inner.inner.inner  # type: ignore[union-attr]
    leaf.values += te.get_rng().random(8)  # five levels down in args
    return {"x": leaf.values.copy()}


def test_write_five_levels_deep_in_args_is_caught_at_the_line() -> None:
    model = Level(5)
    report = run_check(writes_deep, args=(model,))
    assert report.causes == {Cause.SHARED_ARRAY_WRITE}, str(report)
    assert "leaf.values += te.get_rng().random(8)" in finding(report, Cause.SHARED_ARRAY_WRITE)
    unprotected = run_check(writes_deep, args=(Level(5),), protect_shared=False)
    assert unprotected.causes == {Cause.SHARED_ARRAY_WRITE}, str(unprotected)
    detail = finding(unprotected, Cause.SHARED_ARRAY_WRITE)
    assert detail.startswith("args[0].inner.inner.inner.inner.values was written")
    assert model.values.flags.writeable and (model.inner.inner.inner.inner.values == 0).all()


def closure_writer() -> Callable[[], dict[str, Any]]:
    table = np.zeros(4)

    def simulate() -> dict[str, Any]:
        table[:] += te.get_rng().random(4)  # the closure is shared by every thread
        return {"x": table.copy()}

    return simulate


def closure_cache() -> Callable[[], dict[str, Any]]:
    cache: dict[int, float] = {}

    def simulate() -> dict[str, Any]:
        key = int(te.get_rng().integers(0, 3))
        return {"x": cache.setdefault(key, float(te.get_rng("c").random()))}

    return simulate


def test_closures_are_named() -> None:
    report = run_check(closure_writer())
    assert report.causes == {Cause.SHARED_ARRAY_WRITE}, str(report)
    assert "table[:] += te.get_rng().random(4)" in finding(report, Cause.SHARED_ARRAY_WRITE)
    unprotected = run_check(closure_writer(), protect_shared=False)
    assert finding(unprotected, Cause.SHARED_ARRAY_WRITE).startswith(
        "simulate.<closure table> was written"
    )
    report = run_check(closure_cache())
    assert report.causes == {Cause.CLOSURE_CHANGED}, str(report)
    assert finding(report, Cause.CLOSURE_CHANGED).startswith("simulate.<closure cache>: dict of 0")


class WithDataset:
    def __init__(self) -> None:
        self.sub = types_namespace(ds=xr.Dataset({"v": ("x", np.zeros(5))}))


def types_namespace(**attributes: Any) -> Any:
    import types

    return types.SimpleNamespace(**attributes)


def writes_dataset(model: WithDataset) -> dict[str, Any]:
    model.sub.ds["v"].values[:] = te.get_rng().random(5)
    return {"x": model.sub.ds["v"].values.copy()}


def test_write_into_a_dataset_inside_the_model_is_prevented() -> None:
    model = WithDataset()
    report = run_check(writes_dataset, args=(model,))
    assert report.causes == {Cause.SHARED_ARRAY_WRITE}, str(report)
    assert 'model.sub.ds["v"].values[:] =' in finding(report, Cause.SHARED_ARRAY_WRITE)
    assert (model.sub.ds["v"].values == 0).all() and model.sub.ds["v"].values.flags.writeable


class WithGenerator:
    def __init__(self) -> None:
        self.rng = np.random.default_rng(3)


def draws_from_model_generator(model: WithGenerator) -> dict[str, Any]:
    return {"x": model.rng.standard_normal(3)}


def test_generator_held_by_the_model_is_named() -> None:
    report = run_check(draws_from_model_generator, args=(WithGenerator(),))
    assert report.causes == {Cause.SHARED_GENERATOR}, str(report)
    assert finding(report, Cause.SHARED_GENERATOR).startswith("args[0].rng changed state")


VARWG_INIT = """
import numpy as np

rng = np.random.default_rng(42)     # the library's own generator, as varwg has

def get_rng():
    return rng

from .core import VG
"""

VARWG_CORE = """
import numpy as np
from . import get_rng                # a reference of its own: route_rng must replace it too

class VG:
    def __init__(self, n_sites):
        self.means = np.linspace(0.0, 1.0, n_sites)

    def simulate(self, n_days):
        return self.means + get_rng().standard_normal((n_days, self.means.size))
"""


def weather(vg: Any) -> dict[str, Any]:
    return {"x": (("day", "site"), vg.simulate(5))}


def test_unrouted_library_generator_is_named_and_route_rng_fixes_it(
    package: Callable[..., Any],
) -> None:
    lib = package("fakevarwg", {"__init__": VARWG_INIT, "core": VARWG_CORE})
    vg = lib.VG(3)
    report = run_check(weather, args=(vg,))
    assert report.causes == {Cause.LIBRARY_GENERATOR}, str(report)
    detail = finding(report, Cause.LIBRARY_GENERATOR)
    assert detail.startswith("fakevarwg.rng (of module fakevarwg) changed state")
    assert "threadensemble.route_rng(fakevarwg)" in detail
    original = lib.rng
    with te.route_rng(lib):
        assert lib.core.get_rng is lib.get_rng and lib.rng is not original
        passes(weather, args=(vg,))
        one = te.simulate_ensemble(weather, 6, args=(vg,), seed=1, n_workers=1, progress=False)
        four = te.simulate_ensemble(weather, 6, args=(vg,), seed=1, n_workers=4, progress=False)
        xr.testing.assert_identical(one, four)
    assert lib.rng is original and lib.core.get_rng() is original

    routed = te.route_rng(lib)(weather)  # as a decorator of simulate
    passes(routed, args=(vg,))
    assert lib.rng is original


def test_route_rng_is_reentrant_across_threads(package: Callable[..., Any]) -> None:
    lib = package("fakevarwg2", {"__init__": VARWG_INIT, "core": VARWG_CORE})
    original, barrier = lib.rng, threading.Barrier(3)

    def nested() -> None:
        with te.route_rng(lib):
            barrier.wait(timeout=30)  # all three routes active at once
            assert isinstance(lib.rng, te.ThreadLocalGenerator)
            barrier.wait(timeout=30)

    threads = [threading.Thread(target=nested) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert lib.rng is original
    with te.route_rng(lib), pytest.raises(ValueError, match="already routed to stream None"):
        te.route_rng(lib, stream="varwg").__enter__()
    with pytest.raises(TypeError, match="nothing to route"):
        te.route_rng(np.random).__enter__()


class CopiesOnlyInTheCallingThread:
    """A state whose deepcopy fails in any other thread (as objects bound to a thread do)."""

    def __init__(self, caller: int) -> None:
        self.caller = caller
        self.buffer = np.zeros(3)

    def __deepcopy__(self, memo: dict[int, Any]) -> CopiesOnlyInTheCallingThread:
        if threading.get_ident() != self.caller:
            raise RuntimeError("bound to the thread that made it")
        new = CopiesOnlyInTheCallingThread(self.caller)
        new.buffer = self.buffer.copy()
        return new


def fills(*, work: CopiesOnlyInTheCallingThread) -> dict[str, Any]:
    work.buffer[:] = te.get_rng().random(3)
    return {"x": work.buffer.copy()}


def test_a_threaded_pass_that_could_not_run_fails_the_check() -> None:
    state = CopiesOnlyInTheCallingThread(threading.get_ident())
    report = run_check(fills, state=state, inject="work")
    assert not report.ok
    assert report.causes == {Cause.WORKER_INIT_FAILED, Cause.NOT_RUN}, str(report)
    detail = finding(report, Cause.WORKER_INIT_FAILED)
    assert (
        "WorkerInitError: a worker thread could not deep-copy the state: RuntimeError: " in detail
    )
    assert "bound to the thread that made it" in detail
    assert finding(report, Cause.NOT_RUN).startswith("realizations [0, 1, 2, 3] did not run")


def test_findings_are_recorded_once() -> None:
    def broken() -> dict[str, Any]:
        raise KeyError("missing station")

    report = run_check(broken, sample=3)
    details = [f.detail for f in report.findings]
    assert len(details) == 3 and len(set(details)) == 3  # one per realization, not per run
    assert all("KeyError: 'missing station'" in d for d in details)


# -- correct models of many shapes: they pass, and the caller's objects are unchanged ----------


def with_nat() -> dict[str, Any]:
    days = np.datetime64("2000-01-01") + te.get_rng().integers(0, 100, 4).astype("timedelta64[D]")
    days[1] = np.datetime64("NaT")
    values = te.get_rng().random(4)
    values[2] = np.nan
    return {"when": ("event", days), "size": ("event", values)}


def test_datetimes_with_nat_and_nan_pass() -> None:
    passes(with_nat)


class ObjectModel:
    def __init__(self) -> None:
        self.dates = np.array([datetime.datetime(2000, 1, 1 + d) for d in range(30)], dtype=object)
        self.labels = np.array(["a", None, "c"], dtype=object)


def object_arrays(model: ObjectModel) -> dict[str, Any]:
    pick = te.get_rng().integers(0, model.dates.size, 3)
    names = np.array([str(model.dates[i].date()) for i in pick] + [None], dtype=object)
    return {"date": ("k", names), "label": ("j", model.labels.copy())}


def test_object_dtype_arrays_pass() -> None:
    passes(object_arrays, args=(ObjectModel(),))


class FittedWeatherModel:
    """What a fitted multisite weather generator holds: parameters, dates, a climate dataset."""

    def __init__(self, n_sites: int = 4, n_days: int = 400) -> None:
        fit = np.random.default_rng(0)
        self.dates = np.array(
            [datetime.datetime(2000, 1, 1) + datetime.timedelta(days=d) for d in range(n_days)],
            dtype=object,
        )
        self.times = np.arange("2000-01-01", n_days, dtype="datetime64[D]")
        self.means = fit.normal(10.0, 3.0, (n_sites, 365))
        self.cholesky = np.linalg.cholesky(np.eye(n_sites) + 0.5)
        self.sites = [f"site{i}" for i in range(n_sites)]
        self.climate = xr.Dataset({"t": (("site", "doy"), self.means)}, coords={"site": self.sites})
        self.cache_view = self.means[:, :100]


def weather_day(model: FittedWeatherModel) -> dict[str, Any]:
    noise = model.cholesky @ te.get_rng().standard_normal((model.means.shape[0], 30))
    t = model.climate["t"].values[:, :30] + noise
    return {"t": (("site", "time"), t), "time": ("time", model.times[:30])}


def cached(model: Any) -> Any:
    return pickle.loads(pickle.dumps(model, protocol=4))  # as a model loaded from a cache


def test_model_unpickled_from_bytes_passes_and_keeps_its_flags() -> None:
    model = cached(FittedWeatherModel())
    assert isinstance(model.means.base, bytes)
    report = passes(weather_day, args=(model,))
    assert "args[0].means" in report.unprotected and "args[0].times" in report.unprotected
    assert "left writeable" in str(report)
    before = snapshot(model)
    with pytest.warns(RuntimeWarning, match="left writeable"):
        ens = te.simulate_ensemble(
            weather_day, 4, args=(model,), n_workers=2, seed=1, protect_shared=True, progress=False
        )
    assert ens.sizes["realization"] == 4  # the ensemble is not lost to restoring flags
    assert snapshot(model) == before


def writes_cached_means(model: FittedWeatherModel) -> dict[str, Any]:
    model.means[0, 0] += te.get_rng().random()
    return {"x": np.array(model.means[0, 0])}


def test_write_into_an_array_that_cannot_be_protected_is_still_named() -> None:
    report = run_check(writes_cached_means, args=(cached(FittedWeatherModel()),))
    assert report.causes == {Cause.SHARED_ARRAY_WRITE}, str(report)
    assert finding(report, Cause.SHARED_ARRAY_WRITE).startswith("args[0].means was written")


def catalogue() -> dict[str, Any]:
    n = int(te.get_rng().integers(1, 6))
    return {"magnitude": ("event", te.get_rng().random(n))}


def test_ragged_passes() -> None:
    passes(catalogue, ragged=("event",))


def spawned() -> dict[str, Any]:
    # numpy's recommended way to derive independent generators.  NEEDS the fresh SeedSequence
    # that threadensemble._realize.realize builds for each run of a realization (Generator.spawn
    # counts children on its seed sequence; reusing one object made a second run differ).
    children = te.get_rng().spawn(2)
    return {"a": children[0].random(3), "b": children[1].random(3)}


def test_spawned_generators_pass() -> None:
    passes(spawned)


def named_streams(scale: float) -> dict[str, Any]:
    wind, rain = te.get_rng("wind").random(3), te.get_rng("rain").random(2)
    return {"wind": ("w", scale * wind), "rain": ("r", rain)}


def test_named_streams_and_a_users_seed_scheme_pass() -> None:
    passes(named_streams, args=(2.0,))
    passes(named_streams, args=(2.0,), seed_for=lambda k: 1000 * k)


def big_read(table: np.ndarray) -> dict[str, Any]:
    rows = te.get_rng().integers(0, table.shape[0], 5)
    return {"x": table[rows].sum(axis=1)}


def test_big_shared_arrays_pass() -> None:
    table = np.random.default_rng(0).random((1000, 1000))  # 8 MB, never copied
    report = passes(big_read, args=(table,))
    assert report.protected_arrays == 1 and report.walked_bytes >= table.nbytes


def closure_over_read_only_data() -> Callable[[], dict[str, Any]]:
    weights = np.linspace(0.0, 1.0, 6)
    names = ("a", "b")

    def simulate() -> dict[str, Any]:
        return {"x": weights * te.get_rng().random(6), "n": np.array(len(names))}

    return simulate


def test_closure_over_read_only_data_passes() -> None:
    simulate = closure_over_read_only_data()
    report = passes(simulate)
    assert report.protected_arrays == 1
    assert simulate.__closure__ is not None
    assert simulate.__closure__[1].cell_contents.flags.writeable


@dataclass
class Work:
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(5))
    history: list[int] = field(default_factory=list)


def dataclass_state(*, work: Work) -> dict[str, Any]:
    work.buffer[:] = te.get_rng().random(5)
    work.history.append(0)  # grows, but nothing reads it
    return {"x": work.buffer.copy()}


def test_dataclass_state_passes() -> None:
    state = Work()
    passes(dataclass_state, state=state, inject="work")
    assert state.history == [] and (state.buffer == 0).all()


def from_dataset(climate: xr.Dataset) -> xr.Dataset:
    noise = te.get_rng().standard_normal(climate["t"].shape)
    return (climate["t"] + noise).to_dataset(name="t")


def test_xarray_inputs_pass() -> None:
    climate = xr.Dataset(
        {"t": (("site", "time"), np.zeros((2, 10)))},
        coords={"time": np.arange("2000-01-01", 10, dtype="datetime64[D]"), "site": ["a", "b"]},
    )
    report = passes(from_dataset, args=(climate,))
    assert report.protected_arrays >= 1


APP = """
import numpy as np
import threadensemble as te

class Model:
    def __init__(self):
        self.calls = 0

model = Model()                     # the script's model, also passed in args

def simulate(m):
    m.calls += 1
    return {"x": np.array(m.calls * te.get_rng().random())}
"""


def test_an_object_both_global_and_in_args_is_named_once_under_args(
    package: Callable[..., Any],
) -> None:
    app = package("scriptlike", {"__init__": "", "app": APP})
    app = importlib.import_module("scriptlike.app")
    report = run_check(app.simulate, args=(app.model,))
    assert report.causes == {Cause.SHARED_OBJECT_CHANGED}, str(report)
    assert finding(report, Cause.SHARED_OBJECT_CHANGED).startswith("args[0].calls: 0 -> ")


class Flips:
    def __init__(self) -> None:
        self.runs = 0


def missing_where_the_state_says(*, flips: Flips) -> dict[str, Any]:
    flips.runs += 1  # carried over: which value is missing depends on the runs before
    values = te.get_rng().random(4)
    values[flips.runs % 4] = np.nan
    days = np.arange("2000-01-01", 4, dtype="datetime64[D]")
    days[(flips.runs + 1) % 4] = np.datetime64("NaT")
    return {"v": ("k", values), "d": ("k", days)}


def test_missing_values_in_other_places_are_differences() -> None:
    report = run_check(missing_where_the_state_says, state=Flips(), inject="flips")
    assert report.causes == {Cause.STATE_CARRIED_OVER}, str(report)
    assert {d.variable for d in report.differences} == {"v", "d"}
    assert all(d.fraction == 0.5 for d in report.differences)


UNROUTABLE = """
import random
import numpy as np

LEGACY = np.random.RandomState(4)           # legacy numpy generator
PLAIN = random.Random(5)                    # the random module's class
GENERATORS = {"main": np.random.default_rng(1)}   # a Generator inside a dict


def legacy(n):
    return LEGACY.random_sample(n)


def plain(n):
    return np.array([PLAIN.random() for _ in range(n)])


def in_dict(n):
    return GENERATORS["main"].random(n)


def by_default(n, rng=np.random.default_rng(2)):   # a Generator bound as a default
    return rng.random(n)


class Model:
    def run(self, how, n):
        return globals()[how](n)
"""


@pytest.mark.parametrize(
    ("function", "path", "why"),
    [
        ("legacy", "unroutable.LEGACY", "it is a numpy.random.RandomState"),
        ("plain", "unroutable.PLAIN", "it is a random.Random"),
        ("in_dict", "unroutable.GENERATORS['main']", "held inside another object"),
        ("by_default", "unroutable.by_default.__defaults__[0]", "bound as a default argument"),
    ],
)
def test_generators_route_rng_cannot_route_are_named_without_recommending_it(
    package: Callable[..., Any], function: str, path: str, why: str
) -> None:
    lib = package("unroutable", {"__init__": UNROUTABLE})

    def simulate(model: Any) -> dict[str, Any]:
        return {"x": model.run(function, 3)}

    report = run_check(simulate, args=(lib.Model(),))
    assert report.causes == {Cause.SHARED_GENERATOR}, str(report)
    detail = finding(report, Cause.SHARED_GENERATOR)
    assert detail.startswith(f"{path} (of module unroutable) changed state"), detail
    assert why in detail and "threadensemble.get_rng()" in detail
    assert "route it with" not in str(report)


class Seeds:
    """A model that hands out child streams by spawning from its own, shared by every thread."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(3)
        self.ss = np.random.SeedSequence(4)


def spawns_a_generator(model: Seeds) -> dict[str, Any]:
    return {"x": model.rng.spawn(1)[0].random(2)}


def spawns_a_seed_sequence(model: Seeds) -> dict[str, Any]:
    return {"x": np.random.default_rng(model.ss.spawn(1)[0]).random(2)}


@pytest.mark.parametrize(
    ("simulate", "path"),
    [(spawns_a_generator, "args[0].rng"), (spawns_a_seed_sequence, "args[0].ss")],
)
def test_spawning_from_a_shared_generator_or_seed_sequence_is_named(
    simulate: Callable[..., Any], path: str
) -> None:
    report = run_check(simulate, args=(Seeds(),))
    assert report.causes == {Cause.SHARED_GENERATOR}, str(report)
    assert finding(report, Cause.SHARED_GENERATOR).startswith(f"{path} changed state")


COUNTER = """
import itertools

TICKETS = itertools.count()


class Model:
    def run(self):
        return next(TICKETS)
"""


def test_a_module_level_itertools_count_is_named(package: Callable[..., Any]) -> None:
    lib = package("ticketing", {"__init__": COUNTER})

    def simulate(model: Any) -> dict[str, Any]:
        return {"x": np.array([model.run()])}

    report = run_check(simulate, args=(lib.Model(),))
    assert report.causes == {Cause.MODULE_STATE_CHANGED}, str(report)
    assert finding(report, Cause.MODULE_STATE_CHANGED).startswith("ticketing.TICKETS: count(0) ->")
