"""The dask backend: the same ensemble as local threads, on a LocalCluster of two processes.

Functions and classes given to the cluster are module-level, so that the worker processes
unpickle them by reference (they import this module and conftest: the workers are spawned with
this process's sys.path).  Counters are per process: a worker process reports its own through
``client.run``.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te
import threadensemble._engine
import weatherlib
from conftest import Buffers, attempts, fragile, noisy_walk

dask = pytest.importorskip("dask")
distributed = pytest.importorskip(
    "distributed",
    reason="the dask backend needs distributed (pip install 'threadensemble[dask]'), "
    "which does not import here",
)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One cluster for the module: 2 worker processes of 2 threads; none left afterwards.

    dask's profiler is off: on a free-threaded build with the GIL off it crashes the workers.
    """
    with (
        dask.config.set({"distributed.worker.profile.enabled": False}),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            dashboard_address=":0",  # any free port
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = list(client.run(os.getpid).values())
        yield client
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the worker process has exited and was reaped


@pytest.fixture(autouse=True)
def cluster_left_empty(client: Any) -> Iterator[None]:
    """After each test, no task runs and no data (results, run contexts) stay on the cluster."""
    yield
    _assert_cluster_empties(client)
    assert client.run_on_scheduler(_run_plugins) == []


def _assert_cluster_empties(client: Any) -> None:
    # Releasing a result takes a few messages between client, scheduler and worker: allow a
    # busy machine time (a result that something still refers to stays, however long we wait).
    deadline = time.monotonic() + 60
    while any(client.has_what().values()) or any(client.processing().values()):
        assert time.monotonic() < deadline, f"left on the cluster: {client.has_what()}"
        time.sleep(0.05)


def _run_plugins(dask_scheduler: Any) -> list[str]:
    return [name for name in dask_scheduler.worker_plugins if name.startswith("threadensemble")]


WALK = {"args": (0.5,), "state": Buffers(50), "inject": "state", "seed": 7, "progress": False}


def test_bitwise_identical_to_local_threads(client: Any, tmp_path: Path) -> None:
    local = te.simulate_ensemble(noisy_walk, 24, n_workers=3, **WALK)
    in_memory = te.simulate_ensemble(noisy_walk, 24, client=client, **WALK)
    xr.testing.assert_identical(local, in_memory)
    on_disk = te.simulate_ensemble(noisy_walk, 24, client=client, output_dir=tmp_path, **WALK)
    xr.testing.assert_identical(local, on_disk)
    assert len(list(tmp_path.glob("real_*.nc"))) == 24
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    manifest = json.loads((tmp_path / "threadensemble.json").read_text())
    assert manifest["completed"] == list(range(24)) and manifest["failed"] == {}


# --- the shared context travels once per worker process -------------------------------------

PICKLED: collections.Counter[str] = collections.Counter()  # counts of this process
UNPICKLED: collections.Counter[str] = collections.Counter()


class Traced:
    """A shared model that counts, in each process, how often it is pickled and unpickled."""

    def __init__(self, token: str, table: np.ndarray) -> None:
        self.token, self.table = token, table

    def __reduce__(self) -> tuple[Any, ...]:
        PICKLED[self.token] += 1
        return (_unpickle_traced, (self.token, self.table))


def _unpickle_traced(token: str, table: np.ndarray) -> Traced:
    UNPICKLED[token] += 1
    return Traced(token, table)


def _unpickled(token: str) -> int:
    return UNPICKLED[token]


def uses_table(model: Traced, *, state: Buffers) -> dict[str, Any]:
    state.values[:] = model.table[: state.values.size] * te.get_rng().random()
    return {"x": ("i", state.values.copy())}


def test_shared_context_is_sent_once_per_worker_process(client: Any) -> None:
    token = uuid.uuid4().hex
    model = Traced(token, np.arange(10_000.0))
    ens = te.simulate_ensemble(
        uses_table, 40, args=(model,), state=Buffers(8), inject="state", seed=1,
        progress=False, client=client,
    )  # fmt: skip
    assert ens.sizes["realization"] == 40
    assert set(client.run(_unpickled, token).values()) == {1}, "once per worker, not per task"
    assert PICKLED[token] <= 2, "pickled here by check_picklable and by scatter, not per task"


# --- per-thread state ---------------------------------------------------------------------

COPIES: collections.Counter[str] = collections.Counter()  # deep copies made in this process


class Scratch:
    """State that counts its deep copies in the process that makes them."""

    def __init__(self, token: str) -> None:
        self.token, self.data = token, np.zeros(5_000)

    def __deepcopy__(self, memo: dict[int, Any]) -> Scratch:
        COPIES[self.token] += 1
        return Scratch(self.token)


def _copies(token: str) -> int:
    return COPIES[token]


def hammer(*, state: Scratch) -> dict[str, Any]:
    k = te.current_realization()
    for _ in range(20):
        state.data[:] = k  # heavy writes to this thread's copy ...
        time.sleep(0)  # ... let the other thread of the process run ...
        assert (state.data == k).all(), "another thread wrote into this copy"
    where = (os.getpid(), threading.get_native_id(), id(state))
    return {"where": ("w", np.array(where, dtype=np.int64))}


def test_each_worker_thread_has_its_own_lazy_state_copy(client: Any) -> None:
    token = uuid.uuid4().hex
    ens = te.simulate_ensemble(
        hammer, 32, state=Scratch(token), inject="state", progress=False, client=client
    )
    copy_of: dict[tuple[int, int], set[int]] = collections.defaultdict(set)
    for pid, tid, copy_id in ens["where"].values.tolist():
        copy_of[pid, tid].add(copy_id)
    assert all(len(ids) == 1 for ids in copy_of.values()), "one copy per thread, kept"
    copies = {(pid, next(iter(ids))) for (pid, _), ids in copy_of.items()}
    assert len(copies) == len(copy_of), "no two threads share a copy"
    threads_of = collections.Counter(pid for pid, _ in copy_of)
    pid_of = client.run(os.getpid)
    made = {pid_of[address]: n for address, n in client.run(_copies, token).items()}
    assert {pid: made[pid] for pid in threads_of} == dict(threads_of), "copies made lazily"
    assert all(n <= 2 for n in made.values())


# --- failures, retries, resume, fail_fast, as locally --------------------------------------


def test_failures_retries_and_resume_as_locally(client: Any, tmp_path: Path) -> None:
    logs = [tmp_path / f"log{i}" for i in range(4)]
    for log in logs:
        log.mkdir()
    out = tmp_path / "run"

    def run(log: Path, kw: dict[str, Any] | None = None, **options: Any) -> xr.Dataset:
        # The log and failure switches are kwargs that do not change the numbers: name the run.
        return te.simulate_ensemble(
            fragile, 8, **WALK, **options, kwargs={"log": str(log), **(kw or {})}, run_id="walk"
        )

    reference = run(logs[0], n_workers=2)
    with pytest.raises(te.EnsembleError, match="realization 3 failed: ValueError: bad") as info:
        run(logs[1], client=client, output_dir=out, kw={"fail_on": (3,)})
    assert info.value.completed == [0, 1, 2, 4, 5, 6, 7]
    assert any("bad realization 3" in note for note in info.value.__notes__)
    assert sorted(p.name for p in out.glob("real_*.nc")) == [
        f"real_{k:05d}.nc" for k in (0, 1, 2, 4, 5, 6, 7)
    ]
    manifest = json.loads((out / "threadensemble.json").read_text())
    assert manifest["failed"] == {"3": "ValueError: bad realization 3"}

    # The re-run computes only the missing realization, and retries its transient failure.
    resumed = run(logs[2], client=client, output_dir=out, retries=1,
                  kw={"fail_first_attempt_on": (3,)})  # fmt: skip
    assert attempts(logs[2]) == [0, 3, 3]  # 0: the check that the files are this model's
    xr.testing.assert_identical(reference, resumed)

    with pytest.raises(te.EnsembleError, match="realization 0 failed"):
        te.simulate_ensemble(
            fragile, 40, **WALK, kwargs={"log": str(logs[3]), "fail_on": (0,)},
            fail_fast=True, client=client,
        )  # fmt: skip
    assert len(attempts(logs[3])) < 40, "fail_fast stops submitting"


class CopyableOnlyInMainThread:
    def __deepcopy__(self, memo: dict[int, Any]) -> CopyableOnlyInMainThread:
        if threading.current_thread() is not threading.main_thread():
            raise MemoryError("no room for another copy")
        return CopyableOnlyInMainThread()


def takes_state(*, s: object) -> dict[str, Any]:
    return {"x": np.zeros(1)}


def test_worker_thread_that_cannot_copy_the_state_stops_the_run(client: Any) -> None:
    with pytest.raises(te.WorkerInitError, match="could not deep-copy the state: MemoryError"):
        te.simulate_ensemble(
            takes_state, 10, state=CopyableOnlyInMainThread(), inject="s", progress=False,
            client=client,
        )  # fmt: skip


def corrupts(table: np.ndarray) -> dict[str, Any]:
    table[0] += 1.0
    return {"x": table.copy()}


def test_protect_shared_on_the_workers(client: Any) -> None:
    shared = np.zeros(10)
    with pytest.raises(te.EnsembleError, match="assignment destination is read-only"):
        te.simulate_ensemble(
            corrupts, 4, args=(shared,), protect_shared=True, progress=False, client=client
        )
    assert shared.flags.writeable and (shared == 0).all()


def patient(*, log: str, steps: int) -> dict[str, Any]:
    """Realization 0 returns at once; the others take ``steps`` centiseconds unless cancelled."""
    k = te.current_realization()
    (Path(log) / f"start-{k}").touch()
    for _ in range(steps if k else 0):
        if te.cancelled():
            break
        time.sleep(0.01)
    (Path(log) / f"end-{k}").touch()
    return {"x": np.full(3, float(k or 0))}


class _InterruptingBar:
    """A progress bar on which the first completed realization raises KeyboardInterrupt."""

    def update(self, n: int) -> None:
        raise KeyboardInterrupt

    def set_postfix(self, **_: Any) -> None: ...

    def close(self) -> None: ...


def test_interrupt_cancels_realizations_on_the_workers(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, out = tmp_path / "log", tmp_path / "out"
    log.mkdir()
    monkeypatch.setattr(threadensemble._engine, "progress_bar", lambda *_: _InterruptingBar())
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        te.simulate_ensemble(patient, 20, kwargs={"log": str(log), "steps": 3000},
                             output_dir=out, client=client)  # fmt: skip
    ran = {p.name.split("-")[1] for p in log.glob("start-*")}
    while {p.name.split("-")[1] for p in log.glob("end-*")} != ran:
        assert time.monotonic() - started < 60, "running realizations did not see cancelled()"
        time.sleep(0.05)
    assert len(ran) < 20, "realizations not yet started were cancelled"
    # Realization 0, collected before the interrupt, is there; nothing else, not even partly.
    assert sorted(p.name for p in out.iterdir()) == ["real_00000.nc", "threadensemble.json"]


class OnlyHere:
    """A model that pickles, but that the workers cannot unpickle (a module they lack, say)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_unpickle_only_in, (os.getpid(),))


def _unpickle_only_in(pid: int) -> OnlyHere:
    if os.getpid() != pid:
        raise ModuleNotFoundError("No module named 'mymodels'")
    return OnlyHere()


def test_workers_that_cannot_unpickle_the_model_stop_the_run(client: Any) -> None:
    with pytest.raises(te.WorkerInitError, match=r"could not set up the run: .*'mymodels'"):
        te.simulate_ensemble(takes_state, 4, args=(OnlyHere(),), progress=False, client=client)


def test_arguments_are_checked_before_anything_starts(client: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(TypeError, match=r"args\[0\]\['lock'\] cannot be pickled"):
        te.simulate_ensemble(
            takes_state, 2, args=({"lock": threading.Lock()},), output_dir=out, client=client
        )
    with pytest.raises(TypeError, match=r"client must be a distributed\.Client"):
        te.simulate_ensemble(takes_state, 2, client="tcp://127.0.0.1:8786")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_workers=4 sets the local threads"):
        te.simulate_ensemble(takes_state, 2, n_workers=4, client=client)
    with pytest.raises(ValueError, match="give client or backend='processes', not both"):
        te.simulate_ensemble(takes_state, 2, client=client, backend="processes")
    assert not out.exists()


def _set_profiling(enabled: bool) -> None:
    dask.config.set({"distributed.worker.profile.enabled": enabled})


def test_warns_when_the_profiler_would_crash_free_threaded_workers(client: Any) -> None:
    hazard = te.is_free_threaded_build() and not te.gil_enabled()  # the workers' too
    client.run(_set_profiling, True)  # the setting only: their profiler was never started
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            te.simulate_ensemble(takes_state, 2, state={}, inject="s", progress=False,
                                 client=client)  # fmt: skip
    finally:
        client.run(_set_profiling, False)
    warned = [str(w.message) for w in caught if "sampling profiler" in str(w.message)]
    assert len(warned) == hazard, warned


@pytest.mark.parametrize("ending", ["failure", "interrupt"])
def test_results_leave_the_cluster_without_the_garbage_collector(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    # Nothing of a run may hold its futures in a reference cycle (distributed.wait's timeout
    # traceback did): only the garbage collector would release their results on the cluster.
    log = tmp_path / "log"
    log.mkdir()
    # Realizations longer than the loop's wait (0.2 s), so that waits time out.
    kwargs = {"log": str(log), "pause": 0.5, "fail_on": (3,) if ending == "failure" else ()}
    expected: type[BaseException] = te.EnsembleError
    if ending == "interrupt":
        monkeypatch.setattr(threadensemble._engine, "progress_bar", lambda *_: _InterruptingBar())
        expected = KeyboardInterrupt
    gc.disable()
    try:
        for output_dir in (None, tmp_path / "out"):
            with pytest.raises(expected):
                te.simulate_ensemble(
                    fragile, 8, **WALK, kwargs=kwargs, client=client, output_dir=output_dir
                )
            _assert_cluster_empties(client)
    finally:
        gc.enable()


def complex_output() -> dict[str, Any]:
    return {"z": np.ones(2, complex)}


def test_an_output_netcdf_cannot_store_stops_the_run_on_the_workers(
    client: Any, tmp_path: Path
) -> None:
    with pytest.raises(te.UnstorableOutputError, match=r"^realization \d: variable 'z' has dtype"):
        te.simulate_ensemble(complex_output, 4, output_dir=tmp_path, progress=False, client=client)
    assert [p.name for p in tmp_path.iterdir()] == ["threadensemble.json"]


def library_weather(n: int) -> dict[str, Any]:
    return {"t": ("day", weatherlib.draw(n))}


def test_route_rng_reaches_the_dask_workers(client: Any) -> None:
    with te.route_rng(weatherlib):
        local = te.simulate_ensemble(library_weather, 6, args=(3,), seed=1, progress=False)
        on_dask = te.simulate_ensemble(
            library_weather, 6, args=(3,), seed=1, progress=False, client=client
        )
    xr.testing.assert_identical(local, on_dask)
    assert len({tuple(row) for row in on_dask["t"].values}) == 6  # no realization duplicated
