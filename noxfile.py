"""Sessions: ``nox -s lint``, ``tests``, ``oldest``, ``stress``, ``compare``, ``processes``,
``docs``.

- ``tests``: the README's ``python -m pytest -n auto`` on every interpreter found (3.11 to
  3.14t); on free-threaded ones with ``PYTHON_GIL=0``, checking that the GIL really is off.
  ``nox -s tests-3.13t`` runs one of them.  A missing interpreter is skipped, except that with
  ``CI=true`` a missing 3.13t fails.
- ``compare``: benchmarks standard CPython 3.13 against free-threaded 3.13t, same source and
  flags, and writes ``docs/benchmarks/`` (``-- --smoke`` for a quick check of the pipeline).
- ``processes``: benchmarks threadensemble (threads and processes) against thread and process
  pools (a hand-rolled ``ThreadPoolExecutor``, ``multiprocessing`` fork and spawn pools,
  ``ProcessPoolExecutor``, joblib, mpire) and a serial loop on the example models, on both.
- ``oldest``: the fast stacking path's equivalence with ``xarray.concat``
  (``tests/test_stacking.py``) with the oldest numpy and xarray that ``pyproject.toml`` allows.
- ``stress``: pytest on ``stress/``, full sizes (``THREADENSEMBLE_STRESS=short``: the CI subset).
- ``lint``: ruff and mypy.
- ``docs``: the Sphinx site, ``docs/_build/html``; warnings are errors.

Works offline with the interpreters installed here (PATH, pyenv, ``/opt/cpython``), and with
internet through uv (when installed) or virtualenv, which can download missing interpreters.
Virtual environments are reused between runs (``-N`` or ``--reuse-venv=no`` rebuilds them).
"""

from __future__ import annotations

import argparse
import functools
import glob
import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = ".ci/constraints-free-threaded.txt"
FREE_THREADED_DEPS = ".ci/install-free-threaded-deps"
PYTHONS = ["3.11", "3.12", "3.13", "3.13t", "3.14", "3.14t"]
CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# Same source, same flags, built by ../shared/bin/cpython313 (see docs/free-threading.md).
SAME_SOURCE = {
    "3.13": Path("/opt/cpython/3.13/bin/python3.13"),
    "3.13t": Path("/opt/cpython/3.13t/bin/python3.13t"),
}
BUILD_SAME_SOURCE = ROOT.parent / "shared" / "bin" / "cpython313"

nox.needs_version = ">=2024.10.9"  # free-threaded "3.13t" interpreters, default=False
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"  # keeps 3.13t environments: netCDF4 is built from source there
nox.options.sessions = ["lint", "tests"]


def _version_of(python: str) -> str | None:
    """Return ``"3.13"`` or ``"3.13t"`` for a working interpreter, None if it does not run."""
    probe = (
        "import sys, sysconfig; print('%d.%d' % sys.version_info[:2]"
        " + ('t' if sysconfig.get_config_var('Py_GIL_DISABLED') else ''))"
    )
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def find_python(version: str) -> str | None:
    """Return an interpreter of ``version`` (e.g. ``"3.13t"``): on PATH, in pyenv, in /opt."""
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [
        shutil.which(f"python{version}"),
        *sorted(glob.glob(f"{pyenv}/versions/{version}*/bin/python{version}"), reverse=True),
        f"/opt/cpython/{version}/bin/python{version}",
    ]
    for candidate in candidates:
        if candidate and _version_of(candidate) == version:
            return candidate
    return None


def _expose_installed_pythons() -> None:
    """Let nox find interpreters installed but not on PATH (pyenv versions not activated).

    nox looks for ``pythonX.Y`` on PATH; a pyenv shim of a version that is not active fails.
    The directory of an interpreter found elsewhere goes at the *end* of PATH: it shadows
    nothing.
    """
    for version in PYTHONS:
        found = find_python(version)
        if found and Path(found).parent != Path(shutil.which(f"python{version}") or "").parent:
            os.environ["PATH"] += os.pathsep + str(Path(found).parent)


_expose_installed_pythons()
# Missing interpreters are skipped (nox says which), except 3.13t in CI: then they fail.
nox.options.error_on_missing_interpreters = CI and find_python("3.13t") is None


def _free_threaded(session: nox.Session) -> bool:
    return str(session.python).endswith("t")


def install(session: nox.Session, extras: str) -> None:
    """Install the project with ``extras`` into the session's environment.

    On 3.13t, numpy, cftime and netCDF4 (no cp313t wheel) come first from
    ``.ci/install-free-threaded-deps``, and ``numpy<2.5`` is kept (the last with cp313t wheels).
    Wheels are preferred there: the newest release of a dependency may have no cp313t wheel yet
    (pandas, say), and building it from source takes many minutes.
    """
    if session.python == "3.13t":
        if session.venv_backend == "uv":
            session.install("pip")  # the script installs with pip
        python = str(Path(session.bin) / "python")
        session.run("bash", FREE_THREADED_DEPS, python, external=True)
        session.install("--prefer-binary", "-c", CONSTRAINTS, "-e", f".[{extras}]")
    else:
        session.install("-e", f".[{extras}]")


def check_interpreter(session: nox.Session) -> None:
    """Fail unless the build is the one asked for and, if free-threaded, the GIL is off.

    Imports what re-enables the GIL on a free-threaded build (netCDF4, cftime via xarray), as the
    tests do: with ``PYTHON_GIL=0`` it must stay off.
    """
    want = "free-threaded" if _free_threaded(session) else "standard"
    session.run(
        "python",
        "-c",
        "import sys, netCDF4, xarray, threadensemble as te\n"
        "info = te.runtime_info(); print(info.describe())\n"
        f"if info.free_threaded != {_free_threaded(session)}: sys.exit('not a {want} build')\n"
        "if info.free_threaded and info.gil_enabled: sys.exit('the GIL is enabled')",
    )


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite, as the README runs it; PYTHON_GIL=0 on free-threaded interpreters."""
    if _free_threaded(session):
        session.env["PYTHON_GIL"] = "0"
    install(session, "test")
    check_interpreter(session)
    session.run("python", "-m", "pytest", "-n", "auto", *session.posargs)


# The oldest versions pyproject.toml allows (numpy>=1.26, xarray>=2024.1), with a pandas of
# their time: what tests/test_stacking.py, the fast path's equivalence with xarray.concat, also
# runs against (the tests session runs it with the newest).
OLDEST = ["numpy==1.26.*", "xarray==2024.1.*", "pandas==2.1.*", "tqdm==4.66.*"]


@nox.session(python="3.11")
def oldest(session: nox.Session) -> None:
    """The fast stacking path against ``xarray.concat`` with the oldest supported xarray."""
    session.install(*OLDEST, "pytest>=8", "pytest-timeout>=2.3")
    session.install("--no-deps", "-e", ".")
    versions = "import numpy, xarray; print(numpy.__version__, xarray.__version__)"
    session.run("python", "-c", versions)
    session.run("python", "-m", "pytest", "tests/test_stacking.py", *session.posargs)


@nox.session(python=PYTHONS, default=False)
def stress(session: nox.Session) -> None:
    """pytest on ``stress/`` at full sizes (collecting no test fails, as pytest's exit code 5).

    ``THREADENSEMBLE_STRESS=short nox -s stress`` runs the short sizes instead.
    """
    session.env["THREADENSEMBLE_STRESS"] = os.environ.get("THREADENSEMBLE_STRESS", "full")
    if _free_threaded(session):
        session.env["PYTHON_GIL"] = "0"
    install(session, "test")
    check_interpreter(session)
    session.run("python", "-m", "pytest", "stress", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy (src, as configured; then benchmarks and noxfile;
    then tests/typing, calls of the typed front ends, right and wrong).

    The optional dependencies are installed so that mypy checks their use (dask in src,
    matplotlib and psutil in benchmarks, nox here).
    """
    session.install("-e", ".[lint,bench,dask]", "nox", "types-psutil")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("mypy", "benchmarks", "noxfile.py")
    session.run("mypy", "tests/typing")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (Sphinx, MyST) into docs/_build/html; warnings are errors.

    Always from scratch: a cached build would not repeat the warnings of unchanged pages.  The
    pages' code examples run in the test suite (tests/test_docs.py), not here.
    """
    session.install("-e", ".[docs]")
    shutil.rmtree(ROOT / "docs" / "_build", ignore_errors=True)
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html",
        *session.posargs,
    )  # fmt: skip


def _same_source_pythons(session: nox.Session) -> dict[str, str]:
    """Return the 3.13 and 3.13t to compare: same-source builds, else whatever is found."""
    if not all(p.exists() for p in SAME_SOURCE.values()) and BUILD_SAME_SOURCE.exists():
        session.log("building CPython 3.13 and 3.13t from one source (about 10 minutes)")
        session.run("bash", str(BUILD_SAME_SOURCE), "both")
    if all(p.exists() for p in SAME_SOURCE.values()):
        return {label: str(path) for label, path in SAME_SOURCE.items()}
    found = {label: find_python(label) for label in SAME_SOURCE}
    if not all(found.values()) and shutil.which("uv"):
        session.run("uv", "python", "install", *SAME_SOURCE)
        for label in SAME_SOURCE:
            where = session.run("uv", "python", "find", label, silent=True)
            found[label] = str(where).strip() if where else None
    missing = [label for label, path in found.items() if not path]
    if missing:
        session.error(f"compare needs CPython {' and '.join(missing)}: none found")
    session.warn("not the same-source builds of /opt/cpython: see the report's configure flags")
    return {label: str(path) for label, path in found.items()}


def _bench_env(session: nox.Session, label: str, base: str, extra: Sequence[str] = ()) -> str:
    """Create (or reuse) ``.nox/compare-envs/LABEL`` with the project and its bench extra.

    Both interpreters get ``numpy<2.5`` (the constraint 3.13t needs), so both run the same numpy;
    wheels are preferred (the newest matplotlib may have no cp313t wheel yet).  ``extra``:
    packages only a benchmark needs (mpire: never a dependency of the project).
    """
    venv = ROOT / ".nox" / "compare-envs" / label
    python = str(venv / "bin" / "python")
    inputs = [base, *extra, *(Path(ROOT, f).read_text() for f in ("pyproject.toml", CONSTRAINTS))]
    stamp, digest = venv / "installed", hashlib.sha256("\0".join(inputs).encode()).hexdigest()
    if _version_of(python) != label:
        session.run(base, "-m", "venv", "--clear", str(venv))
    elif stamp.exists() and stamp.read_text() == digest:
        return python
    if label.endswith("t"):
        session.run("bash", FREE_THREADED_DEPS, python)
    pip = [python, "-m", "pip", "install", "-q", "--prefer-binary", "-c", CONSTRAINTS]
    session.run(*pip, "-e", ".[bench]", *extra)
    stamp.write_text(digest)
    return python


@nox.session(python=False, default=False)
def compare(session: nox.Session) -> None:
    """Benchmark 3.13 against 3.13t into docs/benchmarks/; ``-- --smoke`` for a quick check.

    Arguments after ``--`` go to ``python -m benchmarks.interpreters`` (``--smoke``, ``--workers``,
    ``--repeats``, ``--workload``, ``--out``).  A smoke run writes into ``.nox/compare-smoke/``.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path)
    known, _ = parser.parse_known_args(session.posargs)
    out = known.out or ROOT / (".nox/compare-smoke" if known.smoke else "docs/benchmarks")
    bases = _same_source_pythons(session)
    pythons = {label: _bench_env(session, label, base) for label, base in bases.items()}
    args = [f"--python={label}={python}" for label, python in pythons.items()]
    report = [out / name for name in ("report.md", "speedup.png", "results.json")]
    for path in report:
        path.unlink(missing_ok=True)
    baseline = next(iter(pythons.values()))
    session.run(baseline, "-m", "benchmarks.interpreters", *args, *session.posargs, f"--out={out}")
    if not all(path.exists() and path.stat().st_size for path in report):
        session.error(f"compare did not write all of {', '.join(map(str, report))}")
    session.log(f"report: {report[0]}")


@nox.session(python=False, default=False)
def processes(session: nox.Session) -> None:
    """threadensemble against thread and process pools, 3.13 and 3.13t: docs/benchmarks/processes.*.

    Arguments after ``--`` go to ``python -m benchmarks.pools`` (``--smoke``, ``--long``,
    ``--workers``, ``--repeats``, ``--example``, ``--runner``, ``--out``).  The short length
    takes about 30 minutes, ``-- --long`` about 1.5 hours more (see docs/benchmarks.md);
    ``-- --smoke`` a few.
    mpire is installed into the benchmark environments only.
    """
    bases = _same_source_pythons(session)
    pythons = {
        label: _bench_env(session, label, base, extra=["mpire"]) for label, base in bases.items()
    }
    args = [f"--python={label}={python}" for label, python in pythons.items()]
    baseline = next(iter(pythons.values()))
    session.run(baseline, "-m", "benchmarks.pools", *args, *session.posargs)
