"""Progress bars (facetune.progress): shown for long work, silent for quick work off a terminal."""
from __future__ import annotations

from facetune import progress
from facetune.progress import progress_bar


def test_quick_work_off_a_terminal_draws_no_bar(capsys):
    assert list(progress_bar(range(3), total=3, what="decoding images", unit="img")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_long_work_off_a_terminal_draws_its_bar_to_the_end_on_stderr(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # every piece of work counts as long
    assert list(progress_bar(range(3), total=3, what="decoding images", unit="img")) == [0, 1, 2]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "decoding images: 100%" in captured.err and "3/3" in captured.err


def test_a_disabled_bar_draws_nothing(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    assert list(progress_bar(range(3), what="decoding images", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
