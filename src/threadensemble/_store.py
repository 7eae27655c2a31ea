"""An ensemble directory: one NetCDF file per realization plus a manifest, and `open_ensemble`.

The files are the record of what is done: a realization file exists under its final name only
once it is complete (see `write_atomic`) and carries the digest of the run identity that
produced it.  The manifest (``threadensemble.json``) holds that identity (the model's content
fingerprint, `threadensemble._identity`, or the user's ``run_id``; the seed scheme; ``ragged``),
so that a re-run of another model is refused naming what changed; the directory's size (the
largest ``n_realizations`` ever run into it: a run with more realizations extends the
ensemble); the layout of the first accepted realization, which every realization of every run
into the directory must match (so that the directory can always be opened); and a summary of
completed and failed realizations for people and tools, refreshed at most once a second and at
the end of every run.  One run at a time holds the directory (`threadensemble._lock`); it
removes only files of the library's own (temporaries of its exact name pattern, realization
files carrying its attributes).
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from ._errors import OutputDirError, write_error
from ._identity import differences
from ._lock import DirectoryLock
from ._netcdf import (
    TEMP_NAME,
    TEMP_SUFFIX,
    commit_temporary,
    netcdf_lock,
    read_attrs,
    read_realization,
    realization_files,
    realization_path,
    write_atomic,
)
from ._results import (
    CONCAT_OPTIONS,
    REALIZATION_DIM,
    Layout,
    assemble,
    label_realizations,
    layout_from_json,
    layout_to_json,
)
from ._runtime import runtime_info

__all__ = [
    "MANIFEST_NAME",
    "EnsembleStore",
    "ensemble_files",
    "manifest_size",
    "open_ensemble",
    "open_realizations",
    "read_manifest",
]

MANIFEST_NAME = "threadensemble.json"
MANIFEST_FORMAT = "threadensemble-manifest/2"
_READABLE_FORMATS = (MANIFEST_FORMAT, "threadensemble-manifest/1")  # /1: opened, not resumed
ATTR_PREFIX = "threadensemble_"
_FLUSH_INTERVAL = 1.0  # seconds between manifest rewrites during a run
_MANIFEST_TEMP = re.compile(re.escape(f".{MANIFEST_NAME}.") + r"\d+" + re.escape(TEMP_SUFFIX))


def read_manifest(output_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the manifest of an ensemble directory, or None when it has none."""
    path = Path(output_dir) / MANIFEST_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        manifest: dict[str, Any] = json.loads(text)
        if manifest.get("format") not in _READABLE_FORMATS:
            raise ValueError(f"format {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    except ValueError as exc:
        raise OutputDirError(f"{path} is not a threadensemble manifest: {exc}") from None
    return manifest


def _write_json_atomic(data: Mapping[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    text = json.dumps(data, indent=1) + "\n"
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except Exception as exc:
        error = write_error(path, exc, len(text))
        tmp.unlink(missing_ok=True)
        raise error from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _attrs_or_none(path: Path) -> Mapping[str, Any] | None:
    try:
        return read_attrs(path)
    except OSError:  # unreadable or truncated (never one of ours: they are written atomically)
        return None


def manifest_size(manifest: Mapping[str, Any]) -> int:
    """Return how many realizations the directory holds when complete (largest n ever run)."""
    size = manifest.get("n_realizations", manifest["config"].get("n_realizations"))
    return int(size)


def ensemble_files(directory: Path, manifest: Mapping[str, Any] | None) -> dict[int, Path]:
    """Return realization index -> file of ``directory``, by its manifest's format's names.

    See `realization_files`: files of other names are not the ensemble's.
    """
    if manifest is not None and manifest.get("format") != MANIFEST_FORMAT:
        return realization_files(directory, legacy_size=manifest_size(manifest))
    return realization_files(directory)


def _of_run(attrs: Mapping[str, Any] | None, digest: str, index: int) -> bool:
    """Whether a file's attributes say it is realization ``index`` of the run ``digest``."""
    return bool(
        attrs is not None
        and attrs.get(ATTR_PREFIX + "run") == digest
        and attrs.get(ATTR_PREFIX + "realization") == index
    )


def _not_of_run(path: Path, attrs: Mapping[str, Any] | None, digest: str, index: int) -> str:
    """Say why ``path`` is not realization ``index`` of the run ``digest``."""
    if attrs is None:
        return f"{str(path)!r} cannot be read as a netCDF file"
    run, realization = attrs.get(ATTR_PREFIX + "run"), attrs.get(ATTR_PREFIX + "realization")
    if realization != index:
        return f"{str(path)!r} says it is realization {realization}, not {index}"
    return (
        f"{str(path)!r} is realization {index} of another run ({ATTR_PREFIX}run {run!r}, "
        f"this directory's run is {digest!r}; copied from another ensemble directory?)"
    )


def _without_root(record: Mapping[str, Any], root: str) -> dict[str, Any]:
    """Return a model record (`Fingerprint.record`) without ``root`` among its roots."""
    roots = {name: value for name, value in record.get("roots", {}).items() if name != root}
    return {**record, "roots": roots}


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    found = []
    for key in [*old, *(k for k in new if k not in old)]:
        there, here = old.get(key), new.get(key)
        if there == here:
            continue
        if key == "model" and isinstance(there, dict) and isinstance(here, dict):
            if "run_id" in there or "run_id" in here:
                found.append(f"run_id: {there.get('run_id')!r} there, {here.get('run_id')!r} here")
            else:
                if old.get("warmup") != new.get("warmup"):
                    # The model's fingerprint has a warmup root for a warm-up function only: a
                    # change of warmup is said once, by the identity's own (not as "warmup:
                    # absent here" when warmup=True replaced a function).
                    there, here = _without_root(there, "warmup"), _without_root(here, "warmup")
                found.extend(differences(there, here))
        else:
            found.append(f"{key}: {there!r} there, {here!r} here")
    return found


class EnsembleStore:
    """The output directory of one run configuration.

    Build it with `EnsembleStore.check`, which only reads, so that every problem with the
    directory is reported before any thread starts or any file is touched; then `open` it.
    """

    def __init__(self, output_dir: Path, config: Mapping[str, Any], digest: str, size: int) -> None:
        self.output_dir = output_dir
        self.config = dict(config)
        self.digest = digest
        self.size = size  # the largest n_realizations run into the directory
        self.completed: set[int] = set()
        self.failed: dict[int, str] = {}
        # The first accepted realization's index and layout (recorded in the manifest).
        self.layout: tuple[int, Layout] | None = None
        self._lock = DirectoryLock(output_dir)
        self._last_flush = 0.0
        self.run_report: dict[str, Any] | None = None  # the last run's (`threadensemble._report`)
        self.stopped: str | None = None  # the error that stopped this run, if one did

    @staticmethod
    def recorded_seed(output_dir: Path) -> dict[str, Any] | None:
        """Return the run seed ``output_dir``'s manifest records (for seed=None), reading only."""
        manifest = read_manifest(output_dir) if output_dir.is_dir() else None
        if manifest is None or manifest.get("format") != MANIFEST_FORMAT:
            return None
        seed: dict[str, Any] | None = manifest["config"].get("seed")
        return seed

    @classmethod
    def check(
        cls,
        output_dir: Path,
        config: Mapping[str, Any],
        digest: str,
        overwrite: bool,
        n_realizations: int,
    ) -> EnsembleStore:
        """Return the store for ``output_dir``, or raise OutputDirError; writes nothing.

        A directory of the same identity (``digest``) is resumed or extended, whatever its
        ``n_realizations`` and the library version that wrote it.
        """
        if output_dir.exists() and not output_dir.is_dir():
            raise OutputDirError(f"output_dir {str(output_dir)!r} exists and is not a directory")
        size = n_realizations
        if output_dir.is_dir() and not overwrite:
            manifest = read_manifest(output_dir)
            if manifest is not None and manifest.get("format") != MANIFEST_FORMAT:
                raise OutputDirError(
                    f"output_dir {str(output_dir)!r} was written by an older threadensemble "
                    f"({manifest.get('format')}, without the model's fingerprint), so it cannot "
                    "be resumed; open_ensemble still opens it; use another directory, or "
                    "overwrite=True to replace that run's files"
                )
            if manifest is not None and manifest.get("digest") == digest:
                size = max(size, manifest_size(manifest))
            if manifest is not None and manifest.get("digest") != digest:
                diff = _differences(manifest.get("config", {}), config) or ["digest"]
                raise OutputDirError(
                    f"output_dir {str(output_dir)!r} holds a run with another configuration "
                    f"({'; '.join(diff)}); use another directory, or overwrite=True to replace "
                    "that run's files"
                )
            if manifest is None and realization_files(output_dir):
                raise OutputDirError(
                    f"output_dir {str(output_dir)!r} holds realization files but no "
                    f"{MANIFEST_NAME}; use another directory, or overwrite=True to replace them"
                )
        return cls(output_dir, config, digest, size)

    def open(self, overwrite: bool) -> None:
        """Lock the directory for this run, clear leftovers, find the realizations already done.

        Raises OutputDirError, before anything is removed, when another run holds the
        directory or when a realization file this run would replace is not threadensemble's.
        The lock is held until `close`.
        """
        self._lock.acquire()
        try:
            self._prepare(overwrite)
        except BaseException:
            self._lock.release()
            raise

    def close(self) -> None:
        """End the run: release the directory's lock."""
        self._lock.release()

    def _prepare(self, overwrite: bool) -> None:
        manifest = read_manifest(self.output_dir)
        listed = set(manifest.get("completed", ())) if manifest is not None else set()
        files = ensemble_files(self.output_dir, manifest)
        attrs = {k: _attrs_or_none(p) for k, p in files.items()}
        # Ours: it says so, or it is unreadable (cut short by a crash, say) and the manifest
        # lists it.  A readable file without our attributes is someone else's, listed or not.
        ours = {
            k
            for k, a in attrs.items()
            if (a is None and k in listed)
            or (a is not None and a.get(ATTR_PREFIX + "realization") == k)
        }
        if foreign := [k for k in attrs if k < self.size and k not in ours]:
            path, found = files[foreign[0]], attrs[foreign[0]]
            if found is not None and ATTR_PREFIX + "realization" in found:
                raise OutputDirError(
                    f"{_not_of_run(path, found, self.digest, foreign[0])}, and this run would "
                    "replace it; move it away, or use another directory"
                )
            raise OutputDirError(
                f"{str(path)!r} is not a threadensemble realization file (it lacks the "
                f"library's attributes), and this run would replace it; move it away, or use "
                "another directory"
            )
        # A file of another run (or under another index) is never taken as done, nor replaced.
        others = [k for k in sorted(ours) if k < self.size and attrs[k] is not None]
        if not overwrite and (others := [k for k in others if not self._is_ours(attrs[k], k)]):
            reason = _not_of_run(files[others[0]], attrs[others[0]], self.digest, others[0])
            raise OutputDirError(
                f"{reason}, and this run would replace it; move it away, or overwrite=True to "
                "replace it"
            )
        for path in self.output_dir.iterdir():
            # Holding the lock, every temporary file of ours is a dead run's, never complete.
            if TEMP_NAME.fullmatch(path.name) or _MANIFEST_TEMP.fullmatch(path.name):
                path.unlink(missing_ok=True)
        if overwrite:
            for index, path in files.items():
                if index in ours:
                    path.unlink()
            (self.output_dir / MANIFEST_NAME).unlink(missing_ok=True)
        else:
            self._load_layout(manifest)
            for index, path in files.items():
                if path == self.path(index) and self._is_ours(attrs[index], index):
                    self.completed.add(index)
        self.flush(force=True)

    def _load_layout(self, manifest: Mapping[str, Any] | None) -> None:
        record = manifest.get("layout") if manifest is not None else None
        if record is not None:
            self.layout = (int(record["realization"]), layout_from_json(record["variables"]))

    def record_layout(self, index: int, layout: Layout) -> None:
        """Record the layout of realization ``index``, the first accepted, in the manifest.

        Every later realization, in this run and in every re-run, must have the same.
        """
        self.layout = (index, layout)
        self.flush(force=True)

    def _is_ours(self, attrs: Mapping[str, Any] | None, index: int) -> bool:
        return _of_run(attrs, self.digest, index)

    def path(self, index: int) -> Path:
        """Return the file of realization ``index``."""
        return realization_path(self.output_dir, index)

    def write(self, index: int, ds: xr.Dataset) -> None:
        """Write realization ``index`` (as `netcdf_ready` returned it) atomically; record it."""
        write_atomic(ds, self.path(index))
        self._record(index)

    def commit(self, index: int, temporary_name: str) -> None:
        """Rename realization ``index``, written completely by a worker, into place; record it.

        ``temporary_name`` is a file in the directory made by `write_temporary` (on a dask
        worker, which shares the directory with this process).
        """
        temporary = self.output_dir / temporary_name
        if not temporary.is_file():
            raise OutputDirError(
                f"realization {index} was written to {str(temporary)!r} by a worker, but that "
                "file is not visible here: output_dir must be on a filesystem that the workers "
                "and this process share, at the same path"
            )
        commit_temporary(temporary, self.path(index))
        self._record(index)

    def discard(self, temporary_name: str) -> None:
        """Remove a worker's temporary file that will not be committed."""
        (self.output_dir / temporary_name).unlink(missing_ok=True)

    def _record(self, index: int) -> None:
        self.completed.add(index)
        self.failed.pop(index, None)
        self.flush()

    def mark_failed(self, index: int, error: BaseException) -> None:
        """Record that realization ``index`` failed (it stays missing; a re-run retries it)."""
        self.failed[index] = f"{type(error).__name__}: {error}"

    def mark_stopped(self, error: BaseException) -> None:
        """Record the error that stopped this run (a full disk, Ctrl-C ...) for the manifest."""
        self.stopped = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__

    def flush(self, force: bool = False) -> None:
        """Rewrite the manifest (atomically) when forced or when the last one is old."""
        now = time.monotonic()
        if not force and now - self._last_flush < _FLUSH_INTERVAL:
            return
        self._last_flush = now
        manifest = {
            "format": MANIFEST_FORMAT,
            "digest": self.digest,
            "n_realizations": self.size,
            "config": self.config,
            "threadensemble_version": runtime_info().threadensemble,  # recorded, never compared
            "completed": sorted(self.completed),
            "failed": {str(k): v for k, v in sorted(self.failed.items())},
            "run_report": self.run_report,
            "stopped": self.stopped,
        }
        if self.layout is not None:
            index, layout = self.layout
            manifest["layout"] = {"realization": index, "variables": layout_to_json(layout)}
        _write_json_atomic(manifest, self.output_dir / MANIFEST_NAME)


def open_ensemble(
    output_dir: str | os.PathLike[str], *, allow_incomplete: bool = False, lazy: bool = False
) -> xr.Dataset:
    """Open an ensemble directory as one Dataset with a leading ``realization`` dimension.

    Parameters
    ----------
    output_dir : str or path-like
        A directory written by `simulate_ensemble`.
    allow_incomplete : bool, default False
        Open the realizations present even when some are missing.  The directory's size is
        the largest ``n_realizations`` ever run into it (an extended ensemble is opened whole,
        a smaller re-run does not shrink it).  A file that is not the directory's run's (see
        Raises) is then left out, with a warning naming it.
    lazy : bool, default False
        Open the files lazily as dask arrays (needs dask; not for ragged ensembles), so that
        ensembles larger than memory can be opened.  Reads hold `netcdf_lock`.

    Returns
    -------
    xarray.Dataset
        The realizations in index order, equal to what `simulate_ensemble` returned for the
        same run: loaded into memory (files closed again), or lazy.

    Raises
    ------
    FileNotFoundError
        The directory does not exist or holds no realization file.
    ValueError
        Realizations listed in the manifest are missing and ``allow_incomplete`` is False.
    OutputDirError
        A realization file is not the manifest's run's (its ``threadensemble_run`` or
        ``threadensemble_realization`` attribute differs: copied from another directory, say,
        or unreadable) and ``allow_incomplete`` is False.  Only ``real_<k>.nc`` under
        realization ``k``'s own name is read: other names (``real_000001.nc``) are ignored.

    Warns
    -----
    UserWarning
        With ``allow_incomplete``, naming each file left out because it is not the run's.
    """
    directory = Path(output_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"no ensemble directory at {str(directory)!r}")
    manifest = read_manifest(directory)
    files = ensemble_files(directory, manifest)
    ragged: Sequence[str] = ()
    if manifest is not None:
        n = manifest_size(manifest)
        ragged = manifest["config"].get("ragged", ())
        files = {k: p for k, p in files.items() if k < n}
        for k, path in list(files.items()):
            attrs = _attrs_or_none(path)
            if _of_run(attrs, manifest["digest"], k):
                continue
            reason = _not_of_run(path, attrs, manifest["digest"], k)
            if not allow_incomplete:
                raise OutputDirError(
                    f"{reason}: it is not part of the ensemble; move it away, or pass "
                    "allow_incomplete=True to open the ensemble without it"
                )
            warnings.warn(f"left out {reason}", UserWarning, stacklevel=2)
            del files[k]
        missing = sorted(set(range(n)) - files.keys())
        if missing and not allow_incomplete:
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise ValueError(
                f"{str(directory)!r} holds {len(files)} of {n} realizations (missing: {shown}); "
                "re-run the same call to compute them, or pass allow_incomplete=True"
            )
    if not files:
        raise FileNotFoundError(f"no realization files in {str(directory)!r}")
    return _open_files(files, ragged, lazy)


def open_realizations(store: EnsembleStore, n_realizations: int, lazy: bool) -> xr.Dataset:
    """Open realizations ``0 .. n_realizations-1`` of a run's directory, all complete.

    Raises OutputDirError when a file is no longer this run's (replaced during the run).
    """
    files = {k: store.path(k) for k in range(n_realizations)}
    for k, path in files.items():
        if not _of_run(attrs := _attrs_or_none(path), store.digest, k):
            raise OutputDirError(
                f"{_not_of_run(path, attrs, store.digest, k)}: it was replaced during the run; "
                "re-run the same call to compute it again"
            )
    return _open_files(files, store.config.get("ragged", ()), lazy)


def _open_files(files: Mapping[int, Path], ragged: Sequence[str], lazy: bool) -> xr.Dataset:
    if lazy:
        ensemble = _open_lazily(list(files.values()), list(files), ragged)
    else:
        ensemble = assemble([read_realization(p) for p in files.values()], list(files), ragged)
    # The files' run digest ties them to the manifest; the ensemble equals an in-memory run's.
    ensemble.attrs.pop(ATTR_PREFIX + "run", None)
    return ensemble


def _open_lazily(paths: list[Path], indices: list[int], ragged: Sequence[str]) -> xr.Dataset:
    if ragged:
        raise ValueError(f"lazy=True cannot open an ensemble with ragged dimensions {list(ragged)}")
    try:
        import dask  # noqa: F401
    except ImportError:
        raise ImportError("lazy=True needs dask: pip install 'threadensemble[dask]'") from None
    ensemble = xr.open_mfdataset(
        paths,
        engine="netcdf4",
        lock=netcdf_lock,
        combine="nested",
        concat_dim=REALIZATION_DIM,
        **CONCAT_OPTIONS,
    )
    return label_realizations(ensemble, indices)
