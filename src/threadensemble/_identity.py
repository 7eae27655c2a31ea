"""The run identity from the model itself: a content fingerprint of what determines the numbers.

`model_fingerprint` hashes ``simulate``, ``args``, ``kwargs``, ``state``, ``seed_for`` and
``warmup`` by content, so that a re-run into an ensemble directory is accepted only when it would
compute the same realizations.  It walks the object graph with `threadensemble._shared.children`
(plus what only identity needs: a function's code and the globals it loads, a class's content, a
bound method's function and object, a C method's object, the elements of object arrays, xarray
variables and attrs, and ``__reduce_ex__`` for extension objects) and builds a Merkle tree:
every node's digest covers its own content and its children's digests (each child by its path
suffix and digest; an attribute that is no identifier is ``.<key int 1>``, ``.<key str 'a.b'>``,
so two attributes never spell one), so a shared object hashes the same wherever it is reached
(its digest is computed once).  A child that refers back to an ancestor still being hashed (a
cycle) counts by ``cycle N``, its distance to that ancestor; a node whose subtree holds such a
cycle is, reached again, counted by ``ref N`` (the place of its first visit among the digests
computed, which follow the walk's order, a function of content), never by its digest, which
holds the context it was first reached in.  A set's elements are ordered by their digests, each
computed by a walk of its own (no context, no hash order).  Keyword arguments are roots in the
order given: their order is content (``kwargs order: fox, hare there, hare, fox here``).

Every node is hashed by this walk, in Python, on an explicit stack: no recursion through the
object graph (only through nested sets), so the digest depends neither on the recursion limit
nor on the stack size of the calling thread.  The `MAX_RECORDED_PATHS` shallowest paths are
recorded for `differences`.  (A faster route for what lies below them, a C pickler in fast mode
numbering the user's objects, was removed before release: its tokens and numbering could make
two different models hash equal, see docs/reliability.md.)

What is hashed, and how:

* numpy arrays: dtype, shape and the raw buffer (so NaN, NaT and datetime64 values by their
  bytes) with SHA-256, which hashlib computes without the GIL for large buffers; it was the
  fastest hashlib digest measured here (2.1 GB/s with SHA extensions, blake2b 1.2, md5 0.9);
  a strided view is copied in chunks, a structured dtype by its fields, a memmap as an array.
  Object-dtype arrays element by element.  A memoryview by its shape, format and bytes.
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
  extension objects by what ``__reduce_ex__`` returns (the callable that rebuilds them, its
  arguments, state and items; one whose reduce cannot be read is listed, see below).  A dict's
  insertion order is content: iterating it in another order can change the numbers.
* contentless by decision: locks, events, conditions, semaphores, barriers, ``threading.local``
  and loggers/handlers (synchronisation and logging do not determine the numbers).

What cannot be read (an open file, a generator, an extension object that cannot be reduced) is
listed in `Fingerprint.opaque`, never skipped silently: the caller then asks for ``run_id``.

Cost (docs/reliability.md; CPython 3.11, busy 2-CPU machine): fire's 98,000 objects 0.68 s,
a million small objects of a user's class 14 s and about 440 bytes each, 100 MB of arrays 0.05 s.
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
import struct
import sys
import sysconfig
import threading
import types
import weakref
from collections import ChainMap, defaultdict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd  # an xarray dependency (no stubs: see pyproject)
import xarray as xr

from ._shared import (
    _REPR_BITS,
    _attributes,
    attribute_suffix,
    children,
    key_text,
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
    np.generic, memoryview, Mapping, list, tuple, set, frozenset, types.FunctionType,
    types.MethodType, types.CodeType, weakref.ref, xr.Dataset, xr.DataArray, xr.Variable,
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


def _memoryview_token(view: memoryview) -> str:
    """Return a memoryview's content: its format, shape and bytes (in C order)."""
    try:
        data = view if view.c_contiguous else view.tobytes()
        return f"memoryview{view.shape} {view.format!r} {_sha(data)[:16]}"
    except ValueError:  # released: it holds nothing
        return "memoryview (released)"


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
    if isinstance(obj, memoryview):
        return _memoryview_token(obj)
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
        return _by_package(obj, f"{type(obj).__name__}")
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


def _reduced(obj: Any) -> list[tuple[str, Any]] | None:
    """Return the parts of ``obj.__reduce_ex__(4)`` as children, or None when it cannot be read.

    All of them: the callable that rebuilds the object (part 0), its arguments, its state and
    its list and dict items (read here: an iterator that fails is no content either).  A
    string (a global's name, as pickle reads it) is a part 0.
    """
    try:
        reduced = obj.__reduce_ex__(4)
        if isinstance(reduced, str):
            return [(".<reduce 0>", reduced)]
        if not isinstance(reduced, tuple) or not 2 <= len(reduced) <= 6:
            return None
        parts = [(f".<reduce {i}>", part) for i, part in enumerate(reduced[:3])]
        for i, part in enumerate(reduced[3:5], start=3):
            if part is not None:
                parts.append((f".<reduce {i}>", list(part)))
        if len(reduced) == 6 and reduced[5] is not None:
            parts.append((".<reduce 5>", reduced[5]))
    except Exception:  # "cannot pickle 'X' object", or items that are not iterable
        return None
    return parts


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
            yield attribute_suffix(name), value.__func__
        elif isinstance(value, property):
            for part in ("fget", "fset", "fdel"):
                if getattr(value, part) is not None:
                    yield f"{attribute_suffix(name)}.{part}", getattr(value, part)
        else:
            yield attribute_suffix(name), value


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
            yield from ((attribute_suffix(k), v) for k, v in vars(obj).items())  # a mask, say
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
        yield from ((attribute_suffix(k), v) for k, v in vars(obj).items())
    elif isinstance(obj, types.BuiltinFunctionType | types.MethodWrapperType) and not isinstance(
        obj.__self__, types.ModuleType | None
    ):  # bound: ``[].append``
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
    """Yield what a container holds besides its items.

    That is a subclass's attributes, a defaultdict's factory, a deque's maxlen, a ChainMap's
    maps (its items are only their merged view).
    """
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
        yield from reduced


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


class _Walk:
    """One fingerprinting walk; ``done`` caches each non-atom object's digest by id."""

    def __init__(self) -> None:
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
        if (
            (type(obj) in _ARRAYS and not obj.dtype.hasobject)
            or isinstance(obj, np.generic)
            or type(obj) is memoryview
        ):
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
        for suffix, element in [*(("[*]", elements[i]) for i in ordered), *rest]:
            digest = self._subtree(frame, suffix, element, frame.depth + 1)
            frame.hasher.update(f"{suffix}\0{digest}\0".encode())
            frame.wide = True
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
    """Fingerprint the model given by name: ``{"simulate": f, "args[0]": a, ...}``."""
    walk = _Walk()
    digests = {name: _sha(walk.digest(name, obj).encode()) for name, obj in roots.items()}
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
