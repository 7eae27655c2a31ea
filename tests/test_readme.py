"""The README's usage example runs as written."""

from pathlib import Path

import pytest

from conftest import python_blocks, run_python_blocks

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_usage_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert python_blocks(README), "README has no python example"
    monkeypatch.chdir(tmp_path)
    run_python_blocks(README)
    assert len(list((tmp_path / "runs" / "exp1").glob("real_*.nc"))) == 20
