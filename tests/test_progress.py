"""Progress bars: widgets in JupyterLab, plain lines (no carriage returns) under papermill, nbval and logs."""
import io
import re

import pytest

from shiplib.utils import progress


def test_lines_mode_prints_one_line_per_step_and_hides_inner_bars(monkeypatch):
    monkeypatch.setenv(progress.ENV, "lines")
    out = io.StringIO()
    bar = progress.progress_bar(range(3), desc="mini_mnist/ship/seed1", file=out)
    for epoch in bar:
        for _ in progress.progress_bar(range(5), desc="batches", leave=False, file=out):
            pass
        bar.set_postfix(acc=f"{10.0 * epoch:.2f}")
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text and "batches" not in text
    lines = text.splitlines()
    assert [ln.split(" [")[0] for ln in lines] == [f"mini_mnist/ship/seed1: {n}/3" for n in range(4)]
    assert lines[-1].endswith(", acc=20.00]")
    # the part the notebook sanitizer replaces is exactly the bracket
    assert all(re.search(r"\[\d+:\d\d(?::\d\d)?<[^\]\n]*\]$", ln) for ln in lines)


def test_manual_updates_and_close_print_the_last_count_once(monkeypatch):
    monkeypatch.setenv(progress.ENV, "lines")
    out = io.StringIO()
    with progress.progress_bar(total=4, desc="features", file=out) as bar:
        bar.update(3)
        bar.update(1)
    assert [ln.split(" [")[0] for ln in out.getvalue().splitlines()] == ["features: 0/4", "features: 3/4", "features: 4/4"]


def test_mode_choice(monkeypatch):
    monkeypatch.setenv(progress.ENV, "off")
    assert progress.progress_bar(range(2)).disable
    monkeypatch.setenv(progress.ENV, "auto")
    assert progress.progress_mode() in ("terminal", "lines")  # not in a kernel here
    monkeypatch.setenv(progress.ENV, "fancy")
    with pytest.raises(ValueError, match="valid: auto, widgets, terminal, lines, off"):
        progress.progress_mode()


@pytest.mark.parametrize("before", [None, "lines"])
def test_bars_off_draws_nothing_inside_and_restores_the_mode(monkeypatch, before):
    if before is None:
        monkeypatch.delenv(progress.ENV, raising=False)
    else:
        monkeypatch.setenv(progress.ENV, before)
    out = io.StringIO()
    with progress.bars_off():
        for _ in progress.progress_bar(range(3), desc="features", file=out):
            pass
    assert out.getvalue() == "" and progress.os.environ.get(progress.ENV) == before
    with progress.bars_off(False):
        assert progress.os.environ.get(progress.ENV) == before
