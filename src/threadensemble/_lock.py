"""One run per ensemble directory: an exclusive lock on a file in it, held for the whole run.

Two runs writing into one directory would remove each other's temporary files and interleave
their manifests.  `DirectoryLock` takes an exclusive, non-blocking lock on ``.threadensemble.lock``
in the directory: ``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows.  Both belong to the
open file, so the operating system releases them when the process ends in any way (a kill -9
included): a dead run never blocks the next one.  ``flock`` locks conflict between two opens of
the file even in one process, so a second run from another thread is refused as well.  The
holder writes its pid and host into the file, for the refusal's message, and removes the file
when it is done; a run that locked a file which was removed meanwhile (by the holder it waited
on) locks the new one instead, so two runs never hold two different files.  A killed run's
file stays behind, unlocked, and the next run takes it over.  A lock that cannot be taken
for any other reason (a full disk: the holder's line cannot be written) raises
`OutputWriteError` naming the file and the free space, with the file closed and, if it was
locked, removed: nothing is left to make the next run think the directory is in use.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO

from ._errors import OutputDirError, write_error

__all__ = ["LOCK_NAME", "DirectoryLock"]

LOCK_NAME = ".threadensemble.lock"
_HOLDER_WAIT = 2.0  # seconds a refused run waits for the holder to write its pid and host


def _try_lock(file: IO[str]) -> bool:
    """Lock ``file`` exclusively without waiting; return False when another holder has it."""
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class DirectoryLock:
    """The exclusive lock of one ensemble directory (`acquire`, then `release`)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise OutputDirError naming the run that holds it.

        Creates the directory and the lock file if needed; touches nothing else.  Raises
        OutputWriteError when the file cannot be written (a full disk), leaving none behind.
        """
        line = f"pid {os.getpid()} on host {socket.gethostname()}\n".encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._lock(line)
        except OSError as exc:
            raise write_error(self.path, exc, len(line)) from exc

    def _lock(self, line: bytes) -> IO[str]:
        """Return the lock file, locked, with ``line`` written into it; on error, close it."""
        while True:
            file = open(self.path, "a+")  # noqa: SIM115 (kept open while the lock is held)
            locked = False
            try:
                if not (locked := _try_lock(file)):
                    raise OutputDirError(
                        f"output_dir {str(self.path.parent)!r} is in use by another run "
                        f"({_holder(file)}); wait for it to end, or use another directory"
                    )
                if _same_file(file, self.path):
                    os.ftruncate(file.fileno(), 0)
                    os.write(file.fileno(), line)  # unbuffered: close() has nothing to flush
                    return file
            except BaseException:
                if locked:
                    with contextlib.suppress(OSError):
                        self.path.unlink()  # still locked by us: no other run holds it
                file.close()
                raise
            file.close()  # its holder removed it after we opened it: lock the new one

    def release(self) -> None:
        """Remove the lock file and let the next run in (closing the file releases the lock)."""
        if self._file is not None:
            with contextlib.suppress(OSError):  # (Windows cannot remove an open file: it stays)
                self.path.unlink()  # still locked: no other run holds it
            self._file.close()
            self._file = None


def _holder(file: IO[str]) -> str:
    """Return what the holder wrote into the lock file (it does so right after locking it)."""
    deadline = time.monotonic() + _HOLDER_WAIT
    while True:
        file.seek(0)
        if text := file.read().strip():
            return text
        if time.monotonic() >= deadline:
            return "one that has not written its pid"
        time.sleep(0.01)


def _same_file(file: IO[str], path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(file.fileno()), os.stat(path))
    except FileNotFoundError:
        return False
