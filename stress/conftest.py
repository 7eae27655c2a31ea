"""Stress tests: far more threads than cores, many files, injected faults, long runs.

The default sizes are a short subset (CI runs it); ``THREADENSEMBLE_STRESS=full`` (set by
``nox -s stress``) runs the full sizes of the reliability issue.  Every test records the load
it held and what it checked; the figures are printed at the end of the run, for
docs/reliability.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

import threadensemble as te

FULL = os.environ.get("THREADENSEMBLE_STRESS") == "full"
_FIGURES: list[str] = []


def size(short: int, full: int) -> int:
    """Return the full size under THREADENSEMBLE_STRESS=full, else the short one."""
    return full if FULL else short


@pytest.fixture
def record() -> Callable[[str], None]:
    """Record one line of figures for the end-of-run summary."""
    return _FIGURES.append


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads as often as possible on the GIL build, to shake out races."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    info = te.runtime_info()
    terminalreporter.section(f"stress figures ({'full' if FULL else 'short'} sizes)")
    terminalreporter.write_line(f"{info.describe()}, {info.cpu_count} CPUs")
    for line in _FIGURES:
        terminalreporter.write_line(line)
