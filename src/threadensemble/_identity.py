"""The run identity from the model itself: a content fingerprint of what determines the numbers.

`model_fingerprint` hashes ``simulate``, ``args``, ``kwargs``, ``state``, ``seed_for`` and
``warmup`` by content, so that a re-run into an ensemble directory is accepted only when it would
compute the same realizations.  It walks the object graph with `threadensemble._shared.children`
(plus what only identity needs: a function's code and the globals it loads, a class's content, a
bound method's function and object, the elements of object arrays, xarray variables and attrs,
and ``__reduce_ex__`` for extension objects) and builds a Merkle tree: every node's digest covers
its own content and its children's digests, so a shared object hashes the same wherever it is
reached (its digest is computed once) and a cycle is named by the path of the ancestor it
returns to.

Below the recorded paths (the `MAX_RECORDED_PATHS` shallowest, which `differences` names) the
walk hands what is left to regions (`_Walk._region`): the remaining children of a node too deep
to be recorded are written by a C `pickle.Pickler` in fast mode (no memo, so the bytes never
depend on which strings or containers are shared), protocol 3, into SHA-256.  Lists, tuples,
dicts (exact types, in their order) and scalars (by type and bits) are written by the pickler;
the objects of the user's plain classes (``__dict__`` and slots only) and the user's functions
are numbered as first reached and written afterwards, breadth first, each once (their class by
its digest and slot names, their ``__dict__`` in insertion order, slots, a function by what the
walk reads of it), so pickle never recurses through the object graph; a weak reference by its
referent; everything else (code, classes, modules, arrays, numpy scalars, sets and their
subclasses, what the walk reads specially) by the walk's digest, so its semantics stay the
walk's.  An exact set is pickled in hash order: the part holding one is walked instead.  The
route is a function of content only: records and regions depend on the walk's order, which
follows content (set elements are walked with no regions below them), and the walk runs in a
new thread at a fixed distance from the recursion limit, so containers nested too deep for
pickle fall back to the walk whatever the caller's stack depth or recursion limit.  A region
that cannot be read by content (unreadable objects, nesting too deep) is undone, and the walk
hashes everything after it without regions.  A region's digest is tagged; an object numbered in
a region and reached again is hashed by its number (its record shows its own attributes).  In
regions, which objects of the user's classes are shared is content: one object reached twice
and two equal objects are different models (the walk counts both the same).

What is hashed, and how:

* numpy arrays: dtype, shape and the raw buffer (so NaN, NaT and datetime64 values by their
  bytes) with SHA-256, which hashlib computes without the GIL for large buffers; it was the
  fastest hashlib digest measured here (2.1 GB/s with SHA extensions, blake2b 1.2, md5 0.9);
  a strided view is copied in chunks, a structured dtype by its fields, a memmap as an array.
  Object-dtype arrays element by element.
* code: its compiled content (bytecode, constants with nested code, the names it uses, the
  argument layout), tagged with ``sys.implementation.cache_tag``; never line numbers, file names
  or the source on disk (a module edited after its import runs its old code).
* functions of the user's own code (any module outside the standard library, site-packages and
  dist-packages): code, defaults, closure contents, and every global their instructions load
  (``LOAD_GLOBAL``/``LOAD_NAME``, not ``co_names``, which also holds attribute names), by
  content whatever its type, with module attribute chains (``helpers.growth``) followed through
  the user's modules.  Functions, classes and modules of installed packages count by their
  distribution's version (``numpy 1.26.4``); of the standard library and threadensemble by name.
* classes of the user's code: module, qualname, bases, and their own ``__dict__`` (functions,
  static and class methods, properties, data); an instance counts its class too.
* everything else: scalars by ``repr`` (a NaN with its bits; a subclass by type, value and
  attributes), containers by items (a list, tuple or dict of scalars or tuples of scalars by
  `marshal` version 2, type-checked and written in C: see `_plain_bytes`; small ones of
  scalars and finished objects without a stack frame), dict keys that are not scalars by
  content, sets by their elements' digests sorted (never hash order or ``repr``), objects by
  ``__dict__`` and ``__slots__``, pandas objects with their index, name, categories and dtype,
  extension objects by what ``__reduce_ex__`` returns.  A dict's insertion order is content:
  iterating it in another order can change the numbers.
* contentless by decision: locks, events, conditions, semaphores, barriers, ``threading.local``
  and loggers/handlers (synchronisation and logging do not determine the numbers).

What cannot be read (an open file, a generator, an extension object that cannot be reduced) is
listed in `Fingerprint.opaque`, never skipped silently: the caller then asks for ``run_id``.

Cost (docs/reliability.md; CPython 3.11, busy 2-CPU machine, walk and regions interleaved):
fire's 98,000 objects 7 times faster than walked (0.11 s, 0.77 s), many small objects 8 to
16 times, with about 110 bytes of numbering per object (the walk kept about 400).
"""

from __future__ import annotations

import dis
import functools
import hashlib
import importlib.metadata
import itertools
import logging
import marshal
import os
import pickle
import struct
import sys
import sysconfig
import threading
import types
import weakref
from collections import ChainMap, defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd  # an xarray dependency (no stubs: see pyproject)
import xarray as xr

from ._shared import _ATOMS as _WALKED_AS_ATOMS
from ._shared import (
    _GENERATORS, _OPAQUE, _REPR_BITS, _STDLIB, _attributes, _slot_descriptors, children, key_text,
)  # fmt: skip

__all__ = ["MAX_RECORDED_PATHS", "Fingerprint", "differences", "model_fingerprint"]

MAX_RECORDED_PATHS = 1000  # the shallowest nodes are recorded for error messages; all are hashed
_SHOWN = 60  # characters of a value shown in a record
_ATOMS = (str, bytes, int, float, complex, bool, type(None))  # hashed by repr, not deduplicated
# Named by their package's version and name (C-level callables: ``np.add``, ``math.sin``,
# ``str.upper``); a bound one (``[].append``) also by the object it is bound to.
_BY_NAME = (
    types.ModuleType, type, types.BuiltinFunctionType, types.MethodWrapperType,
    types.MethodDescriptorType, types.WrapperDescriptorType, types.ClassMethodDescriptorType,
    np.ufunc,
)  # fmt: skip
_CONTENTLESS = (
    type(threading.Lock()),
    type(threading.RLock()),
    threading.Event,
    threading.Condition,
    threading.Semaphore,
    threading.Barrier,
    threading.local,
    logging.Logger,
    logging.Handler,
)
_PLAIN = frozenset(_ATOMS)  # exact types, for the quick paths of containers
_ARRAYS = frozenset((np.ndarray, np.memmap))  # hashed as leaves (a memmap's file is no content)
_QUICK_CONTAINERS = frozenset((list, tuple, dict))
_QUICK_SIZE = 256
_SPECIAL = (
    *_ATOMS, *_BY_NAME, *_CONTENTLESS, functools.partial, np.random.Generator, np.ndarray,
    np.generic, Mapping, list, tuple, set, frozenset, types.FunctionType, types.MethodType,
    types.CodeType, weakref.ref, xr.Dataset, xr.DataArray, xr.Variable,
)  # fmt: skip


@dataclass
class Fingerprint:
    """The content digest of a model, per-root digests and a bounded record for messages.

    ``roots`` maps each root (``simulate``, ``args[0]``, ``kwargs['n']``, ``state`` ...) to its
    digest; ``paths`` maps the `MAX_RECORDED_PATHS` shallowest paths to a short description
    (a value, an array's shape, dtype and digest, or a container's size and digest); ``opaque``
    lists the paths whose content could not be read.
    """

    digest: str
    roots: dict[str, str]
    paths: dict[str, str]
    opaque: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """Return what the manifest keeps (JSON-ready)."""
        return {
            "digest": self.digest,
            "interpreter": INTERPRETER,
            "scheme": SCHEME,
            "roots": self.roots,
            "paths": self.paths,
        }


def _sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _show(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 15]}... {_sha(text.encode())[:8]}"


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}:{getattr(obj, '__qualname__', None) or type(obj).__qualname__}"


INTERPRETER = sys.implementation.cache_tag  # bytecode differs between interpreters
SCHEME = 2  # how content is hashed: 2 (plain containers by marshal), 1 before (not recorded)
_GLOBAL_LOADS = frozenset(("LOAD_GLOBAL", "LOAD_NAME"))
_ATTRIBUTE_LOADS = frozenset(("LOAD_ATTR", "LOAD_METHOD"))


def _constant(value: Any) -> str:
    """Return a code constant's content (nested code by its content; sets sorted: no salt)."""
    if isinstance(value, types.CodeType):
        return _code_content(value)
    if isinstance(value, frozenset):
        return f"frozenset({sorted(map(_constant, value))})"
    if isinstance(value, tuple):
        return f"({', '.join(map(_constant, value))},)"
    return key_text(value)


@functools.lru_cache(maxsize=4096)  # thread-safe; code objects compare by content
def _code_content(code: types.CodeType) -> str:
    """Return the digest of what ``code`` computes: its bytecode, constants and the names it uses.

    Not its line numbers, file name or source text: comments and reformatting do not count,
    while the code that runs does (a file edited after its import, two lambdas on one line).
    """
    signature = (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags)
    content = repr((
        code.co_code.hex(), signature, code.co_names, code.co_varnames, code.co_freevars,
        code.co_cellvars, [_constant(c) for c in code.co_consts],
    ))  # fmt: skip
    return _sha(content.encode())[:32]


@functools.lru_cache(maxsize=4096)
def _global_loads(code: types.CodeType) -> tuple[tuple[str, ...], ...]:
    """Return the global names ``code`` and its nested code load, with their attribute chains.

    ``helpers.growth`` is ``("helpers", "growth")``.  Read from the instructions:
    ``co_names`` also holds attribute names (``cfg.k`` is no global ``k``).
    """
    found: dict[tuple[str, ...], None] = {}
    chain: list[str] = []
    for instruction in dis.get_instructions(code):
        if instruction.opname in _GLOBAL_LOADS:
            if chain:
                found[tuple(chain)] = None
            chain = [str(instruction.argval)]
        elif chain and instruction.opname in _ATTRIBUTE_LOADS:
            chain.append(str(instruction.argval))
        elif chain:
            found[tuple(chain)] = None
            chain = []
    if chain:
        found[tuple(chain)] = None
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.update(dict.fromkeys(_global_loads(const)))
    return tuple(found)


_BY_NAME_PACKAGES = frozenset(("threadensemble", "builtins"))  # the library: not the model's
_MODELS = "threadensemble.examples"


def _installed_paths() -> tuple[str, ...]:
    paths = {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(os.path.join(p, "") for p in paths if p)


@functools.lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()  # scans the installed ones: once


@functools.lru_cache(maxsize=4096)
def _package(module_name: str) -> str | None:
    """Return None for the user's own code (hashed by content), else what it is recorded by.

    That is ``"numpy 1.26.4"`` for an installed distribution, the top-level module name for the
    standard library and threadensemble (recorded, never compared).
    """
    top = module_name.partition(".")[0]
    if module_name.startswith(_MODELS):  # the example models count as a model of the user's
        return None
    if top in sys.stdlib_module_names or top in _BY_NAME_PACKAGES:
        return top
    module = sys.modules.get(module_name) or sys.modules.get(top)
    where = getattr(module, "__file__", None)
    if not isinstance(where, str):  # made by exec, or a namespace package: the user's
        return None
    where = os.path.realpath(where)
    parts = where.split(os.sep)
    installed = "site-packages" in parts or "dist-packages" in parts
    if not installed and not where.startswith(_installed_paths()):
        return None
    try:
        return f"{top} {importlib.metadata.version(_distributions().get(top, [top])[0])}"
    except importlib.metadata.PackageNotFoundError:
        return f"{top} {getattr(sys.modules.get(top), '__version__', '(version unknown)')}"


def _module_of(obj: Any) -> str:
    """Return the module ``obj`` was defined in; a C method's is its class's (``str.upper``)."""
    module = getattr(obj, "__module__", None)
    if isinstance(module, str):
        return module
    owner = getattr(obj, "__objclass__", None)
    if owner is None and isinstance(obj, types.BuiltinFunctionType | types.MethodWrapperType):
        bound = obj.__self__
        owner = None if isinstance(bound, types.ModuleType) else type(bound)
    module = getattr(owner, "__module__", None)
    return module if isinstance(module, str) else "?"


def _user_class(cls: type) -> bool:
    return bool(cls.__flags__ & _HEAP_TYPE) and _package(_module_of(cls)) is None


_CHUNK_BYTES = 1 << 24  # a strided array is copied and hashed this much at a time


def _dtype_text(dtype: np.dtype[Any]) -> str:
    """Return a dtype's content (``dtype.str`` loses a structured dtype's field names)."""
    return dtype.str if dtype.fields is None and dtype.subdtype is None else repr(dtype)


def _buffer_digest(array: np.ndarray) -> str:
    """SHA-256 of the array's bytes in C order (a strided view is copied in chunks)."""
    if array.flags.c_contiguous:
        return _sha(array.reshape(-1).view(np.uint8).data)
    hasher = hashlib.sha256()
    rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array
    step = max(1, _CHUNK_BYTES // max(1, rows[:1].nbytes))
    for start in range(0, rows.shape[0], step):
        chunk = np.ascontiguousarray(rows[start : start + step])
        hasher.update(chunk.reshape(-1).view(np.uint8).data)
    return hasher.hexdigest()


def _array_token(array: np.ndarray) -> str:
    head = f"array{array.shape} {_dtype_text(array.dtype)}"
    if array.dtype.hasobject:
        return head  # its elements are the node's children
    shown = f" {np.array2string(array, threshold=6)}" if array.size <= 6 else ""
    return f"{head} {_buffer_digest(np.asarray(array))[:16]}{shown}"


def _by_package(obj: Any, kind: str) -> str:
    """Name a module, class or function not of the user's code, with its package's version."""
    module = obj.__name__ if isinstance(obj, types.ModuleType) else _module_of(obj)
    package = _package(module)
    where = module if isinstance(obj, types.ModuleType) else _qualname(obj)
    if package is None or " " not in package:
        return f"{kind} {where}"
    return f"package {package} {kind} {where}"


def _token(obj: Any) -> str | None:
    """Return a node's own content, or None when it cannot be read."""
    if isinstance(obj, _ATOMS):
        text = _atom_text(obj) if type(obj) in _PLAIN else _atom_text(_atom_base(obj))
        return text if type(obj) in _PLAIN else f"{_qualname(type(obj))} {text}"
    if isinstance(obj, np.generic):
        data = np.asarray(obj).reshape(-1).view(np.uint8).data
        return f"{obj!r} {_dtype_text(obj.dtype)} {_sha(data)[:16]}"
    if isinstance(obj, np.ndarray):
        return _array_token(obj)
    if isinstance(obj, types.CodeType):
        return f"code {INTERPRETER} {_code_content(obj)[:16]}"
    if isinstance(obj, np.random.Generator):
        return f"Generator {_sha(repr(obj.bit_generator.state).encode())[:16]}"
    if isinstance(obj, type):
        if _user_class(obj):
            bases = ", ".join(_qualname(base) for base in obj.__bases__)
            return f"class {_qualname(obj)}({bases})"
        return _by_package(obj, "class")
    if isinstance(obj, types.ModuleType):
        return _by_package(obj, "module")
    if isinstance(obj, _BY_NAME):
        return _by_package(obj, type(obj).__name__)
    if isinstance(obj, _CONTENTLESS):
        return type(obj).__qualname__
    if isinstance(obj, weakref.ref):
        return "weakref"
    if isinstance(obj, Mapping | list | tuple | set | frozenset):
        return f"{type(obj).__qualname__} of {len(obj)}"
    if isinstance(obj, types.FunctionType):
        return _by_package(obj, "function")
    if isinstance(obj, types.MethodType | functools.partial):
        return f"{type(obj).__name__} {_qualname(obj)}"
    if isinstance(obj, xr.Dataset | xr.DataArray | xr.Variable):
        return f"{type(obj).__name__}{tuple(obj.dims)}"
    if isinstance(obj, pd.Series | pd.Index):
        return f"{type(obj).__name__} {obj.dtype!r}"
    if isinstance(obj, _Unreadable):
        return None
    return type(obj).__qualname__


def _atom_text(obj: Any) -> str:
    """Return a scalar's ``repr``; a NaN's with its bits (``repr`` hides its payload).

    A long int in hexadecimal (`key_text`): its ``repr`` may exceed the str-digits limit.
    """
    if type(obj) is int and obj.bit_length() > _REPR_BITS:
        return key_text(obj)
    if obj != obj and type(obj) in (float, complex):
        parts = (obj.real, obj.imag) if type(obj) is complex else (obj,)
        return f"{obj!r} {struct.pack('<' + 'd' * len(parts), *parts).hex()}"
    return repr(obj)


def _atom_base(obj: Any) -> Any:
    """Return a subclassed scalar as its base type (a float subclass's repr may hide it)."""
    base: Any = next(b for b in type(obj).__mro__ if b in _PLAIN)
    return base(obj)


_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: set for classes made at run time (class statements)


_C_FIELDS: dict[type, bool] = {}  # class -> _has_c_fields (used by the calling thread only)


def _has_c_fields(cls: type) -> bool:
    """Whether instances of ``cls`` hold content outside ``__dict__`` and ``__slots__``.

    True for extension types (an open file, a Cython class): a class statement adds at most the
    ``__dict__`` and ``__weakref__`` pointers and one pointer per slot to its base's size.
    """
    known = _C_FIELDS.get(cls)
    if known is None:
        known = False
        for klass in cls.__mro__[:-1]:
            slots = vars(klass).get("__slots__", ())
            n_slots = 1 if isinstance(slots, str) else len(slots)
            base = klass.__base__ or object
            grown = klass.__basicsize__ - base.__basicsize__
            if not klass.__flags__ & _HEAP_TYPE or grown > 8 * n_slots + 16:
                known = True
                break
        _C_FIELDS[cls] = known
    return known


def _reduced(obj: Any) -> tuple[Any, ...] | None:
    """Return ``obj.__reduce_ex__(4)`` as a tuple, or None when it cannot be reduced."""
    try:
        reduced = obj.__reduce_ex__(4)
    except Exception:  # "cannot pickle 'X' object": its content is not readable
        return None
    return reduced if isinstance(reduced, tuple) else ()


def _function_extras(func: types.FunctionType) -> Iterator[tuple[str, Any]]:
    """Yield a function's code and the globals it loads, whatever their type.

    Module attribute chains are followed through the user's modules (``helpers.growth``).
    """
    if _package(_module_of(func)) is not None:  # by its package's version (see `_token`)
        return
    yield ".__code__", func.__code__
    module_globals = func.__globals__
    for chain in _global_loads(func.__code__):
        if chain[0] not in module_globals:  # a builtin
            continue
        value, used = module_globals[chain[0]], 1
        for attribute in chain[1:]:
            if not isinstance(value, types.ModuleType) or _package(value.__name__) is not None:
                break
            try:
                value, used = getattr(value, attribute), used + 1
            except AttributeError:
                break
        yield f".<global {'.'.join(chain[:used])}>", value


# Not content: names, docs, line numbers, and what dataclass, enum and abc derive from the rest
# (and copyreg's ``__slotnames__``, cached on the class by the first copy or pickle of one).
_CLASS_SKIPPED = frozenset((
    "__dict__", "__weakref__", "__module__", "__qualname__", "__doc__", "__slots__",
    "__annotations__", "__dataclass_fields__", "__dataclass_params__", "__match_args__",
    "__orig_bases__", "__parameters__", "__abstractmethods__", "_abc_impl",
    "__static_attributes__", "__firstlineno__", "__slotnames__",
))  # fmt: skip
_DESCRIPTORS = (types.MemberDescriptorType, types.GetSetDescriptorType)


def _class_children(cls: type) -> Iterator[tuple[str, Any]]:
    """Yield a user class's own content: its user-code bases and what its ``__dict__`` holds."""
    for i, base in enumerate(cls.__bases__):
        if _user_class(base):
            yield f".__bases__[{i}]", base
    for name, value in list(vars(cls).items()):
        if name in _CLASS_SKIPPED or isinstance(value, _DESCRIPTORS):
            continue
        if isinstance(value, staticmethod | classmethod):
            yield f".{name}", value.__func__
        elif isinstance(value, property):
            for part in ("fget", "fset", "fdel"):
                if getattr(value, part) is not None:
                    yield f".{name}.{part}", getattr(value, part)
        else:
            yield f".{name}", value


def _pandas_children(obj: pd.Series | pd.Index) -> Iterator[tuple[str, Any]]:
    """Yield what `children` leaves out of a Series or Index: index, name, categories, codes."""
    if isinstance(obj, pd.Series):
        yield ".index", obj.index
    yield ".name", obj.name
    if isinstance(obj.dtype, pd.CategoricalDtype):
        yield ".cat.categories", obj.dtype.categories
        yield ".cat.codes", np.asarray(obj.array.codes if isinstance(obj, pd.Series) else obj.codes)


def _extras(obj: Any) -> Iterator[tuple[str, Any]]:
    """Yield the children that matter to identity beyond `children` (whose walk is reused)."""
    if isinstance(obj, types.FunctionType):
        yield from _function_extras(obj)
    elif isinstance(obj, types.MethodType):
        yield ".__func__", obj.__func__
        yield ".__self__", obj.__self__
    elif isinstance(obj, type):
        if _user_class(obj):
            yield from _class_children(obj)
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            for i, value in enumerate(obj.flat):
                yield f".flat[{i}]", value
        if type(obj) is not np.ndarray and isinstance(getattr(obj, "__dict__", None), dict):
            yield from ((f".{k}", v) for k, v in vars(obj).items())  # a subclass's mask, say
    elif isinstance(obj, xr.Dataset):
        for name, variable in obj.variables.items():
            yield f".variables[{name!r}]", variable
        yield ".attrs", obj.attrs
    elif isinstance(obj, xr.DataArray):
        yield ".name", obj.name
        yield ".variable", obj.variable
        for name, coord in obj.coords.items():
            yield f".coords[{name!r}]", coord.variable
    elif isinstance(obj, xr.Variable):
        yield ".values", obj.values
        yield ".attrs", obj.attrs
    elif isinstance(obj, weakref.ref):
        yield ".<referent>", obj()
    elif isinstance(obj, pd.Series | pd.Index):
        yield from _pandas_children(obj)
    elif isinstance(obj, _ATOMS) and isinstance(getattr(obj, "__dict__", None), dict):
        yield from ((f".{k}", v) for k, v in vars(obj).items())
    elif isinstance(obj, types.BuiltinFunctionType | types.MethodWrapperType):
        if not isinstance(obj.__self__, types.ModuleType | None):  # bound: ``[].append``
            yield ".__self__", obj.__self__
    if not isinstance(obj, type) and _user_class(type(obj)):
        yield ".<class>", type(obj)


class _Unreadable:
    """Stands for the content of an object that `children` and ``__reduce_ex__`` cannot read."""

    __slots__ = ("type_name",)

    def __init__(self, obj: Any) -> None:
        self.type_name = type(obj).__qualname__


def _is_plain_object(obj: Any) -> bool:
    """Whether ``obj`` is none of the kinds this module or `children` reads specially."""
    return not isinstance(obj, _SPECIAL)


_CONTAINERS = (Mapping, list, tuple, set, frozenset, deque)
_EXACT_CONTAINERS = frozenset((dict, list, tuple, set, frozenset, deque))


def _container_state(obj: Any) -> Iterator[tuple[str, Any]]:
    """Yield what a container holds besides its items: a subclass's attributes, a defaultdict's
    factory, a deque's maxlen, a ChainMap's maps (its items are only their merged view)."""
    if isinstance(obj, defaultdict):
        yield ".default_factory", obj.default_factory
    elif isinstance(obj, deque):
        yield ".maxlen", obj.maxlen
    elif isinstance(obj, ChainMap):
        yield ".maps", obj.maps
    if _user_class(type(obj)):  # ``__dict__`` and slots (stdlib containers keep their own)
        yield from _attributes(obj)


def _own_children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, _CONTENTLESS):
        return
    yield from _extras(obj)
    if isinstance(obj, xr.Dataset | xr.DataArray | xr.Variable | types.MethodType | type):
        return
    if isinstance(obj, Mapping):  # keys by content: a key's repr may not show it (nor be stable)
        for i, (key, value) in enumerate(list(obj.items())):
            if type(key) in _PLAIN:
                yield f"[{key_text(key)}]", value
            else:
                yield f".<key {i}>", key
                yield f"[<key {i}>]", value
        if type(obj) is not dict:
            yield from _container_state(obj)
        return
    found = False
    for item in children(obj):
        found = True
        yield item
    if type(obj) not in _EXACT_CONTAINERS and isinstance(obj, _CONTAINERS):
        yield from _container_state(obj)
        return
    # An object whose content `children` does not give (an extension type's C fields, or an
    # object `children` does not walk) is read as pickle would: by ``__reduce_ex__``.
    if _is_plain_object(obj) and (not found or _has_c_fields(type(obj))):
        reduced = _reduced(obj)
        if reduced is None:
            yield ".<content>", _Unreadable(obj)
            return
        for i, part in enumerate(reduced[1:3], start=1):
            yield f".<reduce {i}>", part
        for i, part in enumerate(reduced[3:5], start=3):
            if part is not None:
                yield f".<reduce {i}>", list(part)


_PLAIN_OR_TUPLE = _PLAIN | {tuple}
_LAZY = ""  # the record of a plain container: made from it only when it is recorded


def _plain_bytes(obj: list[Any] | tuple[Any, ...] | dict[Any, Any]) -> bytes | None:
    """Return the content of a list, tuple or dict of scalars (or tuples of them), made in C.

    That is `marshal` version 2 of it, or None for other content.  Version 2 writes each value
    by its type and content only: floats as their 8 bytes (NaN payloads, -0.0), no
    back-references and no interning flags (later versions write both, which depend on object
    identity and reference counts).  Exact types only, checked first: marshal would also write
    sets in hash order (salted per process), code objects, and any buffer (a numpy array) as
    plain bytes without its dtype and shape.
    """
    if type(obj) is dict:
        if not set(map(type, obj)) <= _PLAIN:
            return None
        values: Any = obj.values()
    else:
        values = obj
    kinds = set(map(type, values))
    if not kinds <= _PLAIN and not (
        kinds <= _PLAIN_OR_TUPLE
        and all(set(map(type, v)) <= _PLAIN for v in values if type(v) is tuple)
    ):
        return None
    return f"marshal {type(obj).__name__} ".encode() + marshal.dumps(obj, 2)


_SHOWN_ITEMS = 16  # the most items a record of a plain container is made from (repr is slow)


def _shown_as_repr(value: Any) -> bool:
    """Whether a record may show ``value`` by its ``repr`` (a long int's may raise)."""
    return type(value) in _PLAIN and not (type(value) is int and value.bit_length() > _REPR_BITS)


def _plain_record(obj: list[Any] | tuple[Any, ...] | dict[Any, Any], digest: str) -> str:
    """Return how a container of scalars (or of such containers) is shown in the record.

    A small one by its ``repr``; a long one by the ``repr`` of its first items and its digest;
    one of large containers by its type, size and digest.
    """
    if type(obj) is dict:
        items: Any = list(itertools.islice(obj.items(), _SHOWN_ITEMS))
    else:
        items = obj[:_SHOWN_ITEMS]
    values = [v for item in items for v in item] if type(obj) is dict else items
    if not all(
        _shown_as_repr(v)
        or (type(v) is tuple and len(v) <= _SHOWN_ITEMS and all(map(_shown_as_repr, v)))
        for v in values
    ):
        return f"{type(obj).__name__} of {len(obj)} {digest[1:17]}"
    if len(obj) <= _SHOWN_ITEMS:
        return _show(repr(obj))
    head = dict(items) if type(obj) is dict else items
    return f"{repr(head)[: _SHOWN - 15]}... {digest[1:9]}"


FAST_ROUTE = True  # hash what lies below the recorded paths with `pickle` (`_Walk._region`)
_FAST_HEADROOM = 900  # Python frames a walk with regions gets below the recursion limit
_FAST_BATCH = 512  # object bodies pickled per ``dump``


def _reference(number: int) -> None:
    """Stands, in a region's pickle, for the object of that number (never called)."""


def _digested(digest: str) -> None:
    """Stands, in a region's pickle, for an object the walk hashed (never called)."""


def _unset_slot() -> None:
    """Stands, in a region's pickle, for a slot without a value (never called)."""


def _weak_reference(referent: Any) -> None:
    """Stands, in a region's pickle, for a weak reference to ``referent`` (never called)."""


# Memoized in every region pickler: each use is written as a two-byte BINGET.
_MARKERS = {
    id(f): (i, f) for i, f in enumerate((_reference, _digested, _unset_slot, _weak_reference))
}
# Instances of these are hashed by the walk (each kind is read specially), not in a region.
_NOT_IN_REGIONS = (
    *_SPECIAL, *_WALKED_AS_ATOMS, *_GENERATORS, *_OPAQUE, pd.DataFrame, pd.Series, pd.Index,
    deque,
)  # fmt: skip


class _NotFast(Exception):
    """A region holds what its pickle cannot write by content alone: the walk hashes it."""


class _Sink:
    """Where a region's pickler writes: kept until `commit`; ``unordered`` if a set was written.

    An exact set or frozenset is pickled (protocol 3) as its type applied to a list of its
    items in hash order, salted per process; the set never reaches ``reducer_override``, but
    its type does: that marks the sink (`_Walk._reduce`).
    """

    __slots__ = ("hasher", "parts", "unordered")

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.parts: list[bytes] = []
        self.unordered = False

    def write(self, data: bytes) -> int:
        self.parts.append(data)
        return len(data)

    def commit(self) -> bool:
        """Hash what was written since the last call, unless it held a set; say which."""
        ordered = not self.unordered
        if ordered:
            for data in self.parts:
                self.hasher.update(data)
        self.parts.clear()
        self.unordered = False
        return ordered


class _RegionPickler(pickle.Pickler):
    """A pickler in fast mode (no memo: the bytes never depend on which objects are shared)."""

    def __init__(self, sink: _Sink, reduce: Callable[[Any], Any]) -> None:
        setattr(self, "reducer_override", reduce)  # noqa: B010 (read once, by __init__)
        super().__init__(sink, protocol=3)
        self.fast = True
        self.memo = _MARKERS


def _at_headroom(headroom: int, action: Callable[[], Fingerprint]) -> Fingerprint | None:
    """Call ``action`` with exactly ``headroom`` frames left below the recursion limit.

    So where a region's pickle meets the limit depends on its content only, not on the
    recursion limit (nor the caller's depth: `model_fingerprint` runs in a new thread).
    None when fewer frames are left (a recursion limit below about 920).
    """
    depth, frame = 0, sys._getframe()
    while frame.f_back is not None:
        depth, frame = depth + 1, frame.f_back
    spare = sys.getrecursionlimit() - depth - 1 - headroom
    return None if spare < 0 else _descend(spare, action)


def _descend(n: int, action: Callable[[], Fingerprint]) -> Fingerprint:
    return action() if n <= 0 else _descend(n - 1, action)


class _Frame:
    """A node being hashed: its children are hashed first (post-order, on an explicit stack).

    Paths are built only for the nodes recorded (``parent`` and ``suffix`` make them), so a
    deep object graph (a linked list of cells) costs linear, not quadratic, time.
    """

    __slots__ = (
        "children", "depth", "hasher", "index", "low", "obj", "parent", "suffix", "token", "wide",
    )  # fmt: skip

    def __init__(
        self, parent: _Frame | None, suffix: str, obj: Any, depth: int, token: str
    ) -> None:
        self.parent, self.suffix, self.obj = parent, suffix, obj
        self.depth, self.token = depth, token
        self.children = _own_children(obj)
        self.hasher = hashlib.sha256(token.encode())
        self.wide = False  # whether any child was hashed into it
        # Its place among the frames being hashed (`_Walk.chain`), and the lowest place its
        # subtree refers back to: below its own, its digest holds its context (`_Walk._finish`).
        self.index = self.low = 0

    def path(self) -> str:
        parts = []
        frame: _Frame | None = self
        while frame is not None:
            parts.append(frame.suffix)
            frame = frame.parent
        return "".join(reversed(parts))


# depth, order, parent, suffix, record (or the ancestor a cycle returns to: named when shown)
_Node = tuple[int, int, "_Frame | None", str, "str | _Frame"]


_NO_LAYOUT: Any = object()


def _slot_value(get: Callable[[Any], Any], obj: Any) -> Any:
    try:
        return get(obj)
    except AttributeError:  # an unset slot
        return _unset_slot


class _Walk:
    """One fingerprinting walk; ``done`` caches each non-atom object's digest by id.

    With ``fast``, what lies below the recorded paths is hashed in regions (`_region`).
    """

    def __init__(self, fast: bool = False) -> None:
        self.fast = fast
        # The objects of the user's classes pickled in regions: id -> number, in the order
        # first reached (``kept`` holds them, so that their ids are not reused).
        self.numbers: dict[int, int] = {}
        self.kept: list[Any] = []
        self.layouts: dict[type, tuple[str, bool, tuple[Any, ...]] | None] = {}
        self.pending: deque[Any] = deque()  # numbered objects whose bodies are not written yet
        self.picklers: list[tuple[_RegionPickler, _Sink]] = []  # one per region nesting level
        self.describer: tuple[_RegionPickler, _Sink] | None = None  # see `_described`
        self.level = 0  # regions being pickled (a region's walked objects may hold regions)
        self.region_depth = 0  # the depth the objects of the region being pickled count at
        self.suppressed = 0  # no regions while above zero: below a set (see `_set`, `_dump`)
        # id -> (object, digest, record); holding the object keeps its id from being reused
        self.done: dict[int, tuple[Any, str, str]] = {}
        self.active: dict[int, _Frame] = {}  # id -> frame, of the objects being hashed (cycles)
        self.chain: list[_Frame] = []  # the frames being hashed, outermost first
        self.nodes: list[_Node] = []  # candidates for the record: the shallowest ones
        self.order = 0
        # Nodes this deep cannot be among the shallowest any more: at first, those as deep as
        # MAX_RECORDED_PATHS (each of their ancestors is shallower).
        self.too_deep = MAX_RECORDED_PATHS
        self.per_depth: dict[int, int] = {}  # nodes kept at each depth above too_deep
        self.shallower = 0  # their number (fewer than MAX_RECORDED_PATHS)
        self.opaque: list[str] = []

    def _note(
        self, depth: int, parent: _Frame | None, suffix: str, record: str | _Frame, obj: Any = None
    ) -> None:
        """Keep a node as a candidate for the record (a `_LAZY` record is made from ``obj``)."""
        self.order += 1
        if depth >= self.too_deep:
            return
        if record == _LAZY:
            record = _plain_record(obj, self.done[id(obj)][1])
        self.nodes.append((depth, self.order, parent, suffix, record))
        self.per_depth[depth] = self.per_depth.get(depth, 0) + 1
        self.shallower += 1
        if self.shallower >= MAX_RECORDED_PATHS:  # a node this deep would come after as many
            self.too_deep = min(self.too_deep, max(self.per_depth) + 1)
            while self.shallower >= MAX_RECORDED_PATHS:
                self.too_deep -= 1
                self.shallower -= self.per_depth.pop(self.too_deep, 0)
        if len(self.nodes) >= 4 * MAX_RECORDED_PATHS:  # keep the shallowest (then earliest)
            self.nodes.sort(key=lambda n: n[:2])
            del self.nodes[MAX_RECORDED_PATHS:]

    def _enter(self, parent: _Frame | None, suffix: str, obj: Any, depth: int) -> str | _Frame:
        """Return the digest of a node known at once, or the frame of one to expand."""
        key = id(obj)
        if type(obj) in _PLAIN:
            token = _atom_text(obj)
            self._note(depth, parent, suffix, _show(token))
            return "v" + token  # hashed into the parent as it is
        if key in self.done:  # reached again: the same digest and record (shared, not copied)
            done, digest, record = self.done[key]
            self._note(depth, parent, suffix, record, done)
            return digest
        if key in self.numbers:  # pickled in a region: by its number (and own content if shown)
            if depth >= self.too_deep:
                self._note(depth, parent, suffix, "")
                return f"r{self.numbers[key]}"
            described = self._described(obj)
            self._note(depth, parent, suffix, described)
            return f"r{self.numbers[key]} {described}"
        if (type(obj) in _ARRAYS and not obj.dtype.hasobject) or isinstance(obj, np.generic):
            leaf = _token(obj)
            assert leaf is not None
            digest = "d" + _sha(leaf.encode())
            self.done[key] = (obj, digest, _show(leaf))
            self._note(depth, parent, suffix, _show(leaf))
            return digest
        if key in self.active:
            ancestor = self.active[key]
            self._back(ancestor)
            self._note(depth, parent, suffix, ancestor)
            return f"cycle {depth - ancestor.depth}"
        if type(obj) in _QUICK_CONTAINERS and (plain := self._plain(obj)) is not None:
            self._note(depth, parent, suffix, _LAZY, obj)
            return plain
        content = _token(obj)
        if content is not None and type(obj) in _QUICK_CONTAINERS:
            quick = self._quick(obj, depth, content)
            if quick is not None:
                self.done[key] = (obj, quick[0], quick[1])
                self._note(depth, parent, suffix, quick[1], obj)
                return quick[0]
        if content is None:  # the content of the parent object cannot be read
            assert isinstance(obj, _Unreadable) and parent is not None
            self.opaque.append(f"{parent.path()} ({obj.type_name})")
            content = f"unreadable {obj.type_name}"
        frame = _Frame(parent, suffix, obj, depth, content)
        frame.index = frame.low = len(self.chain)
        self.chain.append(frame)
        self.active[key] = frame
        if isinstance(obj, set | frozenset):
            return self._set(frame)
        return frame

    def _back(self, ancestor: _Frame) -> None:
        """Note that the innermost frame's content refers back to ``ancestor`` (a cycle)."""
        top = self.chain[-1]
        top.low = min(top.low, ancestor.index)

    def _set(self, frame: _Frame) -> str:
        """Hash a set by its elements, in the order of a key of each that needs no context.

        The key of an element is its digest by a walk of its own (`_set_key`), so the order
        depends on the elements' content only, never on hash order, ``repr``, or which element
        reached the others first (elements that refer to each other: a cycle).  The elements
        are then hashed in that order and their digests kept in it: the set's digest describes
        a sequence of its elements, so even elements with equal keys (walked in hash order)
        never make two different sets hash equal; at worst one set hashes two ways.  A
        subclass's attributes follow.  The elements are recorded as ``[*]``.
        """
        elements = list(frame.obj)
        keys = [_set_key(e) for e in elements]
        ordered = sorted(range(len(elements)), key=keys.__getitem__)  # stable: ties keep order
        rest = () if type(frame.obj) in _EXACT_CONTAINERS else _container_state(frame.obj)
        self.suppressed += 1  # no regions: they would number objects in the order walked
        try:
            for suffix, element in [*(("[*]", elements[i]) for i in ordered), *rest]:
                digest = self._subtree(frame, suffix, element, frame.depth + 1)
                frame.hasher.update(f"{suffix}\0{digest}\0".encode())
                frame.wide = True
        finally:
            self.suppressed -= 1
        return self._finish(frame)

    def _finish(self, frame: _Frame) -> str:
        """Return the digest of a frame whose children are all hashed, and record it.

        Its digest is kept for when it is reached again, unless its content refers back above
        it (a cycle to an ancestor: ``cycle 2`` names the ancestor by its distance, so the
        digest holds the context it was reached in).  Reached again, such an object counts by
        ``ref N``, the place of its entry in ``done`` (which grows in the walk's order, a
        function of content), as pickle's memo refers to an object pickled before; its first
        visit holds its content.  Its parent then refers back too.
        """
        digest = "d" + frame.hasher.hexdigest()
        key = id(frame.obj)
        del self.active[key]
        popped = self.chain.pop()
        assert popped is frame
        shown = _show(frame.token)
        record = f"{shown} {digest[1:17]}" if frame.wide else shown
        if frame.low < frame.index:
            self.done[key] = (frame.obj, f"ref {len(self.done)}", record)
            self._back(self.chain[frame.low])
        else:
            self.done[key] = (frame.obj, digest, record)
        self._note(frame.depth, frame.parent, frame.suffix, record)
        return digest

    def _plain(self, obj: list[Any] | tuple[Any, ...] | dict[Any, Any]) -> str | None:
        """Hash a list, tuple or dict of scalars (or tuples of them) in C, by `_plain_bytes`."""
        data = _plain_bytes(obj)
        if data is None:
            return None
        digest = "d" + _sha(data)
        self.done[id(obj)] = (obj, digest, _LAZY)
        return digest

    def _quick(
        self, obj: Any, depth: int, token: str, nested: int = 2
    ) -> tuple[str, str, bool] | None:
        """Hash a small list, tuple or dict without a frame: many small objects cost little.

        Its elements must be scalars, finished objects, or such containers (``nested`` levels
        deep).  The digest is the one the frame would compute; None when an element needs its
        own (or the container is large: its elements are then recorded one by one).
        """
        if len(obj) > _QUICK_SIZE or (
            type(obj) is dict and not all(type(k) in _PLAIN for k in obj)
        ):
            return None
        parts = [token]
        plain = True  # only scalars, at any level: the record shows the value itself
        for suffix, child in children(obj):
            key = id(child)
            if type(child) in _PLAIN:
                found = "v" + _atom_text(child)
            elif key in self.done:
                found, plain = self.done[key][1], False
            elif key in self.active:  # a cycle: hashed by a frame (see `_finish`)
                return None
            elif key in self.numbers:
                found, plain = f"r{self.numbers[key]}", False
            elif type(child) in _QUICK_CONTAINERS and (leaf := self._plain(child)) is not None:
                found = leaf
            elif nested and type(child) in _QUICK_CONTAINERS:
                inner = self._quick(child, depth + 1, f"{type(child).__qualname__} of {len(child)}",
                                    nested - 1)  # fmt: skip
                if inner is None:
                    return None
                found, plain = inner[0], plain and inner[2]
                self.done[key] = (child, found, inner[1])
            else:
                return None
            parts.append(f"{suffix}\0{found}\0")
        digest = "d" + _sha("".join(parts).encode())
        shown = _LAZY if plain else f"{_show(token)} {digest[1:17]}"
        return digest, shown, plain

    def digest(self, name: str, obj: Any) -> str:
        """Return the Merkle digest of ``obj``, the root ``name``."""
        return self._subtree(None, name, obj, 0)

    def _subtree(self, parent: _Frame | None, suffix: str, obj: Any, depth: int) -> str:
        """Return the Merkle digest of ``obj`` (iterative, on an explicit stack)."""
        first = self._enter(parent, suffix, obj, depth)
        if isinstance(first, str):
            return first
        stack = [first]
        while True:
            top = stack[-1]
            if self.fast and top.depth + 1 >= self.too_deep and not self.suppressed:
                self._region(top)
            step = next(top.children, None)
            if step is not None:
                child_suffix, child = step
                found = self._enter(top, child_suffix, child, top.depth + 1)
                if isinstance(found, str):
                    top.hasher.update(f"{child_suffix}\0{found}\0".encode())
                    top.wide = True
                else:
                    stack.append(found)
                continue
            stack.pop()
            digest = self._finish(top)
            if not stack:
                return digest
            stack[-1].hasher.update(f"{top.suffix}\0{digest}\0".encode())
            stack[-1].wide = True

    def _region(self, frame: _Frame) -> None:
        """Hash the children ``frame`` has left as one region: by `pickle`, written in C.

        The region's digest goes into the frame's hash (tagged: never equal to a child's).
        Its lists, tuples and dicts (exact types) and scalars are written by the pickler; the
        objects of the user's plain classes are numbered as first reached and written after
        it, one by one (`_body`), so that pickle never recurses through the object graph and
        every object is written once; everything else is hashed by the walk and written as
        its digest (`_reduce`); a part holding a set is walked (`_dump`).  When the region
        cannot be pickled by content alone (containers nested too deep, content that cannot
        be read), it is undone and the walk goes on without regions, for the rest of this walk.
        """
        first = next(frame.children, None)
        if first is None:
            return
        obj: Any = frame.obj
        rest: list[tuple[str, Any]] | None = None
        if type(obj) in (list, tuple):  # the items from this one on (no suffix strings made)
            start = int(first[0][1:-1])
            content: list[Any] = [type(obj).__name__, start, *obj[start:]]
        else:
            rest = [first, *frame.children]
            content = ["children", *rest]
        digest = self._pickled(content, frame.depth + 1)
        if digest is None:
            self.fast = False
            frame.children = (
                iter(rest) if rest is not None else itertools.chain([first], frame.children)
            )
            return
        frame.hasher.update(f"<region>\0{digest}\0".encode())
        frame.wide = True
        frame.children = iter(())

    def _pickled(self, content: Any, depth: int) -> str | None:
        """Return the digest of a region's pickle, or None (and nothing kept) when it fails."""
        if self.level == len(self.picklers):
            sink = _Sink()
            self.picklers.append((_RegionPickler(sink, self._reduce), sink))
        pickler, sink = self.picklers[self.level]
        sink.hasher, sink.unordered = hashlib.sha256(b"region pickle 3\0"), False
        sink.parts.clear()
        hasher = sink.hasher
        marks = (
            len(self.kept), len(self.done), len(self.active), len(self.opaque), self.order,
            self.too_deep, self.shallower, len(self.chain),
        )  # fmt: skip
        outer = self.pending, self.region_depth
        self.pending, self.region_depth = deque(), depth
        self.level += 1
        try:
            self._dump(pickler, sink, content)
            while self.pending:
                batch = [self._body(self.pending.popleft())
                         for _ in range(min(len(self.pending), _FAST_BATCH))]  # fmt: skip
                self._dump(pickler, sink, batch)
            failed = len(self.opaque) > marks[3]
        except (_NotFast, RecursionError, pickle.PicklingError, TypeError, ValueError):
            failed = True
        finally:
            self.level -= 1
            self.pending, self.region_depth = outer
        if failed:
            self._undo(marks)
            return None
        return "f" + hasher.hexdigest()

    def _dump(self, pickler: _RegionPickler, sink: _Sink, parts: Any) -> None:
        """Pickle a region's ``parts`` (a list or tuple); a part holding a set is walked.

        The walk hashes a set by its elements' digests sorted (its pickle lists them in hash
        order), with no regions below it; the region then holds the part's digest.
        """
        marks = len(self.kept), len(self.done)
        pickler.dump(parts)
        if sink.commit():
            return
        self._forget(marks)
        for part in parts:
            marks = len(self.kept), len(self.done)
            pickler.dump(part)
            if not sink.commit():
                self._forget(marks)
                pickler.dump(("walked", self._walked(part)))
                sink.commit()

    def _forget(self, marks: tuple[int, int]) -> None:
        """Forget what a pickle holding a set numbered and hashed: in hash order, not content."""
        kept, done = marks
        forgotten = {id(obj) for obj in self.kept[kept:]}  # some by regions below: written
        for key in forgotten:
            del self.numbers[key]
        del self.kept[kept:]
        self.pending = deque(obj for obj in self.pending if id(obj) not in forgotten)
        for key in list(self.done)[done:]:
            del self.done[key]

    def _walked(self, obj: Any) -> str:
        """Return the walk's digest of ``obj``, with no regions below it."""
        self.suppressed += 1
        try:
            return self._subtree(None, ".<region>", obj, self.region_depth)
        finally:
            self.suppressed -= 1

    def _undo(self, marks: tuple[int, ...]) -> None:
        """Forget what a failed region numbered, hashed and noted (the walk redoes it)."""
        kept, done, active, opaque, order, too_deep, shallower, chain = marks
        assert (too_deep, shallower) == (self.too_deep, self.shallower)  # nothing noted
        for obj in self.kept[kept:]:
            del self.numbers[id(obj)]
        del self.kept[kept:]
        for key in list(self.done)[done:]:  # only added to while a region is pickled
            del self.done[key]
        for key in list(self.active)[active:]:  # left by an exception
            del self.active[key]
        del self.chain[chain:]
        del self.opaque[opaque:]
        self.order = order

    def _reduce(self, obj: Any) -> tuple[Any, tuple[Any, ...]]:
        """``reducer_override`` of the region picklers: a number, or the walk's digest."""
        if obj is set or obj is frozenset:  # a set's items follow in hash order: not content
            self.picklers[self.level - 1][1].unordered = True
            return _digested, ("unordered",)
        key = id(obj)
        number = self.numbers.get(key)
        if number is None:
            if type(obj) is weakref.ref:  # as the walk reads it: by its referent
                return _weak_reference, (obj(),)
            layout = self.layouts.get(type(obj), _NO_LAYOUT)
            if layout is _NO_LAYOUT:
                layout = self._layout(type(obj))
            if (
                layout is not None
                and key not in self.active
                and key not in self.done
                and (layout[0] != "function" or _package(_module_of(obj)) is None)
            ):
                number = len(self.kept)
                self.numbers[key] = number
                self.kept.append(obj)
                self.pending.append(obj)
            elif key in self.done:  # as `_enter` would return it (too deep to be noted)
                return _digested, (self.done[key][1],)
            elif key in self.active:
                self._back(self.active[key])
                return _digested, (f"cycle {self.region_depth - self.active[key].depth}",)
            else:
                if isinstance(obj, _Unreadable):
                    raise _NotFast(type(obj).__qualname__)
                if isinstance(obj, set | frozenset):  # a set subclass (pickled in hash order)
                    return _digested, (self._walked(obj),)
                return _digested, (self._subtree(None, ".<region>", obj, self.region_depth),)
        return _reference, (number,)

    def _layout(self, cls: type) -> tuple[str, bool, tuple[Any, ...]] | None:
        """Return how a region writes the instances of ``cls``, or None: the walk hashes them.

        That is the class's digest with its slots' names, whether it has a ``__dict__``, and
        its slots' getters.  Only for the user's plain classes, whose instances the walk reads
        by their ``__dict__`` and slots (`threadensemble._shared.children`) and their class.
        """
        layout = None
        if cls is types.FunctionType:  # the user's functions: by `_own_children` (`_body`)
            layout = ("function", False, ())
        elif (
            _user_class(cls)
            and not issubclass(cls, _NOT_IN_REGIONS)
            and not _has_c_fields(cls)
            and _module_of(cls).partition(".")[0] not in _STDLIB
            and not any("__class__" in vars(klass) for klass in cls.__mro__[:-1])
        ):
            slots = _slot_descriptors(cls)
            digest = self._subtree(None, ".<class>", cls, self.region_depth)
            key = f"{digest} {[name for name, _ in slots]}"
            layout = (key, bool(cls.__dictoffset__), tuple(d.__get__ for _, d in slots))
        self.layouts[cls] = layout
        return layout

    def _described(self, obj: Any) -> str:
        """Return the record of an object pickled in a region: its type and own content.

        Its body pickled again with the objects it refers to by number or digest, so that
        the record changes with the object's own attributes (not with what they refer to).
        """
        if self.describer is None:
            sink = _Sink()
            self.describer = (_RegionPickler(sink, self._reduce_described), sink)
        pickler, sink = self.describer
        sink.hasher = hashlib.sha256()
        pickler.dump(self._body(obj, region=False))
        name = _show(_token(obj) or "")
        return f"{name} {sink.hasher.hexdigest()[:16]}" if sink.commit() else name

    def _reduce_described(self, obj: Any) -> tuple[Any, tuple[Any, ...]]:
        """``reducer_override`` of `_described`: numbers, digests, or just the type."""
        if obj is set or obj is frozenset:  # see `_reduce`
            assert self.describer is not None
            self.describer[1].unordered = True
        number = self.numbers.get(id(obj))
        if number is not None:
            return _reference, (number,)
        done = self.done.get(id(obj))
        return _digested, (type(obj).__qualname__ if done is None else done[1],)

    def _body(self, obj: Any, region: bool = True) -> tuple[Any, ...]:
        """Return what a region writes for a numbered object: class, ``__dict__``, slots.

        As the walk reads it; one without attributes by the walk's digest (its
        ``__reduce_ex__``), hashed in the ``region`` (else only looked up).
        """
        if type(obj) is types.FunctionType:  # what the walk hashes of it, children by value
            return _token(obj), list(_own_children(obj))
        layout = self.layouts[type(obj)]
        assert layout is not None
        key, has_dict, getters = layout
        attributes = object.__getattribute__(obj, "__dict__") if has_dict else None
        if has_dict and type(attributes) is not dict:
            raise _NotFast("__dict__")
        try:
            slots = [get(obj) for get in getters]
        except AttributeError:
            slots = [_slot_value(get, obj) for get in getters]
        if not attributes and all(value is _unset_slot for value in slots):
            if region:
                return key, None, slots, self._subtree(None, ".<region>", obj, self.region_depth)
            return key, None, slots, self.done[id(obj)][1]
        return key, attributes or None, slots

    def records(self) -> dict[str, str]:
        """Return path -> record of the `MAX_RECORDED_PATHS` shallowest nodes, in walk order."""
        shallowest = sorted(self.nodes, key=lambda n: n[:2])[:MAX_RECORDED_PATHS]
        shallowest.sort(key=lambda n: n[1])
        return {
            (parent.path() if parent is not None else "") + suffix: (
                record if isinstance(record, str) else f"cycle to {record.path()}"
            )
            for _, _, parent, suffix, record in shallowest
        }


def _set_key(element: Any) -> str:
    """Return the key a set's element is ordered by: its digest, by a walk of its own.

    It depends on the element's content only (not on the walk that reached the set).
    """
    if type(element) in _PLAIN:
        return "v" + _atom_text(element)
    plain = _plain_bytes(element) if type(element) in _QUICK_CONTAINERS else None
    if plain is not None:
        return "d" + _sha(plain)
    walk = _Walk()
    walk.too_deep = 0  # nothing recorded
    return walk.digest("[*]", element)


def model_fingerprint(roots: Mapping[str, Any]) -> Fingerprint:
    """Fingerprint the model given by name: ``{"simulate": f, "args[0]": a, ...}``.

    With `FAST_ROUTE`, in a new thread: so where a region meets the recursion limit does not
    depend on how deep the caller's stack is (the walk reads no thread's own state).
    """
    if not FAST_ROUTE:
        return _fingerprint(roots, fast=False)
    found: list[Fingerprint] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:  # at a fixed distance from the recursion limit (see `_at_headroom`)
            fingerprint = _at_headroom(_FAST_HEADROOM, lambda: _fingerprint(roots, fast=True))
            found.append(fingerprint or _fingerprint(roots, fast=False))
        except BaseException as exc:  # raised in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="threadensemble-fingerprint")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return found[0]


def _fingerprint(roots: Mapping[str, Any], fast: bool) -> Fingerprint:
    walk = _Walk(fast)
    try:
        digests = {name: _sha(walk.digest(name, obj).encode()) for name, obj in roots.items()}
    finally:  # its picklers refer to it: free its caches now, not at the next collection
        walk.picklers.clear()
        walk.describer = None
    total = _sha("\0".join(f"{name}\0{d}" for name, d in digests.items()).encode())
    return Fingerprint(total, digests, walk.records(), walk.opaque)


def _under(path: str, ancestor: str) -> bool:
    return path.startswith(ancestor) and path[len(ancestor) : len(ancestor) + 1] in (".", "[")


def _function_name(record: str | None) -> str | None:
    """Return ``helpers.growth`` from a function's record ``function helpers:growth <digest>``."""
    if record is None or not record.startswith("function "):
        return None
    name = record.split(" ")[1]
    return None if "<" in name or name.endswith("...") else name.replace(":", ".")


def _package_change(old: str | None, new: str | None) -> str | None:
    """Return ``varwg: 1.4.7 there, 1.4.8 here`` for two records of another package version."""
    if not (old or "").startswith("package ") or not (new or "").startswith("package "):
        return None
    old_name, old_version = (old or "").split(" ")[1:3]
    new_name, new_version = (new or "").split(" ")[1:3]
    if old_name != new_name or old_version == new_version:
        return None
    return f"{old_name}: {old_version} there, {new_version} here"


def _path_change(p: str, old: str | None, new: str | None, paths: Mapping[str, str]) -> str:
    if (old or "").startswith("code ") and (new or "").startswith("code "):
        function = p.removesuffix(".__code__")
        name = _function_name(paths.get(function))
        is_root = "." not in function and "[" not in function
        return f"{name if name and not is_root else function}: code changed"
    name = _function_name(old)
    if name is not None and name == _function_name(new):  # a function reached again
        return f"{name}: code changed"
    return _package_change(old, new) or f"{p}: {old or '(absent)'} there, {new or '(absent)'} here"


def _kwargs_names(roots: Mapping[str, Any]) -> list[str]:
    """Return the keyword arguments' names in the order the roots hold them (``kwargs['a']``)."""
    return [root[8:-2] for root in roots if root.startswith("kwargs[") and root.endswith("]")]


def differences(there: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """Name what differs between two `Fingerprint.record`s: ``args[0]: 1.0 there, 2.0 here``.

    Only the deepest differing recorded paths are named; a root whose difference lies below the
    recorded paths is named as a whole.  Code compiled by another interpreter cannot be
    compared: that is said instead of "code changed".
    """
    old_roots, new_roots = there.get("roots", {}), here.get("roots", {})
    old_paths, new_paths = there.get("paths", {}), here.get("paths", {})
    found: list[str] = []
    old_tag, new_tag = there.get("interpreter"), here.get("interpreter")
    if old_tag != new_tag:
        found.append(
            f"written by {old_tag or 'an older threadensemble'}, this is {new_tag}: the compiled "
            'code cannot be compared; resume with the same interpreter, or pass run_id="..." '
            "to name the model's version yourself"
        )
    if there.get("scheme", 1) != here.get("scheme", 1):
        found.append(
            f"fingerprinted by an older threadensemble (scheme {there.get('scheme', 1)}, this is "
            f"{here.get('scheme', 1)}): the digests cannot be compared; resume with that version, "
            'or pass run_id="..." to name the model\'s version yourself'
        )
    old_kwargs, new_kwargs = _kwargs_names(old_roots), _kwargs_names(new_roots)
    if old_kwargs != new_kwargs and sorted(old_kwargs) == sorted(new_kwargs):
        found.append(f"kwargs order: {', '.join(old_kwargs)} there, {', '.join(new_kwargs)} here")
    for root in [*old_roots, *(r for r in new_roots if r not in old_roots)]:
        if old_roots.get(root) == new_roots.get(root):
            continue
        if root not in old_roots or root not in new_roots:
            side = "absent there" if root not in old_roots else "absent here"
            found.append(f"{root}: {side}")
            continue
        differing = [
            p
            for p in dict.fromkeys([*old_paths, *new_paths])
            if (p == root or _under(p, root)) and old_paths.get(p) != new_paths.get(p)
        ]
        deepest = [p for p in differing if not any(_under(q, p) for q in differing)]
        for p in deepest:
            old, new = old_paths.get(p), new_paths.get(p)
            if old_tag != new_tag and (old or "").startswith("code "):
                continue  # said once above
            found.append(_path_change(p, old, new, new_paths))
        if not deepest:
            found.append(f"{root}: contents differ (below the recorded paths)")
    return list(dict.fromkeys(found))
