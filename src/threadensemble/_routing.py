"""`route_rng`: point a library's own random generator at the realization's streams.

Some libraries keep one module-level generator and hand it out (varwg has ``varwg.rng`` and
``varwg.get_rng()``).  Shared by every thread, it is drawn from in scheduling order, and nothing
reseeds it per realization, so results depend on the worker count.  `route_rng` replaces the
module's ``get_rng`` and its module-level ``numpy.random.Generator`` objects (wherever the
package's loaded modules hold them) by forwarders to `threadensemble.get_rng`, and restores
them afterwards.  Routes are counted per module under ``_routes_lock``, so routing the same
module again (nested, or from several threads at once, as a decorator of ``simulate``) is
allowed: the originals come back when the last route ends.

Routes patch this process only.  A run records the routes active when it starts
(`active_routes`, in its `RunConfig`), and the backends whose workers are other processes apply
them again around every realization there (`applied_routes`).
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import numpy as np

from ._rng import ThreadLocalGenerator, get_rng

__all__ = [
    "RngRoute",
    "Routes",
    "active_routes",
    "applied_routes",
    "route_rng",
    "unimportable_routes",
]

# The routes of a run, as (module name, stream) pairs: what worker processes apply again.
Routes = tuple[tuple[str, str | None], ...]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class _Route:
    """One routed module: how many routes are active, and what was replaced by what."""

    module: types.ModuleType
    stream: str | None
    count: int = 0
    # (module, name, original, replacement) for every global that was replaced
    patches: list[tuple[types.ModuleType, str, Any, Any]] = field(default_factory=list)


_routes_lock = threading.Lock()  # protects _routes and the module attributes routes replace
_routes: dict[str, _Route] = {}  # module name -> its active route


def _routed_get_rng(original: Callable[..., Any], stream: str | None) -> Callable[[], Any]:
    @functools.wraps(original)
    def routed() -> np.random.Generator:
        return get_rng(stream)

    return routed


def _patches(module: types.ModuleType, stream: str | None) -> list[tuple[Any, Any]]:
    """Return (original, replacement) for what ``module`` exposes: get_rng and its Generators."""
    found: list[tuple[Any, Any]] = []
    function = vars(module).get("get_rng")
    if isinstance(function, types.FunctionType):
        found.append((function, _routed_get_rng(function, stream)))
    proxy = ThreadLocalGenerator(stream)
    generators = {id(v): v for v in vars(module).values() if isinstance(v, np.random.Generator)}
    found.extend((generator, proxy) for generator in generators.values())
    return found


def _install(module: types.ModuleType, route: _Route) -> None:
    """Replace the originals in ``module`` and in the loaded modules of its package."""
    replacements = _patches(module, route.stream)
    if not replacements:
        raise TypeError(
            f"module {module.__name__} has neither a get_rng function nor a module-level "
            "numpy.random.Generator: there is nothing to route"
        )
    package = module.__name__.partition(".")[0]
    holders = {id(module): module}
    for loaded, holder in list(sys.modules.items()):
        if isinstance(holder, types.ModuleType) and (
            loaded == package or loaded.startswith(package + ".")
        ):
            holders.setdefault(id(holder), holder)
    for holder in holders.values():
        for name, value in list(vars(holder).items()):
            for original, replacement in replacements:
                if value is original:
                    route.patches.append((holder, name, original, replacement))
                    setattr(holder, name, replacement)


def _acquire(module: types.ModuleType, stream: str | None) -> None:
    """Start one route of ``module`` (the first one replaces its generators)."""
    name = module.__name__
    with _routes_lock:
        route = _routes.get(name)
        if route is None:
            route = _Route(module, stream)
            _install(module, route)
            _routes[name] = route
        elif route.stream != stream:
            raise ValueError(
                f"module {name} is already routed to stream {route.stream!r}, not {stream!r}"
            )
        route.count += 1


def _release(name: str) -> None:
    """End one route of module ``name`` (the last one restores the originals)."""
    with _routes_lock:
        route = _routes[name]
        route.count -= 1
        if route.count == 0:
            del _routes[name]
            for holder, attribute, original, replacement in route.patches:
                if getattr(holder, attribute, None) is replacement:  # not replaced since
                    setattr(holder, attribute, original)


class RngRoute:
    """What `route_rng` returns: a reentrant context manager and decorator.

    It holds no state of its own (the routes are counted per module), so one object may be
    entered from several threads at once, and nested.  It pickles as the module's name and the
    stream, so that a decorated ``simulate`` travels to worker processes and routes there.
    """

    def __init__(self, module: types.ModuleType, stream: str | None) -> None:
        self.module = module
        self.stream = stream

    def __reduce__(self) -> tuple[Callable[..., RngRoute], tuple[str, str | None]]:
        return (_route_by_name, (self.module.__name__, self.stream))

    def __repr__(self) -> str:
        return f"route_rng({self.module.__name__}, stream={self.stream!r})"

    def __enter__(self) -> None:
        _acquire(self.module, self.stream)

    def __exit__(self, *exc_info: object) -> None:
        _release(self.module.__name__)

    def __call__(self, function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def routed(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                return function(*args, **kwargs)

        return routed


def _route_by_name(name: str, stream: str | None) -> RngRoute:
    """Unpickle a `RngRoute`: import its module (in a worker process) by name."""
    return RngRoute(importlib.import_module(name), stream)


def route_rng(module: types.ModuleType, *, stream: str | None = None) -> RngRoute:
    """Route a library's own random generator to the realization's streams for the block.

    Replaces ``module.get_rng`` (if it is a function) by one returning the calling thread's
    `get_rng` ``(stream)``, and every module-level ``numpy.random.Generator`` of ``module`` by
    a `ThreadLocalGenerator` of that stream, also where other loaded modules of the same
    package hold them (``from varwg import rng``).  Inside an ensemble each realization then
    draws the library's numbers from its own reproducible stream; outside one, from the calling
    thread's generator (see `reseed`).  The originals are restored when the block ends.

    Nested and concurrent routes of the same module are allowed (thread-safe and reentrant),
    so it can also decorate ``simulate`` (``@te.route_rng(varwg)``).  A run started inside the
    block applies the same routes in its worker processes (``backend="processes"``, a dask
    cluster), which import ``module`` by name; a decorated ``simulate`` pickles with its route.
    Objects that kept their own reference to the generator (``self.rng = varwg.rng``), a
    generator bound as a function's default argument, one inside a container, and legacy
    ``random.Random`` / ``numpy.random.RandomState`` objects are not changed: `check` names
    them.  `check` recommends this helper when it sees a library generator it would route
    change state.

    Parameters
    ----------
    module : module
        The library module that owns the generator (``varwg``).
    stream : str, optional
        Route to this named stream (``get_rng(stream)``) instead of the default stream, so that
        the library's draws do not shift those of the model's own code.

    Returns
    -------
    RngRoute
        A context manager (``with``), also usable as a decorator of ``simulate``.

    Raises
    ------
    TypeError
        ``module`` is not a module, or (on entering) has nothing to route.
    ValueError
        (On entering) ``module`` is already routed to another stream.

    Examples
    --------
    >>> import types, numpy as np, threadensemble as te
    >>> lib = types.ModuleType("lib")  # a library with its own generator, as varwg has
    >>> lib.rng = np.random.default_rng(0)
    >>> lib.get_rng = lambda: lib.rng
    >>> def simulate():
    ...     return {"x": lib.get_rng().standard_normal(2)}
    >>> with te.route_rng(lib):
    ...     a = te.simulate_ensemble(simulate, 3, seed=1, n_workers=1, progress=False)
    ...     b = te.simulate_ensemble(simulate, 3, seed=1, n_workers=3, progress=False)
    >>> a.identical(b), isinstance(lib.rng, np.random.Generator)
    (True, True)
    """
    if not isinstance(module, types.ModuleType):
        raise TypeError(f"route_rng needs a module (such as varwg), got {module!r}")
    if stream is not None and not isinstance(stream, str):
        raise TypeError(f"stream must be a str or None, got {stream!r}")
    return RngRoute(module, stream)


def active_routes() -> Routes:
    """Return the routes active in this process now, as (module name, stream), sorted."""
    with _routes_lock:
        return tuple(sorted((name, route.stream) for name, route in _routes.items()))


def unimportable_routes(routes: Routes) -> list[str]:
    """Return the routed modules of ``routes`` that another process cannot import by name."""
    with _routes_lock:
        modules = {name: _routes[name].module for name, _ in routes if name in _routes}
    return [
        name
        for name, module in modules.items()
        if name == "__main__" or getattr(module, "__spec__", None) is None
    ]


@contextmanager
def applied_routes(routes: Sequence[tuple[str, str | None]]) -> Iterator[None]:
    """Apply ``routes`` (a run's, from another process) for the block, importing their modules."""
    with ExitStack() as stack:
        for name, stream in routes:
            stack.enter_context(RngRoute(importlib.import_module(name), stream))
        yield
