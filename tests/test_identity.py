"""The run identity is the model's content: a changed model is refused naming what changed, the
same model resumes or extends, and every attempt of a realization draws the same numbers."""

from __future__ import annotations

import argparse
import datetime
import enum
import fractions
import functools
import json
import os
import pathlib
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te
from threadensemble._identity import differences, model_fingerprint
from threadensemble._store import MANIFEST_NAME

GAIN = 1.0  # a module-level constant that `scaled` uses: part of its identity


def scaled(scale: float, *, n_steps: int = 4, offset: float = 0.0) -> dict[str, Any]:
    return {"x": GAIN * scale * te.get_rng().standard_normal(n_steps) + offset}


def with_buffer(*, state: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"x": state["buffer"] + te.get_rng().standard_normal(state["buffer"].size)}


def run(out: Path | None, simulate: Callable[..., Any] = scaled, n: int = 3, **extra: Any) -> Any:
    options: dict[str, Any] = {"args": (1.0,), "seed": 5, "progress": False, "n_workers": 2}
    options.update(extra)
    return te.simulate_ensemble(simulate, n, output_dir=out, **options)


def snapshot(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}


def refused(
    directory: Path, match: str, simulate: Callable[..., Any] = scaled, **extra: Any
) -> None:
    before = snapshot(directory)
    with pytest.raises(te.OutputDirError, match=match):
        run(directory, simulate, **extra)
    assert snapshot(directory) == before  # refused before anything was touched


def test_changed_positional_argument_is_refused_naming_it(tmp_path: Path) -> None:
    run(tmp_path)
    refused(
        tmp_path, r"another configuration \(args\[0\]: 1.0 there, 1000.0 here\)", args=(1000.0,)
    )


def test_changed_keyword_argument_is_refused_naming_it(tmp_path: Path) -> None:
    run(tmp_path, kwargs={"n_steps": 10})
    refused(tmp_path, r"kwargs\['n_steps'\]: 10 there, 2 here", kwargs={"n_steps": 2})
    refused(tmp_path, r"kwargs\['offset'\]: absent there", kwargs={"n_steps": 10, "offset": 1.0})


def test_changed_state_contents_are_refused_naming_the_array(tmp_path: Path) -> None:
    state = {"buffer": np.zeros(1000)}
    run(tmp_path, with_buffer, args=(), state=state, inject="state")
    state["buffer"][500] = 1e-12
    refused(
        tmp_path,
        r"state\['buffer'\]: array\(1000,\) <f8 [0-9a-f]{16} there, array\(1000,\) <f8 \w{16} here",
        with_buffer,
        args=(),
        state=state,
        inject="state",
    )


def test_two_partials_are_two_models(tmp_path: Path) -> None:
    run(tmp_path, functools.partial(scaled, offset=1.0))
    refused(
        tmp_path,
        r"simulate.keywords: \{'offset': 1.0\} there, \{'offset': 2.0\} here",
        functools.partial(scaled, offset=2.0),
    )


def test_two_lambdas_are_two_models(tmp_path: Path) -> None:
    run(tmp_path, lambda s: {"x": s * te.get_rng().standard_normal(3)})
    refused(tmp_path, "simulate: code changed", lambda s: {"x": -s * te.get_rng().random(3)})


def test_a_changed_closure_value_is_refused(tmp_path: Path) -> None:
    def model_with(factor: float) -> Callable[[float], dict[str, Any]]:
        def simulate(scale: float) -> dict[str, Any]:
            return {"x": factor * scale * te.get_rng().standard_normal(3)}

        return simulate

    run(tmp_path, model_with(1.0))
    run(tmp_path, model_with(1.0))  # the same closure again: accepted
    refused(tmp_path, r"simulate.<closure factor>: 1.0 there, 2.0 here", model_with(2.0))


def test_a_changed_module_constant_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    run(tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "GAIN", 3.0)
    refused(tmp_path, r"simulate.<global GAIN>: 1.0 there, 3.0 here")


def test_object_and_datetime_arrays_are_fingerprinted_stably(tmp_path: Path) -> None:
    times = np.array(["2000-01-01", "NaT", "2000-01-03"], dtype="datetime64[ns]")
    labels = np.array(["a", None, 3, (1, 2)], dtype=object)
    model = {"times": times, "labels": labels, "missing": np.array([np.nan, 1.0])}
    roots = {"simulate": scaled, "args[0]": model}
    assert model_fingerprint(roots).record() == model_fingerprint(roots).record()
    copy = {k: v.copy() for k, v in model.items()}
    assert model_fingerprint({"simulate": scaled, "args[0]": copy}).digest == (
        model_fingerprint(roots).digest
    )
    labels_changed = {**copy, "labels": np.array(["a", None, 3, (1, 3)], dtype=object)}
    assert model_fingerprint({"simulate": scaled, "args[0]": labels_changed}).digest != (
        model_fingerprint(roots).digest
    )

    def simulate(scale: float, model: dict[str, Any]) -> dict[str, Any]:
        return {"x": scale * te.get_rng().standard_normal(2)}

    first = run(tmp_path, simulate, args=(1.0, model))
    before = snapshot(tmp_path)
    xr.testing.assert_identical(first, run(tmp_path, simulate, args=(1.0, copy)))
    assert {k: v for k, v in snapshot(tmp_path).items() if k.startswith("real_")} == {
        k: v for k, v in before.items() if k.startswith("real_")
    }


class Landscape:
    """A model object: arrays, a shared array, containers, slots of a nested object."""

    def __init__(self) -> None:
        self.elevation = np.linspace(0.0, 1.0, 50).reshape(5, 10)
        self.same_elevation = self.elevation
        self.params = {"k": 0.3, "names": ["a", "b"], "weights": (1, 2.5)}
        self.station = Station(3, "S03")


class Station:
    __slots__ = ("ident", "name")

    def __init__(self, ident: int, name: str) -> None:
        self.ident, self.name = ident, name


def on_landscape(scale: float, land: Landscape) -> dict[str, Any]:
    return {"x": scale * land.elevation[0, :3] + te.get_rng().standard_normal(3)}


def test_an_unpickled_model_has_the_same_identity(tmp_path: Path) -> None:
    land = Landscape()
    loaded = pickle.loads(pickle.dumps(land, protocol=4))
    original = model_fingerprint({"simulate": on_landscape, "args[1]": land})
    assert model_fingerprint({"simulate": on_landscape, "args[1]": loaded}) == original
    first = run(tmp_path, on_landscape, args=(1.0, land))
    before = snapshot(tmp_path)
    xr.testing.assert_identical(first, run(tmp_path, on_landscape, args=(1.0, loaded)))
    assert all(snapshot(tmp_path)[name] == t for name, t in before.items() if name != MANIFEST_NAME)
    loaded.station.name = "S04"
    refused(tmp_path, r"args\[1\].station.name: 'S03' there, 'S04' here", on_landscape,
            args=(1.0, loaded))  # fmt: skip


def test_the_same_model_twice_computes_nothing(tmp_path: Path) -> None:
    computed: list[int] = []

    def counting(scale: float) -> dict[str, Any]:
        computed.append(te.current_realization() or 0)
        return scaled(scale)

    first = run(tmp_path, counting, n=4)
    computed.clear()  # the closure's contents are part of the identity
    xr.testing.assert_identical(first, run(tmp_path, counting, n=4))
    assert computed == [0]  # only the check that the files are this model's (_verify)


def test_the_library_version_is_recorded_but_does_not_block_resuming(tmp_path: Path) -> None:
    first = run(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["threadensemble_version"] == te.__version__
    manifest["threadensemble_version"] = "0.0.1"
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    xr.testing.assert_identical(first, run(tmp_path))


def test_an_older_manifest_format_is_opened_but_not_resumed(tmp_path: Path) -> None:
    first = run(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    manifest["format"] = "threadensemble-manifest/1"
    manifest["config"]["n_realizations"] = manifest.pop("n_realizations")
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    xr.testing.assert_identical(first, te.open_ensemble(tmp_path))
    refused(tmp_path, "written by an older threadensemble")


def test_cli_run_with_another_parameter_is_refused(tmp_path: Path) -> None:
    def cli(n_years: int) -> subprocess.CompletedProcess[str]:
        command = ["run", "weather", "-n", "2", "-q", "-o", "out"]
        params = ["-p", f"n_years={n_years}", "-p", "n_stations=2", "-p", "n_days=30"]
        return subprocess.run(
            [sys.executable, "-m", "threadensemble", *command, *params],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    assert cli(3).returncode == 0, cli(3).stderr
    refusal = cli(2)
    assert refusal.returncode == 2
    assert "another configuration" in refusal.stderr
    assert "args[0].seasonal_mean: array(" in refusal.stderr


def counted(computed: list[int]) -> Callable[[float], dict[str, Any]]:
    def simulate(scale: float) -> dict[str, Any]:
        computed.append(te.current_realization() or 0)
        return scaled(scale)

    return simulate


def test_more_realizations_extend_the_ensemble(tmp_path: Path) -> None:
    computed: list[int] = []
    single = run(tmp_path / "single", counted(computed), n=20)
    computed.clear()
    run(tmp_path / "grown", counted(computed), n=10)
    computed.clear()
    grown = run(tmp_path / "grown", counted(computed), n=20)
    assert sorted(computed) == [0, *range(10, 20)]  # 0: the check that the files are this model's
    xr.testing.assert_identical(single, grown)
    xr.testing.assert_identical(single, te.open_ensemble(tmp_path / "grown"))
    assert sorted(p.name for p in (tmp_path / "grown").glob("real_*.nc")) == [
        f"real_{k:05d}.nc" for k in range(20)
    ]


def test_fewer_realizations_return_only_those(tmp_path: Path) -> None:
    computed: list[int] = []
    full = run(tmp_path, counted(computed), n=20)
    computed.clear()
    five = run(tmp_path, counted(computed), n=5)
    assert computed == [0]  # only the check that the files are this model's
    xr.testing.assert_identical(five, full.isel(realization=slice(0, 5)))
    assert te.open_ensemble(tmp_path).sizes["realization"] == 20  # the directory keeps all
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["n_realizations"] == 20


def test_fresh_entropy_is_reused_when_extending(tmp_path: Path) -> None:
    first = run(tmp_path, n=4, seed=None)
    extended = run(tmp_path, n=8, seed=None)
    xr.testing.assert_identical(first, extended.isel(realization=slice(0, 4)))
    entropy = json.loads((tmp_path / MANIFEST_NAME).read_text())["config"]["seed"]["entropy"]
    xr.testing.assert_identical(extended, run(None, n=8, seed=int(entropy)))


def test_unfingerprintable_content_needs_a_run_id(tmp_path: Path) -> None:
    out = tmp_path / "out"

    class Handle:
        def __init__(self, path: Path) -> None:
            self.handle = path.open("w")

    def simulate(scale: float, log: Handle) -> dict[str, Any]:
        return scaled(scale)

    log = Handle(tmp_path / "log.txt")
    try:
        unreadable = r"cannot fingerprint args\[1\].handle \(TextIOWrapper\).*run_id="
        with pytest.raises(TypeError, match=unreadable) as info:
            run(out, simulate, args=(1.0, log))
        assert "output_dir" in str(info.value)
        assert not out.exists()
        first = run(out, simulate, args=(1.0, log), run_id="logged v1")
        xr.testing.assert_identical(first, run(out, simulate, args=(1.0, log), run_id="logged v1"))
        refused(out, "run_id: 'logged v1' there, 'logged v2' here", simulate, args=(1.0, log),
                run_id="logged v2")  # fmt: skip
        run(None, simulate, args=(1.0, log))  # in memory: no identity, nothing to fingerprint
    finally:
        log.handle.close()


class Watched:
    """Counts every look at its attributes (which fingerprinting would make)."""

    looks = 0

    def __init__(self) -> None:
        self.data = np.ones(2_000_000)

    @property  # type: ignore[misc]
    def __dict__(self) -> dict[str, Any]:
        Watched.looks += 1
        return {"data": self.data}


def test_in_memory_runs_do_not_fingerprint(tmp_path: Path) -> None:
    def simulate(scale: float, model: Watched) -> dict[str, Any]:
        return scaled(scale)

    model = Watched()
    run(None, simulate, args=(1.0, model))
    assert Watched.looks == 0
    run(tmp_path, simulate, args=(1.0, model))
    assert Watched.looks > 0


FAILED_ONCE: set[int] = set()  # module-level and mutable: not part of any identity


def spawning(scale: float, *, fail_first: bool = False) -> dict[str, Any]:
    """numpy's recommended pattern: spawn child generators from the realization's stream."""
    k = te.current_realization() or 0
    if fail_first and k not in FAILED_ONCE:
        FAILED_ONCE.add(k)
        raise RuntimeError(f"first attempt of {k}")
    children = te.get_rng().spawn(2)
    return {"x": scale * np.concatenate([c.standard_normal(3) for c in children])}


def test_spawned_generators_are_the_same_on_every_attempt(tmp_path: Path) -> None:
    reference = run(None, spawning, n=6, n_workers=1)
    xr.testing.assert_identical(reference, run(None, spawning, n=6, n_workers=4))
    FAILED_ONCE.clear()
    retried = run(None, spawning, n=6, kwargs={"fail_first": True}, retries=1)
    assert set(range(6)) == FAILED_ONCE
    xr.testing.assert_identical(reference, retried)
    run(tmp_path, spawning, n=6)
    (tmp_path / "real_00003.nc").unlink()
    xr.testing.assert_identical(reference, run(tmp_path, spawning, n=6, n_workers=4))
    report = te.check(spawning, args=(1.0,), sample=4, n_workers=2, seed=5)
    assert report.ok, str(report)


FINGERPRINT_ETAS = """
from threadensemble._cli import build_spec
from threadensemble._identity import differences, model_fingerprint
spec = build_spec("etas")
tags = {"rain", "wind", "sun", "hail"}
roots = {"simulate": spec.simulate, "args[0]": spec.args, "kwargs['tags']": tags}
print(model_fingerprint(roots).digest)
"""


def test_the_identity_is_the_same_in_another_process() -> None:
    """Sets of strings (ordered by a salted hash), source text, not this process's ids."""
    digests = {
        subprocess.run(
            [sys.executable, "-c", FINGERPRINT_ETAS],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1 and len(digests.pop().strip()) == 64


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_standard_library_values_count_by_content() -> None:
    """Dates, paths, enums, fractions, namespaces: read by content, whatever `children` walks."""

    def model(**values: Any) -> dict[str, Any]:
        base = {
            "start": datetime.date(2000, 1, 1),
            "where": pathlib.PurePosixPath("/data/a.nc"),
            "color": Color.RED,
            "ratio": fractions.Fraction(1, 3),
            "options": argparse.Namespace(n_years=10),
            "steps": range(5),
        }
        return model_fingerprint({"kwargs['m']": {**base, **values}}).record()

    same = model()
    assert model() == same
    for name, other in [
        ("start", datetime.date(2000, 1, 2)),
        ("where", pathlib.PurePosixPath("/data/b.nc")),
        ("color", Color.BLUE),
        ("ratio", fractions.Fraction(2, 3)),
        ("options", argparse.Namespace(n_years=2)),
        ("steps", range(6)),
    ]:
        changed = model(**{name: other})
        assert changed["digest"] != same["digest"], name
        assert any(f"['{name}']" in d for d in differences(same, changed)), name
