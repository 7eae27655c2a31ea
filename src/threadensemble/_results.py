"""One realization's output as an `xarray.Dataset`, and many of them as one ensemble Dataset."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr
from xarray.indexes import PandasIndex

from ._errors import InconsistentRealizationError
from ._stacking import plain_variable, stack

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
    if isinstance(var.dtype, pd.CategoricalDtype):  # its categories too ('category' names none)
        categories = _hash_values(np.asarray(var.dtype.categories, dtype=object))
        return f"category[ordered={var.dtype.ordered}, categories {categories[:12]}]"
    if not isinstance(var.dtype, np.dtype):  # pandas' own (period[M], Int64): by name
        return str(var.dtype)
    dtype: np.dtype[Any] = var.dtype
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
    return plain_variable([f"dim_{i}" for i in range(values.ndim)], values)


def _coordinate_values(var: xr.Variable, index: object) -> np.ndarray[Any, Any]:
    """Return ``var.values`` for a coordinate; ``index`` is its xarray index, if any.

    A coordinate with a plain `PandasIndex` (not a multi-index) and a numpy dtype (not a
    period or a category) holds the index; its values are the index's array as a numpy array
    of the coordinate's dtype, as ``var.values`` makes it, but without xarray's adapter (two
    to five times as quick: every worker does this for every coordinate of every realization).
    """
    if type(index) is PandasIndex and var.ndim == 1 and isinstance(var.dtype, np.dtype):
        pandas_index = index.index
        values = pandas_index.values
        if isinstance(values, np.ndarray):
            return np.asarray(values, dtype=var.dtype)
        if var.dtype.kind == "U" and not pandas_index.hasnans:
            # pandas 3 holds strings in an array of its own: read as Python strings (a third
            # of the time of numpy converting that array itself)
            return np.asarray(pandas_index.to_numpy(dtype=object), dtype=var.dtype)
    return np.asarray(var.values)


def layout_of(ds: xr.Dataset, ragged: Sequence[str] = (), like: Layout | None = None) -> Layout:
    """Return the layout of ``ds``, with the sizes of ``ragged`` dimensions left out (-1).

    Coordinates are recorded with (a hash of) their values, so realizations whose coordinates
    differ are told apart before assembly.  A coordinate along a ragged dimension is compared
    by its values too, length included: realizations may differ in length along a ragged
    dimension only if that dimension has no coordinate (they could not be aligned otherwise).

    A coordinate whose dims, shape, dtype and values hash are those of the same coordinate in
    ``like`` (a layout found before, by the same worker) takes its preview from there: the same
    values print the same, and formatting them costs more than the hash (tens of microseconds
    per coordinate, for every realization).
    """
    layout = {}
    coords = ds.coords
    indexes = ds.xindexes
    for name, var in ds.variables.items():
        key = str(name)
        var_dims = var.dims
        dims = tuple(map(str, var_dims))
        shape = var.shape
        if ragged:
            shape = tuple(-1 if d in ragged else n for d, n in zip(var_dims, shape, strict=True))
        dtype = _dtype_of(var)
        if name not in coords:
            layout[key] = VariableLayout(dims, shape, dtype)
            continue
        data = _coordinate_values(var, indexes.get(name))
        values = _hash_values(data)
        known = like.get(key) if like is not None else None
        if known is not None and known[:4] == (dims, shape, dtype, values):
            layout[key] = known  # the same layout: its preview too
        else:
            preview = str(np.array2string(data, threshold=6, edgeitems=2, separator=", "))
            layout[key] = VariableLayout(dims, shape, dtype, values, preview)
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
    if not problems:  # only the previews differ: rendered elsewhere (a worker's print options)
        return
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


def assemble(
    datasets: Sequence[xr.Dataset],
    indices: Sequence[int],
    ragged: Sequence[str] = (),
    checked_coords: bool = False,
) -> xr.Dataset:
    """Concatenate realizations along a new leading ``realization`` dimension, in index order.

    Attributes that differ between realizations (their index and seed) are dropped from the
    result; run-wide attributes are kept.  Dimensions named in ``ragged`` may differ in length
    between realizations: shorter ones are padded at the end with missing values (NaN, NaT).
    ``checked_coords``: every dataset's layout passed `check_layout` against the first's.
    """
    order = np.argsort(indices, kind="stable")
    ordered = [datasets[i] for i in order]
    stacked = stack(ordered, REALIZATION_DIM, ragged, checked_coords)
    ensemble = stacked if stacked is not None else _concat(ordered, ragged)
    return label_realizations(ensemble, [indices[i] for i in order])


def label_realizations(ensemble: xr.Dataset, indices: Sequence[int]) -> xr.Dataset:
    """Give a concatenated ensemble its ``realization`` coordinate and put that dim first."""
    # Built from its pandas index, which xarray takes as it is (no dask check, as `plain_variable`).
    index = PandasIndex(pd.Index(np.asarray(indices)), REALIZATION_DIM)
    coords = xr.Coordinates(index.create_variables(), indexes={REALIZATION_DIM: index})
    labelled = ensemble.assign_coords(coords)
    ordered_dims: xr.Dataset = labelled.transpose(REALIZATION_DIM, ...)
    return ordered_dims
