"""The run identity from the model itself: a content fingerprint of what determines the numbers.

`model_fingerprint` hashes ``simulate``, ``args``, ``kwargs``, ``state``, ``seed_for`` and
``warmup`` by content, so that a re-run into an ensemble directory is accepted only when it would
compute the same realizations.  It walks the object graph with `threadensemble._shared.children`
(plus what only identity needs: a function's code, defaults and referenced module constants, a
bound method's function and object, the elements of object arrays, xarray variables and attrs,
and ``__reduce_ex__`` for extension objects) and builds a Merkle tree: every node's digest covers
its own content and its children's digests, so a shared object hashes the same wherever it is
reached (its digest is computed once) and a cycle is named by the path of the ancestor it
returns to.

What is hashed, and how:

* numpy arrays: dtype, shape and the raw buffer (so NaN, NaT and datetime64 values by their
  bytes) with SHA-256, which hashlib computes without the GIL for large buffers; it was the
  fastest hashlib digest measured here (2.1 GB/s with SHA extensions, blake2b 1.2, md5 0.9).
  Object-dtype arrays element by element.
* functions: their source text when ``inspect`` can find it (stable across Python versions and
  line moves; else the bytecode), names, constants and nested code, defaults, closure contents,
  and the module-level *constants* they name (numbers, strings, tuples, arrays) and module-level
  functions of their own module (recursively).  Modules, classes, functions of other modules
  (numpy, say) and mutable module-level containers count by name only: they are not the model's
  data.  A callable instance also counts its class's ``__call__``.
* everything else: scalars by ``repr``, containers by items (a list, tuple or dict of scalars
  only by its ``repr``, computed in C; small ones of scalars and finished objects without a
  stack frame), objects by ``__dict__`` and ``__slots__``, extension objects by what
  ``__reduce_ex__`` returns.  Sets are ordered by ``repr`` (as `children` does).
* contentless by decision: locks, events, conditions, semaphores, barriers, ``threading.local``
  and loggers/handlers (synchronisation and logging do not determine the numbers).

What cannot be read (an open file, a generator, an extension object that cannot be reduced) is
listed in `Fingerprint.opaque`, never skipped silently: the caller then asks for ``run_id``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import threading
import types
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ._shared import children

__all__ = ["MAX_RECORDED_PATHS", "Fingerprint", "differences", "model_fingerprint"]

MAX_RECORDED_PATHS = 1000  # the shallowest nodes are recorded for error messages; all are hashed
_SHOWN = 60  # characters of a value shown in a record
_ATOMS = (str, bytes, int, float, complex, bool, type(None))  # hashed by repr, not deduplicated
_BY_NAME = (types.ModuleType, type, types.BuiltinFunctionType, types.MethodWrapperType)
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
_QUICK_CONTAINERS = frozenset((list, tuple, dict))
_QUICK_SIZE = 256
_SPECIAL = (
    *_ATOMS, *_BY_NAME, *_CONTENTLESS, functools.partial, np.random.Generator, np.ndarray,
    np.generic, Mapping, list, tuple, set, frozenset, types.FunctionType, types.MethodType,
    types.CodeType, weakref.ref, xr.Dataset, xr.DataArray, xr.Variable,
)  # fmt: skip
_CONSTANT_GLOBALS = (*_ATOMS, np.generic, np.ndarray, tuple, frozenset)


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
        return {"digest": self.digest, "roots": self.roots, "paths": self.paths}


def _sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _show(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 15]}... {_sha(text.encode())[:8]}"


def _qualname(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}:{getattr(obj, '__qualname__', None) or type(obj).__qualname__}"


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _code_content(code: types.CodeType) -> str:
    """Return what identifies ``code``: its source text, or its bytecode without a source.

    The source is the same on every Python version, which compile it to different bytecode.
    """
    n_args = code.co_argcount + code.co_kwonlyargcount
    try:
        text = inspect.getsource(code)
    except (OSError, TypeError):  # defined in a REPL or by exec
        consts = [
            _code_content(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts
        ]
        return repr((code.co_code.hex(), code.co_names, code.co_varnames, consts))
    return repr((text, code.co_qualname, code.co_varnames[:n_args]))


def _array_token(array: np.ndarray) -> str:
    head = f"array{array.shape} {array.dtype.str}"
    if array.dtype.hasobject:
        return head  # its elements are the node's children
    buffer = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    shown = f" {np.array2string(array, threshold=6)}" if array.size <= 6 else ""
    return f"{head} {_sha(buffer.data)[:16]}{shown}"


def _token(obj: Any) -> str | None:
    """Return a node's own content, or None when it cannot be read."""
    if isinstance(obj, _ATOMS):
        return repr(obj)
    if isinstance(obj, np.generic):
        return (
            f"{obj!r} {obj.dtype.str} {_sha(np.asarray(obj).reshape(-1).view(np.uint8).data)[:16]}"
        )
    if isinstance(obj, np.ndarray):
        return _array_token(obj)
    if isinstance(obj, types.CodeType):
        return f"code {_sha(_code_content(obj).encode())[:16]}"
    if isinstance(obj, np.random.Generator):
        return f"Generator {_sha(repr(obj.bit_generator.state).encode())[:16]}"
    if isinstance(obj, _BY_NAME):
        return f"{type(obj).__name__} {_qualname(obj)}"
    if isinstance(obj, _CONTENTLESS):
        return type(obj).__qualname__
    if isinstance(obj, weakref.ref):
        return "weakref"
    if isinstance(obj, Mapping | list | tuple | set | frozenset):
        return f"{type(obj).__qualname__} of {len(obj)}"
    if isinstance(obj, types.FunctionType | types.MethodType | functools.partial):
        return f"{type(obj).__name__} {_qualname(obj)}"
    if isinstance(obj, xr.Dataset | xr.DataArray | xr.Variable):
        return f"{type(obj).__name__}{tuple(obj.dims)}"
    if isinstance(obj, _Unreadable):
        return None
    return type(obj).__qualname__


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
    yield ".__code__", func.__code__
    if func.__defaults__:
        yield ".__defaults__", func.__defaults__
    if func.__kwdefaults__:
        yield ".__kwdefaults__", func.__kwdefaults__
    module_globals = func.__globals__
    for name in dict.fromkeys(_code_names(func.__code__)):
        if name not in module_globals:
            continue
        value = module_globals[name]
        own_function = isinstance(value, types.FunctionType) and value.__module__ == func.__module__
        if own_function or isinstance(value, _CONSTANT_GLOBALS):
            yield f".<global {name}>", value


def _extras(obj: Any) -> Iterator[tuple[str, Any]]:
    """Yield the children that matter to identity beyond `children` (whose walk is reused)."""
    if isinstance(obj, types.FunctionType):
        yield from _function_extras(obj)
    elif isinstance(obj, types.MethodType):
        yield ".__func__", obj.__func__
        yield ".__self__", obj.__self__
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
    elif _is_plain_object(obj):
        call = vars(type(obj)).get("__call__") if callable(obj) else None
        if isinstance(call, types.FunctionType):
            yield ".<class __call__>", call


class _Unreadable:
    """Stands for the content of an object that `children` and ``__reduce_ex__`` cannot read."""

    __slots__ = ("type_name",)

    def __init__(self, obj: Any) -> None:
        self.type_name = type(obj).__qualname__


def _is_plain_object(obj: Any) -> bool:
    """Whether ``obj`` is none of the kinds this module or `children` reads specially."""
    return not isinstance(obj, _SPECIAL)


def _own_children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, _CONTENTLESS):
        return
    yield from _extras(obj)
    if isinstance(obj, xr.Dataset | xr.DataArray | xr.Variable | types.MethodType):
        return
    found = False
    for item in children(obj):
        found = True
        yield item
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


def _scalars(value: Any) -> bool:
    """Whether ``value`` is a scalar, or a tuple of scalars (shown and hashed by ``repr``)."""
    kind = type(value)
    return kind in _PLAIN or (kind is tuple and all(type(v) in _PLAIN for v in value))


class _Frame:
    """A node being hashed: its children are hashed first (post-order, on an explicit stack).

    Paths are built only for the nodes recorded (``parent`` and ``suffix`` make them), so a
    deep object graph (a linked list of cells) costs linear, not quadratic, time.
    """

    __slots__ = ("children", "depth", "hasher", "obj", "parent", "suffix", "token", "wide")

    def __init__(
        self, parent: _Frame | None, suffix: str, obj: Any, depth: int, token: str
    ) -> None:
        self.parent, self.suffix, self.obj = parent, suffix, obj
        self.depth, self.token = depth, token
        self.children = _own_children(obj)
        self.hasher = hashlib.sha256(token.encode())
        self.wide = False  # whether any child was hashed into it

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
        self.nodes: list[_Node] = []  # candidates for the record: the shallowest ones
        self.order = 0
        self.too_deep = 1 << 62  # nodes this deep cannot be among the shallowest any more
        self.opaque: list[str] = []

    def _note(self, depth: int, parent: _Frame | None, suffix: str, record: str | _Frame) -> None:
        self.order += 1
        if depth >= self.too_deep:
            return
        self.nodes.append((depth, self.order, parent, suffix, record))
        if len(self.nodes) >= 4 * MAX_RECORDED_PATHS:  # keep the shallowest (then earliest)
            self.nodes.sort(key=lambda n: n[:2])
            del self.nodes[MAX_RECORDED_PATHS:]
            self.too_deep = self.nodes[-1][0]

    def _enter(self, parent: _Frame | None, suffix: str, obj: Any, depth: int) -> str | _Frame:
        """Return the digest of a node known at once, or the frame of one to expand."""
        key = id(obj)
        if isinstance(obj, _ATOMS):
            token = repr(obj)
            self._note(depth, parent, suffix, _show(token))
            return "v" + token  # hashed into the parent as it is
        if key in self.done:  # reached again: the same digest and record (shared, not copied)
            _, digest, record = self.done[key]
            self._note(depth, parent, suffix, record)
            return digest
        if (type(obj) is np.ndarray and not obj.dtype.hasobject) or isinstance(obj, np.generic):
            leaf = _token(obj)
            assert leaf is not None
            digest = "d" + _sha(leaf.encode())
            self.done[key] = (obj, digest, _show(leaf))
            self._note(depth, parent, suffix, _show(leaf))
            return digest
        if key in self.active:
            ancestor = self.active[key]
            self._note(depth, parent, suffix, ancestor)
            return f"cycle {depth - ancestor.depth}"
        if type(obj) in _QUICK_CONTAINERS and (plain := self._plain(obj)) is not None:
            self._note(depth, parent, suffix, plain[1])
            return plain[0]
        content = _token(obj)
        if content is not None and type(obj) in _QUICK_CONTAINERS:
            quick = self._quick(obj, depth, content)
            if quick is not None:
                self.done[key] = (obj, quick[0], quick[1])
                self._note(depth, parent, suffix, quick[1])
                return quick[0]
        if content is None:  # the content of the parent object cannot be read
            assert isinstance(obj, _Unreadable) and parent is not None
            self.opaque.append(f"{parent.path()} ({obj.type_name})")
            content = f"unreadable {obj.type_name}"
        frame = _Frame(parent, suffix, obj, depth, content)
        self.active[key] = frame
        return frame

    def _plain(self, obj: list[Any] | tuple[Any, ...] | dict[Any, Any]) -> tuple[str, str] | None:
        """Hash a list, tuple or dict of scalars (or tuples of them) by its ``repr``, in C."""
        if type(obj) is dict:
            if not all(type(k) in _PLAIN and _scalars(v) for k, v in obj.items()):
                return None
        elif not all(type(v) in _PLAIN for v in obj) and not all(map(_scalars, obj)):
            return None
        text = repr(obj)
        digest = "d" + _sha(f"{type(obj).__name__} {text}".encode())
        self.done[id(obj)] = (obj, digest, _show(text))
        return digest, _show(text)

    def _quick(
        self, obj: Any, depth: int, token: str, nested: int = 2
    ) -> tuple[str, str, bool] | None:
        """Hash a small list, tuple or dict without a frame: many small objects cost little.

        Its elements must be scalars, finished objects, or such containers (``nested`` levels
        deep).  The digest is the one the frame would compute; None when an element needs its
        own (or the container is large: its elements are then recorded one by one).
        """
        if len(obj) > _QUICK_SIZE:
            return None
        parts = [token]
        plain = True  # only scalars, at any level: the record shows the value itself
        for suffix, child in children(obj):
            key = id(child)
            if type(child) in _PLAIN:
                found = "v" + repr(child)
            elif key in self.done:
                found, plain = self.done[key][1], False
            elif key in self.active:
                found, plain = f"cycle {depth + 1 - self.active[key].depth}", False
            elif type(child) in _QUICK_CONTAINERS and (leaf := self._plain(child)) is not None:
                found = leaf[0]
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
        shown = _show(repr(obj)) if plain else f"{_show(token)} {digest[1:17]}"
        return digest, shown, plain

    def digest(self, name: str, obj: Any) -> str:
        """Return the Merkle digest of ``obj``, the root ``name`` (iterative: no recursion)."""
        first = self._enter(None, name, obj, 0)
        if isinstance(first, str):
            return first
        stack = [first]
        while True:
            top = stack[-1]
            step = next(top.children, None)
            if step is not None:
                suffix, child = step
                found = self._enter(top, suffix, child, top.depth + 1)
                if isinstance(found, str):
                    top.hasher.update(f"{suffix}\0{found}\0".encode())
                    top.wide = True
                else:
                    stack.append(found)
                continue
            stack.pop()
            digest = "d" + top.hasher.hexdigest()
            del self.active[id(top.obj)]
            shown = _show(top.token)
            record = f"{shown} {digest[1:17]}" if top.wide else shown
            self.done[id(top.obj)] = (top.obj, digest, record)
            self._note(top.depth, top.parent, top.suffix, record)
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


def model_fingerprint(roots: Mapping[str, Any]) -> Fingerprint:
    """Fingerprint the model given by name: ``{"simulate": f, "args[0]": a, ...}``."""
    walk = _Walk()
    digests = {name: _sha(walk.digest(name, obj).encode()) for name, obj in roots.items()}
    total = _sha("\0".join(f"{name}\0{d}" for name, d in digests.items()).encode())
    return Fingerprint(total, digests, walk.records(), walk.opaque)


def _under(path: str, ancestor: str) -> bool:
    return path.startswith(ancestor) and path[len(ancestor) : len(ancestor) + 1] in (".", "[")


def differences(there: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """Name what differs between two `Fingerprint.record`s: ``args[0]: 1.0 there, 2.0 here``.

    Only the deepest differing recorded paths are named; a root whose difference lies below the
    recorded paths is named as a whole.
    """
    old_roots, new_roots = there.get("roots", {}), here.get("roots", {})
    old_paths, new_paths = there.get("paths", {}), here.get("paths", {})
    found: list[str] = []
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
            if (old or "").startswith("code ") and (new or "").startswith("code "):
                found.append(f"{p.removesuffix('.__code__')}: code changed")
            else:
                found.append(f"{p}: {old or '(absent)'} there, {new or '(absent)'} here")
        if not deepest:
            found.append(f"{root}: contents differ (below the recorded paths)")
    return found
