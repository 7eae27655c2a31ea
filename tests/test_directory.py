"""An ensemble directory the library wrote can always be opened, and only one run writes it.

Issue 10: the layout of the first accepted realization (coordinate values included) is recorded
in the manifest and every realization, in every run, is checked against it; a lock lets one run
at a time into a directory; a run removes only files of its own; a full disk stops the run
cleanly.  Real files, real threads, real processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te
from threadensemble._store import MANIFEST_NAME


def odd_one_out() -> dict[str, Any]:
    """Realization 3 has one step more than the others (a bug in the model)."""
    k = te.current_realization() or 0
    return {"x": ("t", np.full(6 if k == 3 else 5, float(k)))}


def test_a_realization_the_first_run_rejected_stays_rejected(tmp_path: Path) -> None:
    for _ in range(2):  # the run, then the same call again (a resume)
        with pytest.raises(
            te.EnsembleError, match=r"realization 3 failed: .*realization 0"
        ) as info:
            te.simulate_ensemble(odd_one_out, 5, n_workers=1, output_dir=tmp_path, progress=False)
        assert 3 in info.value.failures
    assert sorted(p.name for p in tmp_path.glob("real_*.nc")) == [
        f"real_{k:05d}.nc" for k in (0, 1, 2, 4)
    ]
    ens = te.open_ensemble(tmp_path, allow_incomplete=True)  # the directory stays openable
    assert ens["realization"].values.tolist() == [0, 1, 2, 4]
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["layout"]["realization"] == 0
    assert manifest["layout"]["variables"]["x"]["shape"] == [5]


def shifted_grid() -> xr.Dataset:
    """Realization 2 is on another grid (its coordinate values differ)."""
    k = te.current_realization() or 0
    x = np.arange(4.0) + (0.5 if k == 2 else 0.0)
    return xr.Dataset({"u": ("x", np.full(4, float(k)))}, coords={"x": x, "run": "a"})


@pytest.mark.parametrize("on_disk", [False, True])
def test_coordinate_values_that_differ_fail_that_realization_only(
    tmp_path: Path, on_disk: bool
) -> None:
    out = tmp_path if on_disk else None
    with pytest.raises(te.EnsembleError) as info:
        te.simulate_ensemble(shifted_grid, 5, n_workers=2, output_dir=out, progress=False)
    assert list(info.value.failures) == [2]
    assert info.value.completed == [0, 1, 3, 4]
    message = str(info.value.failures[2])
    assert "coordinate 'x' has values [0.5, 1.5, 2.5, 3.5]" in message
    assert "(realization " in message and "[0., 1., 2., 3.])" in message
    if on_disk:
        ens = te.open_ensemble(tmp_path, allow_incomplete=True)
        assert ens["realization"].values.tolist() == [0, 1, 3, 4]


def scalar_coordinate() -> xr.Dataset:
    k = te.current_realization() or 0
    return xr.Dataset({"u": ("x", np.zeros(2))}, coords={"year": 2000 + (k == 1)})


def test_a_scalar_coordinate_that_differs_is_named() -> None:
    with pytest.raises(
        te.EnsembleError, match=r"coordinate 'year' has values 2001 \(realization 0"
    ):
        te.simulate_ensemble(scalar_coordinate, 3, n_workers=1, progress=False)


def ragged_catalogue() -> xr.Dataset:
    k = te.current_realization() or 0
    n = 3 if k == 1 else 2
    return xr.Dataset({"mag": ("event", np.ones(n))}, coords={"event": np.arange(n)})


def test_a_coordinate_along_a_ragged_dimension_must_agree() -> None:
    with pytest.raises(
        te.EnsembleError,
        match=r"realization 1 failed: .*coordinate 'event' along ragged dimension 'event'",
    ) as info:
        te.simulate_ensemble(ragged_catalogue, 3, ragged=["event"], n_workers=1, progress=False)
    assert info.value.completed == [0, 2]


# --- one run per directory -------------------------------------------------------------------

GATE = threading.Event()


def waits_for_the_gate() -> dict[str, Any]:
    GATE.wait(timeout=60)
    return {"x": np.full(2, float(te.current_realization() or 0))}


def test_two_threads_into_one_directory_one_runs_the_other_is_refused(tmp_path: Path) -> None:
    GATE.clear()
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def run() -> None:
        barrier.wait()
        try:
            outcomes.append(
                te.simulate_ensemble(
                    waits_for_the_gate,
                    4,
                    n_workers=2,
                    seed=1,
                    output_dir=tmp_path,
                    progress=False,
                )
            )
        except te.OutputDirError as exc:
            outcomes.append(exc)
            GATE.set()  # now let the run that holds the directory finish

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    GATE.set()
    errors = [o for o in outcomes if isinstance(o, te.OutputDirError)]
    results = [o for o in outcomes if isinstance(o, xr.Dataset)]
    assert len(errors) == 1 and len(results) == 1
    assert f"in use by another run (pid {os.getpid()} on host {socket.gethostname()})" in str(
        errors[0]
    )
    assert results[0]["realization"].values.tolist() == [0, 1, 2, 3]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "lock removed"


HOLDS_THE_DIRECTORY = """
import os, signal, sys, time
from pathlib import Path
import numpy as np
import threadensemble as te

signal.signal(signal.SIGINT, signal.default_int_handler)  # (xdist workers ignore SIGINT)
log = Path(sys.argv[2])

def waits() -> dict:
    (log / f"started-{os.getpid()}").touch()
    deadline = time.monotonic() + 120
    while not (log / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"x": np.full(2, float(te.current_realization()))}

try:
    te.simulate_ensemble(waits, 3, n_workers=1, seed=1, output_dir=sys.argv[1], progress=False)
except te.OutputDirError as exc:
    print(exc, file=sys.stderr)
    sys.exit(3)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, Path, Any]]:
    """A script whose realizations wait for ``log/release``, its output dir and log dir."""
    script, out, log = tmp_path / "holder.py", tmp_path / "run", tmp_path / "log"
    script.write_text(HOLDS_THE_DIRECTORY)
    log.mkdir()
    children: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, str(script), str(out), str(log)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        children.append(child)
        return child

    yield out, log, start
    (log / "release").touch()
    for child in children:
        child.kill()
        child.communicate()


def _wait_until_started(log: Path, child: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not any(log.glob(f"started-{child.pid}")):
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, "the first run did not start"
        time.sleep(0.02)


def test_two_processes_into_one_directory_one_runs_the_other_is_refused(
    holder: tuple[Path, Path, Any],
) -> None:
    out, log, start = holder
    first = start()
    _wait_until_started(log, first)
    second = start()
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 3, stderr
    assert f"in use by another run (pid {first.pid} on host {socket.gethostname()})" in stderr
    assert not any(log.glob(f"started-{second.pid}")), "the refused run computed nothing"
    (log / "release").touch()
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert te.open_ensemble(out)["realization"].values.tolist() == [0, 1, 2]


def test_a_killed_runs_lock_does_not_block_the_next_run(holder: tuple[Path, Path, Any]) -> None:
    out, log, start = holder
    first = start()
    _wait_until_started(log, first)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    (log / "release").touch()
    second = start()
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr
    assert te.open_ensemble(out)["realization"].values.tolist() == [0, 1, 2]


# --- a run touches only its own files ---------------------------------------------------------


def walk() -> dict[str, Any]:
    return {"x": te.get_rng().standard_normal(3)}


def test_a_users_hidden_tmp_file_is_left_alone(tmp_path: Path) -> None:
    te.simulate_ensemble(walk, 3, seed=1, output_dir=tmp_path, progress=False)
    notes = tmp_path / ".my_notes.tmp"
    notes.write_text("mine")
    (tmp_path / "real_00001.nc").unlink()
    te.simulate_ensemble(walk, 3, seed=1, output_dir=tmp_path, progress=False)
    assert notes.read_text() == "mine"


def _users_own_file(path: Path) -> None:
    xr.Dataset({"obs": ("t", np.arange(3.0))}).to_netcdf(path, engine="netcdf4")


def test_overwrite_never_removes_a_users_realization_file(tmp_path: Path) -> None:
    te.simulate_ensemble(walk, 4, seed=1, output_dir=tmp_path, progress=False)
    users = tmp_path / "real_00007.nc"
    _users_own_file(users)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(te.OutputDirError, match=r"real_00007.nc' is not a threadensemble"):
        te.simulate_ensemble(walk, 8, seed=2, output_dir=tmp_path, overwrite=True, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before, "nothing touched"
    ens = te.simulate_ensemble(walk, 2, seed=2, output_dir=tmp_path, overwrite=True, progress=False)
    assert sorted(p.name for p in tmp_path.glob("real_*.nc")) == [
        "real_00000.nc", "real_00001.nc", "real_00007.nc"
    ]  # fmt: skip
    xr.testing.assert_identical(te.open_ensemble(users.parent), ens)
    with xr.open_dataset(users, engine="netcdf4") as ds:
        assert ds["obs"].values.tolist() == [0.0, 1.0, 2.0]


def test_a_resume_never_replaces_a_users_file(tmp_path: Path) -> None:
    te.simulate_ensemble(walk, 4, seed=1, output_dir=tmp_path, progress=False)
    (tmp_path / "real_00002.nc").unlink()
    _users_own_file(tmp_path / "real_00002.nc")
    with pytest.raises(te.OutputDirError, match=r"real_00002.nc' is not a threadensemble"):
        te.simulate_ensemble(walk, 4, seed=1, output_dir=tmp_path, progress=False)
    with xr.open_dataset(tmp_path / "real_00002.nc", engine="netcdf4") as ds:
        assert "obs" in ds


# --- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 kB file system (tmpfs; needs the right to mount, else the test is skipped)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def grows_past_the_disk() -> dict[str, Any]:
    """Realizations 0-2 are small; 3 and later (800 kB each) do not fit on the small disk."""
    k = te.current_realization() or 0
    return {"x": ("t", te.get_rng().random(10 if k < 3 else 100_000))}


def test_a_full_disk_stops_the_run_cleanly_and_a_rerun_resumes(small_disk: Path) -> None:
    out = small_disk / "run"
    options: dict[str, Any] = {"n_workers": 1, "seed": 1, "ragged": ["t"], "progress": False}
    with pytest.raises(
        te.OutputWriteError,
        match=r"realization 3: could not write '.*real_00003.nc' \(800000 bytes of data; "
        r"\d+ bytes free on its file system\): RuntimeError: NetCDF: HDF error",
    ):
        te.simulate_ensemble(grows_past_the_disk, 6, output_dir=out, **options)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["real_00000.nc", "real_00001.nc", "real_00002.nc", MANIFEST_NAME]
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["completed"] == [0, 1, 2]
    reference = te.simulate_ensemble(grows_past_the_disk, 6, **options)
    xr.testing.assert_identical(
        te.open_ensemble(out, allow_incomplete=True),
        reference.isel(realization=[0, 1, 2], t=slice(10)),
    )
    # Once there is room, the same call computes only what is missing.
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    resumed = te.simulate_ensemble(grows_past_the_disk, 6, output_dir=out, **options)
    xr.testing.assert_identical(resumed, reference)


def _draw() -> dict[str, Any]:
    return {"x": te.get_rng().random(50)}


def test_a_disk_too_full_for_the_lock_leaves_no_lock_behind(small_disk: Path) -> None:
    out = small_disk / "run"
    out.mkdir()
    filler = small_disk / "filler"
    with pytest.raises(OSError, match="No space left"), filler.open("wb") as f:
        f.write(b"0" * 1_000_000)  # the disk is now full
    with pytest.raises(
        te.OutputWriteError,
        match=r"could not write '.*\.threadensemble\.lock' \(\d+ bytes of data; 0 bytes free "
        r"on its file system\): OSError: \[Errno 28\] No space left on device",
    ) as caught:
        te.simulate_ensemble(_draw, 3, seed=1, output_dir=out, progress=False)
    assert list(out.iterdir()) == []  # no lock file, nothing else
    filler.unlink()
    kept = caught.value  # a notebook keeps the last error (and its traceback) alive
    again = te.simulate_ensemble(_draw, 3, seed=1, output_dir=out, progress=False)
    assert again.sizes["realization"] == 3 and kept is not None  # not "in use by another run"
