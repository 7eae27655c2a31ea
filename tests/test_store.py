import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te
from conftest import Buffers, noisy_walk
from threadensemble._store import MANIFEST_NAME


def run(out: Path, n: int = 6, **extra: Any) -> xr.Dataset:
    options: dict[str, Any] = {
        "args": (0.5,),
        "state": Buffers(20),
        "inject": "state",
        "seed": 3,
        "progress": False,
        "n_workers": 3,
        "output_dir": out,
    }
    options.update(extra)
    simulate = options.pop("simulate", noisy_walk)
    return te.simulate_ensemble(simulate, n, **options)


def test_returned_dataset_equals_open_ensemble_and_memory_run(tmp_path: Path) -> None:
    on_disk = run(tmp_path / "run")
    xr.testing.assert_identical(on_disk, te.open_ensemble(tmp_path / "run"))
    in_memory = run(None)  # type: ignore[arg-type]
    xr.testing.assert_identical(on_disk, in_memory)


def test_one_file_per_realization_with_provenance(tmp_path: Path) -> None:
    run(tmp_path, n=3)
    files = sorted(tmp_path.glob("real_*.nc"))
    assert [f.name for f in files] == ["real_00000.nc", "real_00001.nc", "real_00002.nc"]
    with xr.open_dataset(files[2], engine="netcdf4") as ds:
        attrs = dict(ds.attrs)
    assert attrs["threadensemble_realization"] == 2
    assert attrs["threadensemble_seed_entropy"] == "3"
    assert json.loads(attrs["threadensemble_seed_spawn_key"]) == [2]
    assert attrs["threadensemble_version"] == te.__version__
    assert attrs["threadensemble_free_threaded"] == int(te.is_free_threaded_build())
    assert attrs["threadensemble_gil_enabled"] == int(te.gil_enabled())
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["completed"] == [0, 1, 2] and manifest["failed"] == {}


def test_rerun_computes_only_what_is_missing(tmp_path: Path) -> None:
    computed: list[int] = []

    def counting(scale: float, *, state: Buffers) -> xr.Dataset:
        computed.append(te.current_realization() or 0)
        return noisy_walk(scale, state=state)

    full = run(tmp_path, n=8, simulate=counting)
    (tmp_path / "real_00002.nc").unlink()
    (tmp_path / "real_00005.nc").unlink()
    computed.clear()  # the closure's contents are part of the model's identity
    resumed = run(tmp_path, n=8, simulate=counting)
    assert sorted(computed) == [0, 2, 5]  # 0: the check that the files are this model's
    xr.testing.assert_identical(full, resumed)


def test_incomplete_files_are_never_counted_as_done(tmp_path: Path) -> None:
    full = run(tmp_path, n=4)
    truncated = tmp_path / "real_00001.nc"
    truncated.write_bytes(truncated.read_bytes()[:100])
    leftover = tmp_path / ".real_00003.nc.123.456.tmp"
    leftover.write_bytes(b"half written")
    resumed = run(tmp_path, n=4)
    assert not leftover.exists()
    xr.testing.assert_identical(full, resumed)


def test_seed_none_resumes_with_the_recorded_seed(tmp_path: Path) -> None:
    first = run(tmp_path, n=4, seed=None)
    (tmp_path / "real_00000.nc").unlink()
    xr.testing.assert_identical(first, run(tmp_path, n=4, seed=None))


def test_another_configuration_is_refused_and_nothing_is_touched(tmp_path: Path) -> None:
    run(tmp_path, n=4)
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(
        te.OutputDirError, match=r"another configuration .*args\[0\]: 0.5 there, 0.7"
    ):
        run(tmp_path, n=4, args=(0.7,))
    with pytest.raises(te.OutputDirError, match=r"another configuration .*seed"):
        run(tmp_path, n=4, seed=4)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def prime(scale: float, *, state: Buffers) -> None:
    """A model's own warm-up function."""
    state.values[:] = scale


def test_a_changed_warmup_is_named_once_by_its_values(tmp_path: Path) -> None:
    """warmup=True in place of a warm-up function: not "warmup: absent here" (it is True here)."""
    run(tmp_path, n=2, warmup=prime)
    for warmup, here in [(True, "True"), (False, "False")]:
        with pytest.raises(te.OutputDirError) as refused:
            run(tmp_path, n=2, warmup=warmup)
        message = str(refused.value)
        assert f"(warmup: 'test_store:prime' there, {here} here)" in message, message
        assert "absent" not in message
    run(tmp_path, n=2, warmup=prime)  # the same warm-up function: resumed


def test_overwrite_replaces_only_our_files(tmp_path: Path) -> None:
    run(tmp_path, n=4)
    mine = tmp_path / "notes.txt"
    mine.write_text("keep me")
    ens = run(tmp_path, n=2, seed=9, overwrite=True)
    assert sorted(p.name for p in tmp_path.glob("real_*.nc")) == ["real_00000.nc", "real_00001.nc"]
    assert mine.read_text() == "keep me"
    xr.testing.assert_identical(ens, te.open_ensemble(tmp_path))


def test_realization_files_without_manifest_are_refused(tmp_path: Path) -> None:
    (tmp_path / "real_00000.nc").write_bytes(b"someone else's")
    with pytest.raises(
        te.OutputDirError, match=r"holds realization files but no threadensemble.json"
    ):
        run(tmp_path, n=2)
    assert (tmp_path / "real_00000.nc").read_bytes() == b"someone else's"


def test_foreign_files_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "README").write_text("experiment 1")
    run(tmp_path, n=2)
    assert (tmp_path / "README").read_text() == "experiment 1"


def test_unreadable_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(te.OutputDirError, match="is not a threadensemble manifest"):
        run(tmp_path, n=2)


def test_open_ensemble_with_missing_realizations(tmp_path: Path) -> None:
    with pytest.raises(te.EnsembleError):
        run(tmp_path, n=5, simulate=_fail_on_two)
    with pytest.raises(ValueError, match="holds 4 of 5 realizations \\(missing: 2\\)"):
        te.open_ensemble(tmp_path)
    partial = te.open_ensemble(tmp_path, allow_incomplete=True)
    assert partial["realization"].values.tolist() == [0, 1, 3, 4]
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["failed"] == {"2": "ValueError: two"}


def _fail_on_two(scale: float, *, state: Buffers) -> dict[str, Any]:
    if te.current_realization() == 2:
        raise ValueError("two")
    return {"x": np.zeros(2)}


def test_open_ensemble_of_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no ensemble directory"):
        te.open_ensemble(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no realization files"):
        te.open_ensemble(tmp_path)


def test_file_names_depend_on_the_index_only(tmp_path: Path) -> None:
    from threadensemble._netcdf import realization_files, realization_path

    assert realization_path(tmp_path, 7).name == "real_00007.nc"
    assert realization_path(tmp_path, 1_234_567).name == "real_1234567.nc"
    assert os.sep not in realization_path(tmp_path, 7).name
    (tmp_path / "real_0000007.nc").touch()  # named by an older version for a huge ensemble
    assert realization_files(tmp_path) == {}  # not realization 7's name today
    assert realization_files(tmp_path, legacy_size=10_000_000) == {7: tmp_path / "real_0000007.nc"}


def _plain(x0: float) -> dict[str, Any]:
    return {"x": x0 + te.get_rng().random(3)}


def test_a_file_copied_from_another_run_is_not_part_of_the_ensemble(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    ours = te.simulate_ensemble(_plain, 4, args=(0.0,), seed=1, output_dir=a, progress=False)
    te.simulate_ensemble(_plain, 4, args=(0.0,), seed=2, output_dir=b, progress=False)
    shutil.copy(b / "real_00002.nc", a / "real_00002.nc")  # a careless cp between experiments
    with pytest.raises(te.OutputDirError, match=r"real_00002.nc' is realization 2 of another run"):
        te.open_ensemble(a)
    with pytest.warns(UserWarning, match="left out .*real_00002.nc"):
        partial = te.open_ensemble(a, allow_incomplete=True)
    assert partial["realization"].values.tolist() == [0, 1, 3]
    xr.testing.assert_identical(partial, ours.sel(realization=[0, 1, 3]))
    # A resumed run neither counts it as done nor replaces it.
    with pytest.raises(te.OutputDirError, match=r"real_00002.nc' is realization 2 of another run"):
        te.simulate_ensemble(_plain, 4, args=(0.0,), seed=1, output_dir=a, progress=False)
    again = te.simulate_ensemble(
        _plain, 4, args=(0.0,), seed=1, output_dir=a, progress=False, overwrite=True
    )
    xr.testing.assert_identical(again, ours)


def test_a_renamed_file_is_not_another_realization(tmp_path: Path) -> None:
    ours = te.simulate_ensemble(_plain, 4, args=(0.0,), seed=1, output_dir=tmp_path, progress=False)
    shutil.copy(tmp_path / "real_00001.nc", tmp_path / "real_00003.nc")  # a slip of the hand
    with pytest.raises(te.OutputDirError, match="says it is realization 1, not 3"):
        te.open_ensemble(tmp_path)
    with pytest.raises(te.OutputDirError, match="says it is realization 1, not 3"):
        te.simulate_ensemble(_plain, 4, args=(0.0,), seed=1, output_dir=tmp_path, progress=False)
    (tmp_path / "real_00003.nc").unlink()
    again = te.simulate_ensemble(
        _plain, 4, args=(0.0,), seed=1, output_dir=tmp_path, progress=False
    )
    xr.testing.assert_identical(again, ours)
    xr.testing.assert_identical(te.open_ensemble(tmp_path), ours)


def test_an_edited_copy_under_a_longer_name_is_ignored(tmp_path: Path) -> None:
    ours = te.simulate_ensemble(_plain, 4, args=(0.0,), seed=1, output_dir=tmp_path, progress=False)
    edited = xr.load_dataset(tmp_path / "real_00001.nc")
    edited["x"][:] = -1.0
    edited.to_netcdf(tmp_path / "real_000001.nc")  # the user's own file, next to the run's
    xr.testing.assert_identical(te.open_ensemble(tmp_path), ours)
    resumed = te.simulate_ensemble(
        _plain, 6, args=(0.0,), seed=1, output_dir=tmp_path, progress=False
    )  # neither "this run would replace it" nor taken as realization 1
    xr.testing.assert_identical(resumed.sel(realization=range(4)), ours)
    assert (tmp_path / "real_000001.nc").is_file()  # and never removed
    te.simulate_ensemble(
        _plain, 6, args=(0.0,), seed=1, output_dir=tmp_path, progress=False, overwrite=True
    )
    assert (tmp_path / "real_000001.nc").is_file()


def test_lazy_open_equals_loaded(tmp_path: Path) -> None:
    pytest.importorskip("dask")
    loaded = run(tmp_path, n=5)
    lazy = run(tmp_path, n=5, lazy=True)
    assert lazy["walk"].chunks is not None
    xr.testing.assert_identical(loaded, lazy.compute())


def test_lazy_needs_an_output_dir() -> None:
    with pytest.raises(ValueError, match="lazy=True needs an output_dir"):
        run(None, n=2, lazy=True)  # type: ignore[arg-type]


def test_a_worker_file_that_is_not_visible_here_is_reported(tmp_path: Path) -> None:
    from threadensemble._store import EnsembleStore

    store = EnsembleStore(tmp_path, {}, "digest", size=3)
    with pytest.raises(te.OutputDirError, match="not visible here: output_dir must be on a"):
        store.commit(1, ".real_00001.nc.1.2.tmp")
    assert not store.completed
