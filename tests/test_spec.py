import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
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


def test_a_model_spec_gives_bitwise_the_results_of_the_keyword_form(tmp_path: Path) -> None:
    parts: dict[str, Any] = {"args": (10.0,), "state": [], "inject": "counter"}
    spec = te.ModelSpec(draw, **parts)
    options: dict[str, Any] = {"seed": 3, "n_workers": 2, "progress": False}
    keywords = te.simulate_ensemble(draw, 6, **parts, **options)
    xr.testing.assert_identical(te.simulate_ensemble(spec, 6, **options), keywords)
    # Into one directory: the same run identity, so the ModelSpec resumes the keyword run.
    te.simulate_ensemble(draw, 3, output_dir=tmp_path, **parts, **options)
    extended = te.simulate_ensemble(spec, 6, output_dir=tmp_path, **options)
    assert te.last_run_report().n_computed == 3  # type: ignore[union-attr]
    xr.testing.assert_identical(extended.drop_attrs(), keywords.drop_attrs())
    check_options: dict[str, Any] = {"sample": 3, "n_workers": 2, "seed": 4}
    by_keywords, by_spec = te.check(draw, **parts, **check_options), spec.check(**check_options)
    assert by_keywords.ok and by_spec.ok
    assert by_spec == te.check(spec, **check_options)
    assert (by_spec.sample, by_spec.n_workers, by_spec.state) == (
        by_keywords.sample,
        by_keywords.n_workers,
        by_keywords.state,
    )


def test_check_picklable_takes_a_model_spec() -> None:
    pytest.importorskip("cloudpickle")
    lock = threading.Lock()
    spec = te.ModelSpec(draw, args=(1.0,), state=[lock], inject="counter")
    for call in (spec.check_picklable, lambda: te.check_picklable(spec)):
        with pytest.raises(TypeError, match=r"^state\[0\] cannot be pickled"):
            call()
    with pytest.raises(TypeError, match=r"^state\[0\] cannot be pickled"):
        te.check_picklable(draw, args=(1.0,), state=[lock], inject="counter")
    te.ModelSpec(draw, args=(1.0,), state=[], inject="counter").check_picklable()


RULE = r"was given a ModelSpec and the model keywords {}: give the model either as a ModelSpec"


def test_a_model_spec_and_model_keywords_is_a_type_error() -> None:
    spec = te.ModelSpec(draw, args=(1.0,), state=[], inject="counter")
    with pytest.raises(TypeError, match=r"^simulate_ensemble\(\) " + RULE.format("args=")):
        te.simulate_ensemble(spec, 2, args=(2.0,), progress=False)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^check\(\) " + RULE.format("warmup=, ragged=")):
        te.check(spec, warmup=True, ragged=["t"])
    with pytest.raises(TypeError, match=r"^check_picklable\(\) " + RULE.format("state=")):
        te.check_picklable(spec, state=[])
    with pytest.raises(TypeError, match=r"dataclasses\.replace\(model, args=\.\.\.\)"):
        te.simulate_ensemble(spec, 2, args=(2.0,))


def test_model_spec_methods_name_themselves_when_given_model_keywords() -> None:
    spec = te.ModelSpec(draw, args=(1.0,), state=[], inject="counter")
    change = r"dataclasses\.replace\(model, warmup=\.\.\.\)"
    with pytest.raises(TypeError, match=r"^ModelSpec\.run\(\) got the model keywords warmup=: "):
        spec.run(2, warmup=True, progress=False)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=change):
        spec.run(2, warmup=True, progress=False)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^ModelSpec\.check\(\) got the model keywords warmup="):
        spec.check(warmup=True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^ModelSpec\.run\(\) got an unexpected keyword "):
        spec.run(2, n_worker=2)  # type: ignore[call-arg]


def test_model_specs_are_equal_by_identity_and_hashable() -> None:
    """Array parts are not compared element by element: fingerprint() compares contents."""
    a = te.ModelSpec(draw, args=(np.zeros(3),), state=[], inject="counter")
    b = te.ModelSpec(draw, args=(np.zeros(3),), state=[], inject="counter")
    assert a == a and a != b and (a == b) is False
    assert {a: 1, b: 2}[a] == 1 and len({a, b, a}) == 2
    assert hash(a) == hash(a) and dataclasses.replace(a) != a
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != dataclasses.replace(b, args=(np.ones(3),)).fingerprint()


def test_model_parts_are_the_fields_of_model_spec() -> None:
    fields = {f.name for f in dataclasses.fields(te.ModelSpec)} - {"simulate", "description"}
    assert set(te.ModelParts.__optional_keys__) == fields
    assert te.ModelParts.__required_keys__ == frozenset()
    # The run's and the check's options are not model parts, and each names its own keys.
    run, check = te.RunOptions.__optional_keys__, te.CheckOptions.__optional_keys__
    assert not (fields & run) and not (fields & check)
    assert te.EnsembleKeywords.__optional_keys__ == fields | run
    assert te.CheckKeywords.__optional_keys__ == fields | check
    assert {"n_workers", "seed", "output_dir", "client", "run_id"} <= run
    assert {"sample", "max_objects", "seed"} <= check and "output_dir" not in check


def test_parts_are_kept_as_tuples_and_a_dict_and_replace_checks_again() -> None:
    spec = te.ModelSpec(draw, args=[1.0], kwargs=None, ragged=["t"])  # type: ignore[arg-type]
    assert (spec.args, spec.kwargs, spec.ragged) == ((1.0,), {}, ("t",))
    assert dataclasses.replace(spec, warmup=True).warmup is True
    with pytest.raises(ValueError, match="state was given without inject"):
        dataclasses.replace(spec, state=[])


def scale(factor: float) -> dict[str, Any]:
    return {"x": factor * te.get_rng().random(4)}


def test_fingerprint_is_equal_for_equal_models_and_differs_when_args_change(
    tmp_path: Path,
) -> None:
    one = te.ModelSpec(scale, args=(np.arange(4.0),), description="one")
    same = te.ModelSpec(scale, args=(np.arange(4.0),), description="another text")
    changed = te.ModelSpec(scale, args=(np.arange(4.0) + 1,))
    assert one.fingerprint() == same.fingerprint()
    assert one.fingerprint().digest != changed.fingerprint().digest
    assert one.fingerprint().unreadable == ()
    assert te.ModelSpec(scale, kwargs={"a": 1}).fingerprint() != te.ModelSpec(scale).fingerprint()
    # It is the model's part of a run's identity: what the manifest records.
    one.run(2, seed=1, output_dir=tmp_path, progress=False)
    manifest = json.loads((tmp_path / "threadensemble.json").read_text())
    assert manifest["config"]["model"]["digest"] == one.fingerprint().digest


def test_fingerprint_names_what_it_cannot_read() -> None:
    found = te.ModelSpec(scale, args=(threading.Lock(), (x for x in "ab"))).fingerprint()
    assert found.unreadable and all(path.startswith("args[1]") for path in found.unreadable)
