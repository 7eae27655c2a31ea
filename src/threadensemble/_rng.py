"""The thread-local RNG registry: one set of generators per thread, reseeded per realization.

Seeding rules (the reasons are in ``docs/reproducibility.md``):

* Realization ``k`` draws from ``SeedSequence(entropy, spawn_key=(*root_key, k))``.  Its numbers
  depend on the run seed and ``k`` only, never on the thread, the worker count or the order in
  which realizations finish.
* The per-realization sequences are *constructed* with an explicit spawn key, afresh for each
  attempt (`RealizationSeeds.fresh`).  ``SeedSequence.spawn`` is never called on a sequence
  that threads share: it increments a counter on the parent and is not thread-safe.
* A named stream (``get_rng("wind")``) extends the realization's spawn key with a stable 64-bit
  hash of the name, so a component that draws more numbers never shifts another component.
* Nothing here is shared between threads, so nothing here takes a lock.  UNSAFE, and exactly
  what this module replaces: one module-level ``numpy.random.Generator`` used by many threads
  (it serializes on its internal lock and the numbers each realization gets depend on
  scheduling), or ``seed + worker_id`` schemes (results then depend on the worker count).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from numbers import Integral
from typing import Any, TypeAlias

import numpy as np

__all__ = [
    "RealizationSeeds",
    "SeedLike",
    "ThreadLocalGenerator",
    "as_seed_sequence",
    "fresh_seed_sequence",
    "get_rng",
    "named_seed_sequence",
    "realization_seed",
    "realization_seeds",
    "realization_streams",
    "reseed",
    "rng",
    "seed_sequence_from_record",
    "seed_sequence_record",
]

SeedLike: TypeAlias = "int | Sequence[int] | np.random.SeedSequence | None"


def _stream_key(name: str) -> int:
    """Stable 64-bit key of a stream name (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def named_seed_sequence(root: np.random.SeedSequence, name: str) -> np.random.SeedSequence:
    """Return the sequence of stream ``name`` under ``root`` (its spawn key extended by a hash)."""
    return np.random.SeedSequence(
        root.entropy, spawn_key=(*root.spawn_key, _stream_key(name)), pool_size=root.pool_size
    )


class _Streams:
    """The generators of one thread for one realization, created on first use."""

    __slots__ = ("generators", "root")

    def __init__(self, root: np.random.SeedSequence) -> None:
        self.root = root
        self.generators: dict[str | None, np.random.Generator] = {}

    def get(self, name: str | None) -> np.random.Generator:
        generator = self.generators.get(name)
        if generator is None:
            seq = self.root if name is None else named_seed_sequence(self.root, name)
            generator = np.random.Generator(np.random.PCG64(seq))
            self.generators[name] = generator
        return generator


_local = threading.local()


def _current_streams() -> _Streams:
    streams: _Streams | None = getattr(_local, "streams", None)
    if streams is None:
        # A thread outside any ensemble (the main thread, say) gets fresh OS entropy, as
        # numpy.random.default_rng() would; reseed() makes it reproducible.
        streams = _Streams(np.random.SeedSequence())
        _local.streams = streams
    return streams


def get_rng(name: str | None = None) -> np.random.Generator:
    """Return the calling thread's generator for the current realization.

    Inside ``simulate`` this is seeded for the realization being computed, so realization ``k``
    draws the same numbers whatever thread runs it.  Outside an ensemble every thread has its own
    generator, seeded from OS entropy until `reseed` is called.

    Parameters
    ----------
    name : str, optional
        Name of an independent stream.  Each name gives a generator of its own, so the numbers
        drawn from ``get_rng("wind")`` do not depend on how many were drawn from
        ``get_rng("rain")`` or from the default stream.

    Returns
    -------
    numpy.random.Generator
        A PCG64 generator owned by this thread.  Do not hand it to another thread.

    Examples
    --------
    >>> import threadensemble as te
    >>> te.reseed(1)
    >>> float(te.get_rng().random()) == float(te.get_rng().random())
    False
    """
    if name is not None and not isinstance(name, str):
        raise TypeError(f"stream name must be a str or None, got {name!r}")
    return _current_streams().get(name)


def as_seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    """Return ``seed`` as a `numpy.random.SeedSequence`, or raise naming the rule it breaks."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator | np.random.BitGenerator):
        raise TypeError(
            f"seed must be an int, a sequence of ints or a SeedSequence, got {type(seed).__name__}:"
            " a generator cannot be split into reproducible per-realization streams"
        )
    if seed is None:
        return np.random.SeedSequence()
    values = [seed] if not isinstance(seed, Sequence) or isinstance(seed, str) else list(seed)
    if not values or any(isinstance(v, bool) or not isinstance(v, Integral) for v in values):
        raise TypeError(f"seed must be a non-negative int or a sequence of them, got {seed!r}")
    if any(int(v) < 0 for v in values):
        raise ValueError(f"seed must be non-negative, got {seed!r}")
    ints = [int(v) for v in values]
    return np.random.SeedSequence(ints[0] if len(ints) == 1 else ints)


def reseed(seed: SeedLike) -> None:
    """Reseed every stream of the calling thread from ``seed``.

    Other threads are not affected.  Inside ``simulate`` the engine reseeds before each
    realization, so calling this there breaks the ensemble's reproducibility; it is meant for
    code run outside an ensemble (scripts, tests, model construction).

    Parameters
    ----------
    seed : int, sequence of int, numpy.random.SeedSequence or None
        The new seed; None draws fresh entropy from the OS.
    """
    _local.streams = _Streams(as_seed_sequence(seed))


@contextmanager
def realization_streams(root: np.random.SeedSequence) -> Iterator[None]:
    """Give the calling thread fresh streams rooted at ``root`` for the duration of the block."""
    previous = getattr(_local, "streams", None)
    _local.streams = _Streams(root)
    try:
        yield
    finally:
        _local.streams = previous


def _child(root: np.random.SeedSequence, k: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(
        root.entropy, spawn_key=(*root.spawn_key, k), pool_size=root.pool_size
    )


def realization_seed(seed: SeedLike, k: int) -> np.random.SeedSequence:
    """Return the seed of realization ``k`` of a run seeded with ``seed``.

    ``simulate_ensemble(..., seed=seed)`` seeds `get_rng` with it before realization ``k``;
    so does ``reseed(realization_seed(seed, k))``, for code that computes a realization
    outside an ensemble (a loop of its own, another pool) and must get the same numbers.

    Parameters
    ----------
    seed : int, sequence of int or numpy.random.SeedSequence
        The run seed (not None: fresh entropy would give another run's seeds).
    k : int
        Realization index, ``>= 0``.

    Returns
    -------
    numpy.random.SeedSequence
        ``SeedSequence(seed, spawn_key=(k,))`` (the spawn key appended to the seed's own).

    Examples
    --------
    >>> import threadensemble as te
    >>> te.reseed(te.realization_seed(1, 3))
    >>> x = te.get_rng().random()
    >>> ens = te.simulate_ensemble(lambda: {"x": te.get_rng().random(1)}, 4, seed=1,
    ...                            progress=False)
    >>> float(ens["x"][3, 0]) == x
    True
    """
    if seed is None:
        raise TypeError("seed must be the run's seed, not None (that draws fresh entropy)")
    if isinstance(k, bool) or not isinstance(k, Integral) or int(k) < 0:
        raise ValueError(f"k must be a realization index (an int >= 0), got {k!r}")
    return _child(as_seed_sequence(seed), int(k))


class RealizationSeeds:
    """The root `SeedSequence` of every realization of a run, made afresh for each attempt.

    Realization ``k`` of a run seeded with ``root`` gets the root's entropy with ``k``
    appended to its spawn key, built when it starts (in the thread or process that runs it:
    nothing is built for the realizations a run never reaches); with ``seed_for``, the
    sequences given, checked and kept when the run is configured.  Read-only once made.
    """

    __slots__ = ("_given", "_root", "_root_record")

    def __init__(
        self,
        root: np.random.SeedSequence | None,
        given: Sequence[np.random.SeedSequence] = (),
    ) -> None:
        self._root = root
        self._given = tuple(given)
        self._root_record = None if root is None else seed_sequence_record(root)

    def fresh(self, k: int) -> np.random.SeedSequence:
        """Return a new sequence for realization ``k``: ``get_rng().spawn(n)`` advances it only."""
        if self._root is not None:
            return _child(self._root, k)
        return fresh_seed_sequence(self._given[k])

    def record(self, k: int) -> dict[str, Any]:
        """Return `seed_sequence_record` of realization ``k``'s sequence (without building it)."""
        if self._root_record is None:
            return seed_sequence_record(self._given[k])
        return {**self._root_record, "spawn_key": [*self._root_record["spawn_key"], k]}


def realization_seeds(
    seed: SeedLike,
    n_realizations: int,
    seed_for: Callable[[int], SeedLike] | None = None,
) -> RealizationSeeds:
    """Return the seeds of a run's realizations, checked in the calling thread.

    Parameters
    ----------
    seed : int, sequence of int, numpy.random.SeedSequence or None
        Run seed; realization ``k`` gets the run seed's entropy with ``k`` appended to its
        spawn key (what ``SeedSequence(seed).spawn(n)[k]`` would give).
    n_realizations : int
        How many realizations.
    seed_for : callable, optional
        A user seed scheme instead of ``seed``: ``seed_for(k)`` is realization ``k``'s seed.
        Two realizations whose seeds give the same numbers (the same seed, or another form
        of it: ``7`` and ``[7, 0]``) are refused, as they would be identical.
    """
    if seed_for is None:
        return RealizationSeeds(as_seed_sequence(seed))
    seqs: list[np.random.SeedSequence] = []
    # The generator state a seed gives, not its form: 7 and [7, 0] seed the same numbers.
    first_with: dict[bytes, int] = {}
    for k in range(n_realizations):
        try:
            seq = as_seed_sequence(seed_for(k))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"seed_for({k}): {exc}") from None
        key = seq.generate_state(8, np.uint64).tobytes()
        if key in first_with:
            first = seqs[first_with[key]]
            same = (
                f"the same seed {seq.entropy!r}"
                if seed_sequence_record(first) == seed_sequence_record(seq)
                else f"seeds {first.entropy!r} and {seq.entropy!r} that give the same numbers"
            )
            raise ValueError(
                f"seed_for({first_with[key]}) and seed_for({k}) give {same}: every "
                "realization needs a seed of its own"
            )
        first_with[key] = k
        seqs.append(seq)
    return RealizationSeeds(None, seqs)


def seed_sequence_record(seq: np.random.SeedSequence) -> dict[str, Any]:
    """Return what reproduces ``seq``: its entropy (as a string, it may exceed 64 bits) and key."""
    return {
        "entropy": str(seq.entropy),
        "spawn_key": [int(k) for k in seq.spawn_key],
        "pool_size": int(seq.pool_size),
    }


def seed_sequence_from_record(record: Mapping[str, Any]) -> np.random.SeedSequence:
    """Return the `SeedSequence` that `seed_sequence_record` recorded."""
    return np.random.SeedSequence(
        int(record["entropy"]),
        spawn_key=tuple(int(k) for k in record["spawn_key"]),
        pool_size=int(record["pool_size"]),
    )


def fresh_seed_sequence(seq: np.random.SeedSequence) -> np.random.SeedSequence:
    """Return a new `SeedSequence` equal to ``seq`` as it was built, for one attempt.

    ``get_rng().spawn(n)`` inside ``simulate`` advances the sequence it was seeded from; the run
    keeps realization ``k``'s sequence untouched and gives every attempt (a retry, `check`'s
    repeated runs, a dask task) a copy of its own, so spawned children are the same each time.
    """
    return np.random.SeedSequence(
        seq.entropy,
        spawn_key=seq.spawn_key,
        pool_size=seq.pool_size,
        n_children_spawned=seq.n_children_spawned,
    )


class ThreadLocalGenerator:
    """A stand-in for a module-level generator that forwards to the calling thread's generator.

    Legacy model code often keeps one module-level ``rng = np.random.default_rng(...)`` and calls
    ``rng.normal(...)`` everywhere.  Shared by threads, such a generator serializes on its lock
    and makes results depend on scheduling.  Assigning ``rng = threadensemble.rng`` (or
    ``ThreadLocalGenerator("wind")`` for a named stream) makes every existing call site draw
    from the calling thread's per-realization stream, without editing any of them.  It copies
    and pickles as ``ThreadLocalGenerator(name)``, so a state or a model holding it can be
    deep-copied per thread and sent to worker processes.

    Parameters
    ----------
    name : str, optional
        Stream name, as for `get_rng`.

    Examples
    --------
    >>> import threadensemble as te
    >>> rng = te.ThreadLocalGenerator()
    >>> te.reseed(7)
    >>> a = rng.standard_normal(3)
    >>> te.reseed(7)
    >>> bool((a == te.get_rng().standard_normal(3)).all())
    True
    """

    __slots__ = ("_name",)

    def __init__(self, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"stream name must be a str or None, got {name!r}")
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        # Only public names forward: copy and pickle look up dunders on a new, empty object
        # (before ``_name`` is set), which must not recurse.
        if attribute.startswith("_"):
            raise AttributeError(f"'ThreadLocalGenerator' object has no attribute {attribute!r}")
        return getattr(get_rng(self._name), attribute)

    def __reduce__(self) -> tuple[type[ThreadLocalGenerator], tuple[str | None]]:
        """Copy and pickle as ``ThreadLocalGenerator(name)``: a forwarder, not a generator."""
        return (ThreadLocalGenerator, (self._name,))

    def __repr__(self) -> str:
        stream = "default stream" if self._name is None else f"stream {self._name!r}"
        return f"<ThreadLocalGenerator: {stream} of the calling thread>"


rng = ThreadLocalGenerator()
"""Drop-in replacement for a module-level generator: forwards to `get_rng()` of the caller."""
