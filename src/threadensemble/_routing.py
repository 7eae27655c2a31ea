"""`route_rng`: point a library's own random generator at the realization's streams.

Some libraries keep one module-level generator and hand it out (varwg has ``varwg.rng`` and
``varwg.get_rng()``).  Shared by every thread, it is drawn from in scheduling order, and nothing
reseeds it per realization, so results depend on the worker count.  `route_rng` replaces the
module's ``get_rng`` and its module-level ``numpy.random.Generator`` objects (wherever the
package's loaded modules hold them) by forwarders to `threadensemble.get_rng`, and restores
them afterwards.  Routes are counted per module under ``_routes_lock``, so routing the same
module again (nested, or from several threads at once, as a decorator of ``simulate``) is
allowed: the originals come back when the last route ends.
"""

from __future__ import annotations

import functools
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._rng import ThreadLocalGenerator, get_rng

__all__ = ["route_rng"]


@dataclass
class _Route:
    """One routed module: how many routes are active, and what was replaced by what."""

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


@contextmanager
def route_rng(module: types.ModuleType, *, stream: str | None = None) -> Iterator[None]:
    """Route a library's own random generator to the realization's streams for the block.

    Replaces ``module.get_rng`` (if it is a function) by one returning the calling thread's
    `get_rng` ``(stream)``, and every module-level ``numpy.random.Generator`` of ``module`` by
    a `ThreadLocalGenerator` of that stream, also where other loaded modules of the same
    package hold them (``from varwg import rng``).  Inside an ensemble each realization then
    draws the library's numbers from its own reproducible stream; outside one, from the calling
    thread's generator (see `reseed`).  The originals are restored when the block ends.

    Nested and concurrent routes of the same module are allowed (thread-safe and reentrant),
    so it can also decorate ``simulate`` (``@te.route_rng(varwg)``).  Objects that kept their
    own reference to the generator (``self.rng = varwg.rng``) are not changed: `check` names
    them.  `check` recommends this helper when it sees a library generator change state.

    Parameters
    ----------
    module : module
        The library module that owns the generator (``varwg``).
    stream : str, optional
        Route to this named stream (``get_rng(stream)``) instead of the default stream, so that
        the library's draws do not shift those of the model's own code.

    Raises
    ------
    TypeError
        ``module`` is not a module, or has nothing to route.
    ValueError
        ``module`` is already routed to another stream.

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
    name = module.__name__
    with _routes_lock:
        route = _routes.get(name)
        if route is None:
            route = _Route(stream)
            _install(module, route)
            _routes[name] = route
        elif route.stream != stream:
            raise ValueError(
                f"module {name} is already routed to stream {route.stream!r}, not {stream!r}"
            )
        route.count += 1
    try:
        yield
    finally:
        with _routes_lock:
            route.count -= 1
            if route.count == 0:
                del _routes[name]
                for holder, attribute, original, replacement in route.patches:
                    if getattr(holder, attribute, None) is replacement:  # not replaced since
                        setattr(holder, attribute, original)
