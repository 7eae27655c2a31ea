"""`ModelSpec`: what a model factory returns, so that one call (or the CLI) can run it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import xarray as xr

from ._check import CheckReport, check
from ._engine import simulate_ensemble

__all__ = ["ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """A built model, ready to run: the ``simulate`` function and what it is called with.

    Model factories (such as those in `threadensemble.examples`, and those named on the command
    line as ``MODULE:FACTORY``) return one.

    Parameters
    ----------
    simulate : callable
        Computes one realization (see `simulate_ensemble`).
    args : tuple, optional
        Shared read-only positional arguments.
    kwargs : mapping, optional
        Shared read-only keyword arguments.
    state : object, optional
        Mutable state, deep-copied once per worker thread.
    inject : str, optional
        Keyword under which ``simulate`` receives its thread's state.
    ragged : tuple of str, optional
        Dimensions whose length varies between realizations.
    warmup : bool or callable, default False
        The model's warm-up (see `simulate_ensemble`): a model whose first run after
        construction differs from later ones says so here, so that every run and check of it
        (the command line's included) warms it up.
    description : str, optional
        One line for people: what the model is.
    """

    simulate: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    state: Any = None
    inject: str | None = None
    ragged: Sequence[str] = ()
    warmup: bool | Callable[..., Any] = False
    description: str = ""

    def check(self, **options: Any) -> CheckReport:
        """Run the thread-safety `check` on this model; ``options`` are those of `check`."""
        return check(
            self.simulate,
            args=self.args,
            kwargs=self.kwargs,
            state=self.state,
            inject=self.inject,
            ragged=self.ragged,
            **{"warmup": self.warmup, **options},
        )

    def run(self, n_realizations: int, **options: Any) -> xr.Dataset:
        """Run an ensemble of this model; ``options`` are those of `simulate_ensemble`."""
        return simulate_ensemble(
            self.simulate,
            n_realizations,
            args=self.args,
            kwargs=self.kwargs,
            state=self.state,
            inject=self.inject,
            ragged=self.ragged,
            **{"warmup": self.warmup, **options},
        )
