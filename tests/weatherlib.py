"""A library with its own module-level generator, as varwg has (for `route_rng` tests).

A module of its own on the tests' sys.path, so that worker processes import it by name.
"""

from __future__ import annotations

import numpy as np

rng = np.random.default_rng(42)  # shared by every caller, reseeded by nobody


def get_rng() -> np.random.Generator:
    return rng


def draw(n: int) -> np.ndarray:
    return get_rng().normal(10.0, 3.0, n)
