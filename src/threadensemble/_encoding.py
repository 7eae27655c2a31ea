"""What a realization file can hold: a Dataset checked (and minimally converted) for netCDF4.

netCDF-C and xarray refuse some outputs only in the middle of writing, with errors that name
no variable ("NetCDF: HDF error", "Invalid value for attr").  `netcdf_ready` checks a
realization before its file is opened, and names the variable or attribute and the rule.  It
changes only what has one obvious lossless encoding: a bool attribute (or a list or array of
bools) is stored as int8 0/1, and reads back as 0/1.  Everything else that netCDF4 cannot store
is refused rather than silently changed: a None attribute (netCDF has no null), complex data,
floats other than float32 and float64 (float16, ``np.longdouble``), object arrays that are not
all strings, pandas' own dtypes (category, nullable numbers, tz-aware times, periods), and
names netCDF-C refuses (``NC_check_name``) or would change: empty, with ``/``, longer than 256
bytes, starting with an ASCII character other than a letter, digit or ``_``, holding an ASCII
control character, ending in ASCII whitespace, or not in Unicode NFC (netCDF-C normalizes
names, so the name read back would differ).  Strings of any length are fine (xarray
stores them as variable-length strings).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from ._errors import UnstorableOutputError

__all__ = ["netcdf_ready"]

MAX_NAME_BYTES = 256  # NC_MAX_NAME
_INT64 = np.iinfo(np.int64)
_UINT64 = np.iinfo(np.uint64)


def _check_name(name: Hashable, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise UnstorableOutputError(f"{what} {name!r}: netCDF names must be non-empty strings")
    if "/" in name:
        raise UnstorableOutputError(f"{what} {name!r}: netCDF names cannot contain '/'")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise UnstorableOutputError(f"{what} {name!r}: netCDF names must be valid UTF-8") from None
    if name[0].isascii() and not (name[0].isalnum() or name[0] == "_"):
        raise UnstorableOutputError(
            f"{what} {name!r}: netCDF names start with a letter, a digit, '_' or a non-ASCII "
            "character"
        )
    if any(c.isascii() and not c.isprintable() for c in name):
        raise UnstorableOutputError(
            f"{what} {name!r}: netCDF names cannot hold control characters (tab, newline, ...)"
        )
    if name[-1].isascii() and name[-1].isspace():
        raise UnstorableOutputError(f"{what} {name!r}: netCDF names cannot end in whitespace")
    if unicodedata.normalize("NFC", name) != name:
        raise UnstorableOutputError(
            f"{what} {name!r}: netCDF stores names in Unicode NFC form, so it would be read back "
            f"as {unicodedata.normalize('NFC', name)!r}; normalize it first"
        )
    if len(name.encode()) > MAX_NAME_BYTES:
        raise UnstorableOutputError(
            f"{what} {name[:40]!r}...: netCDF names are at most {MAX_NAME_BYTES} bytes long, "
            f"this one has {len(name.encode())}"
        )


def _check_dtype(dtype: np.dtype[Any] | object, values: Any, what: str) -> None:
    if not isinstance(dtype, np.dtype):  # (netCDF-C's error: "Cannot interpret ...")
        raise UnstorableOutputError(
            f"{what} has dtype {dtype}, one of pandas' own: netCDF4 stores "
            "numpy dtypes only; convert it (a category to its values' dtype, nullable "
            "numbers to floats with NaN, tz-aware times to UTC datetime64)"
        )
    if dtype.kind == "c":
        raise UnstorableOutputError(
            f"{what} has dtype {dtype}: netCDF4 cannot store complex numbers; return the real "
            "and imaginary parts as two variables"
        )
    if dtype.kind == "f" and dtype.itemsize not in (4, 8):
        raise UnstorableOutputError(
            f"{what} has dtype {dtype} ({8 * dtype.itemsize}-bit floats): netCDF4 stores "
            "float32 and float64 only; convert it (float16 to float32, longdouble to float64)"
        )
    if dtype.kind == "O" and not all(isinstance(v, str) for v in np.asarray(values).ravel()):
        raise UnstorableOutputError(
            f"{what} has dtype object with values that are not all strings: netCDF4 stores "
            "numbers, strings, dates and bools only"
        )
    if dtype.kind not in "biufSUOmM":
        raise UnstorableOutputError(f"{what} has dtype {dtype}: netCDF4 cannot store it")


def _attribute(value: Any, what: str) -> Any:
    """Return ``value`` as netCDF4 stores it (bools as int8), or raise naming the rule."""
    if value is None:
        raise UnstorableOutputError(
            f"{what} is None: netCDF has no null attribute; drop it or store a string"
        )
    if isinstance(value, bool | np.bool_):
        return np.int8(value)
    if isinstance(value, str | bytes | np.str_ | np.bytes_):
        return value
    if isinstance(value, int):
        if not _INT64.min <= value <= _UINT64.max:
            raise UnstorableOutputError(f"{what} = {value}: too large for a 64-bit integer")
        return value
    if isinstance(value, float | np.integer | np.floating):
        _check_dtype(np.asarray(value).dtype, value, what)
        return value
    if isinstance(value, list | tuple | np.ndarray):
        array = np.asarray(value)
        if array.ndim > 1:
            raise UnstorableOutputError(f"{what} has {array.ndim} dimensions: at most 1")
        if array.dtype.kind == "b":
            return array.astype(np.int8)
        if array.dtype.kind not in "iufSU":
            raise UnstorableOutputError(
                f"{what} = {value!r}: a list attribute holds numbers only or strings only"
            )
        _check_dtype(array.dtype, array, what)
        return value
    raise UnstorableOutputError(
        f"{what} is a {type(value).__name__}: netCDF attributes are strings, numbers, bools "
        "or lists of numbers or of strings"
    )


def _attributes(attrs: Mapping[Any, Any], where: str) -> dict[Any, Any]:
    converted = {}
    for name, value in attrs.items():
        _check_name(name, f"attribute of {where}")
        converted[name] = _attribute(value, f"attribute {name!r} of {where}")
    return converted


def netcdf_ready(ds: xr.Dataset) -> xr.Dataset:
    """Return ``ds`` as it will be written to a netCDF4 file, or raise naming what cannot be.

    Raises
    ------
    UnstorableOutputError
        A name, dtype or attribute that netCDF4 cannot store (the message says which rule).
    """
    for dim in ds.dims:
        _check_name(dim, "dimension")
    ready = ds.copy(deep=False)  # new variables and attrs; the data are not copied
    for name, var in ready.variables.items():
        _check_name(name, "variable")
        _check_dtype(var.dtype, var.values if var.dtype.kind == "O" else None, f"variable {name!r}")
        var.attrs = _attributes(var.attrs, f"variable {name!r}")
    ready.attrs = _attributes(ds.attrs, "the dataset")
    return ready
