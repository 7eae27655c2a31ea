"""The thread-safety check on deliberately broken models, each reported with its cause."""

import itertools
import pickle
import random
import threading
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te
from threadensemble import Cause


class Model:
    def __init__(self) -> None:
        self.weights = np.linspace(0.0, 1.0, 50)
        self.calls = 0


def correct(model: Model, *, buf: np.ndarray) -> dict[str, Any]:
    buf[:] = model.weights * te.get_rng().standard_normal(model.weights.size)
    return {"x": ("cell", buf.copy())}


def writes_shared_array(model: Model, *, buf: np.ndarray) -> dict[str, Any]:
    model.weights *= 1.01  # in-place write into the shared model
    return {"x": ("cell", model.weights * te.get_rng().random())}


CACHE: dict[int, float] = {}


def module_cache(model: Model, *, buf: np.ndarray) -> dict[str, Any]:
    key = int(te.get_rng().integers(0, 3))
    if key not in CACHE:  # filled by whichever realization comes first
        CACHE[key] = float(te.get_rng("cache").random())
    return {"x": np.array(CACHE[key])}


def global_numpy_random(model: Model, *, buf: np.ndarray) -> dict[str, Any]:
    return {"x": ("cell", np.random.standard_normal(model.weights.size))}


def counts_calls(model: Model, *, buf: np.ndarray) -> dict[str, Any]:
    model.calls += 1  # attribute of the shared model
    return {"x": np.array(model.calls * te.get_rng().random())}


class LazyTable:
    """State that fills a random table on first use (drawing from the realization's stream)."""

    def __init__(self) -> None:
        self.table: np.ndarray | None = None


def lazy_first_run(model: Model, *, buf: LazyTable) -> dict[str, Any]:
    if buf.table is None:
        buf.table = te.get_rng().random(5)  # consumes numbers on the first run only
    return {"x": ("k", buf.table * te.get_rng().random())}


def carries_over(model: Model, *, buf: np.ndarray) -> dict[str, Any]:
    buf += te.get_rng().random(buf.size)  # accumulates instead of resetting
    return {"x": ("cell", buf.copy())}


def run_check(simulate: Any, state: Any = None, **options: Any) -> te.CheckReport:
    state = np.zeros(50) if state is None else state
    return te.check(
        simulate, args=(Model(),), state=state, inject="buf", sample=6, n_workers=3, **options
    )


def test_correct_model_passes() -> None:
    report = run_check(correct)
    assert report.ok, str(report)
    assert report.protected_arrays == 1
    assert "passed" in str(report)
    report.raise_if_failed()


def test_in_place_write_to_shared_array_is_caught_at_the_line() -> None:
    model = Model()
    report = te.check(
        writes_shared_array, args=(model,), state=np.zeros(50), inject="buf", sample=4, n_workers=2
    )
    assert Cause.SHARED_ARRAY_WRITE in report.causes
    assert "test_check.py" in str(report) and "model.weights *= 1.01" in str(report)
    assert model.weights.flags.writeable, "flags are restored afterwards"
    np.testing.assert_array_equal(model.weights, np.linspace(0.0, 1.0, 50))


def test_module_level_cache_is_named() -> None:
    CACHE.clear()
    report = run_check(module_cache)
    assert Cause.MODULE_STATE_CHANGED in report.causes
    assert "test_check.CACHE" in str(report)


def test_global_numpy_random_is_named() -> None:
    report = run_check(global_numpy_random)
    assert Cause.GLOBAL_NUMPY_RANDOM in report.causes
    assert not report.ok
    with pytest.raises(te.ThreadSafetyError, match=r"global numpy\.random"):
        report.raise_if_failed()


def test_mutated_attribute_of_shared_model_is_named() -> None:
    report = run_check(counts_calls)
    assert Cause.SHARED_OBJECT_CHANGED in report.causes
    assert "args[0].calls: 0 -> " in str(report)


def test_first_run_effect_is_recognised_and_warmup_fixes_it() -> None:
    report = run_check(lazy_first_run, state=LazyTable())
    assert Cause.FIRST_RUN_DIFFERS in report.causes
    assert Cause.STATE_CARRIED_OVER not in report.causes
    assert "warmup=True" in str(report)
    assert run_check(lazy_first_run, state=LazyTable(), warmup=True).ok


def test_warmup_makes_the_ensemble_independent_of_the_worker_count() -> None:
    def ensemble(n_workers: int, warmup: bool) -> Any:
        barrier = threading.Barrier(n_workers)

        def together(model: Model, *, buf: LazyTable) -> dict[str, Any]:
            k = te.current_realization()  # None during the warm-up
            if k is not None and k < n_workers:
                barrier.wait(timeout=30)  # realizations 0..n-1 run on n distinct fresh copies
            return lazy_first_run(model, buf=buf)

        together.__qualname__ = "together"
        return te.simulate_ensemble(
            together, 12, args=(Model(),), state=LazyTable(), inject="buf", seed=1,
            n_workers=n_workers, warmup=warmup, progress=False,
        )  # fmt: skip

    assert not ensemble(1, False).identical(ensemble(3, False))
    assert ensemble(1, True).identical(ensemble(3, True))


def test_state_carried_over_is_named() -> None:
    report = run_check(carries_over)
    assert Cause.STATE_CARRIED_OVER in report.causes
    assert any(d.comparison == "run twice in a row on the same state" for d in report.differences)


def test_differences_are_reported_per_realization_and_variable() -> None:
    report = run_check(carries_over)
    diff = report.differences[0]
    assert diff.variable == "x"
    assert 0 < diff.fraction <= 1
    assert diff.max_abs_diff > 0


def test_exceptions_are_reported() -> None:
    def broken(model: Model, *, buf: np.ndarray) -> dict[str, Any]:
        raise KeyError("missing station")

    report = run_check(broken)
    assert report.causes == {Cause.SIMULATE_RAISED}
    assert "KeyError: 'missing station'" in str(report)


def test_check_needs_two_threads() -> None:
    with pytest.raises(ValueError, match="n_workers must be >= 2"):
        te.check(correct, args=(Model(),), state=np.zeros(50), inject="buf", n_workers=1)


def test_spec_check() -> None:
    spec = te.ModelSpec(correct, args=(Model(),), state=np.zeros(50), inject="buf")
    assert spec.check(sample=4, n_workers=2).ok


def test_check_takes_the_seed_scheme_of_simulate_ensemble() -> None:
    report = run_check(correct, seed_for=lambda k: 1000 * k)
    assert report.ok, str(report)
    with pytest.raises(ValueError, match="give seed or seed_for, not both"):
        run_check(correct, seed=1, seed_for=lambda k: 1000 * k)


@pytest.mark.parametrize(
    ("sample", "error"), [(0, ValueError), (1.5, TypeError), (True, TypeError)]
)
def test_a_bad_sample_names_sample(sample: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="sample must be an int >= 1"):
        te.check(lambda: {"x": np.zeros(1)}, sample=sample)  # type: ignore[arg-type]


class CachedModel:
    """A model loaded from a protocol-4 pickle (its arrays cannot be made read-only)."""

    def __init__(self) -> None:
        self.means = np.zeros(2000)
        self.scratch = np.zeros(2000)


def writes_deep_in_scratch(model: CachedModel) -> dict[str, Any]:
    model.scratch[1997] += 1.0  # a write the read-only protection cannot stop
    return {"x": te.get_rng().random()}


def test_a_check_over_its_budget_fails_and_says_how_to_raise_it() -> None:
    model = pickle.loads(pickle.dumps(CachedModel(), protocol=4))
    report = te.check(
        writes_deep_in_scratch, args=(model,), sample=2, n_workers=2, max_bytes=20_000
    )  # room for one of the two arrays
    assert not report.ok and report.causes == {te.Cause.NOT_FINGERPRINTED}, str(report)
    assert "args[0].scratch" in str(report) and "max_bytes=" in str(report)
    with pytest.raises(te.ThreadSafetyError, match="raise the budget"):
        report.raise_if_failed()
    found = te.check(writes_deep_in_scratch, args=(model,), sample=2, n_workers=2)
    assert te.Cause.SHARED_ARRAY_WRITE in found.causes, str(found)
    many = [[i] for i in range(3000)]
    counted = te.check(
        lambda m: {"x": te.get_rng().random()},
        args=(many,),
        sample=2,
        n_workers=2,
        max_objects=1000,
    )
    assert counted.causes == {te.Cause.NOT_FINGERPRINTED}, str(counted)
    assert "max_objects=1,000" in str(counted)
    with pytest.raises(ValueError, match="max_objects must be an int >= 1"):
        te.check(writes_deep_in_scratch, args=(model,), max_objects=0)


class Link:
    def __init__(self, next: "Link | None") -> None:
        self.next = next
        self.count = 0
        self.table = np.zeros(5000)  # 40 kB, read-only during the check


def deep_chain(depth: int) -> Link:
    head = None
    for _ in range(depth):
        head = Link(head)
    assert head is not None
    return head


def last_link(head: Link) -> Link:
    while head.next is not None:
        head = head.next
    return head


def test_a_change_deep_in_a_chain_of_objects_is_named_by_its_whole_path() -> None:
    """The check's fingerprints share the prefixes of deep paths: memory linear in the depth."""
    head = deep_chain(3000)

    def counts(model: Link) -> dict[str, Any]:
        last_link(model).count += 1
        return {"x": te.get_rng().random(2)}

    report = te.check(counts, args=(head,), sample=2, n_workers=2, max_bytes=10**9)
    assert report.causes == {Cause.SHARED_OBJECT_CHANGED}, str(report)[:2000]
    assert "args[0]" + ".next" * 2999 + ".count: 0 -> " in str(report)
    # An array over the budget, deep down, that was read-only: named whole as well.
    # max_bytes: room for the deepest table (walked first) only
    passed = te.check(
        lambda model: {"x": te.get_rng().random(2)},
        args=(deep_chain(60),),
        sample=2,
        n_workers=2,
        max_bytes=40_000,
    )
    assert passed.ok and passed.budget_hit, str(passed)
    expected = {"args[0]" + ".next" * k + ".table" for k in range(59)}
    assert set(passed.unhashed_read_only) == expected


def calibration_attrs(where: str) -> Any:
    """A model whose attributes (not its data) come from a generator nothing reseeds."""
    hidden = random.Random(1)  # inside a function: not watched, found by the outputs only

    def simulate() -> xr.Dataset:
        ds = xr.Dataset({"x": ("i", te.get_rng().random(2))})
        if where == "dataset":
            ds.attrs["calibration"] = hidden.random()
        else:
            ds["x"].attrs["calibration"] = np.array([hidden.random()])
        return ds

    return simulate


@pytest.mark.parametrize("where", ["dataset", "variable"])
def test_outputs_that_differ_in_attributes_only_fail(where: str) -> None:
    report = te.check(calibration_attrs(where), sample=3, n_workers=2)
    assert not report.ok, str(report)
    assert "attrs['calibration']" in str(report)


def test_none_is_not_nan_in_object_outputs() -> None:
    calls = itertools.count()

    def simulate() -> dict[str, Any]:  # NaN in the first run of each realization, then None
        first = next(calls) < 3
        return {"o": ("i", np.array([float("nan") if first else None, 1], dtype=object))}

    report = te.check(simulate, sample=3, n_workers=2)
    assert not report.ok, str(report)


def test_arrays_over_the_budget_that_were_read_only_need_no_fingerprint() -> None:
    tables = {"means": np.zeros(5000), "scales": np.ones(5000)}  # 40 kB each, protectable

    def reads(model: dict[str, np.ndarray]) -> dict[str, Any]:
        return {"x": model["means"][:2] + te.get_rng().random(2)}

    def writes(model: dict[str, np.ndarray]) -> dict[str, Any]:
        model["scales"][4999] += 1.0
        return {"x": te.get_rng().random(2)}

    passed = te.check(reads, args=(tables,), sample=2, n_workers=2, max_bytes=50_000)
    assert passed.ok and passed.budget_hit, str(passed)
    assert "args[0]['scales']" in passed.unhashed_read_only and "read-only" in str(passed)
    found = te.check(writes, args=(tables,), sample=2, n_workers=2, max_bytes=50_000)
    assert found.causes == {te.Cause.SHARED_ARRAY_WRITE}, str(found)
    unguarded = te.check(
        reads, args=(tables,), sample=2, n_workers=2, max_bytes=50_000, protect_shared=False
    )
    assert unguarded.causes == {te.Cause.NOT_FINGERPRINTED}, str(unguarded)
