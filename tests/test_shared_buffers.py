"""The process backend maps the model's large arrays from one memory file (Linux).

Real worker processes; whether an array's memory is the memory file's is read from
``/proc/self/maps`` (the mapping that holds the array's first byte).
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te
from threadensemble import _processes
from threadensemble._sharedbuffers import THRESHOLD

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memory files: Linux")

MEMFD = "/memfd:threadensemble"


def in_memory_file(array: np.ndarray) -> bool:
    """Whether ``array``'s first byte lies in a mapping of threadensemble's memory file."""
    address = array.__array_interface__["data"][0]
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        if start <= address < end:
            return len(fields) == 6 and fields[5].startswith(MEMFD)
    raise AssertionError(f"{address:#x} is not mapped")


def memory_files_held() -> list[str]:
    """The descriptors of this process that are threadensemble's memory files."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the descriptor listdir used
            continue
        if target.startswith(MEMFD):
            held.append(target)
    return held


class Scratch:
    """State with a large array that each realization overwrites."""

    def __init__(self) -> None:
        self.values = np.zeros(THRESHOLD)  # 8 MiB


def reads(
    big: np.ndarray, small: np.ndarray, fortran: np.ndarray, strided: np.ndarray,
    objects: np.ndarray, *, state: Scratch,
) -> dict[str, Any]:  # fmt: skip
    k = int(te.get_rng().integers(1000))
    # The state's copy is this process's own ordinary array: written whole by each realization.
    untouched = bool((state.values == 0).all() or (state.values == state.values[0]).all())
    state.values[:] = k
    picks = [big[k], small[k % small.size], fortran[k, 3], strided[3, k], objects[0][k]]
    arrays = (big, small, fortran, strided, objects[0], state.values)
    return {
        "picks": ("pick", np.array(picks, dtype=float)),
        "text": ((), str(objects[1])),
        "mapped": ("array", [in_memory_file(a) for a in arrays]),
        "writeable": ("array", [a.flags.writeable for a in arrays]),
        "untouched": ((), untouched),
        "state_mean": ((), state.values.mean()),
        # A worker closes the descriptor it got once it has mapped the file (the mmap object
        # keeps one of its own).
        "descriptors": ((), len(memory_files_held())),
    }


def _model() -> tuple[tuple[np.ndarray, ...], Scratch]:
    rng = np.random.default_rng(5)
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = rng.random(THRESHOLD // 4), "a label"  # 2 MiB inside, and text
    args = (
        rng.random(THRESHOLD),  # 8 MiB: mapped
        rng.random(100),  # in the pickle
        np.asfortranarray(rng.random((1024, 512))),  # 4 MiB, Fortran order: mapped
        rng.random((8, 2 * 1024 * 64))[:, ::2],  # 8 MiB, not contiguous: in the pickle
        objects,
    )
    return args, Scratch()


def _run(args: tuple[np.ndarray, ...], state: Scratch, **options: Any) -> xr.Dataset:
    return te.simulate_ensemble(
        reads, 6, args=args, state=state, inject="state", n_workers=2, seed=3, progress=False,
        **options,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_large_arrays_are_mapped_small_ones_copied_and_the_ensemble_is_the_threads(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_processes, "start_method", lambda: method)
    args, state = _model()
    before = [a.copy() for a in args[:4]]
    threads = _run(args, state)
    processes = _run(args, state, backend="processes")
    assert not threads["mapped"].any() and (threads["descriptors"] == 0).all()
    per_process = ["mapped", "descriptors"]
    xr.testing.assert_identical(threads.drop_vars(per_process), processes.drop_vars(per_process))
    # big, Fortran-ordered and the object array's large element mapped; small, strided and the
    # state's copy (deep-copied in the worker) not.
    mapped = processes["mapped"].values
    assert (mapped == [True, False, True, False, True, False]).all(), mapped
    assert processes["writeable"].values.all(), "writeable, as each worker's own copy"
    assert processes["untouched"].all() and (state.values == 0).all()
    assert (processes["descriptors"] == 1).all(), "the mmap object's descriptor only"
    assert all((a == b).all() for a, b in zip(args, before, strict=False))
    assert memory_files_held() == [], "the calling process closed its memory file"


def writes(table: np.ndarray, *, barrier: Any) -> dict[str, Any]:
    k = te.current_realization()
    assert k is not None
    table[k] = 1.0
    if k < 2:  # the first task of each worker: both have written before either reads
        barrier.wait(timeout=120)
    return {"seen": ("k", table[:6].copy()), "pid": ((), os.getpid())}


def test_a_worker_writing_a_mapped_array_changes_its_own_copy_only() -> None:
    table = np.zeros(THRESHOLD)
    with multiprocessing.get_context(_processes.start_method()).Manager() as manager:
        barrier = manager.Barrier(2)
        ensemble = te.simulate_ensemble(
            writes, 6, args=(table,), kwargs={"barrier": barrier}, n_workers=2,
            backend="processes", progress=False,
        )  # fmt: skip
    assert (table == 0).all(), "the calling process's array is unchanged"
    pids = ensemble["pid"].values
    assert pids[0] != pids[1], "realizations 0 and 1 met at the barrier: two workers"
    for k, seen in enumerate(ensemble["seen"].values):
        # What a realization sees written: its own write, and those of its own worker only.
        written = set(np.flatnonzero(seen))
        assert k in written and written <= {j for j in range(6) if pids[j] == pids[k]}, (
            k,
            written,
        )
    assert set(np.flatnonzero(ensemble["seen"].values[0])) == {0}
    assert set(np.flatnonzero(ensemble["seen"].values[1])) == {1}
    with pytest.raises(te.EnsembleError, match="assignment destination is read-only"):
        te.simulate_ensemble(
            writes, 2, args=(table,), kwargs={"barrier": None},
            protect_shared=True, n_workers=1, backend="processes", progress=False,
        )  # fmt: skip
    assert (table == 0).all() and table.flags.writeable


@pytest.mark.parametrize("memory_files", ["missing", "refused"])
def test_without_memory_files_every_buffer_travels_in_the_pickle(
    monkeypatch: pytest.MonkeyPatch, memory_files: str
) -> None:
    if memory_files == "missing":
        monkeypatch.delattr(os, "memfd_create")  # as on macOS and Windows
    else:

        def refused(*_: object) -> int:  # no descriptor left (or a sandbox that forbids them)
            raise OSError(errno.EMFILE, "Too many open files")

        monkeypatch.setattr(os, "memfd_create", refused)
    args, state = _model()
    threads = _run(args, state)
    processes = _run(args, state, backend="processes")
    xr.testing.assert_identical(threads, processes)
    assert not processes["mapped"].any()


INTERRUPTED_TWICE = """
import os, signal, sys, time
from pathlib import Path
import numpy as np
import threadensemble as te


def stubborn(big):
    # Ignores the cancellation (it only says it saw it), so that the first Ctrl-C's shutdown
    # waits for it, and the second Ctrl-C interrupts that wait.
    marks = Path(sys.argv[1])
    (marks / f"running.{te.current_realization()}").touch()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if te.cancelled():
            (marks / f"cancelled.{te.current_realization()}").touch()
        time.sleep(0.01)
    return {"x": np.array([big[0]])}


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (pytest-xdist ignores SIGINT)
    try:
        te.simulate_ensemble(stubborn, 4, args=(np.zeros(2 << 20),), n_workers=2, seed=1,
                             backend="processes", progress=False)
    except KeyboardInterrupt:
        pass
    held = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            held += "memfd:threadensemble" in os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the descriptor listdir used
            pass
    print("held", held, flush=True)
    os._exit(0)  # the workers exit with this process (they still run stubborn)
"""


def test_a_second_ctrl_c_during_the_shutdown_still_closes_the_memory_file(tmp_path: Path) -> None:
    script = tmp_path / "interrupted_twice.py"
    script.write_text(INTERRUPTED_TWICE)
    child = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 90

    def wait_for(pattern: str) -> None:
        while not list(tmp_path.glob(pattern)):
            assert child.poll() is None and time.monotonic() < deadline, pattern
            time.sleep(0.02)

    wait_for("running.*")
    child.send_signal(signal.SIGINT)  # the run cancels its workers, and waits for them
    wait_for("cancelled.*")  # the shutdown is waiting: the realizations ignore it
    child.send_signal(signal.SIGINT)  # interrupts that wait
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.split() == ["held", "0"], out
