"""`ModelSpec`, the model object, with its front ends; `check_picklable`.

The model's parts and their validation are `threadensemble._model.Model`'s (below the run
configuration, which takes it); `ModelSpec` adds what runs it (above the engine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Unpack

import xarray as xr

from ._check import CheckOptions, CheckReport, check
from ._config import RunOptions
from ._engine import simulate_ensemble
from ._model import Model, ModelParts, as_model, travelling_roots
from ._picklable import raise_if_not_for_dask

__all__ = ["ModelSpec", "check_picklable"]


@dataclass(frozen=True, eq=False)
class ModelSpec(Model):
    """A built model, ready to run: the ``simulate`` function and what it is called with.

    Model factories (such as those in `threadensemble.examples`, and those named on the command
    line as ``MODULE:FACTORY``) return one; `simulate_ensemble`, `check` and `check_picklable`
    take one in place of ``simulate`` and its parts as keywords.  Its parts are checked when it
    is made (a TypeError or ValueError names the bad one and the rule, as `simulate_ensemble`
    would); ``dataclasses.replace(spec, warmup=True)`` makes one with a part changed.

    Two ModelSpecs are equal only when they are the same object (``==`` is ``is``), and a
    ModelSpec is hashable (by identity): comparing parts that hold arrays element by element
    says nothing about the model as a whole.  To compare models by content, compare their
    `fingerprint` digests: ``a.fingerprint() == b.fingerprint()``.

    Parameters
    ----------
    simulate : callable
        Computes one realization (see `simulate_ensemble`).
    args : tuple or list, optional
        Shared read-only positional arguments (kept as a tuple).
    kwargs : mapping, optional
        Shared read-only keyword arguments (kept as a dict); its keys must be str.
    state : object, optional
        Mutable state, deep-copied once per worker thread.  Needs ``inject``.
    inject : str, optional
        Keyword under which ``simulate`` receives its thread's state.  Needs ``state``.
    ragged : tuple or list of str, optional
        Dimensions whose length varies between realizations (kept as a tuple).
    warmup : bool or callable, default False
        The model's warm-up (see `simulate_ensemble`): a model whose first run after
        construction differs from later ones says so here, so that every run and check of it
        (the command line's included) warms it up.
    description : str, optional
        One line for people: what the model is (not part of its fingerprint).

    Raises
    ------
    TypeError, ValueError
        A bad part: ``simulate`` not callable, ``args`` not a tuple or list, ``kwargs`` not a
        mapping or with a key that is not a str, ``state`` without ``inject`` or the reverse,
        ``inject`` not a keyword of ``simulate`` or also a key of ``kwargs``, ``ragged`` not a
        tuple or list of names, ``warmup`` neither a bool nor callable.
    """

    def run(self, n_realizations: int, **options: Unpack[RunOptions]) -> xr.Dataset:
        """Run an ensemble of this model: `simulate_ensemble` with the run ``options``."""
        own = as_model(self, options, "ModelSpec.run", RunOptions.__optional_keys__)
        return simulate_ensemble(own, n_realizations, **options)

    def check(self, **options: Unpack[CheckOptions]) -> CheckReport:
        """Run the thread-safety `check` on this model, with the check's ``options``."""
        own = as_model(self, options, "ModelSpec.check", CheckOptions.__optional_keys__)
        return check(own, **options)

    def check_picklable(self) -> None:
        """Check that this model can be sent to dask workers (see `check_picklable`)."""
        check_picklable(self)


def check_picklable(model: Model | Callable[..., Any], **parts: Unpack[ModelParts]) -> None:
    """Check that a model can be sent to dask workers, as ``simulate_ensemble(client=...)`` does.

    Local threads share the model as it is.  On a dask cluster, ``simulate``, ``args``,
    ``kwargs`` and ``state`` are pickled (by cloudpickle where plain pickle fails, as dask
    does) and unpickled in every worker process, so a model that runs fine on threads may hold
    objects that cannot travel: locks, open files and netCDF datasets, database connections,
    generators.  `simulate_ensemble` runs this check when given a client, before anything
    starts; with ``backend="processes"`` it runs the same check with the pickler it sends the
    model with (cloudpickle when installed, else pickle).  Each object is also unpickled again,
    as a worker would, so that one whose pickle cannot be loaded is found too.  Contiguous
    array data are not copied, so the check is cheap even for large models.

    Parameters
    ----------
    model : ModelSpec or callable
        As for `simulate_ensemble`: a `ModelSpec`, or ``simulate`` with the model's parts as
        keywords (`ModelParts`: ``args``, ``kwargs``, ``state`` with ``inject``, ...).

    Raises
    ------
    TypeError
        Naming the innermost object that cannot be pickled, or unpickled again
        (``args[0].cache['lock']``, say), and why; or a bad model part.

    Examples
    --------
    >>> import threading, threadensemble as te
    >>> te.check_picklable(sum, args=([1.0, 2.0],))
    >>> te.check_picklable(sum, kwargs={"model": {"lock": threading.Lock()}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    TypeError: kwargs['model']['lock'] cannot be pickled (TypeError: cannot pickle '_thread...
    """
    raise_if_not_for_dask(travelling_roots(as_model(model, parts, "check_picklable", ())))
