"""Peak memory of a run: PSS (or RSS) summed over a process and all its descendants.

PSS (proportional set size, Linux) divides each page among the processes that map it, so the
sum over a process tree counts shared libraries, forked copy-on-write pages and shared memory
once; RSS counts them once per process, an upper bound for process pools.  PSS is used where
the platform gives it (psutil's ``memory_full_info``), RSS otherwise; the report says which.
"""

from __future__ import annotations

import threading

import psutil

__all__ = ["SAMPLE_S", "TreeMemory", "memory_kind"]

SAMPLE_S = 0.025  # sampling period


def _usage(proc: psutil.Process, kind: str) -> int:
    if kind == "PSS":
        return int(proc.memory_full_info().pss)
    return int(proc.memory_info().rss)


def memory_kind() -> str:
    """Return ``"PSS"`` where this platform reports it for our processes, else ``"RSS"``."""
    try:
        psutil.Process().memory_full_info().pss  # noqa: B018 (Linux only)
    except (AttributeError, psutil.AccessDenied):
        return "RSS"
    return "PSS"


class TreeMemory:
    """Samples the summed PSS or RSS of a process and its descendants, in a background thread."""

    def __init__(self, pid: int, kind: str) -> None:
        self.root = psutil.Process(pid)
        self.kind = kind
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        procs: dict[int, psutil.Process] = {}
        tick = 0
        while not self._stop.wait(SAMPLE_S):
            if tick % 4 == 0:  # listing descendants scans /proc: less often than sampling
                try:
                    tree = [self.root, *self.root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    return
                procs = {p.pid: procs.get(p.pid, p) for p in tree}
            tick += 1
            total = 0
            for proc in procs.values():
                try:
                    total += _usage(proc, self.kind)
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue
            self.peak = max(self.peak, total)

    def stop(self) -> int:
        """Stop sampling; return the peak, bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak
