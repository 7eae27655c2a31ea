"""A pickle whose large buffers worker processes map from one memory file, not copy each.

`dumps_sharing` pickles with protocol 5 and takes the buffers of at least `THRESHOLD` bytes
(numpy arrays' data, C- or Fortran-contiguous) out of band: they are written once into an
anonymous memory file (``os.memfd_create``, Linux), each at a page-aligned offset, and the
pickle holds the rest.  The file's descriptor travels to each worker process with its
start-up arguments, as a `multiprocessing` `Connection`'s does
(`multiprocessing.reduction.DupFd`: the forkserver and spawn start methods pass it to the new
process); the worker maps the file copy-on-write (``MAP_PRIVATE``: `SharedBuffers.views`),
and unpickles with slices of the mapping as the buffers.

* Each worker's arrays are its own, as with a pickle holding their bytes: writable where they
  were, and a write copies the pages it touches into that process only; until then the pages
  are shared by every worker (one copy of the data in memory, not one per worker).
* The file has no name: the kernel frees it when its last descriptor and mapping are gone.
  The calling process closes its descriptor when the pool is shut down (`SharedBuffers.close`),
  a worker the one it was given as soon as it has mapped the file (its `mmap.mmap` keeps one
  of its own, for as long as the worker's arrays); nothing is left behind even if a process
  is killed.  The file is sealed once written: its size and data cannot change.
* Small buffers stay in the pickle: a copy per worker of under a MiB costs less than a shared
  mapping of its own, and would share its pages with its neighbours' (joblib's threshold for
  memory-mapping arrays to its workers is the same).  Where ``os.memfd_create`` does not exist
  (macOS, Windows), or the file cannot be made (no descriptor or memory left, a sandbox that
  forbids it), every buffer stays in the pickle, and each worker unpickles its own copy.
"""

from __future__ import annotations

import mmap
import os
import pickle
from collections.abc import Callable
from multiprocessing import reduction
from typing import Any, Protocol

__all__ = ["THRESHOLD", "SharedBuffers", "dumps_sharing"]

THRESHOLD = 1 << 20  # bytes: smaller buffers stay in the pickle
_ALIGN = mmap.PAGESIZE  # each buffer's offset in the file: a write never copies a neighbour's


class SharedBuffers:
    """The out-of-band buffers of one pickle, in an anonymous memory file.

    ``fd`` is this process's descriptor of the file; ``extents`` the offset and size of each
    buffer, in the pickle's order.  Pickled only while a worker process is being started: the
    worker gets a descriptor of its own for the same file.
    """

    def __init__(self, fd: int, extents: list[tuple[int, int]]) -> None:
        self.fd = fd
        self.extents = extents

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (reduction.DupFd(self.fd), self.extents)

    def close(self) -> None:
        """Close this process's descriptor (the file lives on in the processes that map it)."""
        os.close(self.fd)

    def views(self) -> list[memoryview]:
        """Map the file copy-on-write, close the descriptor; return each buffer's memory."""
        offset, size = self.extents[-1]
        try:
            mapping = mmap.mmap(self.fd, offset + size, access=mmap.ACCESS_COPY)
        finally:
            self.close()
        whole = memoryview(mapping)
        return [whole[offset : offset + size] for offset, size in self.extents]


class _DupFd(Protocol):
    """What `multiprocessing.reduction.DupFd` returns: a descriptor for the new process."""

    def detach(self) -> int: ...


def _rebuild(fd: _DupFd, extents: list[tuple[int, int]]) -> SharedBuffers:
    return SharedBuffers(fd.detach(), extents)


def dumps_sharing(pickler: Callable[..., bytes], obj: object) -> tuple[bytes, SharedBuffers | None]:
    """Pickle ``obj`` with ``pickler`` (protocol 5), its large buffers in a memory file.

    Returns the pickle and the file of its large buffers (None if it has none, or where memory
    files do not exist): ``pickle.loads(payload, buffers=shared.views())`` in a worker.
    """
    large: list[pickle.PickleBuffer] = []

    def in_band(buffer: pickle.PickleBuffer) -> bool:
        if memoryview(buffer).nbytes < THRESHOLD or not hasattr(os, "memfd_create"):
            return True
        large.append(buffer)
        return False

    payload = pickler(obj, buffer_callback=in_band)
    if not large:
        return payload, None
    extents, end = [], 0
    for buffer in large:
        offset = -(-end // _ALIGN) * _ALIGN
        end = offset + memoryview(buffer).nbytes
        extents.append((offset, end - offset))
    import fcntl  # Linux, as memfd_create: its seals

    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    try:
        fd = os.memfd_create("threadensemble", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:  # no descriptor left, or a sandbox that forbids memory files
        return pickler(obj), None  # every buffer in band, as where they do not exist
    try:
        os.ftruncate(fd, end)
        with mmap.mmap(fd, end) as mapping:
            for (offset, size), buffer in zip(extents, large, strict=True):
                with buffer.raw() as data:
                    mapping[offset : offset + size] = data
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except OSError:  # no memory for the file, or a kernel without seals: in band
        os.close(fd)
        return pickler(obj), None
    except BaseException:
        os.close(fd)
        raise
    return payload, SharedBuffers(fd, extents)
