"""Exceptions raised by threadensemble, and the check of a list-of-names argument."""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

_MAX_TRACEBACKS = 3  # tracebacks shown as notes; a systematic bug would repeat the same one

__all__ = [
    "EnsembleError",
    "InconsistentRealizationError",
    "OutputDirError",
    "OutputWriteError",
    "SharedStateWriteError",
    "UnstorableOutputError",
    "WorkerInitError",
    "str_tuple",
    "write_error",
]


class EnsembleError(RuntimeError):
    """One or more realizations failed; the others were computed and kept, unless fail_fast.

    Every realization that did not fail was computed and kept (written to disk when there is an
    output_dir), except, with ``fail_fast=True``, those the run did not start after the first
    failure: they are listed in ``not_run`` (a re-run with the same output_dir computes them).

    Attributes
    ----------
    failures : dict of int to BaseException
        Failed realization index to the exception it raised (the last one, after retries).
    completed : list of int
        Realizations that succeeded in this call (written to disk when there is an output_dir).
    not_run : list of int
        Realizations this call was to compute but did not start (``fail_fast``).
    """

    def __init__(
        self,
        failures: Mapping[int, BaseException],
        completed: list[int],
        not_run: list[int] | None = None,
    ) -> None:
        self.failures = dict(sorted(failures.items()))
        self.completed = completed
        self.not_run = sorted(not_run or [])
        lines = [f"realization {k}: {type(e).__name__}: {e}" for k, e in self.failures.items()]
        if len(lines) == 1:
            message = lines[0].replace(":", " failed:", 1)
        else:
            message = f"{len(lines)} realizations failed:\n  " + "\n  ".join(lines)
        if self.not_run:
            shown = ", ".join(map(str, self.not_run[:10])) + (
                ", ..." if len(self.not_run) > 10 else ""
            )
            message += f"\n{len(self.not_run)} realizations not run (fail_fast): {shown}"
        super().__init__(message)
        for k, exc in list(self.failures.items())[:_MAX_TRACEBACKS]:
            formatted = "".join(traceback.format_exception(exc)).rstrip()
            self.add_note(f"--- realization {k} ---\n{formatted}")
        if len(self.failures) > _MAX_TRACEBACKS:
            self.add_note(
                f"(tracebacks of {len(self.failures) - _MAX_TRACEBACKS} more failures "
                "are in .failures)"
            )


class InconsistentRealizationError(ValueError):
    """A realization's variables, dimensions, shapes or dtypes differ from the first one's."""


class OutputDirError(ValueError):
    """The output directory holds files of another run, or is not a directory."""


class WorkerInitError(RuntimeError):
    """A worker could not set up the run, or a worker process died: the run stops.

    Setting up is copying the state (threads, processes, dask) and unpickling the model
    (processes, dask).
    """


class UnstorableOutputError(ValueError):
    """A realization holds something a netCDF file cannot store (the message names it)."""


class OutputWriteError(OSError):
    """A realization file or the manifest could not be written (a full disk, say)."""


class SharedStateWriteError(ValueError):
    """``simulate`` wrote into an array of the state that the threads share (``share_state``).

    The write was refused (the array is read-only), so no other thread saw it.
    """


def write_error(path: Path, cause: BaseException, size: int) -> OutputWriteError:
    """Return the error that stops a run which could not write ``size`` bytes to ``path``.

    netCDF-C reports a full disk as "NetCDF: HDF error": the message says how much room
    the file system had left.
    """
    try:
        free = f"{shutil.disk_usage(path.parent).free} bytes free"
    except OSError:
        free = "free space unknown"
    return OutputWriteError(
        f"could not write {str(path)!r} ({size} bytes of data; {free} on its file system): "
        f"{type(cause).__name__}: {cause}"
    )


def str_tuple(value: object, rule: str) -> tuple[str, ...]:
    """Return ``value``, a tuple or list of str, as a tuple; else a TypeError stating ``rule``.

    A str, a generator, a set or a dict is refused (never consumed): ``rule`` says what is
    wanted, e.g. ``"ragged must be a sequence of dimension names (a tuple or list of str)"``.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"{rule}, got {value!r}")
    for item in value:
        if not isinstance(item, str):
            raise TypeError(f"{rule}, got {value!r}, which holds {item!r}")
    return tuple(value)
