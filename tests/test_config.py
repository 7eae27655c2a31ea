"""Bad input fails before any thread starts or any file is touched, naming the value and rule."""

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import threadensemble as te
from conftest import worker_threads


def ok(*, vgs: object = None) -> dict[str, Any]:
    return {"x": np.zeros(1)}


def positional_only(vgs: object, /) -> dict[str, Any]:
    return {"x": np.zeros(1)}


class NoCopy:
    def __deepcopy__(self, memo: dict[int, Any]) -> "NoCopy":
        raise TypeError("cannot pickle '_thread.lock' object")


CASES: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"simulate": 3}, TypeError, "simulate must be callable, got 3"),
    ({"n_realizations": 0}, ValueError, "n_realizations must be >= 1, got 0"),
    ({"n_realizations": -5}, ValueError, "n_realizations must be >= 1, got -5"),
    ({"n_realizations": 2.5}, TypeError, "n_realizations must be an int >= 1, got 2.5"),
    ({"n_realizations": True}, TypeError, "n_realizations must be an int >= 1, got True"),
    ({"n_workers": 0}, ValueError, "n_workers must be >= 1, got 0"),
    ({"n_workers": "4"}, TypeError, "n_workers must be an int >= 1, got '4'"),
    ({"inject": "state", "state": {}}, TypeError, "inject='state' is not a keyword parameter of"),
    ({"simulate": positional_only, "inject": "vgs", "state": {}}, TypeError, "not a keyword"),
    ({"inject": "vgs"}, ValueError, "inject='vgs' was given without state"),
    ({"state": {}}, ValueError, "state was given without inject"),
    ({"inject": "vgs", "state": NoCopy()}, TypeError, "state must be deep-copyable"),
    ({"inject": "vgs", "state": {}, "kwargs": {"vgs": 1}}, ValueError, "also a key of kwargs"),
    ({"inject": "my-state", "state": {}}, TypeError, "inject must be a keyword name"),
    ({"seed": -1}, ValueError, "seed must be non-negative, got -1"),
    ({"seed": 1, "seed_for": lambda k: k}, ValueError, "give seed or seed_for, not both"),
    ({"seed_for": 5}, TypeError, "seed_for must be callable"),
    ({"seed_for": lambda k: 7}, ValueError, r"seed_for\(0\) and seed_for\(1\) give the same seed"),
    ({"seed_for": lambda k: -k}, ValueError, r"seed_for\(1\): seed must be non-negative"),
    ({"retries": -1}, ValueError, "retries must be >= 0, got -1"),
    ({"retries": 1.5}, TypeError, "retries must be an int >= 0, got 1.5"),
    ({"args": 5}, TypeError, "args must be a tuple or list"),
    ({"ragged": "event"}, TypeError, "ragged must be a sequence of dimension names"),
    ({"output_dir": 3}, TypeError, "output_dir must be a path, got 3"),
    ({"run_id": 5}, TypeError, "run_id must be a non-empty str naming the model's version"),
    ({"run_id": ""}, TypeError, "run_id must be a non-empty str"),
    ({"args": (threading.Lock(), (x for x in "ab"))}, TypeError, r"cannot fingerprint args\[1\]"),
    ({"overwrite": "False"}, TypeError, "overwrite must be True or False, got 'False'"),
    ({"fail_fast": "no"}, TypeError, "fail_fast must be True or False, got 'no'"),
    ({"protect_shared": 1}, TypeError, "protect_shared must be True or False, got 1"),
    ({"progress": None}, TypeError, "progress must be True or False, got None"),
    ({"lazy": "yes"}, TypeError, "lazy must be True or False, got 'yes'"),
    ({"share_state": "True"}, TypeError, "share_state must be True or False, got 'True'"),
    ({"kwargs": [("a", 1)]}, TypeError, r"kwargs must be a mapping .*got \[\('a', 1\)\]"),
    ({"output_dir": ""}, ValueError, "output_dir must name a directory, got ''"),
    ({"lazy": True, "ragged": ["e"]}, ValueError, r"lazy=True cannot be combined with ragged"),
    ({"kwargs": {1: 2.0}}, TypeError, r"kwargs keys must be str .*got the key 1 \(int\)"),
    ({"ragged": None}, TypeError, r"ragged must be a sequence of dimension names .*got None"),
    ({"ragged": {"event": 1}}, TypeError, r"\(a tuple or list of str\), got \{'event': 1\}"),
    ({"ragged": (d for d in ["e"])}, TypeError, r"\(a tuple or list of str\), got <generator"),
    ({"ragged": ["e", 3]}, TypeError, r"got \['e', 3\], which holds 3"),
    *(
        (
            {"inject": "vgs", "state": {}, "share_state": True, "private_state": private},
            TypeError,
            rf"private_state must be a list of paths .*\(a tuple or list of str\), got {shown}",
        )
        for private, shown in [
            (None, "None"),
            ((p for p in ["*.x"]), "<generator"),
            ({"*.x"}, r"\{'\*\.x'\}"),
            (["*.x", 3], r"\['\*\.x', 3\], which holds 3"),
        ]
    ),
]


@pytest.mark.parametrize(("overrides", "error", "match"), CASES)
def test_bad_input_is_refused_before_anything_starts(
    tmp_path: Path, overrides: dict[str, Any], error: type[Exception], match: str
) -> None:
    called: list[int] = []
    arguments: dict[str, Any] = {
        "simulate": lambda: called.append(1),
        "n_realizations": 3,
        "output_dir": tmp_path / "out",
        "progress": False,
    }
    if "inject" in overrides or "state" in overrides:
        arguments["simulate"] = ok
    arguments.update(overrides)
    threads_before = threading.active_count()
    simulate = arguments.pop("simulate")
    with pytest.raises(error, match=match):
        te.simulate_ensemble(simulate, **arguments)
    assert threading.active_count() == threads_before and worker_threads() == []
    assert not (tmp_path / "out").exists()
    assert called == []


# The model's own parts are checked when a ModelSpec is made, with the same errors (a state
# that cannot be copied, or content that cannot be fingerprinted, is the run's concern).
MODEL_CASES = [
    case
    for case in CASES
    if set(case[0]) <= {"simulate", *te.ModelParts.__optional_keys__}
    and "deep-copyable" not in case[2]
    and "cannot fingerprint" not in case[2]
]


def test_the_model_cases_are_those_of_every_part() -> None:
    parts = {name for overrides, _, _ in MODEL_CASES for name in overrides}
    assert parts == {"simulate", "args", "kwargs", "state", "inject", "ragged"}


@pytest.mark.parametrize(("overrides", "error", "match"), MODEL_CASES)
def test_bad_model_parts_are_refused_when_the_model_spec_is_made(
    overrides: dict[str, Any], error: type[Exception], match: str
) -> None:
    parts = dict(overrides)
    simulate = parts.pop("simulate", ok)
    with pytest.raises(error, match=match):
        te.ModelSpec(simulate, **parts)


def test_a_bad_warmup_is_refused_when_the_model_spec_is_made() -> None:
    match = "warmup must be True, False or a callable like simulate, got 'yes'"
    with pytest.raises(TypeError, match=match):
        te.ModelSpec(ok, warmup="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=match):
        te.simulate_ensemble(ok, 2, warmup="yes", progress=False)  # type: ignore[arg-type]


def test_an_unknown_keyword_is_refused() -> None:
    unexpected = r"\(\) got an unexpected keyword argument "
    with pytest.raises(TypeError, match=r"^simulate_ensemble" + unexpected + "'n_worker'"):
        te.simulate_ensemble(ok, 2, n_worker=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"^check" + unexpected + "'output_dir'"):
        te.check(ok, output_dir="out")  # type: ignore[call-arg]


def test_output_dir_that_is_a_file(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with pytest.raises(te.OutputDirError, match="exists and is not a directory"):
        te.simulate_ensemble(ok, 2, output_dir=target, progress=False)
    assert target.read_text() == "mine"


def test_inject_into_var_keyword_is_accepted() -> None:
    def anything(**kwargs: Any) -> dict[str, Any]:
        return {"n": np.array(len(kwargs["vgs"]))}

    ens = te.simulate_ensemble(anything, 2, state=[1, 2], inject="vgs", n_workers=1, progress=False)
    assert ens["n"].values.tolist() == [2, 2]


def test_overwrite_read_as_a_string_never_replaces_a_run(tmp_path: Path) -> None:
    def draw() -> dict[str, Any]:
        return {"x": te.get_rng().random(2)}

    first = te.simulate_ensemble(draw, 3, seed=1, output_dir=tmp_path, progress=False)
    settings = {"overwrite": "False", "seed": 2}  # read from an INI file: strings
    with pytest.raises(TypeError, match="overwrite must be True or False, got 'False'"):
        te.simulate_ensemble(draw, 3, seed=settings["seed"], output_dir=tmp_path, progress=False,
                             overwrite=settings["overwrite"])  # fmt: skip
    np.testing.assert_array_equal(te.open_ensemble(tmp_path)["x"], first["x"])
    again = te.simulate_ensemble(
        draw, 3, seed=1, output_dir=tmp_path, progress=np.bool_(False), overwrite=np.False_
    )  # numpy bools are bools
    np.testing.assert_array_equal(again["x"], first["x"])


def test_an_empty_output_dir_writes_nothing_into_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="output_dir must name a directory"):
        te.simulate_ensemble(ok, 2, output_dir="", progress=False)
    assert list(tmp_path.iterdir()) == []
