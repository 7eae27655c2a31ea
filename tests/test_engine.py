import copy
import hashlib
import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te
from conftest import Buffers, noisy_walk


@pytest.mark.usefixtures("no_leftover_threads")
@pytest.mark.parametrize("n_workers", [2, 8, 64])
def test_realizations_do_not_depend_on_the_worker_count(
    walk_kwargs: dict[str, Any], n_workers: int
) -> None:
    serial = te.simulate_ensemble(noisy_walk, 40, n_workers=1, **walk_kwargs)
    threaded = te.simulate_ensemble(noisy_walk, 40, n_workers=n_workers, **walk_kwargs)
    xr.testing.assert_identical(serial, threaded)
    assert serial.sizes["realization"] == 40
    assert serial["realization"].values.tolist() == list(range(40))


def test_realizations_do_not_depend_on_completion_order(walk_kwargs: dict[str, Any]) -> None:
    delays = random.Random(0)

    def slow_walk(scale: float, *, state: Buffers) -> xr.Dataset:
        time.sleep(delays.random() * 0.01)  # shuffles the order in which realizations finish
        return noisy_walk(scale, state=state)

    reference = te.simulate_ensemble(noisy_walk, 24, n_workers=1, **walk_kwargs)
    for _ in range(2):
        shuffled = te.simulate_ensemble(slow_walk, 24, n_workers=6, **walk_kwargs)
        xr.testing.assert_equal(reference, shuffled)  # attrs name the simulate function


def _three_streams() -> dict[str, Any]:
    rng = te.get_rng()
    return {
        "a": ("x", rng.standard_normal(5)),
        "w": ("y", te.get_rng("wind").random(3)),
        "i": ("z", rng.integers(0, 1000, 4)),
    }


def test_streams_are_bit_identical_to_the_recorded_reference() -> None:
    # Recorded on CPython 3.11 (GIL); CI checks the same digest on free-threaded 3.13t, so
    # this is the cross-build determinism check.  numpy's PCG64 stream is stable by policy.
    ens = te.simulate_ensemble(_three_streams, 4, seed=42, n_workers=3, progress=False)
    digest = hashlib.sha256(b"".join(ens[v].values.tobytes() for v in "awi")).hexdigest()
    assert digest == "bd1b16418311b5bd02157389b6a59d7bd88f12a028088d79f0e70c522b7935c0"


def test_realization_k_uses_the_stream_keyed_by_k() -> None:
    ens = te.simulate_ensemble(_three_streams, 3, seed=42, n_workers=2, progress=False)
    expected = np.random.default_rng(np.random.SeedSequence(42, spawn_key=(2,)))
    np.testing.assert_array_equal(ens["a"].values[2], expected.standard_normal(5))


def test_user_seed_scheme() -> None:
    ens = te.simulate_ensemble(
        _three_streams, 3, seed_for=lambda k: 1000 * k, n_workers=2, progress=False
    )
    expected = np.random.default_rng(np.random.SeedSequence(2000))
    np.testing.assert_array_equal(ens["a"].values[2], expected.standard_normal(5))


class Recorder:
    """State that remembers which thread used which copy."""

    def __init__(self) -> None:
        self.data = np.zeros(10_000)
        self.seen: list[tuple[int, int]] = []


@pytest.mark.usefixtures("no_leftover_threads")
def test_each_worker_thread_mutates_its_own_copy() -> None:
    n_workers = 8
    barrier = threading.Barrier(n_workers)
    log: list[tuple[int, int, int]] = []  # (realization, thread, id of the state copy)
    master = Recorder()

    def hammer(*, state: Recorder) -> dict[str, Any]:
        k = te.current_realization()
        assert k is not None
        if k < n_workers:
            barrier.wait(timeout=30)  # the first n_workers realizations run at the same time
        for _ in range(20):
            state.data[:] = k  # heavy writes to the thread's copy ...
            time.sleep(0)  # ... let the other threads run ...
            assert (state.data == k).all(), "another thread wrote into this copy"
        log.append((k, threading.get_ident(), id(state)))
        return {"k": np.float64(state.data.mean())}

    ens = te.simulate_ensemble(
        hammer, 64, state=master, inject="state", n_workers=n_workers, progress=False
    )
    assert ens["k"].values.tolist() == list(range(64))
    copies_by_thread: dict[int, set[int]] = {}
    for _, thread, copy_id in log:
        copies_by_thread.setdefault(thread, set()).add(copy_id)
    assert len(copies_by_thread) == n_workers
    assert all(len(ids) == 1 for ids in copies_by_thread.values()), "one copy per thread"
    all_ids = [next(iter(ids)) for ids in copies_by_thread.values()]
    assert len(set(all_ids)) == n_workers, "copies are never shared"
    assert id(master) not in all_ids
    assert (master.data == 0).all() and master.seen == []


def test_one_worker_runs_in_a_worker_thread() -> None:
    names: list[str] = []

    def where(*, state: list[int]) -> dict[str, Any]:
        names.append(threading.current_thread().name)
        return {"x": np.zeros(1)}

    te.simulate_ensemble(where, 3, state=[], inject="state", n_workers=1, progress=False)
    assert len(set(names)) == 1 and names[0].startswith("threadensemble")


def test_shared_args_are_not_copied() -> None:
    model = {"big": np.arange(1000.0)}
    seen: list[int] = []

    def use(shared: dict[str, np.ndarray]) -> dict[str, Any]:
        seen.append(id(shared))
        return {"s": shared["big"].sum()}

    te.simulate_ensemble(use, 6, args=(model,), n_workers=3, progress=False)
    assert set(seen) == {id(model)}


def test_dataarray_and_dict_outputs() -> None:
    def as_array() -> xr.DataArray:
        return xr.DataArray(te.get_rng().random(3), dims="x", name="temp")

    def as_dict() -> dict[str, Any]:
        return {"temp": ("x", te.get_rng().random(3))}

    a = te.simulate_ensemble(as_array, 4, seed=1, n_workers=2, progress=False)
    b = te.simulate_ensemble(as_dict, 4, seed=1, n_workers=2, progress=False)
    xr.testing.assert_equal(a, b)


def test_kwargs_are_passed() -> None:
    def f(*, scale: float) -> dict[str, Any]:
        return {"x": np.array([scale])}

    ens = te.simulate_ensemble(f, 2, kwargs={"scale": 3.0}, n_workers=1, progress=False)
    assert ens["x"].values.ravel().tolist() == [3.0, 3.0]


def test_realization_with_another_layout_is_named() -> None:
    def grows() -> dict[str, Any]:
        k = te.current_realization() or 0
        return {"x": ("t", np.zeros(5 if k != 3 else 6))}

    with pytest.raises(
        te.EnsembleError,
        match=r"realization 3 failed: .*realization 0: 'x' has dims \('t',\) shape \(6,\)",
    ):
        te.simulate_ensemble(grows, 5, n_workers=1, progress=False)


def test_ragged_dimension_is_padded() -> None:
    def catalogue() -> dict[str, Any]:
        k = te.current_realization() or 0
        return {"mag": ("event", np.arange(k + 1, dtype=float))}

    ens = te.simulate_ensemble(catalogue, 4, ragged=["event"], n_workers=2, progress=False)
    assert ens.sizes["event"] == 4
    assert np.isnan(ens["mag"].values[0, 1:]).all()
    assert ens["mag"].values[3].tolist() == [0, 1, 2, 3]


def test_wrong_return_type_is_reported() -> None:
    with pytest.raises(te.EnsembleError, match=r"must return an xarray.Dataset"):
        te.simulate_ensemble(lambda: 3.0, 2, n_workers=1, progress=False)


def _fails_on(bad: set[int]) -> Any:
    def simulate() -> dict[str, Any]:
        k = te.current_realization()
        if k in bad:
            raise ValueError(f"bad realization {k}")
        return {"x": np.array([float(k or 0)])}

    return simulate


@pytest.mark.usefixtures("no_leftover_threads")
def test_a_failure_names_its_realization_and_keeps_the_others(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(
        te.EnsembleError, match="realization 3 failed: ValueError: bad realization 3"
    ) as info:
        te.simulate_ensemble(_fails_on({3}), 8, output_dir=out, n_workers=3, progress=False)
    assert list(info.value.failures) == [3]
    assert isinstance(info.value.__cause__, ValueError)
    assert info.value.completed == [0, 1, 2, 4, 5, 6, 7]
    assert sorted(p.name for p in out.glob("real_*.nc")) == [
        f"real_{k:05d}.nc" for k in (0, 1, 2, 4, 5, 6, 7)
    ]
    assert any("bad realization 3" in note for note in info.value.__notes__)


@pytest.mark.usefixtures("no_leftover_threads")
def test_sys_exit_in_simulate_fails_that_realization_only(tmp_path: Path) -> None:
    def gives_up() -> dict[str, Any]:
        k = te.current_realization() or 0
        if k == 2:
            sys.exit("no convergence")  # a script turned into a model, say
        return {"x": np.array([float(k)])}

    with pytest.raises(
        te.EnsembleError, match="realization 2 failed: SystemExit: no convergence"
    ) as info:
        te.simulate_ensemble(gives_up, 6, output_dir=tmp_path, n_workers=2, progress=False)
    assert info.value.completed == [0, 1, 3, 4, 5]
    assert isinstance(info.value.failures[2], SystemExit)
    manifest = json.loads((tmp_path / "threadensemble.json").read_text())
    assert manifest["failed"] == {"2": "SystemExit: no convergence"}
    assert manifest["stopped"] is None  # the run ended: it was not stopped


def test_every_failure_is_listed() -> None:
    with pytest.raises(te.EnsembleError, match="3 realizations failed") as info:
        te.simulate_ensemble(_fails_on({1, 4, 6}), 8, n_workers=2, progress=False)
    assert list(info.value.failures) == [1, 4, 6]
    assert "realization 4: ValueError: bad realization 4" in str(info.value)


def test_fail_fast_stops_submitting() -> None:
    started: list[int] = []

    def first_fails() -> dict[str, Any]:
        k = te.current_realization() or 0
        started.append(k)
        if k == 0:
            raise RuntimeError("broken model")
        return {"x": np.zeros(1)}

    with pytest.raises(te.EnsembleError, match="realization 0 failed") as info:
        te.simulate_ensemble(first_fails, 200, n_workers=2, fail_fast=True, progress=False)
    assert len(started) < 200
    error = info.value
    assert sorted([*error.failures, *error.completed, *error.not_run]) == list(range(200))
    assert set(error.not_run).isdisjoint(started)  # never started, as the message says
    assert f"{len(error.not_run)} realizations not run (fail_fast)" in str(error)


def test_retries_recover_transient_failures(walk_kwargs: dict[str, Any]) -> None:
    attempts: dict[int, int] = {}

    def flaky(scale: float, *, state: Buffers) -> xr.Dataset:
        k = te.current_realization() or 0
        attempts[k] = attempts.get(k, 0) + 1  # each k runs in one thread at a time
        if k % 3 == 0 and attempts[k] == 1:
            raise OSError("transient")
        return noisy_walk(scale, state=state)

    clean = te.simulate_ensemble(noisy_walk, 12, n_workers=1, **walk_kwargs)
    recovered = te.simulate_ensemble(flaky, 12, n_workers=4, retries=1, **walk_kwargs)
    xr.testing.assert_equal(clean, recovered)
    assert attempts[3] == 2 and attempts[4] == 1


def test_retries_give_up_after_the_limit() -> None:
    with pytest.raises(te.EnsembleError, match="realization 2 failed"):
        te.simulate_ensemble(_fails_on({2}), 4, n_workers=2, retries=2, progress=False)


class CopyableOnlyInMainThread:
    def __deepcopy__(self, memo: dict[int, Any]) -> "CopyableOnlyInMainThread":
        if threading.current_thread() is not threading.main_thread():
            raise MemoryError("no room for another copy")
        return CopyableOnlyInMainThread()


@pytest.mark.usefixtures("no_leftover_threads")
def test_worker_initializer_failure_is_reported_as_such() -> None:
    with pytest.raises(te.WorkerInitError, match="could not deep-copy the state: MemoryError"):
        te.simulate_ensemble(
            lambda *, s: {"x": np.zeros(1)},
            10,
            state=CopyableOnlyInMainThread(),
            inject="s",
            n_workers=2,
            progress=False,
        )


class CopyableOnce:
    """State whose first per-thread copy succeeds and whose later ones fail, a little later."""

    copies = 0
    lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> "CopyableOnce":
        with CopyableOnce.lock:
            CopyableOnce.copies += 1
            fails = CopyableOnce.copies > 2  # the run's master copy, then one thread's
        if fails:
            time.sleep(0.2)  # while the first thread runs realizations
            raise MemoryError("no room for another copy")
        return CopyableOnce()


@pytest.mark.usefixtures("no_leftover_threads")
def test_one_thread_whose_copy_fails_after_another_started_is_reported_as_such() -> None:
    # The first thread has its copy and runs realizations; the second cannot make one.  A
    # broken ThreadPoolExecutor raised a bare BrokenThreadPool from submit here.
    CopyableOnce.copies = 0
    with pytest.raises(te.WorkerInitError, match="could not deep-copy the state: MemoryError"):
        te.simulate_ensemble(lambda *, s: {"x": np.zeros(1)}, 5000, state=CopyableOnce(),
                             inject="s", n_workers=2, progress=False)  # fmt: skip


def test_context_inside_a_realization() -> None:
    def look() -> dict[str, Any]:
        return {"k": np.array(te.current_realization()), "c": np.array(te.cancelled())}

    ens = te.simulate_ensemble(look, 3, n_workers=2, progress=False)
    assert ens["k"].values.tolist() == [0, 1, 2]
    assert not ens["c"].values.any()
    assert te.current_realization() is None


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_on_and_off(capsys: pytest.CaptureFixture[str], progress: bool) -> None:
    te.simulate_ensemble(_three_streams, 5, seed=1, n_workers=2, progress=progress)
    err = capsys.readouterr().err
    if progress:
        assert "ensemble [2 workers, GIL " in err and "5/5" in err
    else:
        assert err == ""


def test_state_master_is_left_as_it_was(walk_kwargs: dict[str, Any]) -> None:
    before = copy.deepcopy(walk_kwargs["state"])
    te.simulate_ensemble(noisy_walk, 10, n_workers=3, **walk_kwargs)
    assert walk_kwargs["state"].history == before.history
    np.testing.assert_array_equal(walk_kwargs["state"].values, before.values)


def test_protect_shared_turns_a_shared_write_into_an_error() -> None:
    shared = np.zeros(10)

    def corrupts(table: np.ndarray) -> dict[str, Any]:
        table[0] += 1.0
        return {"x": table.copy()}

    with pytest.raises(te.EnsembleError, match="assignment destination is read-only"):
        te.simulate_ensemble(corrupts, 4, args=(shared,), protect_shared=True, progress=False)
    assert shared.flags.writeable
    assert (shared == 0).all()


def test_warmup_runs_once_on_the_master_before_copies() -> None:
    calls: list[str] = []

    def simulate(*, state: dict[str, Any]) -> dict[str, Any]:
        return {"ready": np.array(state.get("ready", False))}

    def warm(*, state: dict[str, Any]) -> None:
        calls.append(threading.current_thread().name)
        state["ready"] = True

    user_state: dict[str, Any] = {}
    ens = te.simulate_ensemble(
        simulate, 6, state=user_state, inject="state", warmup=warm, n_workers=3, progress=False
    )
    assert ens["ready"].values.all()
    assert calls == [threading.current_thread().name]
    assert user_state == {}, "the user's object is never modified"


def test_bad_warmup_is_refused() -> None:
    with pytest.raises(TypeError, match="warmup must be True, False or a callable"):
        te.simulate_ensemble(_three_streams, 2, warmup="yes", progress=False)  # type: ignore[arg-type]


INTERRUPTIBLE = """
import signal, sys, time
import numpy as np
import threadensemble as te

# pytest-xdist workers ignore SIGINT, and a child inherits that: take Ctrl-C as Python does.
signal.signal(signal.SIGINT, signal.default_int_handler)

def slow():
    k = te.current_realization()
    for _ in range(int(sys.argv[2])):
        if te.cancelled():  # polled, so Ctrl-C does not wait for the whole realization
            break
        time.sleep(0.01)
    return {"x": np.full(3, float(k)) + te.get_rng().random(3)}

te.simulate_ensemble(slow, 60, n_workers=4, seed=1, output_dir=sys.argv[1], progress=False)
"""


def test_ctrl_c_keeps_completed_files_and_a_rerun_resumes(tmp_path: Path) -> None:
    script = tmp_path / "interruptible.py"
    script.write_text(INTERRUPTIBLE)
    out = tmp_path / "run"

    def start(directory: Path, steps: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), str(directory), str(steps)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    child = start(out, 30)
    deadline = time.monotonic() + 60
    while len(list(out.glob("real_*.nc"))) < 6:
        assert child.poll() is None and time.monotonic() < deadline, "run ended before SIGINT"
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    interrupted_at = time.monotonic()
    _, stderr = child.communicate(timeout=60)
    assert time.monotonic() - interrupted_at < 10, "cancellation waited for running work"
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr
    files = sorted(int(p.stem.split("_")[1]) for p in out.glob("real_*.nc"))
    assert 6 <= len(files) < 60
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [], "no partial files"
    manifest = json.loads((out / "threadensemble.json").read_text())
    assert manifest["completed"] == files, "manifest agrees with the files"
    for path in out.glob("real_*.nc"):  # every kept file is complete and readable
        with xr.open_dataset(path, engine="netcdf4") as ds:
            assert ds["x"].size == 3

    for directory in (out, tmp_path / "uninterrupted"):  # the re-run resumes; a reference run
        done = subprocess.run(
            [sys.executable, str(script), str(directory), "0"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    xr.testing.assert_identical(te.open_ensemble(out), te.open_ensemble(tmp_path / "uninterrupted"))


STUBBORN = """
import signal, sys, time
from pathlib import Path
import numpy as np
import threadensemble as te

signal.signal(signal.SIGINT, signal.default_int_handler)  # (xdist workers ignore SIGINT)

def stubborn():
    k = te.current_realization()
    if k == 4 and sys.argv[2] == "stubborn":
        Path(sys.argv[1] + ".started").touch()
        time.sleep(300)  # never polls cancelled()
    return {"x": np.full(3, float(k)) + te.get_rng().random(3)}

te.simulate_ensemble(stubborn, 8, n_workers=2, seed=1, output_dir=sys.argv[1], progress=False)
"""


def test_a_second_ctrl_c_ends_the_process_at_once(tmp_path: Path) -> None:
    script, out = tmp_path / "stubborn.py", tmp_path / "run"
    script.write_text(STUBBORN)
    child = subprocess.Popen(
        [sys.executable, str(script), str(out), "stubborn"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (tmp_path / "run.started").exists() or len(list(out.glob("real_*.nc"))) < 7:
        assert child.poll() is None and time.monotonic() < deadline, "run ended before SIGINT"
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)  # the run stops submitting and waits for realization 4
    time.sleep(1.0)
    assert child.poll() is None, "the first Ctrl-C waits for the running realization"
    child.send_signal(signal.SIGINT)
    interrupted_at = time.monotonic()
    try:
        _, stderr = child.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise AssertionError("a second Ctrl-C did not end the process") from None
    assert time.monotonic() - interrupted_at < 10, "it ends within a second (on a busy machine)"
    assert child.returncode != 0 and "KeyboardInterrupt" in stderr
    files = sorted(int(p.stem.split("_")[1]) for p in out.glob("real_*.nc"))
    assert files == [0, 1, 2, 3, 5, 6, 7]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [], "no partial files"
    assert json.loads((out / "threadensemble.json").read_text())["completed"] == files
    for directory in (out, tmp_path / "reference"):  # the re-run resumes
        done = subprocess.run(
            [sys.executable, str(script), str(directory), "quick"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    xr.testing.assert_identical(te.open_ensemble(out), te.open_ensemble(tmp_path / "reference"))


def attributed(n_steps: int) -> xr.Dataset:
    """A realization with attributes of its own: shared, differing, and one named as ours."""
    rng = te.get_rng()
    ds = xr.Dataset({"x": ("t", rng.normal(size=n_steps))}, coords={"t": np.arange(n_steps)})
    return ds.assign_attrs(
        model="walk",  # the same in every realization
        draw=float(rng.random()),  # differs
        threadensemble_realization="the model's own",  # ours replaces it
    )


@pytest.mark.parametrize("backend", ["threads", "processes"])
@pytest.mark.parametrize("n", [1, 3])
def test_the_ensemble_in_memory_has_the_attributes_of_its_files(
    tmp_path: Path, backend: str, n: int
) -> None:
    # The ensemble kept in memory has the attributes every realization's file shares, as the
    # directory's ensemble has them.
    options: dict[str, Any] = {"args": (5,), "seed": 3, "progress": False, "backend": backend}
    in_memory = te.simulate_ensemble(attributed, n, n_workers=2, **options)
    on_disk = te.simulate_ensemble(attributed, n, n_workers=2, output_dir=tmp_path, **options)
    xr.testing.assert_identical(in_memory, on_disk)
    assert in_memory.attrs["model"] == "walk"
    assert ("draw" in in_memory.attrs) == (n == 1)
    assert in_memory.attrs.get("threadensemble_realization") == (0 if n == 1 else None)
    assert "threadensemble_version" in in_memory.attrs


class CachedOutput:
    """State holding one Dataset that every realization fills in again and returns."""

    def __init__(self) -> None:
        self.ds = xr.Dataset({"x": ("t", np.zeros(3))}, coords={"t": [0, 1, 2]})


def refills_its_dataset(*, cache: CachedOutput) -> xr.Dataset:
    rng = te.get_rng()
    cache.ds["x"] = ("t", rng.normal(size=3))  # a new variable in the same Dataset
    cache.ds.attrs["draw"] = float(rng.random())
    return cache.ds


def fresh_dataset() -> xr.Dataset:
    return refills_its_dataset(cache=CachedOutput())


@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_a_dataset_that_simulate_returns_again_is_a_snapshot(backend: str) -> None:
    # A realization is what simulate returned when it returned: the next realization on that
    # worker changing the same Dataset object changes none of the earlier ones (they were
    # all the last one of their thread, or of their process's task).
    options: dict[str, Any] = {"seed": 4, "n_workers": 1, "progress": False}
    reused = te.simulate_ensemble(
        refills_its_dataset, 40, state=CachedOutput(), inject="cache", backend=backend, **options
    )
    xr.testing.assert_identical(reused, te.simulate_ensemble(fresh_dataset, 40, **options))
    assert len(np.unique(reused["x"].values[:, 0])) == 40


class DepthBuffer:
    """A thread's buffer, which simulate returns as a coordinate (a view, not a copy)."""

    def __init__(self) -> None:
        self.depth = np.zeros(3)
        self.broken = False


def test_a_coordinate_rewritten_after_its_realization_returned_is_not_kept_silently() -> None:
    # The thread of realization 0 fails every later attempt (retried on the other thread)
    # after rewriting its buffer, which realization 0's coordinate is a view of.  Its layout
    # was found when it returned, so assembly compares that coordinate again: the ensemble
    # would have had depth -1 where every realization returned 1, 2, 3.
    pair = threading.Barrier(2)
    rewritten = threading.Event()

    def simulate(*, buf: DepthBuffer) -> xr.Dataset:
        k = te.current_realization()
        if buf.broken:
            buf.depth[:] = -1.0
            rewritten.set()
            time.sleep(0.05)  # (so that the other thread takes most retries)
            raise OSError("transient")
        if k in (0, 1):
            pair.wait(timeout=60)  # realizations 0 and 1 run on the two threads
        if k == 0:
            buf.broken = True
        if k == 1:
            assert rewritten.wait(timeout=60)  # realization 0's thread took another one
        buf.depth[:] = [1.0, 2.0, 3.0]
        rng = te.get_rng()
        return xr.Dataset({"h": ("z", rng.normal(size=3))}, coords={"depth": ("z", buf.depth)})

    with pytest.raises(xr.MergeError, match="depth"):
        te.simulate_ensemble(
            simulate, 4, state=DepthBuffer(), inject="buf", retries=1000, n_workers=2,
            progress=False,
        )  # fmt: skip
