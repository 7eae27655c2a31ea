"""The benchmark workloads: every example of the package, then our own models."""

from __future__ import annotations

from importlib import import_module

import threadensemble as te
from threadensemble.examples import EXAMPLES

__all__ = ["PURE_PYTHON", "build", "workloads"]

PURE_PYTHON = "pure-python"
"""The workload whose 2-worker speedup ``nox -s compare`` prints."""

OWN = {
    PURE_PYTHON: "benchmarks.models:pure_python",
    "numpy-heavy": "benchmarks.models:numpy_heavy",
}


def workloads() -> dict[str, str]:
    """Return short name -> ``MODULE:FACTORY``: the package examples (as registered), then ours."""
    return {**EXAMPLES, **OWN}


def build(ref: str) -> te.ModelSpec:
    """Call the factory ``MODULE:FACTORY`` with its defaults and return its `ModelSpec`."""
    module, _, factory = ref.partition(":")
    spec = getattr(import_module(module), factory)()
    if not isinstance(spec, te.ModelSpec):
        raise TypeError(f"{ref} returned {type(spec).__name__}, not a threadensemble.ModelSpec")
    return spec
