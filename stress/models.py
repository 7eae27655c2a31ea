"""Small models for the stress tests."""

from __future__ import annotations

from typing import Any

import numpy as np

import threadensemble as te


class Scratch:
    """Per-thread mutable state that every realization overwrites completely."""

    def __init__(self) -> None:
        self.path = [0.0] * 64


def small_walk(drift: float, *, scratch: Scratch) -> dict[str, Any]:
    """A short pure-Python random walk in the thread's scratch list (many bytecodes, no I/O)."""
    rng = te.get_rng()
    steps = rng.standard_normal(len(scratch.path)).tolist()
    position = 0.0
    for i, step in enumerate(steps):
        position += drift + step
        scratch.path[i] = position
    return {"path": ("step", np.array(scratch.path))}
