"""The fast stacking path gives exactly what ``xarray.concat`` gives, or leaves the case to it.

``nox -s oldest`` runs this file with the oldest supported xarray and numpy too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import xarray as xr

from threadensemble._results import assemble
from threadensemble._stacking import stack


def xarray_concat(datasets: Sequence[xr.Dataset], ragged: Sequence[str]) -> xr.Dataset:
    """What `stack` mirrors: ``Dataset.pad`` of ragged dimensions, then ``xarray.concat``."""
    longest = {d: max(ds.sizes.get(d, 0) for ds in datasets) for d in ragged}
    padded = [
        ds.pad({d: (0, n - ds.sizes[d]) for d, n in longest.items() if ds.sizes.get(d, n) < n})
        for ds in datasets
    ]
    return xr.concat(
        padded, dim="realization", data_vars="all", coords="minimal", compat="equals",
        join="exact", combine_attrs="drop_conflicts",
    )  # fmt: skip


def realizations(lengths: list[int], event_dtype: str = "f8") -> list[xr.Dataset]:
    """Realizations with ragged events, shared coordinates, per-realization and run attrs."""
    start = np.datetime64("2020-01-01", "ns")
    return [
        xr.Dataset(
            {
                "field": (("x", "y"), np.full((2, 3), k, "f4"), {"units": "m"}),
                "count": ((), np.int64(k)),
                "magnitude": ("event", np.arange(n).astype(event_dtype) + k),
                "when": ("event", start + np.arange(n) * np.timedelta64(1, "h")),
            },
            coords={"x": [10, 20], "label": ("y", ["a", "b", "c"])},
            attrs={"run": "r1", "realization": k, "key": [0, k], "dt": 0.5, "nan": np.nan},
        )
        for k, n in enumerate(lengths)
    ]


@pytest.mark.parametrize("lengths", [[2, 2], [3, 3, 3], [3, 1, 4, 0]])
def test_stacking_gives_what_xarray_concat_gives(lengths: list[int]) -> None:
    parts = realizations(lengths)
    fast, reference = stack(parts, "realization", ["event"]), xarray_concat(parts, ["event"])
    assert fast is not None
    xr.testing.assert_identical(fast, reference)
    assert {n: v.dtype for n, v in fast.variables.items()} == {
        n: v.dtype for n, v in reference.variables.items()
    }


def test_stacking_leaves_other_cases_to_xarray() -> None:
    padded_ints = realizations([3, 1], event_dtype="i8")  # padding would make them floats
    other_units = realizations([2, 2])
    other_units[1]["field"].attrs["units"] = "km"
    other_keys = realizations([2, 2])
    other_keys[1].attrs["extra"] = 1
    for parts in (padded_ints, other_units, other_keys):
        assert stack(parts, "realization", ["event"]) is None
        assemble(parts, list(range(len(parts))), ["event"])  # xarray.concat does it


def test_coordinates_checked_by_their_layouts_stack_as_xarray_concat_does() -> None:
    # The engine's realizations all passed check_layout: their coordinates of numbers, times
    # and strings are not compared again; the result is the one xarray.concat gives.
    parts = realizations([3, 1, 4])
    for part in parts:
        part.coords["t"] = ("y", np.array(["2000-01-01", "NaT", "2001"], "datetime64[ns]"))
        part.coords["name"] = ("x", np.array(["é", "漢字 x"]))
    checked = stack(parts, "realization", ["event"], checked_coords=True)
    assert checked is not None
    xr.testing.assert_identical(checked, xarray_concat(parts, ["event"]))


def test_object_coordinates_are_compared_even_when_checked() -> None:
    # Their layout hash is of their text: it does not prove them equal, so they are compared.
    parts = realizations([2, 2])
    for k, part in enumerate(parts):
        part.coords["o"] = ("x", np.array([1, "a" if k else 1.5], dtype=object))
    assert stack(parts, "realization", ["event"], checked_coords=True) is None


def test_a_checked_coordinate_that_changed_since_is_compared_again() -> None:
    # Only an index coordinate's values cannot have changed since its layout was found; the
    # others are compared again (by their bytes), and xarray.concat refuses these.
    parts = realizations([2, 2])
    for k, part in enumerate(parts):
        part.coords["depth"] = ("x", np.array([1.0, -1.0 if k == 0 else 2.0]))
    assert stack(parts, "realization", ["event"], checked_coords=True) is None
    with pytest.raises(xr.MergeError, match="depth"):
        assemble(parts, [0, 1], ["event"], checked_coords=True)


def test_an_index_rewritten_after_its_layout_was_found_is_not_kept_silently() -> None:
    # pandas 2 makes an index of the array itself: a view of the model's state, which a later
    # attempt may rewrite after the realization's layout was found (pandas 3 copies it).
    shared = np.array([1.0, 2.0, 3.0])
    first = xr.Dataset({"h": ("z", np.zeros(3))}, coords={"z": shared})
    second = xr.Dataset({"h": ("z", np.ones(3))}, coords={"z": np.array([1.0, 2.0, 3.0])})
    shared[:] = -1.0
    stacked = stack([first, second], "realization", [], checked_coords=True)
    assert stacked is None or stacked["z"].values.tolist() == [1.0, 2.0, 3.0]
