"""Shared test helpers: a small reference model, thread bookkeeping, Markdown code blocks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import threadensemble as te


class Buffers:
    """Mutable model state that a realization overwrites completely (as a correct model does)."""

    def __init__(self, n: int) -> None:
        self.values = np.zeros(n)
        self.history: list[int] = []


def noisy_walk(scale: float, *, state: Buffers) -> xr.Dataset:
    """A random walk that works in its thread's buffers: correct only if they are not shared."""
    rng = te.get_rng()
    state.values[:] = 0.0
    for i in range(1, state.values.size):
        state.values[i] = state.values[i - 1] + scale * rng.standard_normal()
    state.history.append(te.current_realization() or 0)
    return xr.Dataset({"walk": ("step", state.values.copy())})


def fragile(
    scale: float, *, state: Buffers, log: str, fail_on: tuple[int, ...] = (),
    fail_first_attempt_on: tuple[int, ...] = (), pause: float = 0.0,
) -> xr.Dataset:  # fmt: skip
    """noisy_walk that logs each attempt as a file in ``log`` (shared by all processes).

    Sleeps ``pause`` seconds first; fails with ValueError on ``fail_on``, and with OSError on
    the first attempt of ``fail_first_attempt_on``.
    """
    k = te.current_realization()
    time.sleep(pause)
    (Path(log) / f"{k}-{uuid.uuid4().hex}").touch()
    if k in fail_on:
        raise ValueError(f"bad realization {k}")
    if k in fail_first_attempt_on and len(list(Path(log).glob(f"{k}-*"))) == 1:
        raise OSError("transient")
    return noisy_walk(scale, state=state)


def attempts(log: Path) -> list[int]:
    """Return the realizations attempted, one entry per attempt, from ``fragile``'s log."""
    return sorted(int(p.name.split("-")[0]) for p in log.iterdir())


@pytest.fixture
def walk_kwargs() -> dict[str, object]:
    """simulate_ensemble arguments for `noisy_walk`."""
    return {"args": (0.5,), "state": Buffers(50), "inject": "state", "seed": 7, "progress": False}


def worker_threads() -> list[threading.Thread]:
    """Return the live threads the engine started."""
    return [t for t in threading.enumerate() if t.name.startswith("threadensemble")]


@pytest.fixture
def no_leftover_threads() -> Iterator[None]:
    """Check that a test leaves no engine thread running."""
    yield
    for thread in worker_threads():
        thread.join(timeout=5)
    assert worker_threads() == []


# A ```python block of a Markdown page preceded by this line is not run by the tests (the
# reason is required); docs/index.md documents it for authors.
SKIP_MARKER = re.compile(r"<!-- docs-test: skip \((?P<reason>[^)]+)\) -->")


@dataclass(frozen=True)
class CodeBlock:
    """A ```python block of a Markdown file."""

    line: int  # line number of its first line of code in the file
    code: str
    skip: str | None  # the reason of a skip marker right before the block, if any


def python_blocks(path: Path) -> list[CodeBlock]:
    """Return every ```python block of a Markdown file, in order."""
    text = path.read_text()
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE):
        before = text[: match.start()]
        previous_line = before.rstrip("\n").rpartition("\n")[2]
        skip = SKIP_MARKER.fullmatch(previous_line)
        line = before.count("\n") + 2
        blocks.append(CodeBlock(line, match.group(1), skip["reason"] if skip else None))
    return blocks


def run_python_blocks(path: Path) -> dict[str, Any]:
    """Run the blocks of a Markdown file that are not marked skip, in order, in one namespace.

    Tracebacks give the file's own line numbers.  Returns the namespace.
    """
    namespace: dict[str, Any] = {"__name__": f"docs_{path.stem.replace('-', '_')}"}
    for block in python_blocks(path):
        if block.skip is None:
            code = "\n" * (block.line - 1) + block.code  # so that line numbers match the file
            exec(compile(code, str(path), "exec"), namespace)
    return namespace


def assert_threads_equal_one_worker(spec: te.ModelSpec, n_realizations: int = 8) -> None:
    """The ensemble of ``spec`` on 4 threads is identical, bit for bit, to the one on 1 worker."""
    serial = spec.run(n_realizations, n_workers=1, seed=11, progress=False)
    threaded = spec.run(n_realizations, n_workers=4, seed=11, progress=False)
    xr.testing.assert_identical(serial, threaded)


def outputs_under_hash_seeds(script: str, seeds: Iterable[str], timeout: float = 120) -> set[str]:
    """Run ``script`` in a fresh interpreter per ``PYTHONHASHSEED``; return what they printed.

    One element means the output (a fingerprint, say) does not depend on str hash order.
    """
    return {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
        for seed in seeds
    }
