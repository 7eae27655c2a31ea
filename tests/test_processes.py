"""The process backend: the same ensemble as threads, computed in worker processes.

Real processes (forkserver on Linux): each run starts its workers, about a second here, so the
tests are few and each checks several things.  Functions and classes given to the workers are
module-level (or in conftest), so that the workers unpickle them by reference: they are started
with this process's sys.path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te
import weatherlib
from conftest import Buffers, attempts, fragile, noisy_walk

WALK = {"args": (0.5,), "state": Buffers(50), "inject": "state", "seed": 7, "progress": False}


def _no_hidden_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


def test_bitwise_identical_to_threads_in_memory_and_on_disk(tmp_path: Path) -> None:
    threads = te.simulate_ensemble(noisy_walk, 12, n_workers=3, **WALK)
    in_memory = te.simulate_ensemble(noisy_walk, 12, n_workers=2, backend="processes", **WALK)
    xr.testing.assert_identical(threads, in_memory)
    report = te.last_run_report()
    assert report is not None and (report.backend, report.n_workers) == ("processes", 2)
    assert report.worker_cpu_seconds is not None and report.worker_cpu_seconds > 0
    on_disk = te.simulate_ensemble(
        noisy_walk, 12, n_workers=2, backend="processes", output_dir=tmp_path, **WALK
    )
    xr.testing.assert_identical(threads, on_disk)
    assert len(list(tmp_path.glob("real_*.nc"))) == 12
    assert _no_hidden_files(tmp_path) == [], "every temporary file was committed"
    manifest = json.loads((tmp_path / "threadensemble.json").read_text())
    assert manifest["completed"] == list(range(12)) and manifest["failed"] == {}


def test_failures_retries_resume_and_fail_fast_as_on_threads(tmp_path: Path) -> None:
    logs = [tmp_path / f"log{i}" for i in range(4)]
    for log in logs:
        log.mkdir()
    out = tmp_path / "run"

    def run(log: Path, kw: dict[str, Any] | None = None, **options: Any) -> xr.Dataset:
        return te.simulate_ensemble(
            fragile, 8, **WALK, **options, kwargs={"log": str(log), **(kw or {})}
        )

    reference = run(logs[0], n_workers=2)
    with pytest.raises(te.EnsembleError, match="realization 3 failed: ValueError: bad") as info:
        run(logs[1], backend="processes", n_workers=2, output_dir=out, kw={"fail_on": (3,)},
            run_id="walk")  # fmt: skip
    assert info.value.completed == [0, 1, 2, 4, 5, 6, 7]
    assert any("bad realization 3" in note for note in info.value.__notes__)
    assert sorted(p.name for p in out.glob("real_*.nc")) == [
        f"real_{k:05d}.nc" for k in (0, 1, 2, 4, 5, 6, 7)
    ]
    manifest = json.loads((out / "threadensemble.json").read_text())
    assert manifest["failed"] == {"3": "ValueError: bad realization 3"}

    # The re-run computes only the missing realization, and retries its transient failure.
    # The log and the failure switches are not the model: run_id says it is the same one.
    resumed = run(logs[2], backend="processes", n_workers=2, output_dir=out, retries=1,
                  kw={"fail_first_attempt_on": (3,)}, run_id="walk")  # fmt: skip
    assert attempts(logs[2]) == [0, 3, 3]  # 0: the check that the files are this model's
    xr.testing.assert_identical(reference, resumed)

    with pytest.raises(te.EnsembleError, match="realization 0 failed"):
        te.simulate_ensemble(
            fragile, 40, **WALK, kwargs={"log": str(logs[3]), "fail_on": (0,)},
            fail_fast=True, backend="processes", n_workers=2,
        )  # fmt: skip
    assert len(attempts(logs[3])) < 40, "fail_fast stops submitting"


def test_quick_realizations_share_tasks_and_each_still_fails_on_its_own(tmp_path: Path) -> None:
    """A task holds many realizations of a millisecond; each keeps its own outcome and retries.

    300 realizations of about a millisecond: tasks grow to dozens of realizations, with
    failures (two only at their first attempt, then one for good) in the middle of them.
    """
    logs = [tmp_path / name for name in ("threads", "processes", "failing")]
    for log in logs:
        log.mkdir()
    retried = {"fail_first_attempt_on": (7, 250)}
    ensembles = [
        te.simulate_ensemble(
            fragile,
            300,
            **WALK,
            kwargs={"log": str(log), **retried},
            retries=1,
            n_workers=2,
            backend=backend,
        )
        for log, backend in zip(logs, ("threads", "processes"), strict=False)
    ]
    xr.testing.assert_identical(*ensembles)
    assert attempts(logs[1]) == attempts(logs[0]) == sorted([*range(300), 7, 250])
    with pytest.raises(te.EnsembleError, match="realization 123 failed: ValueError") as info:
        te.simulate_ensemble(fragile, 300, **WALK, kwargs={"log": str(logs[2]), "fail_on": (123,)},
                             retries=1, n_workers=2, backend="processes")  # fmt: skip
    assert info.value.completed == [k for k in range(300) if k != 123]
    assert "in fragile" in info.value.__notes__[0], "the worker's traceback is kept"
    assert attempts(logs[2]) == sorted([*range(300), 123])


def takes_state(*, s: object) -> dict[str, Any]:
    return {"x": np.zeros(1)}


class OnlyHere:
    """State that pickles, but that a worker cannot unpickle (a module it lacks, say)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unpickle_only_in, (os.getpid(),))

    def __deepcopy__(self, memo: dict[int, Any]) -> OnlyHere:
        return self


def _unpickle_only_in(pid: int) -> OnlyHere:
    if os.getpid() != pid:
        raise ModuleNotFoundError("No module named 'mymodels'")
    return OnlyHere()


class CopyableOnlyIn:
    """State that a worker process can unpickle but not deep-copy (no room, say)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __deepcopy__(self, memo: dict[int, Any]) -> CopyableOnlyIn:
        if os.getpid() != self.pid:
            raise MemoryError("no room for another copy")
        return CopyableOnlyIn(self.pid)


def test_a_worker_that_cannot_set_up_stops_the_run_with_the_cause() -> None:
    with pytest.raises(te.WorkerInitError, match=r"could not unpickle the run's model: .*mymodels"):
        te.simulate_ensemble(
            takes_state, 4, state=OnlyHere(), inject="s", progress=False, backend="processes"
        )
    with pytest.raises(te.WorkerInitError, match="could not deep-copy the state: MemoryError"):
        te.simulate_ensemble(
            takes_state, 4, state=CopyableOnlyIn(os.getpid()), inject="s", progress=False,
            backend="processes",
        )  # fmt: skip


def corrupts(table: np.ndarray) -> dict[str, Any]:
    table[0] += 1.0
    return {"x": table.copy()}


def test_protect_shared_in_the_worker_processes() -> None:
    shared = np.zeros(10)
    with pytest.raises(te.EnsembleError, match="assignment destination is read-only"):
        te.simulate_ensemble(
            corrupts, 2, args=(shared,), protect_shared=True, progress=False, n_workers=1,
            backend="processes",
        )  # fmt: skip
    assert shared.flags.writeable and (shared == 0).all()


def test_arguments_are_checked_before_anything_starts(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(TypeError, match=r"args\[0\]\['lock'\] cannot be pickled .*processes"):
        te.simulate_ensemble(
            takes_state, 2, args=({"lock": threading.Lock()},), output_dir=out,
            backend="processes",
        )  # fmt: skip
    with pytest.raises(ValueError, match="backend must be one of 'threads', 'processes'"):
        te.simulate_ensemble(takes_state, 2, output_dir=out, backend="process")
    assert not out.exists()


FROM_STDIN = """
import threadensemble as te

def draw():
    return {"x": te.get_rng().random(2)}

te.simulate_ensemble(draw, 2, seed=1, output_dir=OUT, backend="processes", progress=False)
"""


def test_a_script_read_from_standard_input_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    """Workers run the main module again: '<stdin>' cannot be (a bare BrokenPipeError before)."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-"], input=FROM_STDIN.replace("OUT", repr(str(out))),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith('RuntimeError: backend="processes" cannot start worker processes')
    assert "'<stdin>' does not exist" in last and "BrokenPipeError" not in done.stderr
    assert not out.exists()
    code = FROM_STDIN.replace("OUT", repr(str(out)))  # python -c: no file, draw travels by value
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(te.open_ensemble(out).realization) == 2


def test_a_script_without_the_main_guard_is_named_as_the_cause(tmp_path: Path) -> None:
    """Each worker imports the script again, which starts a run: the worker dies starting.

    The error said "killed, out of memory, or crashed in an extension module" before.
    """
    script = tmp_path / "run.py"
    out = tmp_path / "out"
    script.write_text(FROM_STDIN.replace("OUT", repr(str(out))))  # no __main__ guard
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("threadensemble.WorkerInitError: a worker process died while starting")
    assert f"main module ({script}) again" in last and 'if __name__ == "__main__":' in last
    # The worker's own traceback says why it stopped, before it started a pool of its own.
    assert "was called while a worker process imports the main module again" in done.stderr
    assert "killed, out of memory" not in done.stderr
    assert not list(out.glob("real_*.nc"))


INTERRUPTIBLE = """
import signal, sys, time
import numpy as np
import threadensemble as te


def slow():
    k = te.current_realization()
    for _ in range(int(sys.argv[2])):
        if te.cancelled():  # polled, so Ctrl-C does not wait for the whole realization
            break
        time.sleep(0.01)
    return {"x": np.full(3, float(k)) + te.get_rng().random(3)}


if __name__ == "__main__":  # worker processes import this module: the run starts only here
    # pytest-xdist workers ignore SIGINT, and a child inherits that: take Ctrl-C as Python does.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    te.simulate_ensemble(slow, 40, n_workers=2, seed=1, output_dir=sys.argv[1], progress=False,
                         backend="processes")
"""


def test_ctrl_c_in_a_terminal_cancels_the_workers_and_a_rerun_resumes(tmp_path: Path) -> None:
    script = tmp_path / "interruptible.py"
    script.write_text(INTERRUPTIBLE)
    out = tmp_path / "run"
    # A session of its own, so that SIGINT goes to the whole process group, as Ctrl-C in a
    # terminal does: the workers receive it too, and must leave it to the calling process.
    child = subprocess.Popen(
        [sys.executable, str(script), str(out), "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while len(list(out.glob("real_*.nc"))) < 4:
        assert child.poll() is None and time.monotonic() < deadline, "run ended before SIGINT"
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGINT)
    interrupted_at = time.monotonic()
    _, stderr = child.communicate(timeout=60)
    assert time.monotonic() - interrupted_at < 15, "cancellation waited for running work"
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr
    assert "BrokenProcessPool" not in stderr and "WorkerInitError" not in stderr, stderr
    files = sorted(int(p.stem.split("_")[1]) for p in out.glob("real_*.nc"))
    assert 4 <= len(files) < 40
    assert _no_hidden_files(out) == [], "no partial or uncommitted files"
    manifest = json.loads((out / "threadensemble.json").read_text())
    assert manifest["completed"] == files, "manifest agrees with the files"

    for directory in (out, tmp_path / "uninterrupted"):  # the re-run resumes; a reference run
        done = subprocess.run(
            [sys.executable, str(script), str(directory), "0"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    xr.testing.assert_identical(te.open_ensemble(out), te.open_ensemble(tmp_path / "uninterrupted"))


def library_weather(n: int) -> dict[str, Any]:
    return {"t": ("day", weatherlib.draw(n))}


def test_route_rng_reaches_the_worker_processes(tmp_path: Path) -> None:
    run = {"args": (3,), "seed": 1, "progress": False}
    with te.route_rng(weatherlib):
        threads = te.simulate_ensemble(library_weather, 6, n_workers=2, **run)
        processes = te.simulate_ensemble(
            library_weather, 6, n_workers=2, backend="processes", **run
        )
    xr.testing.assert_identical(threads, processes)
    values = processes["t"].values
    assert len({tuple(row) for row in values}) == 6  # no realization duplicated
    decorated = te.route_rng(weatherlib)(library_weather)  # pickles with its route
    again = te.simulate_ensemble(decorated, 6, n_workers=2, backend="processes", **run)
    xr.testing.assert_identical(threads, again)
    on_disk = te.simulate_ensemble(decorated, 6, output_dir=tmp_path, **run)  # fingerprintable
    xr.testing.assert_identical(threads, on_disk)
    assert isinstance(weatherlib.rng, np.random.Generator)  # restored


def test_route_of_a_module_workers_cannot_import_is_refused() -> None:
    lib = types.ModuleType("made_up_here")
    lib.rng = np.random.default_rng(0)  # type: ignore[attr-defined]

    def simulate() -> dict[str, Any]:
        return {"x": lib.rng.random(2)}

    with te.route_rng(lib), pytest.raises(TypeError, match=r"route_rng\(made_up_here\)"):
        te.simulate_ensemble(simulate, 2, seed=1, backend="processes", progress=False)


class Station:
    """A state holding the documented fix for a generator attribute: ``self.rng = te.rng``."""

    def __init__(self) -> None:
        self.rng = te.rng
        self.buf = np.zeros(3)


def station_draws(*, station: Station) -> dict[str, Any]:
    station.buf[:] = station.rng.random(3)
    return {"x": station.buf.copy()}


def test_a_state_holding_te_rng_travels_to_the_workers() -> None:
    run = {"state": Station(), "inject": "station", "seed": 5, "progress": False}
    threads = te.simulate_ensemble(station_draws, 4, n_workers=1, **run)
    processes = te.simulate_ensemble(station_draws, 4, n_workers=2, backend="processes", **run)
    xr.testing.assert_identical(threads, processes)


class HoldsLock(Exception):
    """An exception that cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class TwoArguments(Exception):
    """An exception that pickles, but cannot be unpickled (its args are not its __init__'s)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(f"{message} (code {code})")


def misbehaves(*, output_dir: str) -> dict[str, Any]:
    k = te.current_realization()
    if k == 1:
        sys.exit(2)
    if k == 2:
        raise HoldsLock("solver did not converge")
    if k == 3:
        raise TwoArguments("no luck", 7)
    if k == 5:  # killed while writing its file
        (Path(output_dir) / f".real_00005.nc.{os.getpid()}.{threading.get_ident()}.tmp").touch()
        os._exit(9)
    return {"x": te.get_rng().random(2)}


def test_a_failure_that_cannot_be_pickled_fails_its_realization_a_dead_worker_stops(
    tmp_path: Path,
) -> None:
    options: dict[str, Any] = {"seed": 1, "n_workers": 2, "progress": False, "retries": 1}
    out = tmp_path / "run"
    with pytest.raises(te.EnsembleError) as info:
        te.simulate_ensemble(misbehaves, 5, kwargs={"output_dir": str(out)}, output_dir=out,
                             backend="processes", **options)  # fmt: skip
    assert str(info.value) == (  # as on threads
        "3 realizations failed:\n  realization 1: SystemExit: 2\n"
        "  realization 2: HoldsLock: solver did not converge\n"
        "  realization 3: TwoArguments: no luck (code 7)"
    )
    assert info.value.completed == [0, 4]
    assert "in misbehaves" in info.value.__notes__[1], "the worker's traceback is kept"
    assert sorted(p.name for p in out.glob("real_*.nc")) == ["real_00000.nc", "real_00004.nc"]
    assert _no_hidden_files(out) == []

    with pytest.raises(te.WorkerInitError, match=r"a worker process died .*: killed, out of"):
        te.simulate_ensemble(misbehaves, 8, kwargs={"output_dir": str(out)}, output_dir=out,
                             backend="processes", **options)  # fmt: skip
    assert _no_hidden_files(out) == [], "the dead worker's temporary file is removed"


ORPHANED = """
import os, sys, time
import numpy as np
import threadensemble as te
from multiprocessing import forkserver


class ConvergenceError(Exception):  # travels by value with simulate: not the same class there
    pass


def fails_at_2():
    if te.current_realization() == 2:
        raise ConvergenceError("solver did not converge")
    return {"x": te.get_rng().random(2)}


def stubborn(pids, table):  # never polls cancelled()
    # On Linux, the table's memory is a memory file's (shared by the workers).
    mapped = sys.platform != "linux" or "/memfd:threadensemble" in open("/proc/self/maps").read()
    name = str(os.getpid()) if mapped else f"{os.getpid()}.unmapped"
    open(os.path.join(pids, name), "w").close()
    time.sleep(0.3)
    return {"x": te.get_rng().random(2)}


if __name__ == "__main__":
    out, pids = sys.argv[1], sys.argv[2]
    try:
        te.simulate_ensemble(fails_at_2, 4, n_workers=2, output_dir=out + "/a", progress=False,
                             backend="processes")
    except te.EnsembleError as exc:
        print(exc, exc.completed, sorted(os.listdir(out + "/a")), flush=True)
    print(getattr(forkserver._forkserver, "_forkserver_pid", None), flush=True)
    te.simulate_ensemble(stubborn, 400, kwargs={"pids": pids, "table": np.zeros(1 << 20)},
                         n_workers=2, output_dir=out + "/b", progress=False, backend="processes")
"""


def _memory_files(pid: int) -> list[str]:
    """The descriptors of process ``pid`` that are threadensemble's memory files."""
    held = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("/memfd:threadensemble"):
            held.append(target)
    return held


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] != "Z"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_workers_exit_when_the_calling_process_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "orphaned.py"
    script.write_text(ORPHANED)
    out, pids = tmp_path / "out", tmp_path / "pids"
    pids.mkdir()
    child = subprocess.Popen(
        [sys.executable, str(script), str(out), str(pids)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    failed, forkserver = child.stdout.readline(), child.stdout.readline().strip()
    # A class of the script's own __main__ cannot be pickled back: its stand-in says the same.
    assert failed.startswith("realization 2 failed: ConvergenceError: solver did not converge"), (
        failed
    )
    assert "[0, 1, 3] ['real_00000.nc', 'real_00001.nc', 'real_00003.nc', 'threadensemble" in failed
    deadline = time.monotonic() + 60
    while len(list((out / "b").glob("real_*.nc"))) < 2 or len(list(pids.iterdir())) < 2:
        assert child.poll() is None and time.monotonic() < deadline, "the run ended early"
        time.sleep(0.05)
    if sys.platform == "linux":
        # The model's large array is in a memory file: held by the calling process and mapped by
        # the workers only (the forkserver closed the descriptors it passed on), so that the
        # kernel frees it when they are gone.
        assert len(_memory_files(child.pid)) == 1
        if forkserver != "None":
            assert _memory_files(int(forkserver)) == []
            assert "/memfd:" not in Path(f"/proc/{forkserver}/maps").read_text()
    child.kill()
    child.wait(timeout=60)  # not communicate(): orphaned workers would hold its pipes open
    child.stdout.close()
    names = [p.name for p in pids.iterdir()]
    assert all(name.isdigit() for name in names), f"every worker mapped the table: {names}"
    workers = [int(name) for name in names]
    if forkserver != "None":
        workers.append(int(forkserver))
    deadline = time.monotonic() + 30
    try:
        while any(_running(pid) for pid in workers):
            assert time.monotonic() < deadline, "worker processes outlived the calling process"
            time.sleep(0.1)
    finally:
        for pid in filter(_running, workers):
            os.kill(pid, signal.SIGKILL)
    left = sorted(p.name for p in (out / "b").iterdir())
    time.sleep(1.0)
    assert sorted(p.name for p in (out / "b").iterdir()) == left, "nobody writes there any more"


def on_a_grid() -> xr.Dataset:
    x = [0.123456789, 1.0, 2.0]
    return xr.Dataset({"u": ("x", te.get_rng().random(3))}, coords={"x": x})


def test_a_directory_written_on_threads_extends_on_processes_under_other_print_options(
    tmp_path: Path,
) -> None:
    """Workers render the coordinates' previews with numpy's defaults: not a layout of its own
    (every new realization was refused, "differs from realization 0: " and nothing more)."""
    run = {"seed": 2, "n_workers": 2, "progress": False, "output_dir": tmp_path / "run"}
    with np.printoptions(precision=3):
        te.simulate_ensemble(on_a_grid, 2, **run)
        extended = te.simulate_ensemble(on_a_grid, 4, backend="processes", **run)
    reference = te.simulate_ensemble(on_a_grid, 4, seed=2, n_workers=2, progress=False)
    xr.testing.assert_equal(extended, reference)
