import pytest

from threadensemble._progress import progress_bar


def test_disabled_bar_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress_bar(10, 0, "4 workers, GIL off", enabled=False)
    bar.update(10)
    bar.close()
    assert capsys.readouterr().err == ""


def test_bar_shows_workers_and_resumed_count(capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress_bar(10, 3, "4 workers, GIL off", enabled=True)
    bar.update(7)
    bar.close()
    err = capsys.readouterr().err
    assert "ensemble [4 workers, GIL off]" in err
    assert "10/10" in err
