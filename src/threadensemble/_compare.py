"""Comparing realizations bit for bit, missing values (NaN, NaT) in the same places equal.

Used by `threadensemble.check` (one worker against many threads and repeated runs) and by the
resumed-run check (`threadensemble._verify`: a realization recomputed against its file).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any, TypeAlias

import numpy as np
import xarray as xr

__all__ = ["Found", "differences", "max_abs_diff", "model_attrs", "same_value", "unequal"]

Found: TypeAlias = tuple[str, float, float]  # where, max abs difference, fraction differing


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating | np.complexfloating):
        return bool(np.isnan(value))
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    return False


def same_value(a: Any, b: Any) -> bool:
    """Element-wise equality of object arrays: same type, and equal value or both missing."""
    if a is b:
        return True
    if type(a) is not type(b):  # None is not NaN
        return False
    if _missing(a) and _missing(b):
        return True
    if isinstance(a, np.ndarray):  # in attributes
        return a.shape == b.shape and not unequal(a, b).any()
    if isinstance(a, float):
        return bool(a.hex() == b.hex())
    try:
        equal = a == b
        if isinstance(equal, bool | np.bool_):
            return bool(equal)
    except Exception:
        pass
    try:
        return pickle.dumps(a, protocol=5) == pickle.dumps(b, protocol=5)
    except Exception:
        return False


def unequal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return where ``x`` and ``y`` (same shape) differ bit for bit, missing values aside."""
    if x.dtype != y.dtype:
        return np.ones(x.shape, dtype=bool)
    if x.dtype.hasobject:
        flags = [not same_value(a, b) for a, b in zip(x.ravel(), y.ravel(), strict=True)]
        return np.array(flags, dtype=bool).reshape(x.shape)
    if x.dtype.itemsize == 0:
        return np.zeros(x.shape, dtype=bool)
    bytes_x = np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, x.dtype.itemsize)
    bytes_y = np.ascontiguousarray(y).view(np.uint8).reshape(*y.shape, y.dtype.itemsize)
    unequal = np.asarray((bytes_x != bytes_y).any(axis=-1))
    if x.dtype.kind in "fc":
        unequal &= ~(np.isnan(x) & np.isnan(y))
    elif x.dtype.kind in "mM":
        unequal &= ~(np.isnat(x) & np.isnat(y))
    return unequal


def max_abs_diff(x: np.ndarray, y: np.ndarray) -> float:
    if x.dtype.kind not in "iufcb" or x.dtype != y.dtype:
        return float("nan")
    with np.errstate(all="ignore"):
        diff = np.abs(x.astype(np.complex128) - y.astype(np.complex128))
    finite = diff[np.isfinite(diff)]
    return float(finite.max()) if finite.size else float("nan")


def model_attrs(attrs: Mapping[Any, Any]) -> dict[Any, Any]:
    """Return the attributes the model set (not threadensemble's own provenance attributes)."""
    return {k: v for k, v in attrs.items() if not str(k).startswith("threadensemble_")}


def _attr_differences(where: str, a: Mapping[Any, Any], b: Mapping[Any, Any]) -> list[Found]:
    x, y = model_attrs(a), model_attrs(b)
    return [
        (f"{where}attrs[{key!r}]", float("nan"), 1.0)
        for key in sorted(x.keys() | y.keys(), key=str)
        if key not in x or key not in y or not same_value(x[key], y[key])
    ]


def differences(a: xr.Dataset, b: xr.Dataset) -> list[Found]:
    """Return how two realizations differ: (where, max abs difference, fraction of values).

    ``where`` is a variable's name, or ``attrs[...]`` / ``name.attrs[...]`` for attributes
    (threadensemble's own ``threadensemble_*`` attributes aside); a variable present in only
    one, or of another shape, differs wholly (``inf``, 1.0).  Empty when they are the same.
    """
    found = _attr_differences("", a.attrs, b.attrs)
    for name in sorted(set(a.variables) | set(b.variables), key=str):
        if name not in a.variables or name not in b.variables or a[name].shape != b[name].shape:
            found.append((str(name), float("inf"), 1.0))
            continue
        found += _attr_differences(f"{name}.", a[name].attrs, b[name].attrs)
        x, y = a[name].values, b[name].values
        differ = unequal(x, y)
        if differ.any():
            found.append((str(name), max_abs_diff(x[differ], y[differ]), float(differ.mean())))
    return found
