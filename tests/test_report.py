"""The parallelism report: every run leaves one, on the bar, in the manifest, for the code."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import threadensemble as te


def walk(scale: float) -> dict[str, Any]:
    return {"x": np.cumsum(scale * te.get_rng().standard_normal(20))}


def test_every_run_leaves_a_report_for_the_calling_thread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ens = te.simulate_ensemble(walk, 6, args=(0.5,), n_workers=2, seed=1)
    report = te.last_run_report()
    assert report is not None
    assert (report.backend, report.n_workers, report.n_computed) == ("threads", 2, 6)
    assert report.wall_seconds > 0 and report.cpu_seconds >= 0
    assert report.worker_cpu_seconds == 0.0, "threads' CPU time is the process's"
    assert report.parallelism is not None and report.parallelism >= 0
    assert 0 <= report.writing_share <= 1
    assert report.gil_enabled == te.gil_enabled()
    assert report.free_threaded == te.is_free_threaded_build()
    assert "parallelism" in capsys.readouterr().err, "the progress bar ends with the report"
    # The ensemble carries netCDF attributes only: the report is not among them.
    assert not any("parallel" in name or "wall" in name for name in ens.attrs)

    seen: list[te.RunReport | None] = []
    other = threading.Thread(target=lambda: seen.append(te.last_run_report()))
    other.start()
    other.join()
    assert seen == [None], "another thread has run nothing"
    assert te.last_run_report() is report

    with pytest.raises(ValueError, match="n_realizations"):
        te.simulate_ensemble(walk, 0, args=(0.5,))
    assert te.last_run_report() is report, "a call that was refused is no run"


def fails_on_2_while(scale: float, *, marker: str) -> dict[str, Any]:
    if te.current_realization() == 2 and Path(marker).exists():
        raise ValueError("bad")
    return walk(scale)


def test_the_report_is_in_the_manifest_and_on_failed_runs(tmp_path: Path) -> None:
    marker, out = tmp_path / "fail", tmp_path / "out"
    marker.touch()
    options: dict[str, Any] = {
        "args": (0.5,), "kwargs": {"marker": str(marker)}, "n_workers": 2, "seed": 1,
        "progress": False, "output_dir": out,
    }  # fmt: skip
    with pytest.raises(te.EnsembleError):
        te.simulate_ensemble(fails_on_2_while, 5, **options)
    failed = te.last_run_report()
    assert failed is not None and failed.n_computed == 4
    manifest = json.loads((out / "threadensemble.json").read_text())
    assert manifest["run_report"] == json.loads(json.dumps(failed.to_dict()))
    assert failed.writing_seconds > 0, "the calling thread wrote four files"

    marker.unlink()
    te.simulate_ensemble(fails_on_2_while, 5, **options)
    resumed = te.last_run_report()
    assert resumed is not None and resumed.n_computed == 1
    manifest = json.loads((out / "threadensemble.json").read_text())
    assert manifest["run_report"]["n_computed"] == 1


def spin(seconds: float) -> dict[str, Any]:
    """Pure Python for ``seconds`` of CPU time: holds the GIL all along."""
    end = time.thread_time() + seconds
    total = 0
    while time.thread_time() < end:
        total += 1
    return {"x": np.full(1, te.get_rng().random())}


@pytest.mark.skipif(not te.gil_enabled(), reason="the GIL is off: threads run in parallel")
def test_a_gil_bound_threads_run_says_so_and_names_the_ways_out() -> None:
    with pytest.warns(RuntimeWarning, match=r"one at a time.*PYTHON_GIL=0.*backend=\"processes\""):
        te.simulate_ensemble(spin, 5, args=(0.22,), n_workers=2, seed=1, progress=False)
    report = te.last_run_report()
    assert report is not None and report.parallelism is not None and report.parallelism < 1.3
