"""Paired (task, seed) comparison with a bootstrap CI: exact cases, coverage, and the errors."""
import numpy as np
import pandas as pd
import pytest

from shiplib.report.paired import Bootstrap, matched_pairs, paired_comparison, paired_table


def frame(values: dict[str, list[float]], tasks=("t1", "t2", "t3"), seeds=(1, 2, 3), tags=None) -> pd.DataFrame:
    rows = []
    for run, vals in values.items():
        method, _, tag = run.partition("+")
        cells = [(t, s) for t in tasks for s in seeds]
        for (t, s), v in zip(cells, vals):
            rows.append(dict(benchmark="mini", method=method, tag=tag or None, task=t, seed=s, acc_last=v))
    return pd.DataFrame(rows)


def test_constant_difference_gives_a_point_interval():
    a = list(np.linspace(40, 80, 9))
    df = frame({"ship": a, "vpt_deep": [v - 2 for v in a]})
    c = paired_comparison(df, "ship", "vpt_deep")
    assert c.mean_diff == pytest.approx(2.0)
    assert c.ci_low == pytest.approx(2.0) and c.ci_high == pytest.approx(2.0)
    assert (c.wins, c.ties, c.losses, c.n_pairs, c.n_tasks) == (9, 0, 0, 9, 3)
    assert "higher" in c.sentence()


def test_ties_and_tagged_runs():
    a = [50.0] * 9
    df = frame({"ship": a, "ship+no-ap": [50.0] * 3 + [49.0] * 3 + [52.0] * 3})
    c = paired_comparison(df, "ship+no-ap", "ship", tie=0.5)
    assert (c.wins, c.ties, c.losses) == (3, 3, 3)
    assert c.mean_diff == pytest.approx(1 / 3)


def test_interval_covers_the_true_difference_and_task_resampling_is_wider():
    rng = np.random.default_rng(1)
    tasks = [f"t{i}" for i in range(7)]
    task_effect = rng.normal(0, 3, 7).repeat(3)  # seeds of one task move together
    base = rng.uniform(30, 90, 21)
    df = frame({"a": base + 1.0 + task_effect + rng.normal(0, 0.5, 21), "b": base}, tasks=tasks)
    pairs = paired_comparison(df, "a", "b", bootstrap=Bootstrap(resample="pairs"))
    by_task = paired_comparison(df, "a", "b", bootstrap=Bootstrap(resample="tasks"))
    assert pairs.ci_low < pairs.mean_diff < pairs.ci_high
    assert by_task.ci_high - by_task.ci_low > pairs.ci_high - pairs.ci_low
    assert by_task.mean_diff == pytest.approx(pairs.mean_diff)


def test_only_matched_cells_count():
    df = frame({"a": [1.0] * 9, "b": [0.0] * 9})
    df = df[~((df["method"] == "b") & (df["task"] == "t3"))]
    pairs, unmatched = matched_pairs(df, "a", "b")
    assert len(pairs) == 6 and unmatched == 3
    assert paired_comparison(df, "a", "b").unmatched == 3


def test_table_has_one_row_per_run():
    df = frame({"ship": [50.0] * 9, "vpt_deep": [48.0] * 9, "linear": [45.0] * 9})
    t = paired_table(df, "ship", ["vpt_deep", "linear"])
    assert list(t.index) == ["vpt_deep", "linear"]
    assert list(t["difference"]) == [-2.0, -5.0] and list(t["W/T/L"]) == ["0/0/9", "0/0/9"]


@pytest.mark.parametrize("kw, match", [
    (dict(a="nope", b="b"), "no results for run 'nope'"),
    (dict(a="a", b="b", resample="seeds"), "resample must be one of"),
    (dict(a="a", b="b", confidence=95), "confidence must be in"),
    (dict(a="a", b="b", n_boot=10), "too few"),
    (dict(a="a", b="b", metric="acc"), "metric"),
])
def test_bad_arguments_are_named(kw, match):
    df = frame({"a": [1.0] * 9, "b": [0.0] * 9})
    boot = {k: kw.pop(k) for k in ("resample", "confidence", "n_boot") if k in kw}
    with pytest.raises((KeyError, ValueError), match=match):
        paired_comparison(df, **kw, bootstrap=Bootstrap(**boot))


def test_disjoint_runs_and_duplicates_are_errors():
    df = pd.concat([frame({"a": [1.0] * 9}, tasks=("x", "y", "z")), frame({"b": [0.0] * 9})])
    with pytest.raises(ValueError, match="share no"):
        paired_comparison(df, "a", "b")
    dup = pd.concat([frame({"a": [1.0] * 9, "b": [0.0] * 9}), frame({"a": [2.0] * 9})])
    with pytest.raises(ValueError, match="several results"):
        paired_comparison(dup, "a", "b")
