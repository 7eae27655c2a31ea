from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from threadensemble import InconsistentRealizationError
from threadensemble._results import assemble, check_layout, layout_of, to_dataset


def test_dataset_is_kept() -> None:
    ds = xr.Dataset({"a": ("t", np.arange(3))})
    assert to_dataset(ds) is ds


def test_unnamed_dataarray_becomes_value() -> None:
    assert list(to_dataset(xr.DataArray(np.zeros(2), dims="t")).data_vars) == ["value"]


def test_dict_of_plain_arrays_uses_default_dims() -> None:
    ds = to_dataset({"a": np.zeros(3), "b": np.ones(3), "c": 1.0})
    assert ds["a"].dims == ("dim_0",) and ds["c"].dims == ()


def test_dict_with_conflicting_shapes_explains_the_fix() -> None:
    with pytest.raises(
        TypeError, match=r"give arrays of different shapes their own dimension names"
    ):
        to_dataset({"a": np.zeros(3), "b": np.zeros(4)})


@pytest.mark.parametrize("output", [None, 3.0, [1, 2], "text"])
def test_unsupported_outputs(output: Any) -> None:
    with pytest.raises(TypeError, match=r"must return an xarray.Dataset"):
        to_dataset(output)


def test_reserved_dimension_name() -> None:
    with pytest.raises(ValueError, match="'realization' dimension or variable"):
        to_dataset({"a": ("realization", np.zeros(2))})


def test_layout_differences_are_spelled_out() -> None:
    first = layout_of(xr.Dataset({"a": ("t", np.zeros(3)), "b": ("t", np.zeros(3))}))
    other = layout_of(xr.Dataset({"a": ("t", np.zeros(3, "f4")), "c": ("t", np.zeros(3))}))
    with pytest.raises(InconsistentRealizationError) as info:
        check_layout(other, first, 0)
    message = str(info.value)
    assert "variables ['b'] are missing" in message
    assert "variables ['c'] are extra" in message
    assert (
        "'a' has dims ('t',) shape (3,) dtype <f4 (realization 0: dims ('t',) shape (3,) dtype <f8)"
        in message
    )


def test_ragged_sizes_are_ignored_in_layouts() -> None:
    short = layout_of(xr.Dataset({"m": ("event", np.zeros(2))}), ragged=["event"])
    long = layout_of(xr.Dataset({"m": ("event", np.zeros(9))}), ragged=["event"])
    check_layout(long, short, 0)


def test_a_layout_like_the_template_is_the_layout() -> None:
    def grid(x: Any) -> xr.Dataset:
        return xr.Dataset({"u": ("x", np.zeros(len(x)))}, coords={"x": x})

    template = layout_of(grid(np.arange(10.0)))
    assert layout_of(grid(np.arange(10.0)), like=template) == template
    # values, dtype or shape of their own: their own preview, as without a template
    for x in (np.arange(10.0) + 0.5, np.arange(10, dtype="f4"), np.arange(11.0)):
        layout = layout_of(grid(x), like=template)
        assert layout == layout_of(grid(x))
        with pytest.raises(InconsistentRealizationError):
            check_layout(layout, template, 0)


def test_a_layout_whose_preview_alone_differs_is_the_same_layout() -> None:
    """The preview is only for messages: a worker process renders it with numpy's default
    print options, the calling process (or the run that recorded the template) with its own."""
    ds = xr.Dataset({"u": ("x", np.zeros(3))}, coords={"x": [0.123456789, 1.0, 2.0]})
    with np.printoptions(precision=3):
        template = layout_of(ds)
    layout = layout_of(ds)
    assert layout["x"].preview != template["x"].preview
    check_layout(layout, template, 0)


def test_a_categorical_coordinate_with_other_categories_has_another_layout() -> None:
    """Same values, other categories: xarray.concat refuses to align them (after the run)."""

    def kinds(*categories: str) -> xr.Dataset:
        index = pd.CategoricalIndex(["a", "b"], categories=categories)
        return xr.Dataset({"n": ("kind", [1, 2])}, coords={"kind": index})

    template = layout_of(kinds("a", "b"))
    check_layout(layout_of(kinds("a", "b")), template, 0)
    for categories in (("a", "b", "c"), ("b", "a")):
        with pytest.raises(InconsistentRealizationError, match=r"'kind' has dims .* category"):
            check_layout(layout_of(kinds(*categories)), template, 0)


def test_assemble_orders_by_index_and_keeps_common_attrs() -> None:
    parts = [
        xr.Dataset({"a": ((), float(k))}, attrs={"run": "r1", "realization": k}) for k in (2, 0, 1)
    ]
    ens = assemble(parts, [2, 0, 1])
    assert ens["a"].values.tolist() == [0.0, 1.0, 2.0]
    assert ens["realization"].values.tolist() == [0, 1, 2]
    assert ens.attrs == {"run": "r1"}


def test_assemble_puts_realization_first() -> None:
    parts = [xr.Dataset({"a": (("x", "y"), np.zeros((2, 3)))}) for _ in range(2)]
    assert assemble(parts, [0, 1])["a"].dims == ("realization", "x", "y")


def test_assemble_refuses_disagreeing_coordinates() -> None:
    a = xr.Dataset({"v": ("t", np.zeros(2))}, coords={"t": [0, 1]})
    b = xr.Dataset({"v": ("t", np.zeros(2))}, coords={"t": [0, 2]})
    with pytest.raises(ValueError, match="t"):
        assemble([a, b], [0, 1])


def _coordinate_kinds() -> xr.Dataset:
    """A Dataset with a coordinate of each kind an index can hold, and some without one."""
    import pandas as pd

    times = np.array(["2000-01-01", "NaT", "1999-12-31T23:59:59.5"], dtype="datetime64[ns]")
    ds = xr.Dataset(
        {"v": (("i", "f", "t", "s", "o", "d", "b"), np.zeros((2, 3, 3, 2, 3, 2, 2)))},
        coords={
            "i": [3, -1],
            "f": [0.0, -0.0, np.nan],
            "t": times,
            "s": np.array(["ab", "a\0"]),  # numpy drops a trailing NUL of a fixed-width str
            "o": np.array([1, "1", None], dtype=object),
            "d": np.array([1, 2], dtype="timedelta64[s]"),
            "b": [True, False],
            "scalar": 1.5,
            "grid": (("i", "f"), np.arange(6.0).reshape(2, 3)),
            "label": ("i", ["x", "y"]),
        },
    )
    ds = ds.set_xindex("label")  # an index on a coordinate that is not a dimension
    ds = ds.assign_coords(p=pd.period_range("2000-01", periods=2, freq="M"))
    ds = ds.assign_coords(r=pd.RangeIndex(4)).expand_dims("m", axis=0)
    ds["w"] = (("p", "r"), np.zeros((2, 4)))
    ds["u"] = (("x", "y"), np.zeros((2, 2)))
    ds = ds.assign_coords(x=["x0", "x1"], y=[0.5, 1.5])
    ds["z"] = ("c", np.zeros(3))
    ds = ds.assign_coords(c=["é", "", "漢字 and a longer one"])  # str: any width, not ASCII
    return ds.stack(pair=("x", "y"))  # a multi-index and its levels


@pytest.mark.parametrize("strings", ["default", "object"])
def test_coordinate_hashes_are_those_of_their_values(strings: str) -> None:
    # layout_of reads a pandas-indexed coordinate's values from its index (quicker): every
    # kind must hash as its ``.values`` do, or a realization would seem to differ from a file.
    # Strings: pandas 3 holds them in its own str dtype; before, in object arrays.
    import warnings

    import pandas as pd

    from threadensemble._results import _hash_values

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3: the option is deprecated
        with pd.option_context("future.infer_string", strings != "object"):
            ds = _coordinate_kinds()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (PeriodIndex.values warns on pandas 3)
        layout = layout_of(ds)
    indexed = {"t", "s", "o", "d", "label", "p", "r", "pair", "x", "i", "b", "f", "c"}
    assert indexed <= set(ds.xindexes)
    for name in ds.coords:
        assert layout[str(name)].values == _hash_values(np.asarray(ds[name].variable.values))
