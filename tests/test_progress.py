"""Progress bars: widgets in JupyterLab, plain lines (no carriage returns) under papermill, nbval and logs."""
import io
import re
from pathlib import Path

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
    assert [ln.split(" [")[0] for ln in out.getvalue().splitlines()] == ["features: 0/4", "features: 3/4",
                                                                         "features: 4/4"]


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


def test_a_run_bar_names_the_epoch_of_its_last_accuracy(monkeypatch, capsys, tiny_task_root, tiny_vit_file, tmp_path):
    """Evaluated at epochs 0 and 2 of 3: the line of epoch 2 (count 2/3) still shows epoch 0's accuracy, and says so."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from _engine_helpers import tiny_cfg
    from shiplib.engine import run_experiment

    monkeypatch.setenv(progress.ENV, "lines")
    run_experiment(tiny_cfg(tiny_task_root, tiny_vit_file, tmp_path, method="linear", eval_every=2, progress=True))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("svhn/linear/seed3: ")]
    assert [ln.split(" [")[0].split(": ")[1] for ln in lines] == ["0/3", "1/3", "2/3", "3/3"]
    assert re.search(r", acc@epoch 0 \d+\.\d\d\]$", lines[2]) and re.search(r", acc@epoch 2 \d+\.\d\d\]$", lines[3])
    assert not any("acc=" in ln for ln in lines)
