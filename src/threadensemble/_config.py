"""Validation of a run of a model (`simulate_ensemble`'s run options) into one configuration.

The model's own parts are checked when it is made (`threadensemble._model.Model`); everything
else a user can get wrong is checked here, in the calling thread, before any worker thread
starts or any file is touched; each error names the bad value and the rule it breaks.  The
run options are typed by `RunOptions` (those a run shares with `check`: `CommonOptions`), and
their defaults are read here.  Nothing here reads or writes the disk: resuming a fresh-entropy
run with the seed an ensemble directory recorded is the engine's step (`with_recorded_seed`,
after `EnsembleStore.recorded_seed`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from ._model import Model, identity_fingerprint, qualname, travelling_roots
from ._picklable import (
    PROCESSES_ADVICE,
    model_pickler,
    raise_if_main_cannot_start_workers,
    raise_if_not_for_dask,
    raise_if_unpicklable,
)
from ._rng import (
    RealizationSeeds,
    SeedLike,
    as_seed_sequence,
    realization_seeds,
    seed_sequence_from_record,
    seed_sequence_record,
)
from ._routing import Routes, active_routes, unimportable_routes
from ._runtime import available_cpus, runtime_info
from ._shared import context_roots
from ._state import PerThreadState, check_private_state, copy_state, private_patterns

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "BACKENDS",
    "CommonOptions",
    "RunConfig",
    "RunOptions",
    "make_config",
    "with_recorded_seed",
]

BACKENDS = ("threads", "processes")


class CommonOptions(TypedDict, total=False):
    """The options a run and `check` share (see `simulate_ensemble`)."""

    n_workers: int | None
    seed: SeedLike
    seed_for: Callable[[int], SeedLike] | None
    protect_shared: bool
    share_state: bool
    private_state: Sequence[str]


class RunOptions(CommonOptions, total=False):
    """The run options of `simulate_ensemble` and `ModelSpec.run`, as documented there.

    ``n_workers``, ``seed``, ``seed_for``, ``output_dir``, ``overwrite``, ``protect_shared``,
    ``lazy``, ``progress``, ``fail_fast``, ``retries``, ``client``, ``share_state``,
    ``private_state``, ``backend`` and ``run_id``: everything but the model.
    """

    output_dir: str | os.PathLike[str] | None
    overwrite: bool
    lazy: bool
    progress: bool
    fail_fast: bool
    retries: int
    client: Client | None
    backend: str
    run_id: str | None


@dataclass(frozen=True)
class RunConfig:
    """A validated run: what to call, with what, seeded how, written where."""

    simulate: Callable[..., Any]
    n_realizations: int
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    state: Any  # the run's master copy of the user's state (never the user's object)
    inject: str | None
    warmup: bool | Callable[..., Any]
    protect_shared: bool
    lazy: bool
    n_workers: int
    seeds: RealizationSeeds
    output_dir: Path | None
    ragged: tuple[str, ...]
    progress: bool
    fail_fast: bool
    retries: int
    overwrite: bool
    client: Client | None  # None: local threads (n_workers of them); else the dask cluster's
    fresh_seed: bool = False  # seed=None: fresh entropy, unless output_dir recorded a seed
    identity: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    run_attrs: dict[str, Any] = field(default_factory=dict)
    share_state: tuple[str, ...] | None = None  # the private_state patterns; None: no sharing
    backend: str = "threads"  # or "processes" (local worker processes); unused with a client
    routes: Routes = ()  # the route_rng routes active when the run started: workers apply them

    def shared_roots(self) -> dict[str, Any]:
        """Return the shared read-only context by name: ``args[0]``, ``kwargs['model']`` ..."""
        return context_roots(self.args, self.kwargs)

    def per_thread_state(self) -> PerThreadState | None:
        """Return what makes a worker's copy of the state (not yet made); None without state."""
        if self.inject is None:
            return None
        return PerThreadState(self.state, share=self.share_state)

    def call_kwargs(self, state: Any) -> dict[str, Any]:
        """Return the keyword arguments of ``simulate`` with ``state`` injected (if any)."""
        if self.inject is None:
            return dict(self.kwargs)
        return {**self.kwargs, self.inject: state}

    def file_attrs(self, index: int) -> dict[str, Any]:
        """Global attributes recorded with realization ``index`` (its seed, the run, the build)."""
        seed = self.seeds.record(index)
        return {
            "threadensemble_realization": index,
            "threadensemble_seed_entropy": seed["entropy"],
            "threadensemble_seed_spawn_key": json.dumps(seed["spawn_key"]),
            **self.run_attrs,
        }


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def _flag(name: str, value: object) -> bool:
    """Return ``value`` as a bool, refusing anything but a bool (``"False"`` is truthy)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_client(client: object) -> None:
    try:
        from distributed import Client  # the optional dask extra
    except ImportError:
        raise TypeError(
            f"client must be a distributed.Client, got {client!r}, and distributed is not "
            "installed: pip install 'threadensemble[dask]'"
        ) from None
    if not isinstance(client, Client):
        raise TypeError(
            f"client must be a distributed.Client (or None for local threads), got {client!r}"
        )
    if client.status != "running":
        raise ValueError(
            f"client must be connected to a scheduler, but its status is {client.status!r}"
        )


def make_config(model: Model, n_realizations: int, options: RunOptions) -> RunConfig:
    """Validate a run of ``model`` (its parts are valid already) and return its configuration.

    ``options`` are `simulate_ensemble`'s run options (others are ignored: the model's parts).
    With an ``output_dir`` the run's identity is computed too: the content fingerprint of the
    model (`identity_fingerprint`), or ``run_id`` in its place.
    """
    n_workers = options.get("n_workers")
    seed = options.get("seed")
    seed_for = options.get("seed_for")
    output_dir = options.get("output_dir")
    retries = options.get("retries", 0)
    client = options.get("client")
    backend = options.get("backend", "threads")
    run_id = options.get("run_id")
    flags = {
        name: _flag(name, value)
        for name, value in [
            ("protect_shared", options.get("protect_shared", False)),
            ("lazy", options.get("lazy", False)),
            ("overwrite", options.get("overwrite", False)),
            ("progress", options.get("progress", True)),
            ("fail_fast", options.get("fail_fast", False)),
            ("share_state", options.get("share_state", False)),
        ]
    }
    n = _positive_int("n_realizations", n_realizations)
    workers = available_cpus() if n_workers is None else _positive_int("n_workers", n_workers)
    simulate, inject, ragged, warmup = model.simulate, model.inject, model.ragged, model.warmup
    state = None if inject is None else copy_state(model.state)
    sharing = private_patterns(flags["share_state"], options.get("private_state", ()))
    if sharing is not None and inject is None:
        raise ValueError("share_state=True was given without state: there is nothing to share")
    if sharing and not warmup:  # else checked after the warm-up, which may create the arrays
        check_private_state(state, sharing)
    if seed is not None and seed_for is not None:
        raise ValueError("give seed or seed_for, not both: seed_for(k) is realization k's seed")
    if seed_for is not None and not callable(seed_for):
        raise TypeError(f"seed_for must be callable as seed_for(k), got {seed_for!r}")
    directory = None
    if output_dir is not None:
        if not isinstance(output_dir, str | os.PathLike):
            raise TypeError(f"output_dir must be a path, got {output_dir!r}")
        if not os.fspath(output_dir):
            raise ValueError(
                "output_dir must name a directory, got '' (for the current directory, say '.')"
            )
        directory = Path(output_dir)
    root = None if seed_for is not None else as_seed_sequence(seed)
    seeds = realization_seeds(root, n, seed_for)
    if isinstance(retries, bool) or not isinstance(retries, Integral):
        raise TypeError(f"retries must be an int >= 0, got {retries!r}")
    if int(retries) < 0:
        raise ValueError(f"retries must be >= 0, got {retries!r}")
    if flags["lazy"] and directory is None:
        raise ValueError("lazy=True needs an output_dir: only files can be opened lazily")
    if flags["lazy"] and ragged:
        raise ValueError(
            f"lazy=True cannot be combined with ragged={list(ragged)!r}: a ragged ensemble is "
            "padded in memory and cannot be opened lazily; pass lazy=False"
        )
    travelling = {**travelling_roots(model), "state": state}  # the run's copy of the state
    if client is not None:
        _check_client(client)
        if n_workers is not None:
            raise ValueError(
                f"n_workers={n_workers!r} sets the local threads; with a client the "
                "realizations run on the cluster's worker threads: size the cluster instead"
            )
        raise_if_not_for_dask(travelling)
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}"
        )
    if backend == "processes":
        if client is not None:
            raise ValueError(
                "give client or backend='processes', not both: a client runs the realizations "
                "on its dask cluster, backend='processes' in local worker processes"
            )
        raise_if_main_cannot_start_workers()
        raise_if_unpicklable(model_pickler(), travelling, PROCESSES_ADVICE)
    routes = active_routes()
    if routes and (backend == "processes" or client is not None):
        _check_routes_travel(routes)
    if run_id is not None and (not isinstance(run_id, str) or not run_id):
        raise TypeError(
            f"run_id must be a non-empty str naming the model's version, got {run_id!r}"
        )
    identity: dict[str, Any] = {}
    if directory is not None:  # identity matters only to an ensemble directory
        record = {"run_id": run_id} if run_id is not None else _model_record(model, seed_for)
        identity = {
            "simulate": qualname(simulate),
            "model": record,
            "inject": inject,
            "seed_scheme": "seed_for" if root is None else "seed",
            "seed": None if root is None else seed_sequence_record(root),
            "ragged": list(ragged),
            "warmup": warmup if isinstance(warmup, bool) else qualname(warmup),
            **({"routes": [list(route) for route in routes]} if routes else {}),
        }
    digest = _digest(identity) if directory is not None else ""
    return RunConfig(
        simulate=simulate,
        n_realizations=n,
        args=tuple(model.args),
        kwargs=model.kwargs,
        state=state,
        inject=inject,
        warmup=warmup,
        protect_shared=flags["protect_shared"],
        lazy=flags["lazy"],
        n_workers=workers,
        seeds=seeds,
        output_dir=directory,
        ragged=tuple(ragged),
        overwrite=flags["overwrite"],
        progress=flags["progress"],
        fail_fast=flags["fail_fast"],
        retries=int(retries),
        client=client,
        fresh_seed=seed is None and seed_for is None,
        identity=identity,
        digest=digest,
        run_attrs=_run_attrs(digest),
        share_state=sharing,
        backend=backend,
        routes=routes,
    )


def _check_routes_travel(routes: Routes) -> None:
    """Refuse routes that worker processes could not apply: their modules cannot be imported."""
    unimportable = unimportable_routes(routes)
    if unimportable:
        raise TypeError(
            f"route_rng({', '.join(unimportable)}) is active, but worker processes cannot "
            "import that module by name to route it there too: make it an importable module, "
            "or run on threads (backend='threads', no client)"
        )


def _model_record(model: Model, seed_for: Callable[[int], SeedLike] | None) -> dict[str, Any]:
    """Fingerprint what determines the numbers, or raise TypeError naming what is unreadable."""
    fingerprint = identity_fingerprint(model, seed_for)
    if fingerprint.opaque:
        shown = ", ".join(fingerprint.opaque[:3]) + (", ..." if len(fingerprint.opaque) > 3 else "")
        raise TypeError(
            f"cannot fingerprint {shown}: with output_dir, the run's identity must show whether "
            'the directory holds results of this same model; pass run_id="..." naming this '
            "model's version (a run with another run_id is then refused)"
        )
    return fingerprint.record()


def _digest(identity: Mapping[str, Any]) -> str:
    """Return the run digest: of the identity, with the model by its digest (or run_id) only."""
    model = identity.get("model", {})
    summary = {**identity, "model": model.get("run_id") or model.get("digest")}
    return hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()[:16]


def _run_attrs(digest: str) -> dict[str, Any]:
    """Return the provenance attributes of every realization; a file's also name its run."""
    info = runtime_info()
    return {
        **({"threadensemble_run": digest} if digest else {}),
        "threadensemble_version": info.threadensemble,
        "threadensemble_python": f"{info.implementation} {info.python}",
        "threadensemble_free_threaded": int(info.free_threaded),
        "threadensemble_gil_enabled": int(info.gil_enabled),
    }


def with_recorded_seed(config: RunConfig, recorded: Mapping[str, Any]) -> RunConfig:
    """Return ``config`` (a fresh-entropy run) seeded as recorded by its output directory."""
    root = seed_sequence_from_record(recorded)
    identity = {**config.identity, "seed": seed_sequence_record(root)}
    digest = _digest(identity)
    return dataclasses.replace(
        config,
        seeds=realization_seeds(root, config.n_realizations),
        fresh_seed=False,
        identity=identity,
        digest=digest,
        run_attrs=_run_attrs(digest),
    )
