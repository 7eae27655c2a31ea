"""The run identity is the model's content: a changed model is refused naming what changed, the
same model resumes or extends, and every attempt of a realization draws the same numbers."""

from __future__ import annotations

import argparse
import dataclasses
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
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import threadensemble as te
from conftest import outputs_under_hash_seeds
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
    digests = outputs_under_hash_seeds(FINGERPRINT_ETAS, ("1", "2"))
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


# --- the code that runs, followed across the user's modules -------------------------------------

RUN_MODEL = """
import sys, threadensemble as te
import {module}
try:
    te.simulate_ensemble({module}.simulate, 2, output_dir=sys.argv[1], seed=3, progress=False,
                         n_workers=1)
    print("accepted")
except te.OutputDirError as error:
    print(error)
"""


def run_in_process(
    directory: Path, out: Path, module: str, *paths: Path, before_run: str = ""
) -> str:
    """Run ``module.simulate`` into ``out`` in a fresh interpreter; its printed outcome."""
    source = str(Path(te.__file__).parents[1])
    script = RUN_MODEL.replace("import sys,", f"{before_run}\nimport sys,", 1)
    completed = subprocess.run(
        [sys.executable, "-c", script.format(module=module), str(out)],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([source, str(directory), *map(str, paths)]),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return completed.stdout.strip()


MODEL_SOURCE = """
import threadensemble as te


def simulate():
    return {"x": te.get_rng().random(2) * 1.0}
"""


def test_the_code_that_runs_is_hashed_not_the_file_on_disk(tmp_path: Path) -> None:
    """A file edited after its import (a notebook) runs the old code: the identity is that code;
    comments and reformatting change nothing, a changed constant is a changed model."""
    model = tmp_path / "model.py"
    model.write_text(MODEL_SOURCE)
    edit = f"import model, pathlib; pathlib.Path({str(model)!r}).write_text('# edited\\n')"
    assert run_in_process(tmp_path, tmp_path / "out", "model", before_run=edit) == "accepted"
    model.write_text(MODEL_SOURCE.replace("def simulate():", "def simulate():  # a comment\n"))
    assert run_in_process(tmp_path, tmp_path / "out", "model") == "accepted"
    model.write_text(MODEL_SOURCE.replace("* 1.0", "* 1000.0"))
    assert "(simulate: code changed)" in run_in_process(tmp_path, tmp_path / "out", "model")


def test_two_lambdas_on_one_line_are_two_models(tmp_path: Path) -> None:
    first, second = (lambda s: {"x": s * te.get_rng().random(2)}), (lambda s: {"x": -s + 0 * s})
    run(tmp_path, first)
    refused(tmp_path, r"simulate: code changed", second)


def test_code_of_another_interpreter_is_named_as_such() -> None:
    there = model_fingerprint({"simulate": scaled}).record()
    there["interpreter"] = "cpython-399"
    there["roots"] = {"simulate": "0" * 64}
    there["paths"] = {**there["paths"], "simulate.__code__": "code cpython-399 0123456789abcdef"}
    found = differences(there, model_fingerprint({"simulate": scaled}).record())
    assert found[0].startswith(
        f"written by cpython-399, this is {sys.implementation.cache_tag}: the compiled code "
        'cannot be compared; resume with the same interpreter, or pass run_id="..."'
    )
    assert not any("code changed" in f for f in found)


def test_an_edited_helper_module_is_refused_naming_the_function(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("def growth(x):\n    return x * 1.0\n")
    (tmp_path / "physics.py").write_text(
        "import threadensemble as te\nimport helpers\nfrom helpers import growth\n\n\n"
        "def simulate():\n    return {'x': growth(helpers.growth(te.get_rng().random(2)))}\n"
    )
    out = tmp_path / "out"
    assert run_in_process(tmp_path, out, "physics") == "accepted"
    (tmp_path / "helpers.py").write_text("def growth(x):\n    return x * 2.0\n")
    assert "(helpers.growth: code changed)" in run_in_process(tmp_path, out, "physics")
    (tmp_path / "helpers.py").write_text("def growth(x):\n    return x * 1.0  # as before\n")
    assert run_in_process(tmp_path, out, "physics") == "accepted"


def test_an_installed_package_counts_by_its_version(tmp_path: Path) -> None:
    """Code reached in an installed package is recorded by its distribution's version."""
    site = tmp_path / "site-packages"
    (site / "fakepkg").mkdir(parents=True)
    (site / "fakepkg" / "__init__.py").write_text("def scale(x):\n    return x\n")
    info = site / "fakepkg-1.4.7.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.4.7\n")
    (tmp_path / "uses_pkg.py").write_text(
        "import threadensemble as te\nfrom fakepkg import scale\n\n\n"
        "def simulate():\n    return {'x': scale(te.get_rng().random(2))}\n"
    )
    out = tmp_path / "out"
    assert run_in_process(tmp_path, out, "uses_pkg", site) == "accepted"
    info.rename(site / "fakepkg-1.4.8.dist-info")
    (site / "fakepkg-1.4.8.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.4.8\n"
    )
    assert "(fakepkg: 1.4.7 there, 1.4.8 here)" in run_in_process(tmp_path, out, "uses_pkg", site)


k = 1  # a module-level name that is also an attribute name in `reads_cfg_k`


def reads_cfg_k(cfg: argparse.Namespace) -> dict[str, Any]:
    return {"x": cfg.k + te.get_rng().random(2)}


def test_an_attribute_name_is_not_a_global(tmp_path: Path, monkeypatch: Any) -> None:
    options = argparse.Namespace(k=1.0)
    first = run(tmp_path, reads_cfg_k, args=(options,))
    monkeypatch.setattr(sys.modules[__name__], "k", 2)
    xr.testing.assert_identical(first, run(tmp_path, reads_cfg_k, args=(options,)))


# --- classes, module-level values, content --------------------------------------------------


class Physics:
    drag = 0.1

    def __init__(self) -> None:
        self.n = 2

    def helper(self) -> float:
        return 1.0

    @property
    def gain(self) -> float:
        return 1.0

    @staticmethod
    def offset() -> float:
        return 0.0

    def simulate(self) -> dict[str, Any]:
        noise = te.get_rng().random(self.n)
        return {"x": self.helper() * self.gain * noise + self.offset() + self.drag}


def test_a_changed_class_is_refused_naming_what_changed(tmp_path: Path, monkeypatch: Any) -> None:
    run(tmp_path, Physics().simulate, args=())
    for name, value, shown in [
        ("drag", 0.5, r"simulate.__self__.<class>.drag: 0.1 there, 0.5 here"),
        ("helper", lambda self: 3.0, r"simulate.__self__.<class>.helper: code changed"),
        ("gain", property(lambda self: 2.0), r"<class>.gain.fget: code changed"),
        ("offset", staticmethod(lambda: 1.0), r"<class>.offset: code changed"),
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(Physics, name, value)
            refused(tmp_path, shown, Physics().simulate, args=())
    run(tmp_path, Physics().simulate, args=())  # as before: accepted


def test_same_named_classes_of_two_modules_differ() -> None:
    made = []
    for name, value in [("physics_v1", 1.0), ("physics_v2", 99.0)]:
        module = types.ModuleType(name)
        exec(f"class Model:\n    def step(self):\n        return {value}\n", module.__dict__)
        made.append(model_fingerprint({"args[0]": module.Model()}).record())
    assert made[0]["digest"] != made[1]["digest"]
    assert "physics_v2.Model.step: code changed" in differences(*made)


@dataclasses.dataclass
class Settings:
    k: float = 1.0


SETTINGS = Settings()
TABLE = {"k": 1.0}
STEP = functools.partial(float, "1.0")
VECTORIZED = np.vectorize(lambda v: v * 1.0)
CLIMATE = pd.DataFrame({"t": [1.0, 2.0]})
GRID = xr.Dataset({"h": ("x", [1.0, 2.0])})


@functools.lru_cache
def cached_table() -> float:
    return 1.0


def uses_module_values() -> dict[str, Any]:
    total = SETTINGS.k + TABLE["k"] + STEP() + float(VECTORIZED(1.0)) + cached_table()
    return {"x": total + CLIMATE["t"].sum() + float(GRID["h"].sum()) + te.get_rng().random(2)}


def test_module_level_values_count_by_content(monkeypatch: Any) -> None:
    before = model_fingerprint({"simulate": uses_module_values}).record()
    here = sys.modules[__name__]
    for name, value, shown in [
        ("SETTINGS", Settings(2.0), "simulate.<global SETTINGS>.k: 1.0 there, 2.0 here"),
        ("TABLE", {"k": 2.0}, "simulate.<global TABLE>: {'k': 1.0} there, {'k': 2.0} here"),
        ("STEP", functools.partial(float, "2.0"), "simulate.<global STEP>.args"),
        ("VECTORIZED", np.vectorize(lambda v: v * 8.0), "pyfunc: code changed"),
        ("cached_table", functools.lru_cache(lambda: 50.0), "<global cached_table>.__wrapped__"),
        ("CLIMATE", pd.DataFrame({"t": [1.0, 5.0]}), "simulate.<global CLIMATE>['t']"),
        ("GRID", xr.Dataset({"h": ("x", [1.0, 5.0])}), "simulate.<global GRID>.variables"),
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(here, name, value)
            after = model_fingerprint({"simulate": uses_module_values}).record()
        assert after["digest"] != before["digest"], name
        assert any(shown in d for d in differences(before, after)), (
            name,
            differences(before, after),
        )
    assert model_fingerprint({"simulate": uses_module_values}).record() == before


def test_a_module_attribute_read_by_seed_for_counts(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "knobs.py").write_text("OFFSET = 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict[str, Any] = {}
    exec("import knobs\n\ndef seed_for(k):\n    return k + knobs.OFFSET\n", namespace)
    before = model_fingerprint({"seed_for": namespace["seed_for"]}).record()
    monkeypatch.setattr(sys.modules["knobs"], "OFFSET", 100)
    after = model_fingerprint({"seed_for": namespace["seed_for"]}).record()
    assert differences(before, after) == ["seed_for.<global knobs.OFFSET>: 0 there, 100 here"]


class Scaled(float):
    scale: float


class Site:
    def __init__(self, name: str, lat: float) -> None:
        self.name, self.lat = name, lat

    def __repr__(self) -> str:
        return f"Site({self.name!r})"


def scaled_by(scale: float) -> Scaled:
    value = Scaled(1.0)
    value.scale = scale
    return value


def test_content_that_repr_or_dtype_str_hides_counts(tmp_path: Path) -> None:
    (tmp_path / "data.bin").write_bytes(np.arange(4.0).tobytes())
    fields = np.array([(1.0, 2.0)], dtype=[("a", "f8"), ("b", "f8")])
    times = pd.date_range("2000", periods=2, freq="h", tz="UTC")
    for first, second in [
        (fields, fields.view([("b", "f8"), ("a", "f8")])),
        (pd.Series([1.0, 2.0], index=[10, 20]), pd.Series([1.0, 2.0], index=[20, 10])),
        (
            pd.Series(pd.Categorical(["x", "y"], categories=["x", "y"])),
            pd.Series(pd.Categorical(["x", "y"], categories=["y", "x"])),
        ),
        (
            pd.Series([1.0, 2.0], index=times),
            pd.Series([1.0, 2.0], index=times.tz_convert("Asia/Tokyo")),
        ),
        (scaled_by(1.0), scaled_by(10.0)),
        ({Site("A", 10.0): 1.0}, {Site("A", 50.0): 1.0}),
        ({Site("A", 10.0)}, {Site("A", 50.0)}),
    ]:
        there = model_fingerprint({"args[0]": first}).record()
        here = model_fingerprint({"args[0]": second}).record()
        assert there["digest"] != here["digest"], repr(first)
    memmap = np.memmap(tmp_path / "data.bin", dtype="f8", mode="r")
    assert (
        model_fingerprint({"args[0]": memmap}).digest
        == model_fingerprint({"args[0]": np.arange(4.0)}).digest
    )


KEYS_AND_SETS = """
from threadensemble._identity import model_fingerprint
class Cell:
    def __init__(self, v):
        self.v = v
model = {
    frozenset({"alpha", "beta", "gamma"}): 1.0,
    ("u", frozenset({"x", "y", "z"})): {Cell(1.0), Cell(2.0), Cell(3.0)},
    "names": {"rain", "wind", "sun", "hail", "snow"},
}
print(model_fingerprint({"args[0]": model}).digest)
"""


def test_sets_and_keys_count_by_content_not_hash_order_or_address() -> None:
    digests = outputs_under_hash_seeds(KEYS_AND_SETS, ("1", "2", "3"))
    assert len(digests) == 1


def test_the_example_models_count_by_their_code() -> None:
    """The library counts by name, its example models (a model like the user's) by content."""
    from threadensemble._cli import build_spec

    spec = build_spec("etas")
    records = model_fingerprint({"simulate": spec.simulate}).paths.values()
    assert any(record.startswith("code ") for record in records)


def test_a_strided_view_hashes_in_chunks_as_its_copy(monkeypatch: Any) -> None:
    import threadensemble._identity as identity

    monkeypatch.setattr(identity, "_CHUNK_BYTES", 64)  # many chunks of a small array
    grid = np.arange(300.0).reshape(20, 15)
    for view in (grid[:, ::2], np.asfortranarray(grid), grid.T[::3]):
        copy = np.ascontiguousarray(view)
        assert model_fingerprint({"a": view}).digest == model_fingerprint({"a": copy}).digest
    assert model_fingerprint({"a": grid[:, ::2]}).digest != model_fingerprint({"a": grid}).digest


# --- content only: not identity, hash order, interning or the walk's route ----------------------


def digest_of(value: Any) -> str:
    return model_fingerprint({"args[0]": value}).digest


def test_numbers_of_other_types_or_bits_are_other_models() -> None:
    """1, 1.0, True and numpy's 1.0 differ, in a plain list too; NaN payloads and -0.0 count."""
    quiet, payload = np.float64(np.nan), np.frombuffer(np.uint64(0x7FF8000000000001).tobytes())[0]
    for wrap in (lambda v: v, lambda v: [v, 2.0], lambda v: {"k": v}, lambda v: (v,)):
        found = {digest_of(wrap(v)) for v in (1, 1.0, True, np.float64(1.0), 1 + 0j, "1", b"1")}
        assert len(found) == 7
        assert digest_of(wrap(float(quiet))) != digest_of(wrap(float(payload)))
        assert digest_of(wrap(-0.0)) != digest_of(wrap(0.0))
        assert digest_of(wrap(float("nan"))) == digest_of(wrap(float("nan")))


class Name(str):
    pass


def test_equal_strings_count_by_content_whatever_their_identity_or_type() -> None:
    built = "".join(["station", "_", "a"])  # equal to, but not, the interned constant
    assert built is not sys.intern("station_a")
    for wrap in (lambda v: [v, v], lambda v: {v: 1.0}, lambda v: {"k": (v, 1)}):
        assert digest_of(wrap(built)) == digest_of(wrap(sys.intern("station_a")))
        assert digest_of(wrap(Name("station_a"))) != digest_of(wrap("station_a"))
    assert digest_of([built, sys.intern(built)]) == digest_of(["station_a", "station_a"])


class Node:
    def __init__(self, value: float, after: Node | None) -> None:
        self.value, self.after = value, after


def linked(n: int) -> Node:
    head = None
    for i in range(n):
        head = Node(float(i), head)
    assert head is not None
    return head


def test_a_deep_linked_graph_is_fingerprinted_without_recursion() -> None:
    head = linked(100_000)
    first = model_fingerprint({"args[0]": head})
    nested: Any = None
    for i in range(100_000):
        nested = (float(i), nested)
    assert model_fingerprint({"args[0]": nested}).digest != first.digest
    node = head
    for _ in range(99_990):
        node = node.after  # type: ignore[assignment]
    node.value += 1e-9
    changed = model_fingerprint({"args[0]": head})
    assert changed.digest != first.digest
    assert differences(first.record(), changed.record())  # named (the root: below the records)


def test_a_change_deep_in_the_fire_model_is_found_and_named() -> None:
    from threadensemble._cli import build_spec

    spec = build_spec("fire")
    roots = {"simulate": spec.simulate, "args[0]": spec.args[0], "args[1]": spec.args[1]}
    before = model_fingerprint(roots).record()
    spec.args[0].cells[3000].exposure += 1e-12
    after = model_fingerprint(roots).record()
    assert after["digest"] != before["digest"]
    assert differences(before, after) == [
        f"args[0].cells: list of 4800 {before['paths']['args[0].cells'][-16:]} there, "
        f"list of 4800 {after['paths']['args[0].cells'][-16:]} here"
    ]
    spec.args[0].cells[3000].exposure -= 1e-12
    assert model_fingerprint(roots).record() == before


def test_a_copied_or_unpickled_model_has_the_same_identity() -> None:
    import copy

    from threadensemble._cli import build_spec

    for name in ("mobility", "weather"):
        spec = build_spec(name)
        roots = {f"args[{i}]": a for i, a in enumerate(spec.args)}
        first = model_fingerprint(roots).record()
        copied = {k: copy.deepcopy(v) for k, v in roots.items()}
        assert model_fingerprint(copied).record() == first, name
        assert model_fingerprint(roots).record() == first, name  # copyreg's __slotnames__
    plain = {"tables": {i: ([i, i + 1], [0.5 * i, float("nan")]) for i in range(500)}}
    loaded = pickle.loads(pickle.dumps(plain))
    assert model_fingerprint({"a": loaded}).record() == model_fingerprint({"a": plain}).record()


def test_object_arrays_and_datetime_arrays_with_nat_count_by_content() -> None:
    times = np.array(["2000-01-01", "NaT"], dtype="datetime64[ns]")
    other = np.array(["2000-01-01", "2000-01-02"], dtype="datetime64[ns]")
    assert digest_of([times]) == digest_of([times.copy()]) != digest_of([other])
    labels = np.array([1, 1.0, "a"], dtype=object)
    assert digest_of(labels) == digest_of(labels.copy())
    assert digest_of(labels) != digest_of(np.array([True, 1.0, "a"], dtype=object))


PLAIN_CONTENT = """
from threadensemble._identity import model_fingerprint
names = ["rain", "wind", "sun", "hail", "snow"]
model = {
    "tags": set(names), "frozen": frozenset(names), "by_name": {n: float(i) for i, n in
    enumerate(names)}, "pairs": [(n, i) for i, n in enumerate(names)],
    "nested": {n: {n, n + "x"} for n in names}, "keys": {frozenset(names): 1},
}
print(model_fingerprint({"args[0]": model}).digest)
"""


def test_sets_and_dicts_of_strings_are_the_same_in_other_processes() -> None:
    digests = outputs_under_hash_seeds(PLAIN_CONTENT, ("0", "1", "2", "3"))
    assert len(digests) == 1


def test_a_manifest_of_the_older_scheme_is_named_as_such() -> None:
    there = model_fingerprint({"args[0]": [1.0, 2.0]}).record()
    del there["scheme"]
    found = differences(there, model_fingerprint({"args[0]": [1.0, 2.0]}).record())
    assert found[0].startswith("fingerprinted by an older threadensemble (scheme 1, this is 2)")


def test_keyword_order_is_content_and_named(tmp_path: Path) -> None:
    """simulate(**kwargs) sees the given order: another order is another model, named so."""
    one = model_fingerprint({"kwargs['fox']": 1.0, "kwargs['hare']": 50.0})
    two = model_fingerprint({"kwargs['hare']": 50.0, "kwargs['fox']": 1.0})
    assert one.digest != two.digest
    assert differences(one.record(), two.record()) == [
        "kwargs order: fox, hare there, hare, fox here"
    ]
    a = te.ModelSpec(scaled, args=(1.0,), kwargs={"n_steps": 4, "offset": 0.0})
    b = te.ModelSpec(scaled, args=(1.0,), kwargs={"offset": 0.0, "n_steps": 4})
    assert a.fingerprint().digest != b.fingerprint().digest
