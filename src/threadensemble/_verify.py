"""A resumed run first recomputes one realization the directory holds and compares it, bitwise.

The run identity (`threadensemble._identity`) fingerprints what determines the numbers, but no
fingerprint sees everything a model may depend on (a file it reads, a library it calls, code it
reaches in ways the fingerprint does not follow).  Returning an ensemble that a changed model
would not have computed is the worst thing this library could do, so before a run resumes
(or returns) an ensemble directory's realizations, it recomputes the lowest realization there,
in the calling thread, with a fresh copy of the state, exactly as a worker would; writes it
under a temporary name with the same code path as every realization (so both went through the
same netCDF encoding); reads both back; and compares them bit for bit (missing values in the
same places are equal).  Any difference refuses the run, naming the variables, before anything
of the directory is changed.  It costs one realization per resumed run.
"""

from __future__ import annotations

import threading

import numpy as np

from ._compare import differences
from ._config import RunConfig
from ._encoding import netcdf_ready
from ._errors import OutputDirError
from ._netcdf import read_realization, write_temporary
from ._realize import realize
from ._store import EnsembleStore

__all__ = ["verify_resumed"]


def verify_resumed(config: RunConfig, store: EnsembleStore) -> None:
    """Recompute the lowest realization ``store`` holds; raise OutputDirError if it differs.

    Call with the directory locked (`EnsembleStore.open`) and the warm-up done, before any
    realization is computed; does nothing when the directory holds none of this run's yet.
    """
    if not store.completed:
        return
    index = min(store.completed)
    per_thread = config.per_thread_state()
    if per_thread is not None:
        per_thread.initialize()
    try:
        ds = realize(config, per_thread, threading.Event(), index)
    except Exception as exc:
        exc.add_note(
            f"(raised while recomputing realization {index} to check that the model in "
            f"{str(store.output_dir)!r} is still the same one)"
        )
        raise
    temporary = write_temporary(netcdf_ready(ds), store.path(index))
    try:
        found = [
            f"{where!r}: {fraction:.0%} of values differ"
            + (f" (max abs difference {big:.3g})" if np.isfinite(big) else "")
            for where, big, fraction in differences(
                read_realization(store.path(index)), read_realization(temporary)
            )
        ]
    finally:
        temporary.unlink(missing_ok=True)
    if found:
        raise OutputDirError(
            f"output_dir {str(store.output_dir)!r} holds realizations of another model: "
            f"recomputed now, realization {index} differs from its file "
            f"({'; '.join(found[:5])}), although the model's fingerprint did not change "
            "(something it depends on did: a file it reads, a library, code the fingerprint "
            "does not follow); use another directory, or overwrite=True to replace that run"
        )
