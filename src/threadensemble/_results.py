"""One realization's output as an `xarray.Dataset`, and many of them as one ensemble Dataset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ._errors import InconsistentRealizationError

__all__ = [
    "CONCAT_OPTIONS",
    "REALIZATION_DIM",
    "Layout",
    "assemble",
    "check_layout",
    "label_realizations",
    "layout_of",
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

# name -> (dims, shape, dtype) of every data variable and coordinate
Layout = dict[str, tuple[tuple[str, ...], tuple[int, ...], str]]


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
                    else xr.DataArray(np.asarray(value))
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


def layout_of(ds: xr.Dataset, ragged: Sequence[str] = ()) -> Layout:
    """Return the layout of ``ds``, with the sizes of ``ragged`` dimensions left out (-1)."""
    return {
        str(name): (
            tuple(str(d) for d in var.dims),
            tuple(-1 if d in ragged else n for d, n in zip(var.dims, var.shape, strict=True)),
            var.dtype.str,
        )
        for name, var in ds.variables.items()
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
        if layout[name] != template[name]:
            (d0, s0, t0), (d1, s1, t1) = template[name], layout[name]
            problems.append(
                f"{name!r} has dims {d1} shape {s1} dtype {t1} "
                f"(realization {template_index}: dims {d0} shape {s0} dtype {t0})"
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
    if ragged:
        ordered = _pad_ragged(ordered, ragged)
    ensemble = xr.concat(ordered, dim=REALIZATION_DIM, **CONCAT_OPTIONS)
    return label_realizations(ensemble, [indices[i] for i in order])


def label_realizations(ensemble: xr.Dataset, indices: Sequence[int]) -> xr.Dataset:
    """Give a concatenated ensemble its ``realization`` coordinate and put that dim first."""
    labelled = ensemble.assign_coords({REALIZATION_DIM: np.asarray(indices)})
    ordered_dims: xr.Dataset = labelled.transpose(REALIZATION_DIM, ...)
    return ordered_dims
