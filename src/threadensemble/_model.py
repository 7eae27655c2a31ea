"""The model object: ``simulate`` and what it is called with, validated, and its fingerprint.

`Model` holds the model's parts and checks them when it is made, so that every front end
(`simulate_ensemble`, `check`, `check_picklable`, `ModelSpec`, the command line) refuses a bad
part with the same error, naming it and the rule, before anything starts.  The public
`threadensemble.ModelSpec` is a `Model` with the front ends' methods (``run``, ``check``,
``check_picklable``); those sit above the engine, this below the run configuration, which is
why they are two classes.  `ModelParts` types the parts given as keywords instead of a model
(``simulate_ensemble(simulate, n, args=..., state=..., inject=...)``); `as_model` reads them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ._errors import str_tuple
from ._identity import Fingerprint, model_fingerprint
from ._rng import SeedLike
from ._shared import context_roots

__all__ = [
    "Model",
    "ModelFingerprint",
    "ModelParts",
    "as_model",
    "identity_fingerprint",
    "qualname",
    "travelling_roots",
]


class ModelParts(TypedDict, total=False):
    """The model's parts, as keywords beside ``simulate`` in place of a `ModelSpec`.

    ``args``, ``kwargs``, ``state``, ``inject``, ``ragged`` and ``warmup``, as documented for
    `simulate_ensemble`: the fields of `ModelSpec` but ``simulate`` (given first) and
    ``description``.
    """

    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    state: Any
    inject: str | None
    ragged: Sequence[str]
    warmup: bool | Callable[..., Any]


@dataclass(frozen=True)
class ModelFingerprint:
    """The content fingerprint of a model (`ModelSpec.fingerprint`).

    ``digest`` covers ``simulate`` (its code, closure, defaults and the functions, classes and
    module-level values of your own modules it uses; installed packages by version),
    ``args``, ``kwargs``, ``state`` and a ``warmup`` function; ``unreadable`` names the paths
    whose content could not be read (an open file, an extension object that cannot be
    pickled): the digest cannot tell their contents apart.  It is the model's part of a run's
    identity in an ensemble directory.
    """

    digest: str
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Model:
    """A model's parts, checked when it is made (see `threadensemble.ModelSpec`).

    ``args``, ``kwargs`` and ``ragged`` are kept as a tuple, a dict and a tuple.  Models compare
    and hash by identity: `fingerprint` compares them by content.
    """

    simulate: Callable[..., Any]
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    state: Any = None
    inject: str | None = None
    ragged: Sequence[str] = ()
    warmup: bool | Callable[..., Any] = False
    description: str = ""

    def __post_init__(self) -> None:
        simulate, args, kwargs = self.simulate, self.args, self.kwargs
        if not callable(simulate):
            raise TypeError(f"simulate must be callable, got {simulate!r}")
        if isinstance(args, str | bytes) or not isinstance(args, Sequence):
            raise TypeError(f"args must be a tuple or list of positional arguments, got {args!r}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(
                f"kwargs must be a mapping of keyword arguments (a dict), got {kwargs!r}"
            )
        kw = dict(kwargs or {})
        for key in kw:
            if not isinstance(key, str):
                raise TypeError(
                    f"kwargs keys must be str (keyword names simulate is called with), got "
                    f"the key {key!r} ({type(key).__name__})"
                )
        if self.state is not None and self.inject is None:
            raise ValueError(
                "state was given without inject: name the keyword simulate receives it as"
            )
        if self.inject is not None:
            if self.state is None:
                raise ValueError(
                    f"inject={self.inject!r} was given without state: there is nothing to inject"
                )
            _check_inject(simulate, self.inject, kw)
        ragged = str_tuple(
            self.ragged, "ragged must be a sequence of dimension names (a tuple or list of str)"
        )
        if not isinstance(self.warmup, bool) and not callable(self.warmup):
            raise TypeError(
                f"warmup must be True, False or a callable like simulate, got {self.warmup!r}"
            )
        object.__setattr__(self, "args", tuple(args))
        object.__setattr__(self, "kwargs", kw)
        object.__setattr__(self, "ragged", ragged)

    def fingerprint(self) -> ModelFingerprint:
        """Return the content fingerprint of this model: equal models, equal digests.

        It is computed as a run into an ensemble directory computes the model's part of its
        identity (with ``seed_for``, if the run has one, besides): a model whose fingerprint
        differs from the one recorded there is refused.
        """
        found = identity_fingerprint(self)
        return ModelFingerprint(found.digest, tuple(found.opaque))


def travelling_roots(model: Model) -> dict[str, Any]:
    """Return what a model sends to dask workers or worker processes, by name."""
    return {
        "simulate": model.simulate,
        **context_roots(model.args, model.kwargs),
        "state": model.state,
    }


def identity_fingerprint(
    model: Model, seed_for: Callable[[int], SeedLike] | None = None
) -> Fingerprint:
    """Fingerprint what determines a run's numbers: the model, and ``seed_for`` if any."""
    roots: dict[str, Any] = {"simulate": model.simulate}
    roots.update({f"args[{i}]": value for i, value in enumerate(model.args)})
    # In the given order: simulate(**kwargs) sees it (``differences`` names a changed order).
    roots.update({f"kwargs[{name!r}]": value for name, value in model.kwargs.items()})
    if model.state is not None:
        roots["state"] = model.state
    if seed_for is not None:
        roots["seed_for"] = seed_for
    if callable(model.warmup):
        roots["warmup"] = model.warmup
    return model_fingerprint(roots)


def as_model(
    model: Model | Callable[..., Any],
    options: Mapping[str, Any],
    caller: str,
    allowed: Collection[str],
) -> Model:
    """Return the model a front end was given: a `Model`, or simulate with `ModelParts`.

    ``options`` are the front end's keywords: model parts and its own ``allowed`` options; any
    other keyword is a TypeError, as is a model part given with a `Model`.  ``caller`` names
    what the user called in those errors: a function, or a method of the model
    (``ModelSpec.run``).
    """
    unknown = [name for name in options if name not in allowed and name not in _PARTS]
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    parts = {name: value for name, value in options.items() if name in _PARTS}
    if not isinstance(model, Model):
        return Model(model, **parts)
    if parts:
        given = ", ".join(f"{name}=" for name in parts)
        if caller.startswith("ModelSpec."):  # a method: the ModelSpec is the model itself
            raise TypeError(
                f"{caller}() got the model keywords {given}: the ModelSpec holds its parts "
                f"(dataclasses.replace(model, {next(iter(parts))}=...) makes a ModelSpec with "
                "that part changed)"
            )
        raise TypeError(
            f"{caller}() was given a ModelSpec and the model keywords {given}: give the model "
            "either as a ModelSpec (which holds its parts) or as simulate with its parts as "
            f"keywords, not both (dataclasses.replace(model, {next(iter(parts))}=...) makes a "
            "ModelSpec with that part changed)"
        )
    return model


_PARTS = ModelParts.__optional_keys__


def _check_inject(simulate: Callable[..., Any], inject: str, kwargs: Mapping[str, Any]) -> None:
    if not isinstance(inject, str) or not inject.isidentifier():
        raise TypeError(f"inject must be a keyword name (a str), got {inject!r}")
    if inject in kwargs:
        raise ValueError(f"inject={inject!r} is also a key of kwargs: the state needs its own name")
    try:
        params = inspect.signature(simulate).parameters
    except (TypeError, ValueError):  # builtins and some C callables: nothing to inspect
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    param = params.get(inject)
    if param is None or param.kind not in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(
            f"inject={inject!r} is not a keyword parameter of {qualname(simulate)}: "
            f"simulate receives its thread's state as {inject}=..., so it must accept it"
        )


def qualname(obj: object) -> str:
    """Return ``module:qualified.name`` of a function or class (or of an object's class)."""
    module = getattr(obj, "__module__", None) or "?"
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}:{name}"
