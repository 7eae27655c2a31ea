"""Outputs are checked for netCDF4 before anything is written (issue 10, item 7).

What netCDF4 cannot store stops the run with one `UnstorableOutputError` naming the realization,
the variable or attribute, and the rule; bool attributes are stored as int8 0/1; strings of
any length are fine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import threadensemble as te
from threadensemble._encoding import netcdf_ready


def _returning(make: Any) -> Any:
    def simulate() -> Any:
        return make()

    return simulate


UNSTORABLE = {
    "complex": (
        lambda: {"z": np.ones(3, complex)},
        r"variable 'z' has dtype complex128: netCDF4 cannot store complex numbers",
    ),
    "float16": (
        lambda: {"h": np.ones(3, np.float16)},
        r"variable 'h' has dtype float16 \(16-bit floats\): netCDF4 stores float32 and float64",
    ),
    "leading space": (
        lambda: {" lead": np.ones(2)},
        r"variable ' lead': netCDF names start with a letter, a digit, '_' or a non-ASCII",
    ),
    "trailing space": (
        lambda: xr.Dataset({"x": ("time ", np.ones(2))}),
        r"dimension 'time ': netCDF names cannot end in whitespace",
    ),
    "tab": (
        lambda: xr.Dataset({"x": ("t", np.ones(2), {"long\tname": "x"})}),
        r"attribute of variable 'x' 'long\\tname': netCDF names cannot hold control characters",
    ),
    "not NFC": (
        lambda: {"cafe\u0301": np.ones(2)},
        r"variable 'cafe\u0301': netCDF stores names in Unicode NFC form, so it would be read ",
    ),
    "slash": (lambda: {"a/b": np.ones(3)}, r"variable 'a/b': netCDF names cannot contain '/'"),
    "long name": (
        lambda: {"v" * 300: np.ones(3)},
        r"variable 'v{40}'...: netCDF names are at most 256 bytes long, this one has 300",
    ),
    "None attribute": (
        lambda: xr.Dataset({"x": ("t", np.ones(2), {"units": None})}),
        r"attribute 'units' of variable 'x' is None: netCDF has no null attribute",
    ),
    "dict attribute": (
        lambda: xr.Dataset(attrs={"params": {"a": 1}}),
        r"attribute 'params' of the dataset is a dict: netCDF attributes are strings, numbers",
    ),
    "objects": (
        lambda: {"o": np.array([1, "a"], dtype=object)},
        r"variable 'o' has dtype object with values that are not all strings",
    ),
    # pandas' own dtypes (kept by xarray): refused by name, not left to the writer, whose
    # error read as an OutputWriteError with the disk's free space
    "categorical coordinate": (
        lambda: xr.Dataset(
            {"n": ("kind", [1, 2])}, coords={"kind": pd.CategoricalIndex(["a", "b"])}
        ),
        r"variable 'kind' has dtype category, one of pandas' own: netCDF4 stores numpy dtypes",
    ),
    "nullable integers": (
        lambda: xr.Dataset({"n": ("i", pd.array([1, None], dtype="Int64"))}),
        r"variable 'n' has dtype Int64, one of pandas' own",
    ),
    "tz-aware times": (
        lambda: xr.Dataset(
            {"n": ("t", [1, 2])}, coords={"t": pd.date_range("2020", periods=2, tz="UTC")}
        ),
        r"variable 't' has dtype datetime64\[\w+, UTC\], one of pandas' own",
    ),
}
if np.dtype(np.longdouble).itemsize > 8:  # (it is float64 on Windows and arm64 macOS)
    UNSTORABLE["longdouble"] = (
        lambda: {"lead": np.array([1.5], dtype=np.longdouble)},
        r"variable 'lead' has dtype float\d+ \(\d+-bit floats\): netCDF4 stores float32 and",
    )
    UNSTORABLE["longdouble attribute"] = (
        lambda: xr.Dataset(attrs={"tolerance": np.longdouble(1e-30)}),
        r"attribute 'tolerance' of the dataset has dtype float\d+",
    )


@pytest.mark.parametrize("case", UNSTORABLE)
def test_what_netcdf_cannot_store_stops_the_run_before_anything_is_written(
    tmp_path: Path, case: str
) -> None:
    make, rule = UNSTORABLE[case]
    with pytest.raises(te.UnstorableOutputError, match=r"^realization \d: " + rule):
        te.simulate_ensemble(_returning(make), 6, n_workers=2, output_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["threadensemble.json"]


def test_in_memory_results_may_hold_what_netcdf_cannot() -> None:
    ens = te.simulate_ensemble(_returning(lambda: {"z": np.ones(2, complex)}), 2, progress=False)
    assert ens["z"].dtype == complex


def flagged() -> xr.Dataset:
    return xr.Dataset(
        {"x": ("t", np.zeros(2), {"valid": True, "masks": [True, False]})},
        attrs={"calibrated": False},
    )


def test_bool_attributes_are_stored_as_int8(tmp_path: Path) -> None:
    ens = te.simulate_ensemble(flagged, 2, output_dir=tmp_path, progress=False)
    assert ens.attrs["calibrated"] == 0 and ens.attrs["calibrated"].dtype == np.int8
    assert ens["x"].attrs["valid"] == 1
    assert ens["x"].attrs["masks"].tolist() == [1, 0]


def test_netcdf_ready_leaves_the_dataset_it_was_given_alone() -> None:
    ds = flagged()
    ready = netcdf_ready(ds)
    assert ds.attrs["calibrated"] is False and ready.attrs["calibrated"] == 0
    assert ready["x"].values is ds["x"].values or np.shares_memory(ready["x"].values, ds["x"])


def named() -> dict[str, Any]:
    """Realization k has a name of k+1 letters: the strings' length varies."""
    k = te.current_realization() or 0
    return {"name": ("i", np.array(["ab"[k % 2] * (k + 1), "z"])), "x": ("i", np.ones(2))}


@pytest.mark.parametrize("on_disk", [False, True])
def test_strings_whose_length_varies_between_realizations(tmp_path: Path, on_disk: bool) -> None:
    ens = te.simulate_ensemble(
        named, 4, n_workers=2, output_dir=tmp_path if on_disk else None, progress=False
    )
    assert ens["name"].values.tolist() == [
        ["a", "z"], ["bb", "z"], ["aaa", "z"], ["bbbb", "z"]
    ]  # fmt: skip
