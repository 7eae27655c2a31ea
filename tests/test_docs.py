"""The documentation's examples run: every ```python block of docs/*.md, and the docstrings'.

A block preceded by ``<!-- docs-test: skip (reason) -->`` is not run (see docs/index.md).
The Sphinx build itself is ``nox -s docs``.
"""

import doctest
import importlib
import io
import pkgutil
from pathlib import Path

import pytest

import threadensemble as te
from conftest import SKIP_MARKER, python_blocks, run_python_blocks

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
NEEDS = {"dask.md": "distributed"}  # pages whose examples need an optional dependency
MODULES = sorted(
    module.name
    for module in pkgutil.walk_packages(te.__path__, "threadensemble.")
    if module.name != "threadensemble.__main__"  # importing it runs the command line
)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if page.name in NEEDS:
        pytest.importorskip(NEEDS[page.name], reason=f"{page.name} needs {NEEDS[page.name]}")
    monkeypatch.chdir(tmp_path)
    run_python_blocks(page)


def test_every_skip_marker_is_well_formed_and_right_before_a_python_block() -> None:
    for page in PAGES:
        text = page.read_text()
        markers = [line for line in text.splitlines() if line.startswith("<!-- docs-test")]
        assert all(SKIP_MARKER.fullmatch(line) for line in markers), f"{page.name}: {markers}"
        skipped = [block for block in python_blocks(page) if block.skip is not None]
        assert len(markers) == len(skipped), f"{page.name}: a marker is not before a block"


def test_api_reference_lists_everything_public() -> None:
    api = (DOCS / "api.md").read_text()
    assert [name for name in te.__all__ if f"threadensemble.{name}\n" not in api] == []


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if module == "threadensemble._distributed":
        pytest.importorskip("distributed", reason="the dask backend needs distributed")
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    for test in doctest.DocTestFinder().find(importlib.import_module(module), module):
        runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()
