"""One realization's output as an `xarray.Dataset`, and many of them as one ensemble Dataset."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr

from ._errors import InconsistentRealizationError

__all__ = [
    "CONCAT_OPTIONS",
    "REALIZATION_DIM",
    "Layout",
    "VariableLayout",
    "assemble",
    "check_layout",
    "label_realizations",
    "layout_from_json",
    "layout_of",
    "layout_to_json",
    "to_dataset",
]

REALIZATION_DIM = "realization"

# How realizations are concatenated, in memory and from files alike: every data variable gets
# the realization dimension; coordinates and indexes must agree exactly between realizations;
# attributes that differ between them (their index and seed) are dropped.
CONCAT_OPTIONS: dict[str, Any] = {
    "data_vars": "all",
    "coords": "minimal",
    "compat": "equals",
    "join": "exact",
    "combine_attrs": "drop_conflicts",
}


class VariableLayout(NamedTuple):
    """What every realization must share for one variable: dims, shape, dtype, coordinate values.

    ``shape`` has -1 for ragged dimensions.  ``dtype`` is numpy's ``dtype.str``, except that
    strings are compared by kind only (``<U``, ``|S``): their length may differ between
    realizations.  ``values`` is a hash of a coordinate's values (None for data variables), and
    ``preview`` a short rendering of them for messages.
    """

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    values: str | None = None
    preview: str | None = None


# name -> layout of every data variable and coordinate (scalar coordinates included)
Layout = dict[str, VariableLayout]


def _variable(
    dims: Sequence[Any], values: Any, attrs: Mapping[str, Any] | None = None
) -> xr.Variable:
    """Return ``xr.Variable(dims, values, attrs)``, without asking dask for plain numbers.

    xarray checks every new array against dask's array type, which imports ``dask.array`` (and
    through it scipy) on first use, about 0.5 s, when dask is installed: a cost that the first
    ensemble of every process would pay for nothing.  A plain numpy array of bools or numbers
    needs none of xarray's conversions (those are for objects, dates, masked and duck arrays),
    so it goes in as it is (``fastpath``, which xarray uses for the same purpose internally);
    anything else takes xarray's usual path.
    """
    if type(values) is np.ndarray and values.dtype.kind in "biufc":
        return xr.Variable(tuple(dims), values, attrs, fastpath=True)
    return xr.Variable(tuple(dims), values, attrs)


def to_dataset(output: Any) -> xr.Dataset:
    """Return what ``simulate`` returned as a Dataset.

    A Dataset is kept as it is; a DataArray becomes a Dataset of one variable (named after the
    array, else ``"value"``); a mapping of name to array (or to ``(dims, array)``) becomes a
    Dataset whose plain arrays get xarray's default dimension names ``dim_0, dim_1, ...``.
    """
    if isinstance(output, xr.Dataset):
        ds = output
    elif isinstance(output, xr.DataArray):
        ds = output.to_dataset(name=output.name if output.name is not None else "value")
    elif isinstance(output, Mapping):
        try:
            ds = xr.Dataset(
                {
                    name: value
                    if isinstance(value, tuple | xr.DataArray)
                    else _default_dims_variable(np.asarray(value))
                    for name, value in output.items()
                }
            )
        except ValueError as exc:
            raise TypeError(
                f"cannot make a Dataset of the returned dict ({exc}); "
                "give arrays of different shapes their own dimension names as (dims, array)"
            ) from exc
    else:
        raise TypeError(
            "simulate must return an xarray.Dataset, an xarray.DataArray "
            f"or a dict of arrays, got {type(output).__name__}"
        )
    if REALIZATION_DIM in ds.dims or REALIZATION_DIM in ds.variables:
        raise ValueError(
            f"the output already has a {REALIZATION_DIM!r} dimension or "
            "variable; that name is reserved for the ensemble dimension"
        )
    return ds


def _dtype_of(var: xr.Variable) -> str:
    dtype: np.dtype[Any] = np.dtype(var.dtype)
    return dtype.str[:2] if dtype.kind in "US" else dtype.str


def _hash_values(values: np.ndarray[Any, Any]) -> str:
    digest = hashlib.blake2b(f"{values.dtype.kind}{values.shape}".encode(), digest_size=16)
    if values.dtype.kind in "biufcmM":
        digest.update(np.ascontiguousarray(values).tobytes())
    else:  # strings of any length, objects: by their text
        digest.update("\0".join(map(repr, values.ravel().tolist())).encode())
    return digest.hexdigest()


def _default_dims_variable(values: np.ndarray) -> xr.Variable:
    """Return ``xr.DataArray(values).variable``: dimensions ``dim_0, dim_1, ...``."""
    return _variable([f"dim_{i}" for i in range(values.ndim)], values)


def layout_of(ds: xr.Dataset, ragged: Sequence[str] = ()) -> Layout:
    """Return the layout of ``ds``, with the sizes of ``ragged`` dimensions left out (-1).

    Coordinates are recorded with (a hash of) their values, so realizations whose coordinates
    differ are told apart before assembly.  A coordinate along a ragged dimension is compared
    by its values too, length included: realizations may differ in length along a ragged
    dimension only if that dimension has no coordinate (they could not be aligned otherwise).
    """
    layout = {}
    for name, var in ds.variables.items():
        values = preview = None
        if name in ds.coords:
            data = np.asarray(var.values)
            values = _hash_values(data)
            preview = str(np.array2string(data, threshold=6, edgeitems=2, separator=", "))
        layout[str(name)] = VariableLayout(
            tuple(str(d) for d in var.dims),
            tuple(-1 if d in ragged else n for d, n in zip(var.dims, var.shape, strict=True)),
            _dtype_of(var),
            values,
            preview,
        )
    return layout


def layout_to_json(layout: Layout) -> dict[str, Any]:
    """Return ``layout`` as JSON data (for the manifest); `layout_from_json` reverses it."""
    return {name: var._asdict() for name, var in layout.items()}


def layout_from_json(data: Mapping[str, Any]) -> Layout:
    """Return the layout recorded by `layout_to_json`."""
    return {
        name: VariableLayout(
            tuple(var["dims"]), tuple(var["shape"]), var["dtype"], var["values"], var["preview"]
        )
        for name, var in data.items()
    }


def check_layout(layout: Layout, template: Layout, template_index: int) -> None:
    """Raise InconsistentRealizationError naming how ``layout`` differs from the template's."""
    if layout == template:
        return
    problems = []
    if missing := sorted(template.keys() - layout.keys()):
        problems.append(f"variables {missing} are missing")
    if extra := sorted(layout.keys() - template.keys()):
        problems.append(f"variables {extra} are extra")
    for name in sorted(layout.keys() & template.keys()):
        this, first = layout[name], template[name]
        if this[:3] != first[:3]:
            problems.append(
                f"{name!r} has dims {this.dims} shape {this.shape} dtype {this.dtype} "
                f"(realization {template_index}: dims {first.dims} shape {first.shape} "
                f"dtype {first.dtype})"
            )
        elif this.values != first.values:
            ragged = [d for d, n in zip(this.dims, this.shape, strict=True) if n == -1]
            along = f" along ragged dimension {ragged[0]!r}" if ragged else ""
            problems.append(
                f"coordinate {name!r}{along} has values {this.preview} "
                f"(realization {template_index}: {first.preview})"
            )
    raise InconsistentRealizationError(
        f"differs from realization {template_index}: " + "; ".join(problems)
    )


def _pad_ragged(datasets: Sequence[xr.Dataset], ragged: Sequence[str]) -> list[xr.Dataset]:
    longest = {d: max(ds.sizes.get(d, 0) for ds in datasets) for d in ragged}
    padded = []
    for ds in datasets:
        short = {d: (0, n - ds.sizes[d]) for d, n in longest.items() if ds.sizes.get(d, n) < n}
        padded.append(ds.pad(short) if short else ds)
    return padded


def _concat(datasets: Sequence[xr.Dataset], ragged: Sequence[str]) -> xr.Dataset:
    """Concatenate with ``xarray.concat`` and `CONCAT_OPTIONS`, padding ragged dims first."""
    if ragged:
        datasets = _pad_ragged(datasets, ragged)
    return xr.concat(datasets, dim=REALIZATION_DIM, **CONCAT_OPTIONS)


def _same(a: Any, b: Any) -> bool | None:
    """Whether two attribute values are equal; None for kinds `_stack` leaves to xarray."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind not in "biuUS" or b.dtype.kind not in "biuUS" or a.shape != b.shape:
            return None
        return bool(np.array_equal(a, b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return False
        pairs = [_same(x, y) for x, y in zip(a, b, strict=True)]
        return None if None in pairs else all(pairs)
    plain = (str, bytes, bool, int, float, np.integer, np.floating, np.bool_)
    if isinstance(a, plain) and isinstance(b, plain):
        both_nan = (
            isinstance(a, float | np.floating)
            and isinstance(b, float | np.floating)
            and (np.isnan(a) and np.isnan(b))
        )
        return bool(a == b or both_nan)  # NaN equals NaN here, as in xarray
    return None  # objects of other kinds: xarray has its own rules


def _common_attrs(attrs: Sequence[Mapping[Any, Any]]) -> dict[Any, Any] | None:
    """``combine_attrs="drop_conflicts"`` where it is plain: same keys, values kept if all equal.

    None when the keys differ or a value is of a kind `_same` does not judge.
    """
    first = attrs[0]
    if any(a.keys() != first.keys() for a in attrs):
        return None
    common = {}
    for key, value in first.items():
        verdicts = [_same(value, a[key]) for a in attrs[1:]]
        if None in verdicts:
            return None
        if all(verdicts):
            common[key] = value
    return common


def _stack(datasets: Sequence[xr.Dataset], ragged: Sequence[str]) -> xr.Dataset | None:
    """`_concat`'s result, made with numpy, for realizations that differ only in their data.

    ``xarray.concat`` costs a fraction of a millisecond per realization, in the calling thread
    after the workers are done: seconds for thousands of small realizations.  This stacks each
    data variable's values at once.  It returns None, leaving the case to `_concat`, unless
    every realization has the same variables, equal coordinates, the same attributes on every
    variable, run attributes of plain kinds, and ragged dimensions that need no padding or only
    on float or datetime variables without coordinates along them (filled with NaN or NaT, as
    ``Dataset.pad`` does).
    """
    first = datasets[0]
    names = list(first.variables)
    attrs = _common_attrs([ds.attrs for ds in datasets])
    if attrs is None or any(list(ds.variables) != names for ds in datasets):
        return None
    for name in names:
        var = first.variables[name]
        others = [ds.variables[name] for ds in datasets[1:]]
        for other in others:  # (attributes may be arrays: lists read back from files are)
            common = _common_attrs([var.attrs, other.attrs])
            if common is None or common.keys() != var.attrs.keys():
                return None
        if name in first.coords and not all(var.equals(other) for other in others):  # type: ignore[no-untyped-call]
            return None
    longest = {str(d): max(ds.sizes[d] for ds in datasets) for d in ragged if d in first.dims}
    padded_dims = {d for d, n in longest.items() if any(ds.sizes[d] < n for ds in datasets)}
    data_vars = {}
    for name in first.data_vars:
        var = first.variables[name]
        values = [ds.variables[name].values for ds in datasets]
        if padded_dims & set(map(str, var.dims)):
            if var.dtype.kind not in "fmM" or padded_dims & set(map(str, first.coords)):
                return None
            shape = tuple(longest.get(str(d), n) for d, n in zip(var.dims, var.shape, strict=True))
            missing = np.nan if var.dtype.kind == "f" else np.array("NaT", dtype=var.dtype)
            stacked = np.full((len(values), *shape), missing, dtype=var.dtype)
            for out, value in zip(stacked, values, strict=True):
                out[tuple(slice(0, n) for n in value.shape)] = value
        else:
            stacked = np.stack(values)
        data_vars[name] = _variable((REALIZATION_DIM, *var.dims), stacked, var.attrs)
        data_vars[name].encoding = dict(var.encoding)
    ensemble = xr.Dataset(data_vars, coords=first.coords, attrs=attrs)
    ensemble.encoding = dict(first.encoding)
    return ensemble


def assemble(
    datasets: Sequence[xr.Dataset], indices: Sequence[int], ragged: Sequence[str] = ()
) -> xr.Dataset:
    """Concatenate realizations along a new leading ``realization`` dimension, in index order.

    Attributes that differ between realizations (their index and seed) are dropped from the
    result; run-wide attributes are kept.  Dimensions named in ``ragged`` may differ in length
    between realizations: shorter ones are padded at the end with missing values (NaN, NaT).
    """
    order = np.argsort(indices, kind="stable")
    ordered = [datasets[i] for i in order]
    stacked = _stack(ordered, ragged)
    ensemble = stacked if stacked is not None else _concat(ordered, ragged)
    return label_realizations(ensemble, [indices[i] for i in order])


def label_realizations(ensemble: xr.Dataset, indices: Sequence[int]) -> xr.Dataset:
    """Give a concatenated ensemble its ``realization`` coordinate and put that dim first."""
    # Built from its pandas index, which xarray takes as it is (no dask check: see `_variable`).
    index = xr.indexes.PandasIndex(pd.Index(np.asarray(indices)), REALIZATION_DIM)
    labelled = ensemble.assign_coords(xr.Coordinates.from_xindex(index))
    ordered_dims: xr.Dataset = labelled.transpose(REALIZATION_DIM, ...)
    return ordered_dims
