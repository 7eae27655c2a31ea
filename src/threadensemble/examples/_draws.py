"""Random numbers one at a time for pure-Python model loops, from the realization's streams."""

from __future__ import annotations

from collections.abc import Iterator

import threadensemble as te

__all__ = ["uniforms"]

_BATCH = 4096


def uniforms(stream: str | None = None) -> Iterator[float]:
    """Return an endless iterator of uniform floats in [0, 1) from the realization's ``stream``.

    A pure-Python loop that needs one number per step pays about half a microsecond for each
    scalar call into numpy; ``next`` on this iterator costs a few tens of nanoseconds.  The
    numbers are drawn in batches, and a PCG64 generator gives the same sequence whatever the
    batch size, so the realization's numbers do not depend on how they are fetched.

    Parameters
    ----------
    stream : str, optional
        Name of the stream (see `threadensemble.get_rng`); None is the default stream.

    Returns
    -------
    iterator of float
        Call this inside ``simulate``: the generator is looked up now, in the calling thread.
    """
    generator = te.get_rng(stream)

    def batches() -> Iterator[float]:
        while True:
            yield from generator.random(_BATCH).tolist()

    return batches()
