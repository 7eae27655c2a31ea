"""The shared read-only context: what is reachable from it, made read-only, and fingerprinted.

Every thread sees the same ``args`` and ``kwargs`` objects.  Nothing may write to them, but Python
cannot enforce that, so this module offers two checks: `read_only_arrays` sets
``writeable=False`` on every numpy array reachable from the context (an in-place write then
raises at the offending line instead of corrupting other realizations), and `fingerprint`
summarises the reachable objects so that any other change can be found afterwards.  Both walk
the same object graph, to a bounded depth and count.
"""

from __future__ import annotations

import functools
import hashlib
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "changes",
    "children",
    "context_roots",
    "fingerprint",
    "make_read_only",
    "reachable",
    "read_only_arrays",
]

MAX_DEPTH = 4
MAX_OBJECTS = 200_000
_ATOMS = (str, bytes, int, float, complex, bool, type(None), np.generic)
_OPAQUE = (types.ModuleType, type, types.BuiltinFunctionType, types.MethodWrapperType)


def context_roots(args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Return the shared context by name: ``args[0]``, ``kwargs['model']`` ..."""
    roots = {f"args[{i}]": value for i, value in enumerate(args)}
    roots.update({f"kwargs[{name!r}]": value for name, value in kwargs.items()})
    return roots


def children(obj: Any) -> Iterator[tuple[str, Any]]:
    """Yield (path suffix, child) for the objects ``obj`` refers to."""
    if isinstance(obj, (np.ndarray, np.random.Generator, *_ATOMS, *_OPAQUE)):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            yield f"[{key!r}]", value
    elif isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
        for i, value in enumerate(items):
            yield f"[{i}]", value
    elif isinstance(obj, types.FunctionType):
        cells = obj.__closure__ or ()
        for name, cell in zip(obj.__code__.co_freevars, cells, strict=True):
            try:
                yield f".<closure {name}>", cell.cell_contents
            except ValueError:  # an empty cell
                continue
    elif isinstance(obj, functools.partial):
        yield ".func", obj.func
        yield ".args", obj.args
        yield ".keywords", obj.keywords
    else:
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            for name, value in attributes.items():
                yield f".{name}", value
        for name in getattr(type(obj), "__slots__", ()):
            if isinstance(name, str) and hasattr(obj, name):
                yield f".{name}", getattr(obj, name)


def reachable(roots: Mapping[str, Any], max_depth: int = MAX_DEPTH) -> Iterator[tuple[str, Any]]:
    """Yield (path, object) for every object reachable from ``roots``, each object once."""
    # id -> object: holding the objects keeps their ids from being reused during the walk by
    # temporaries (a Mapping may make its values on access, as an xarray Dataset does).
    seen: dict[int, Any] = {}
    stack = [(name, obj, 0) for name, obj in reversed(list(roots.items()))]
    while stack and len(seen) < MAX_OBJECTS:
        path, obj, depth = stack.pop()
        if not isinstance(obj, _ATOMS):  # small ints and strings are shared objects: list each use
            if id(obj) in seen:
                continue
            seen[id(obj)] = obj
        yield path, obj
        if depth < max_depth:
            found = list(children(obj))
            stack.extend((path + suffix, child, depth + 1) for suffix, child in reversed(found))


def make_read_only(roots: Mapping[str, Any], max_depth: int = MAX_DEPTH) -> list[np.ndarray]:
    """Make every writeable numpy array reachable from ``roots`` read-only; return them."""
    protected = [
        obj
        for _, obj in reachable(roots, max_depth)
        if isinstance(obj, np.ndarray) and obj.flags.writeable
    ]
    for array in protected:
        array.flags.writeable = False
    return protected


@contextmanager
def read_only_arrays(roots: Mapping[str, Any], max_depth: int = MAX_DEPTH) -> Iterator[int]:
    """Make every writeable numpy array reachable from ``roots`` read-only for the block.

    Yields how many arrays were protected; their flags are restored on exit.
    """
    protected = make_read_only(roots, max_depth)
    try:
        yield len(protected)
    finally:
        # A view cannot be made writeable while its base is read-only: restore bases first.
        for array in sorted(protected, key=lambda a: a.base is not None):
            array.flags.writeable = True


def _token(obj: Any) -> str:
    if isinstance(obj, np.ndarray):
        digest = hashlib.blake2b(np.ascontiguousarray(obj).view(np.uint8).data, digest_size=12)
        return f"array{obj.shape} {obj.dtype} {digest.hexdigest()}"
    if isinstance(obj, np.random.Generator):
        state = hashlib.blake2b(repr(obj.bit_generator.state).encode(), digest_size=12)
        return f"Generator state {state.hexdigest()}"
    if isinstance(obj, _ATOMS):
        text = repr(obj)
        return text if len(text) <= 80 else text[:77] + "..."
    if isinstance(obj, Mapping | list | tuple | set | frozenset):
        return f"{type(obj).__name__} of {len(obj)}"
    return type(obj).__qualname__


def fingerprint(roots: Mapping[str, Any], max_depth: int = MAX_DEPTH) -> dict[str, str]:
    """Return path -> short description (array digest, value, or size) of everything reachable."""
    return {path: _token(obj) for path, obj in reachable(roots, max_depth)}


def changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Describe what differs between two fingerprints: ``path: before -> after``."""
    found = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path, "(absent)"), after.get(path, "(absent)")
        if old != new:
            found.append(f"{path}: {old} -> {new}")
    return found
