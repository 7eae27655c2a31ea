import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadensemble", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_writes_files_and_prints_a_summary(tmp_path: Path) -> None:
    result = cli("demo", "-n", "4", "-j", "2", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "4 realizations in" in result.stdout
    assert "parallelism" in result.stdout and "of 2 threads" in result.stdout  # the run report
    # one line per quantity: temperature and precipitation are not averaged together
    assert "weather[temperature]: mean" in result.stdout
    assert "weather[precipitation]: mean" in result.stdout
    assert len(list((tmp_path / "threadensemble-demo").glob("real_*.nc"))) == 4
    again = cli("demo", "-n", "4", "-j", "2", "-q", cwd=tmp_path)  # resumes: nothing to do
    assert (
        again.returncode == 0 and again.stdout.splitlines()[-2:] == result.stdout.splitlines()[-2:]
    )
    ens = te.open_ensemble(tmp_path / "threadensemble-demo")
    assert ens.sizes["realization"] == 4


def test_demo_on_worker_processes_gives_the_same_files(tmp_path: Path) -> None:
    for name, backend in (("threads", "threads"), ("processes", "processes")):
        (tmp_path / name).mkdir()
        result = cli("demo", "-n", "3", "-j", "2", "-q", "--backend", backend, cwd=tmp_path / name)
        assert result.returncode == 0, result.stderr
    assert "of 2 processes" in result.stdout
    xr.testing.assert_identical(
        te.open_ensemble(tmp_path / "threads" / "threadensemble-demo"),
        te.open_ensemble(tmp_path / "processes" / "threadensemble-demo"),
    )


def test_run_a_factory_with_parameters_then_info(tmp_path: Path) -> None:
    result = cli(
        "run",
        "threadensemble.examples.weather:build",
        "-p",
        "n_stations=2",
        "-p",
        "n_days=60",
        "-n",
        "3",
        "-o",
        "out",
        "-q",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    info = cli("info", "out", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "3 of 3 done, 0 missing" in info.stdout
    assert "variable weather('station', 'variable', 'time')" in info.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nomodule", "-o", "x"], "model must be MODULE:FACTORY"),
        (["run", "no_such_module_xyz:build", "-o", "x"], "cannot import 'no_such_module_xyz'"),
        (["run", "weather", "-p", "bogus=1", "-o", "x"], "unexpected keyword argument 'bogus'"),
        (["run", "weather", "-n", "0", "-o", "x"], "n_realizations must be >= 1, got 0"),
        (["info", "nowhere"], "no such directory"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_an_example(tmp_path: Path) -> None:
    result = cli("check", "weather", "-p", "n_days=40", "--sample", "4", "-j", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "thread-safety check of simulate: passed" in result.stdout


BROKEN = """
import numpy as np
import threadensemble as te

def simulate(table):
    table += 1.0
    return {"x": table.copy()}

def build():
    return te.ModelSpec(simulate, args=(np.zeros(3),))
"""


def test_check_a_broken_model_exits_1(tmp_path: Path) -> None:
    (tmp_path / "broken_model.py").write_text(BROKEN)
    result = cli("check", "broken_model:build", "--sample", "4", "-j", "2", cwd=tmp_path)
    assert result.returncode == 1
    assert "[simulate writes into a shared array]" in result.stdout
    assert "table += 1.0" in result.stdout


@pytest.mark.parametrize("command", [[], ["demo"], ["run"], ["info"], ["check"]])
def test_help(tmp_path: Path, command: list[str]) -> None:
    result = cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0 and "usage: threadensemble" in result.stdout


WEATHER = ["threadensemble.examples.weather:build", "-p", "n_stations=2", "-p", "n_days=60"]


def test_a_resumed_run_says_what_it_computed_and_a_changed_model_is_refused(
    tmp_path: Path,
) -> None:
    first = cli("run", *WEATHER, "-n", "3", "-o", "out", "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "3 realizations in" in first.stdout
    again = cli("run", *WEATHER, "-n", "4", "-o", "out", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "4 realizations (1 computed now, the others resumed from files)" in again.stdout
    changed = cli("run", *WEATHER[:-1], "n_days=90", "-n", "4", "-o", "out", "-q", cwd=tmp_path)
    assert changed.returncode == 2
    assert "holds a run with another configuration" in changed.stderr
    assert "--overwrite" in changed.stderr and "overwrite=True" not in changed.stderr


def test_an_error_inside_the_factory_keeps_its_traceback(tmp_path: Path) -> None:
    (tmp_path / "badfactory.py").write_text(
        "def build():\n    raise ValueError('the factory itself is broken')\n"
    )
    result = cli("run", "badfactory:build", "-o", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "the factory itself is broken" in result.stderr


def _complex_output() -> dict[str, Any]:
    return {"z": np.ones(3, complex)}


def test_info_says_how_the_last_run_stopped(tmp_path: Path) -> None:
    with pytest.raises(te.UnstorableOutputError):
        te.simulate_ensemble(_complex_output, 4, output_dir=tmp_path / "out", progress=False)
    manifest = json.loads((tmp_path / "out" / "threadensemble.json").read_text())
    assert manifest["stopped"].startswith("UnstorableOutputError: realization 0: variable 'z'")
    info = cli("info", "out", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "the last run stopped early: UnstorableOutputError: realization 0" in info.stdout
    # A run that ends normally says nothing of the kind.
    te.simulate_ensemble(_draw, 2, seed=1, output_dir=tmp_path / "out", progress=False,
                         overwrite=True)  # fmt: skip
    assert "stopped" not in cli("info", "out", cwd=tmp_path).stdout


def _draw() -> dict[str, Any]:
    return {"x": te.get_rng().random(2)}


LAZY_MODEL = """
import numpy as np
import threadensemble as te


class Lazy:
    def __init__(self):
        self.table = None  # filled on first use, with random numbers: a warm-up is needed


def simulate(*, state):
    if state.table is None:
        state.table = te.get_rng().random(3)
    return {"x": state.table + te.get_rng().random(3)}


def build(warmup=True):
    return te.ModelSpec(simulate, state=Lazy(), inject="state", warmup=warmup)
"""


def test_run_warms_up_a_model_whose_spec_says_so(tmp_path: Path) -> None:
    (tmp_path / "lazymodel.py").write_text(LAZY_MODEL)
    for jobs in ("1", "3"):
        result = cli("run", "lazymodel:build", "-n", "6", "-j", jobs, "-o", f"out{jobs}", "-q",
                     cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
    one, three = (te.open_ensemble(tmp_path / f"out{j}") for j in ("1", "3"))
    xr.testing.assert_identical(one, three)  # the lazy table is made once, before the copies
    checked = cli("check", "lazymodel:build", "--sample", "4", "-j", "2", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
    unwarmed = cli("check", "lazymodel:build", "-p", "warmup=False", "--sample", "4", "-j", "2",
                   cwd=tmp_path)  # fmt: skip
    assert unwarmed.returncode == 1
    assert "warmup" in unwarmed.stdout


def test_run_and_check_warmup_warm_up_a_model_whose_spec_does_not(tmp_path: Path) -> None:
    (tmp_path / "lazymodel.py").write_text(LAZY_MODEL)
    for jobs in ("1", "3"):
        result = cli("run", "lazymodel:build", "-p", "warmup=False", "--warmup", "-n", "6",
                     "-j", jobs, "-o", f"out{jobs}", "-q", cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
    one, three = (te.open_ensemble(tmp_path / f"out{j}") for j in ("1", "3"))
    xr.testing.assert_identical(one, three)
    warmed = te.open_ensemble(tmp_path / "out1")
    spec_says = cli("run", "lazymodel:build", "-n", "6", "-j", "2", "-o", "spec", "-q",
                    cwd=tmp_path)  # fmt: skip
    assert spec_says.returncode == 0, spec_says.stderr
    xr.testing.assert_equal(te.open_ensemble(tmp_path / "spec"), warmed)
    checked = cli("check", "lazymodel:build", "-p", "warmup=False", "--warmup", "--sample", "4",
                  "-j", "2", cwd=tmp_path)  # fmt: skip
    assert checked.returncode == 0, checked.stdout


OWN_WARMUP_MODEL = """
import numpy as np
import threadensemble as te


def simulate(*, st):
    if "table" not in st:
        st["table"] = te.get_rng().standard_normal(3)
    return {"x": st["table"] + te.get_rng().standard_normal(3)}


def prime(*, st):
    st["table"] = np.arange(3.0)


def build():
    return te.ModelSpec(simulate, state={}, inject="st", warmup=prime)
"""


def test_warmup_keeps_the_models_own_warmup_function(tmp_path: Path) -> None:
    (tmp_path / "primed.py").write_text(OWN_WARMUP_MODEL)
    for out, flags in [("plain", []), ("flag", ["--warmup"])]:
        result = cli("run", "primed:build", "-n", "3", "-j", "2", "-o", out, "-q", *flags,
                     cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
    plain = te.open_ensemble(tmp_path / "plain")
    xr.testing.assert_identical(plain, te.open_ensemble(tmp_path / "flag"))
    resumed = cli("run", "primed:build", "-n", "3", "-j", "2", "-o", "plain", "-q", "--warmup",
                  cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "3 realizations (0 computed now" in resumed.stdout
    checked = cli("check", "primed:build", "--warmup", "--sample", "3", "-j", "2", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout
