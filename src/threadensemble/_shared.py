"""The shared read-only context: what is reachable from it, made read-only, and fingerprinted.

Every thread sees the same ``args`` and ``kwargs`` objects.  Nothing may write to them, but Python
cannot enforce that, so this module offers two checks: `read_only_arrays` sets
``writeable=False`` on every numpy array reachable from the context (an in-place write then
raises at the offending line instead of corrupting other realizations), and `fingerprint`
summarises the reachable objects so that any other change can be found afterwards.  Both walk
the whole object graph once (each object once, whatever its depth), within a `Walk` budget that
says when it was hit.  What keeps the path of every object (the check's fingerprints) walks with
`walk_paths`, whose deep paths share their prefixes (`WalkPath`): memory linear in the objects,
where a str per path of a chain of objects would take memory quadratic in its length.

An array is made read-only only when numpy will let its flag be restored: an array whose memory
belongs to an immutable buffer (the ``bytes`` of a pickle, for arrays over 1,000 bytes unpickled
with protocol <= 4, the default before Python 3.14) could never be made writeable again, so it
is left writeable and listed as unprotected instead.  A fingerprint still finds writes to it.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import hashlib
import itertools
import pickle
import random
import sys
import types
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import PurePath
from typing import Any, TypeVar

import numpy as np
import pandas as pd  # an xarray dependency (no stubs: see pyproject)
import xarray as xr

__all__ = [
    "MAX_BYTES",
    "MAX_OBJECTS",
    "PathTable",
    "Protection",
    "Walk",
    "WalkPath",
    "changes",
    "children",
    "context_roots",
    "fingerprint",
    "is_generator_token",
    "key_text",
    "make_read_only",
    "reachable",
    "read_only_arrays",
    "tokens",
    "unprotected_message",
    "walk_paths",
]

MAX_OBJECTS = 1_000_000  # objects one walk visits at most
MAX_BYTES = 1 << 30  # array bytes one fingerprint hashes at most; larger arrays: shape and dtype
# Immutable leaves: nothing to walk into, and each use is listed (small ints and strings are
# shared objects, so identity says nothing about where they are used).
_ATOMS = (
    str, bytes, int, float, complex, bool, type(None), type(Ellipsis), np.generic, np.dtype,
    datetime.date, datetime.time, datetime.timedelta, datetime.tzinfo, decimal.Decimal,
    fractions.Fraction, PurePath, range, slice, enum.Enum,
)  # fmt: skip
# Not walked: code, and weak containers (their content changes as objects are collected).
_EXACT_ATOMS = frozenset({str, bytes, int, float, complex, bool, type(None)})
_EXACT_CONTAINERS = frozenset({dict, list, tuple, set, frozenset})


_REPR_BITS = 2000  # ints this long have a repr whatever sys.set_int_max_str_digits allows (640+)


def key_text(key: Any) -> str:
    """Return a dict key as a path shows it: its ``repr``; a long int in hexadecimal.

    ``repr`` of an int of more than ``sys.get_int_max_str_digits()`` digits raises ValueError.
    """
    if isinstance(key, int) and key.bit_length() > _REPR_BITS:
        return f"{type(key).__qualname__} 0x{int(key):x}"
    return repr(key)


def attribute_suffix(name: Any) -> str:
    """Return the path suffix of an attribute: ``.name``; a name no identifier by type and repr.

    So two attributes never share a suffix: ``1`` (a non-str ``__dict__`` key) is
    ``.<key int 1>``, ``"1"`` is ``.<key str '1'>``, and a name holding NUL is escaped.
    """
    if type(name) is str and name.isidentifier():
        return f".{name}"
    return f".<key {type(name).__qualname__} {key_text(name)}>"


def _is_atom(obj: Any) -> bool:
    cls = type(obj)  # exact types first: isinstance against ABCs is slow on large models
    if cls in _EXACT_ATOMS:
        return True
    return cls not in _EXACT_CONTAINERS and isinstance(obj, _ATOMS)


_OPAQUE = (
    types.ModuleType, type, types.BuiltinFunctionType, types.MethodWrapperType,
    types.WrapperDescriptorType, types.CodeType, types.FrameType, types.GeneratorType,
    weakref.WeakValueDictionary, weakref.WeakKeyDictionary, weakref.WeakSet,
)  # fmt: skip
_GENERATORS = (np.random.Generator, np.random.RandomState, np.random.BitGenerator, random.Random)
# Instances of the standard library's classes are not walked (a logger's manager reaches every
# logger of the process and fills caches as it is used), except these plain containers.
_STDLIB = frozenset(sys.stdlib_module_names) - {"types", "collections", "functools"}


@dataclasses.dataclass
class Walk:
    """The budget of one walk of the object graph, and what the walk used of it.

    Attributes
    ----------
    objects, bytes : int
        Objects visited; array bytes hashed (by `fingerprint`).
    budget_hit : bool
        The walk stopped at ``max_objects``, or arrays beyond ``max_bytes`` were summarised by
        shape and dtype only (``unhashed`` of them): changes to what was left out go unseen.
    seen : dict of int to object
        What the walk has visited, by id; `reachable` continuing a walk with other roots skips
        them.  Holding the objects keeps their ids from being reused during the walk by
        temporaries (a Mapping may make its values on access, as an xarray Dataset does).
    """

    max_objects: int = MAX_OBJECTS
    max_bytes: int = MAX_BYTES
    objects: int = 0
    bytes: int = 0
    unhashed: int = 0
    budget_hit: bool = False
    seen: dict[int, Any] = dataclasses.field(default_factory=dict, repr=False)


def context_roots(args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Return the shared context by name: ``args[0]``, ``kwargs['model']`` ..."""
    roots = {f"args[{i}]": value for i, value in enumerate(args)}
    roots.update({f"kwargs[{name!r}]": value for name, value in kwargs.items()})
    return roots


# class -> its slots' (name, descriptor); a weak cache, so that classes can still go away.
_slots: weakref.WeakKeyDictionary[type, tuple[tuple[str, Any], ...]] = weakref.WeakKeyDictionary()


def _slot_descriptors(cls: type) -> tuple[tuple[str, Any], ...]:
    try:
        return _slots[cls]
    except (KeyError, TypeError):
        pass
    found = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            descriptor = klass.__dict__.get(name)
            if isinstance(descriptor, types.MemberDescriptorType):
                found.append((name, descriptor))
    with suppress(TypeError):  # a class that takes no weak reference
        _slots[cls] = tuple(found)
    return tuple(found)


def _attributes(obj: Any) -> Iterator[tuple[str, Any]]:
    """Yield the instance attributes of ``obj`` (its ``__dict__`` and slots), read statically.

    ``getattr`` could run a class's ``__getattr__`` (a netCDF4 Dataset's reads the file).
    """
    cls = type(obj)
    if cls.__dictoffset__:
        attributes = object.__getattribute__(obj, "__dict__")
        if isinstance(attributes, dict):
            for name, value in list(attributes.items()):
                yield attribute_suffix(name), value
    for name, descriptor in _slot_descriptors(cls):
        try:
            yield attribute_suffix(name), descriptor.__get__(obj, cls)
        except AttributeError:  # an unset slot
            continue


def _xarray_children(obj: xr.Dataset | xr.DataArray | xr.Variable) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, xr.Dataset):
        for name, variable in obj.variables.items():
            yield f"[{name!r}]", variable
    elif isinstance(obj, xr.DataArray):
        yield ".variable", obj.variable
        for name in obj.coords:
            yield f".coords[{name!r}]", obj.coords[name].variable
    elif isinstance(obj._data, np.ndarray):  # lazily loaded data are not loaded
        yield ".values", obj._data
    if obj.attrs:
        yield ".attrs", obj.attrs


def children(obj: Any) -> Iterator[tuple[str, Any]]:
    """Yield (path suffix, child) for the objects ``obj`` refers to.

    Containers give their items, objects their attributes, functions their closure cells,
    defaults and attributes, bound methods their object, xarray objects their variables' numpy
    data (``ds['v'].values``), pandas objects their values, object-dtype arrays their elements
    that are not atoms.  Generators, modules, classes, builtins and instances of standard
    library classes give nothing.
    """
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            for i, value in enumerate(obj.ravel(order="K")):
                if not _is_atom(value):
                    yield f".flat[{i}]", value
        return
    cls = type(obj)
    if cls is dict:
        for key, value in list(obj.items()):
            yield f"[{key_text(key)}]", value
        return
    if cls is list or cls is tuple:
        for i, value in enumerate(list(obj)):
            yield f"[{i}]", value
        return
    if _is_atom(obj) or isinstance(obj, (_GENERATORS, *_OPAQUE)):
        return
    if isinstance(obj, xr.Dataset | xr.DataArray | xr.Variable):
        yield from _xarray_children(obj)
    elif isinstance(obj, pd.DataFrame):
        for name in obj.columns:
            yield f"[{name!r}]", obj[name]
        yield ".index", obj.index
    elif isinstance(obj, pd.Series | pd.Index):
        yield ".values", np.asarray(obj)
    elif isinstance(obj, Mapping):
        for key, value in list(obj.items()):
            yield f"[{key_text(key)}]", value
    elif isinstance(obj, list | tuple | set | frozenset | deque):
        items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else list(obj)
        for i, value in enumerate(items):
            yield f"[{i}]", value
    elif isinstance(obj, types.FunctionType):
        cells = obj.__closure__ or ()
        for name, cell in zip(obj.__code__.co_freevars, cells, strict=True):
            try:
                yield f".<closure {name}>", cell.cell_contents
            except ValueError:  # an empty cell
                continue
        if obj.__defaults__:
            yield ".__defaults__", obj.__defaults__
        if obj.__kwdefaults__:
            yield ".__kwdefaults__", obj.__kwdefaults__
        yield from _attributes(obj)
    elif isinstance(obj, types.MethodType):
        yield ".__self__", obj.__self__
        yield ".__func__", obj.__func__
    elif isinstance(obj, functools.partial):
        yield ".func", obj.func
        yield ".args", obj.args
        yield ".keywords", obj.keywords
    elif type(obj).__module__.partition(".")[0] not in _STDLIB:
        yield from _attributes(obj)


_SPELT_OUT = 200  # paths up to this length are strs; deeper ones WalkPaths (see walk_paths)


class WalkPath:
    """A deep path of a walk, held as its parent path and its last step (``.next``, ``[3]``).

    It shares its parent's steps instead of copying them, so that the paths of a walk take
    memory linear in the number of objects whatever their depth.  `PathTable` makes each one
    once, so two walks over one table give the same object for the same path: WalkPaths
    compare and hash by identity.  ``str(path)`` spells it out (``args[0].next.next...``).
    """

    __slots__ = ("parent", "step")

    def __init__(self, parent: str | WalkPath, step: str) -> None:
        self.parent = parent
        self.step = step

    def __str__(self) -> str:
        steps = []
        path: str | WalkPath = self
        while isinstance(path, WalkPath):
            steps.append(path.step)
            path = path.parent
        steps.append(path)
        return "".join(reversed(steps))

    def __repr__(self) -> str:
        return f"WalkPath({str(self)!r})"


class PathTable:
    """The deep paths of one or more walks (`walk_paths`), each made once (see `WalkPath`)."""

    def __init__(self) -> None:
        self._made: dict[tuple[str | WalkPath, str], WalkPath] = {}

    def path(self, parent: str | WalkPath, step: str) -> str | WalkPath:
        """Return the path ``parent`` + ``step``: a str while short, else a `WalkPath`.

        Which of the two depends on the path alone, so walks over one table agree.
        """
        if type(parent) is str and len(parent) + len(step) <= _SPELT_OUT:
            return parent + step
        key = (parent, step)
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = WalkPath(parent, step)
        return made


P = TypeVar("P", bound=str | WalkPath)


def reachable(
    roots: Mapping[str, Any], walk: Walk | None = None, max_depth: int | None = None
) -> Iterator[tuple[str, Any]]:
    """Yield (path, object) for every object reachable from ``roots``, each object once.

    ``walk`` counts the objects and stops the walk at its ``max_objects`` (setting
    ``budget_hit``); given again, it continues that walk (objects it saw are not listed again).
    ``max_depth`` (default: none) stops descending below that depth.  Each path is a str, as
    long as its depth makes it (`walk_paths` shares the prefixes of deep paths).
    """
    return _reach(roots, walk, max_depth, str, str.__add__)


def walk_paths(
    roots: Mapping[str, Any], table: PathTable, walk: Walk | None = None
) -> Iterator[tuple[str | WalkPath, Any]]:
    """Yield what `reachable` yields, with each deep path a `WalkPath` of ``table``.

    For what keeps the path of every object (a fingerprint): the strs of a deep chain of
    objects take memory quadratic in its length, these paths linear.  Walks over one
    ``table`` give equal paths (the same str, or the same WalkPath) for the same path.
    """
    return _reach(roots, walk, None, str, table.path)


def _reach(
    roots: Mapping[str, Any],
    walk: Walk | None,
    max_depth: int | None,
    root_path: Callable[[str], P],
    extend: Callable[[P, str], P],
) -> Iterator[tuple[P, Any]]:
    """Walk for `reachable` and `walk_paths`: paths start as ``root_path(name)``."""
    walk = Walk() if walk is None else walk
    seen = walk.seen
    stack = [(root_path(name), obj, 0) for name, obj in reversed(list(roots.items()))]
    while stack:
        path, obj, depth = stack.pop()
        if not _is_atom(obj):  # small ints and strings are shared objects: list each use
            if id(obj) in seen:
                continue
            seen[id(obj)] = obj
        if walk.objects >= walk.max_objects:
            walk.budget_hit = True
            return
        walk.objects += 1
        yield path, obj
        if max_depth is None or depth < max_depth:
            found = [
                (extend(path, suffix), child, depth + 1)
                for suffix, child in children(obj)
                if id(child) not in seen or _is_atom(child)
            ]
            stack.extend(reversed(found))


def _base_chain(array: np.ndarray) -> int:
    """Return how many arrays lie under ``array`` (its bases are restored before it)."""
    count, base = 0, array.base
    while isinstance(base, np.ndarray):
        count, base = count + 1, base.base
    return count


def _restorable(array: np.ndarray) -> bool:
    """Whether numpy would let ``array`` be made writeable again once made read-only.

    numpy's rule (``_IsWriteable``): yes if it owns its memory, or if a base array is writeable
    (bases we make read-only are restored first), or if the object at the end of the chain of
    bases exports a writeable buffer (not ``bytes``).
    """
    current = array
    while True:
        base = current.base
        if base is None or current.flags.owndata:
            return current is array
        if isinstance(base, np.ndarray):
            if base.flags.writeable:
                return True
            current = base
            continue
        try:
            return not memoryview(base).readonly
        except TypeError:  # not a buffer at all
            return False


@dataclasses.dataclass
class Protection:
    """What `make_read_only` did: the arrays it made read-only, those it could not, the walk."""

    arrays: list[np.ndarray]
    unprotected: list[str]  # paths of writeable arrays whose flag could not be restored
    walk: Walk


def make_read_only(
    roots: Mapping[str, Any], found: Iterable[tuple[str | WalkPath, Any]] | None = None
) -> Protection:
    """Make every writeable numpy array reachable from ``roots`` read-only, where restorable.

    ``found``: what `reachable` (or `walk_paths`) gave for ``roots`` already (it is not walked
    again).
    """
    walk = Walk()
    arrays: list[tuple[str | WalkPath, np.ndarray]] = []
    unprotected: list[tuple[str | WalkPath, np.ndarray]] = []
    for path, obj in reachable(roots, walk) if found is None else found:
        if isinstance(obj, np.ndarray) and obj.flags.writeable:
            (arrays if _restorable(obj) else unprotected).append((path, obj))
    for _, array in arrays:
        array.flags.writeable = False
    return Protection([a for _, a in arrays], [str(p) for p, _ in unprotected], walk)


def _restore(protection: Protection) -> None:
    """Make the protected arrays writeable again, bases before the views of them."""
    failed = []
    for array in sorted(protection.arrays, key=_base_chain):
        try:
            array.flags.writeable = True
        except ValueError:  # should not happen (see _restorable): never lose the run for it
            failed.append(array)
    if failed:
        warnings.warn(
            f"protect_shared: {len(failed)} shared arrays could not be made writeable again "
            f"(numpy refused; shapes {[a.shape for a in failed[:3]]}); they stay read-only",
            RuntimeWarning,
            stacklevel=3,
        )


@contextmanager
def read_only_arrays(
    roots: Mapping[str, Any],
    warn: bool = True,
    found: Iterable[tuple[str | WalkPath, Any]] | None = None,
) -> Iterator[Protection]:
    """Make every writeable numpy array reachable from ``roots`` read-only for the block.

    Yields the `Protection`; the flags are restored on exit, even after an exception.  Arrays
    whose flag numpy could not restore are left writeable; with ``warn``, a RuntimeWarning
    names them.  ``found`` as for `make_read_only`.
    """
    protection = make_read_only(roots, found)
    if warn and protection.unprotected:
        warnings.warn(unprotected_message(protection.unprotected), RuntimeWarning, stacklevel=3)
    try:
        yield protection
    finally:
        _restore(protection)


def unprotected_message(paths: Sequence[str]) -> str:
    """Say which arrays could not be made read-only, why, and how to make them protectable."""
    shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
    return (
        f"{len(paths)} shared arrays were left writeable ({shown}): their memory belongs to an "
        "immutable bytes object (arrays over 1,000 bytes unpickled with pickle protocol <= 4 "
        "are), so numpy could not make them writeable again afterwards; writes to them are not "
        "prevented. Pickle with protocol=5, or copy them (np.array(a)), to protect them"
    )


def is_generator_token(token: str) -> bool:
    """Whether a fingerprint token is a random generator's state."""
    return token.startswith(
        ("Generator state", "RandomState state", "Random state", "SeedSequence state")
    )


def _digest(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def _array_token(array: np.ndarray, walk: Walk) -> str:
    head = f"array{array.shape} {array.dtype}"
    if array.nbytes > walk.max_bytes - walk.bytes:
        walk.budget_hit = True
        walk.unhashed += 1
        return f"{head} (not hashed: over the budget)"
    walk.bytes += array.nbytes
    if array.nbytes == 0:
        return f"{head} empty"
    if array.dtype.hasobject:  # references: hash the elements, never their addresses
        try:
            data = pickle.dumps(array.tolist(), protocol=5)
        except Exception:
            data = "\x00".join(map(repr, array.ravel(order="C"))).encode()
        return f"{head} {_digest(data)}"
    contiguous = np.ascontiguousarray(array)
    return f"{head} {_digest(contiguous.reshape(-1).view(np.uint8).data)}"


def _bit_generator_digest(bit_generator: np.random.BitGenerator) -> str:
    """Digest a bit generator's state and its seed sequence's (``Generator.spawn`` changes it)."""
    seq = getattr(bit_generator, "seed_seq", None)
    spawned = getattr(seq, "n_children_spawned", None)
    return _digest(repr((bit_generator.state, spawned)).encode())


def _token(obj: Any, walk: Walk) -> str:
    cls = type(obj)
    if cls is dict or cls is list or cls is tuple:
        return f"{cls.__name__} of {len(obj)}"
    if _is_atom(obj):
        text = repr(obj)
        return text if len(text) <= 80 else f"{text[:60]}... {_digest(text.encode())}"
    if isinstance(obj, np.ndarray):
        return _array_token(obj, walk)
    if isinstance(obj, np.random.Generator):
        return f"Generator state {_bit_generator_digest(obj.bit_generator)}"
    if isinstance(obj, np.random.BitGenerator):
        return f"Generator state {_bit_generator_digest(obj)}"
    if isinstance(obj, np.random.SeedSequence):  # spawn() changes it
        return f"SeedSequence state {obj.n_children_spawned} children spawned"
    if isinstance(obj, itertools.count):  # its repr is its state: count(7)
        return repr(obj)
    if isinstance(obj, np.random.RandomState):
        return f"RandomState state {_digest(repr(obj.get_state(legacy=False)).encode())}"
    if isinstance(obj, random.Random):
        return f"Random state {_digest(repr(obj.getstate()).encode())}"
    if isinstance(obj, _OPAQUE):
        return cls.__qualname__
    if isinstance(obj, Mapping | list | tuple | set | frozenset | deque):
        return f"{cls.__name__} of {len(obj)}"
    return cls.__qualname__


def fingerprint(roots: Mapping[str, Any], walk: Walk | None = None) -> dict[str, str]:
    """Return path -> short description (array digest, value, or size) of everything reachable."""
    walk = Walk() if walk is None else walk
    return tokens(reachable(roots, walk), walk)


def tokens(found: Iterable[tuple[P, Any]], walk: Walk) -> dict[P, str]:
    """Return the fingerprint of what `reachable` or `walk_paths` gave (``walk`` budgets it)."""
    return {path: _token(obj, walk) for path, obj in found}


def changes(before: Mapping[P, str], after: Mapping[P, str]) -> list[str]:
    """Describe what differs between two fingerprints: ``path: before -> after``.

    The fingerprints' paths are strs, or `WalkPath` of one `PathTable` (spelt out here, for
    what differs only).
    """
    if before == after:
        return []
    differing = [(str(p), p) for p in before.keys() | after.keys() if before.get(p) != after.get(p)]
    return [
        f"{text}: {before.get(path, '(absent)')} -> {after.get(path, '(absent)')}"
        for text, path in sorted(differing, key=lambda found: found[0])
    ]
