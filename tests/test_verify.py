"""A resumed run recomputes one realization its directory holds and compares it, bitwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import threadensemble as te


def scaled(scale: float) -> xr.Dataset:
    return xr.Dataset({"x": ("t", scale * te.get_rng().standard_normal(5))})


def run(directory: Path, scale: float, n: int = 4, **options: object) -> xr.Dataset:
    return te.simulate_ensemble(
        scaled, n, args=(scale,), seed=3, n_workers=2, output_dir=directory, progress=False,
        **options,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_changed_model_that_keeps_its_run_id_is_refused_and_nothing_is_touched(
    tmp_path: Path,
) -> None:
    run(tmp_path, 1.0, run_id="v1")
    (tmp_path / "real_00002.nc").unlink()  # an interrupted run
    before = {p.name: p.read_bytes() for p in tmp_path.glob("real_*.nc")}
    digest = json.loads((tmp_path / "threadensemble.json").read_text())["digest"]
    with pytest.raises(te.OutputDirError, match=r"realization 0 differs from its file \('x'"):
        run(tmp_path, 1000.0, run_id="v1")  # same run_id: the fingerprint is not consulted
    after = {p.name: p.read_bytes() for p in tmp_path.glob("real_*.nc")}
    assert after == before  # no realization computed, no file written or removed
    assert json.loads((tmp_path / "threadensemble.json").read_text())["digest"] == digest
    assert not list(tmp_path.glob(".*.tmp"))


def test_an_unchanged_model_resumes_and_even_a_complete_directory_is_checked(
    tmp_path: Path,
) -> None:
    full = run(tmp_path, 1.0, run_id="v1")
    (tmp_path / "real_00003.nc").unlink()
    xr.testing.assert_identical(full, run(tmp_path, 1.0, run_id="v1"))
    with pytest.raises(te.OutputDirError, match="differs from its file"):
        run(tmp_path, 2.0, run_id="v1")  # nothing left to compute: still not returned


def test_the_comparison_sees_missing_values_as_equal(tmp_path: Path) -> None:
    def with_gaps() -> xr.Dataset:
        x = te.get_rng().standard_normal(4)
        x[1] = np.nan
        t = np.array(["2000-01-01", "NaT", "2000-01-03", "2000-01-04"], dtype="M8[ns]")
        return xr.Dataset({"x": ("t", x), "when": ("t", t)})

    first = te.simulate_ensemble(with_gaps, 3, seed=1, output_dir=tmp_path, progress=False)
    again = te.simulate_ensemble(with_gaps, 3, seed=1, output_dir=tmp_path, progress=False)
    xr.testing.assert_identical(first, again)
