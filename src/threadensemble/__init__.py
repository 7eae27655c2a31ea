"""threadensemble: ensembles of stochastic simulations on threads.

One expensive model is built once and shared read-only by every worker thread; the small mutable
state is deep-copied once per thread; each realization draws from its own reproducible RNG
streams; results come back as one `xarray.Dataset` or one NetCDF file per realization.

The public API is this module's ``__all__``; everything else is private.  The private modules
form layers, each importing only from the layers below it (``tests/test_layers.py`` checks):

1. primitives: ``_errors``, ``_runtime``, ``_rng``, ``_context``, ``_interrupt``, ``_progress``,
   ``_shared`` (walking an object graph), ``_stacking`` (a fast path of ``xarray.concat``),
   ``_compare`` (realizations bit for bit), ``_sharedbuffers`` (a pickle's large buffers in a
   memory file that worker processes map);
2. one concern each: ``_identity``, ``_state``, ``_picklable``, ``_results``, ``_encoding``,
   ``_report``, ``_lock``, ``_routing``;
3. the model object (its parts validated, its fingerprint): ``_model``;
4. validation of a run (no I/O) and files: ``_config``, ``_netcdf``;
5. one realization, one directory: ``_realize``, ``_store``;
6. backends and the checks: ``_threads``, ``_processes``, ``_distributed``, ``_check``,
   ``_verify`` (a resumed run recomputes one realization);
7. the completion loop: ``_engine``;
8. front ends, each on the one before: ``_spec`` (``ModelSpec``: the model with ``run`` and
   ``check``), ``_cli``, ``__main__``.
"""

import inspect

from ._check import (
    Cause,
    CheckKeywords,
    CheckOptions,
    CheckReport,
    Difference,
    Finding,
    ThreadSafetyError,
    check,
)
from ._config import RunOptions
from ._context import cancelled, current_realization
from ._engine import EnsembleKeywords, simulate_ensemble
from ._errors import (
    EnsembleError,
    InconsistentRealizationError,
    OutputDirError,
    OutputWriteError,
    SharedStateWriteError,
    UnstorableOutputError,
    WorkerInitError,
)
from ._model import ModelFingerprint, ModelParts
from ._netcdf import netcdf_lock
from ._report import RunReport, last_run_report
from ._rng import ThreadLocalGenerator, get_rng, realization_seed, reseed, rng
from ._routing import route_rng
from ._runtime import RuntimeInfo, gil_enabled, is_free_threaded_build, runtime_info
from ._spec import ModelSpec, check_picklable
from ._store import open_ensemble

__version__ = runtime_info().threadensemble

__all__ = [
    "Cause",
    "CheckKeywords",
    "CheckOptions",
    "CheckReport",
    "Difference",
    "EnsembleError",
    "EnsembleKeywords",
    "Finding",
    "InconsistentRealizationError",
    "ModelFingerprint",
    "ModelParts",
    "ModelSpec",
    "OutputDirError",
    "OutputWriteError",
    "RunOptions",
    "RunReport",
    "RuntimeInfo",
    "SharedStateWriteError",
    "ThreadLocalGenerator",
    "ThreadSafetyError",
    "UnstorableOutputError",
    "WorkerInitError",
    "__version__",
    "cancelled",
    "check",
    "check_picklable",
    "current_realization",
    "get_rng",
    "gil_enabled",
    "is_free_threaded_build",
    "last_run_report",
    "netcdf_lock",
    "open_ensemble",
    "realization_seed",
    "reseed",
    "rng",
    "route_rng",
    "runtime_info",
    "simulate_ensemble",
]

# Public names report this package as their home (``threadensemble.EnsembleError``, not
# ``threadensemble._errors.EnsembleError``), in tracebacks, reprs and the docs.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or inspect.isfunction(_obj):
        _obj.__module__ = __name__
del _name, _obj
