"""Result tables: group means in both conventions, protocols kept apart, seeds, params, published rows."""
import re

import numpy as np
import pandas as pd
import pytest

from shiplib.data import get_task, list_tasks
from shiplib.engine import RunConfig, published_results, run_experiment
from shiplib.report import (comparable_published, group_means, published_table, result_summary, seed_summary,
                            seed_table, task_order, vtab1k_table)
from shiplib.report.tables import MEAN_3G, footnotes, format_numbers, published_protocol, published_seeds

VTAB = task_order("vtab1k")


def test_task_order_is_grouped_and_complete():
    assert sorted(VTAB) == sorted(list_tasks(benchmark="vtab1k")) and len(VTAB) == 19
    groups = [get_task(t).group for t in VTAB]
    assert groups == sorted(groups, key=["natural", "specialized", "structured"].index)


def test_published_rows_match_a_hand_computation():
    pub = published_results()
    table = published_table()
    for method, sub in pub.groupby("method"):
        row = table.loc[f"{method} (published)"]
        acc = sub.set_index("task")["accuracy"]
        g = {grp: np.mean([acc[t] for t in VTAB if get_task(t).group == grp])
             for grp in ("natural", "specialized", "structured")}
        assert row["natural"] == pytest.approx(g["natural"])
        assert row[MEAN_3G] == pytest.approx(np.mean(list(g.values())))
        assert row["mean (19)"] == pytest.approx(acc.mean())
    # VPT paper, Table 1 (VPT-deep): group means 78.48 / 82.43 / 54.98 (per-task values are rounded, hence 0.05)
    vpt = table.loc["VPT-deep (published)"]
    assert [vpt["natural"], vpt["specialized"], vpt["structured"]] == pytest.approx([78.48, 82.43, 54.98], abs=0.05)


def test_published_protocols_are_labelled():
    table = published_table()
    assert table.loc["VPT-deep (published)", "protocol"] == "last epoch"
    assert table.loc["VPT-shallow (published)", "protocol"] == "last epoch"
    assert table.loc["NOAH (published)", "protocol"] == "max over epochs"
    assert table.loc["SHIP official (published)", "protocol"] == "max over epochs"
    assert published_protocol("something else") == "see note"
    assert table.loc["SHIP official (published)", "params (M)"] == pytest.approx(0.5827, abs=1e-3)
    assert np.isnan(table.loc["NOAH (published)", "params (M)"])


def test_vtab_table_without_results_shows_published_only(tmp_path):
    table = vtab1k_table(tmp_path / "nothing")
    assert list(table.index) == [f"{m} (published)" for m in dict.fromkeys(published_results()["method"])]
    assert list(table.columns[:3]) == ["protocol", "mean (3g)", "mean (19)"]  # visible without scrolling
    assert list(table.columns[3:22]) == VTAB


def test_vtab_table_ours_two_protocols_seeds_and_params(tmp_path, write_fake_result):
    for i, task in enumerate(VTAB):
        for seed, shift in ((1, 0.0), (2, 2.0)):
            write_fake_result(task, "ship", seed, 50.0 + i + shift, acc_max=60.0 + i + shift, trainable=1000 * (i + 1))
    write_fake_result("svhn", "vpt_deep", 1, 40.0)  # one task only: no group or overall means
    write_fake_result("svhn", "ship", 1, 99.0, protocol="tune")  # other protocol: not in the final table
    table = vtab1k_table(tmp_path / "results")
    last, best = table.loc["ship (ours, last epoch)"], table.loc["ship (ours, max over epochs)"]
    expected = {t: 51.0 + i for i, t in enumerate(VTAB)}  # mean of the two seeds
    assert [last[t] for t in VTAB] == pytest.approx(list(expected.values()))
    assert [best[t] for t in VTAB] == pytest.approx([v + 10 for v in expected.values()])
    nat = [expected[t] for t in VTAB if get_task(t).group == "natural"]
    assert last["natural"] == pytest.approx(np.mean(nat))
    groups = [np.mean([expected[t] for t in VTAB if get_task(t).group == g]) for g in
              ("natural", "specialized", "structured")]
    assert last[MEAN_3G] == pytest.approx(np.mean(groups))
    assert last["mean (19)"] == pytest.approx(np.mean(list(expected.values())))
    assert last[MEAN_3G] != pytest.approx(last["mean (19)"])  # the two conventions differ here
    assert last["params (M)"] == pytest.approx(np.mean([1000 * (i + 1) for i in range(19)]) / 1e6)
    assert (last["protocol"], best["protocol"], last["seeds"]) == ("last epoch", "max over epochs", "2")
    vpt = table.loc["vpt_deep (ours, last epoch)"]
    assert vpt["svhn"] == 40.0 and np.isnan(vpt["natural"]) and np.isnan(vpt[MEAN_3G]) and vpt["seeds"] == "1"
    assert "SHIP official (published)" in table.index


def test_group_means_need_every_task_of_the_group():
    wide = pd.DataFrame([{t: 10.0 for t in VTAB}, {t: 10.0 for t in VTAB if t != "dtd"}], index=["full", "partial"])
    out = group_means(wide, "vtab1k")
    assert out.loc["full", MEAN_3G] == 10.0 and out.loc["partial", "specialized"] == 10.0
    assert np.isnan(out.loc["partial", "natural"]) and np.isnan(out.loc["partial", "mean (19)"])


def test_seed_summary_std_and_tags(tmp_path, write_fake_result):
    from shiplib.engine import load_results

    for seed, acc in ((1, 70.0), (2, 72.0), (3, 77.0)):
        write_fake_result("dtd", "ship", seed, acc)
    write_fake_result("dtd", "ship", 1, 10.0, tag="no-sip")
    s = seed_summary(load_results(tmp_path / "results"), "acc_last").set_index("run")
    assert s.loc["ship", "mean"] == pytest.approx(73.0)
    assert s.loc["ship", "std"] == pytest.approx(np.std([70, 72, 77], ddof=1))
    assert s.loc["ship", "seeds"] == [1, 2, 3] and s.loc["ship", "n_seeds"] == 3
    assert s.loc["ship+no-sip", "mean"] == 10.0 and np.isnan(s.loc["ship+no-sip", "std"])
    with pytest.raises(ValueError, match="metric must be one of"):
        seed_summary(load_results(tmp_path / "results"), "acc")


def test_seed_table_formats_mean_std_and_seed_spread(tmp_path, write_fake_result):
    for i, task in enumerate(VTAB):
        write_fake_result(task, "ship", 1, 50.0)
        write_fake_result(task, "ship", 2, 54.0)
    table = seed_table(tmp_path / "results", benchmark="vtab1k")
    row = table.loc["ship"]
    assert row["svhn"] == f"52.0 ± {np.std([50, 54], ddof=1):.1f}"
    assert row["mean (19)"] == 52.0 and row[MEAN_3G] == 52.0
    assert row["seed std of mean (19)"] == pytest.approx(round(np.std([50, 54], ddof=1), 1))
    assert row["protocol"] == "last epoch" and row["seeds"] == "2"


def test_mini_table_when_the_mini_benchmark_exists(tmp_path, write_fake_result):
    from shiplib.report import mini_table

    tasks = list_tasks(benchmark="mini")
    if not tasks:
        with pytest.raises(ValueError, match="no tasks registered for benchmark 'mini'"):
            mini_table(tmp_path / "results")
        return
    for seed in (1, 2):
        for task in tasks:
            write_fake_result(task, "ship", seed, 60.0 + seed)
    table = mini_table(tmp_path / "results")
    assert table.loc["ship", tasks[0]] == f"61.5 ± {np.std([61, 62], ddof=1):.1f}"
    assert table.loc["ship", f"mean ({len(tasks)})"] == 61.5


def test_comparable_published_keeps_the_protocol():
    last = comparable_published("svhn", "acc_last")
    assert set(last["method"]) == {"VPT-shallow", "VPT-deep"}
    best = comparable_published("svhn", "acc_max_over_epochs")
    assert set(best["method"]) == {"NOAH", "SHIP official"}


def test_result_summary_of_a_real_run(tiny_task_root, tiny_vit_file, tmp_path):
    cfg = RunConfig(task="svhn", method="linear", seed=1, epochs=2, batch_size=16, eval_every=1, lr=1e-2,
                    backbone=str(tiny_vit_file), img_size=32, data_root=str(tiny_task_root),
                    results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"), progress=False)
    result = run_experiment(cfg)
    summary = result_summary(result)
    assert summary.loc["acc_last (%)", "value"] == round(result["acc_last"], 2)
    assert summary.loc["trainable parameters", "value"] == 330
    assert "optimistic" in summary.loc["acc_max_over_epochs (%)", "meaning"]
    assert re.fullmatch(r"\d+(\.\d+)? s", summary.loc["wall time", "value"])  # a duration, sanitizable by unit
    assert "wall time (s)" not in summary.index
    rendered = summary.to_string() + summary.to_html()
    assert str(tmp_path) not in rendered and "/" not in rendered.replace("</", "")  # no path of any kind
    assert result["started_at"][:4] not in summary.to_string()  # no date
    table = vtab1k_table(tmp_path / "results")
    assert table.loc["linear (ours, last epoch)", "svhn"] == pytest.approx(result["acc_last"])


def test_committed_comparison_finds_the_same_run(tmp_path, write_fake_result):
    from shiplib.engine.results import read_result
    from shiplib.report import committed_comparison

    committed = read_result(write_fake_result("mini_mnist", "ship", 1, 60.0, acc_max=61.0))
    rerun = dict(committed, acc_last=60.2)
    table = committed_comparison(rerun, tmp_path / "results")
    assert table.loc["acc_last", "reference"] == 60.0 and table["reproduced"].all()
    assert table.loc["acc_last", "tolerance"] == "±1 points"
    # the committed folder is given as an absolute path here: the label still holds only results/<...>
    assert table.index.name == "results/mini/mini_mnist/ship/seed1.json: reproduced True"
    assert str(tmp_path) not in table.index.name
    # the same table, word for word, for another re-run within the tolerance
    assert committed_comparison(dict(committed, acc_last=59.4), tmp_path / "results").equals(table)
    off = committed_comparison(dict(committed, acc_last=58.0), tmp_path / "results")
    assert not off.loc["acc_last", "reproduced"] and off.index.name.endswith("reproduced False")
    missing = committed_comparison(dict(rerun, seed=7), tmp_path / "results")
    assert missing.empty and missing.index.name == \
        "no committed run with the same settings at results/mini/mini_mnist/ship/seed7.json"
    other = dict(rerun, identity={"lr": 1.0})
    assert committed_comparison(other, tmp_path / "results").empty


def test_result_summary_against_the_committed_run(tmp_path, write_fake_result):
    from shiplib.engine.results import read_result

    committed = read_result(write_fake_result("mini_mnist", "ship", 1, 60.0, acc_max=61.0))
    near = result_summary(dict(committed, acc_last=60.4), tmp_path / "results")
    assert near.loc["acc_last (%)", "value"] == "measured 60.40, reference 60.00 ±1 points (reproduced)"
    below = result_summary(dict(committed, acc_last=59.8), tmp_path / "results").loc["acc_last (%)", "value"]
    assert below == "measured 59.80, reference 60.00 ±1 points (reproduced)"
    far = result_summary(dict(committed, acc_last=57.0), tmp_path / "results")
    assert far.loc["acc_last (%)", "value"] == \
        "measured 57.00, reference 60.00 ±1 points (not reproduced: beyond the tolerance)"
    assert result_summary(dict(committed, seed=5), tmp_path / "results").loc["acc_last (%)", "value"] == 60.0


def test_write_tables_renders_csv_and_markdown(tmp_path, write_fake_result):
    from shiplib.report import markdown_table, write_tables

    for seed, acc in ((1, 50.0), (2, 54.0)):
        write_fake_result("mini_mnist", "ship", seed, acc)
    paths = write_tables(tmp_path / "results", tmp_path / "tables")
    names = sorted(p.name for p in paths)
    assert "mini_final_acc_last.md" in names and "vtab1k_final.csv" in names and len(names) == 6
    md = (tmp_path / "tables" / "mini_final_acc_last.md").read_text()
    assert md.splitlines()[0].startswith("| run | mini_mnist") and "52.0 ± 2.8" in md
    assert (markdown_table(pd.DataFrame({"a": ["x|y"], "b": [None]}), index=False)
            == "| a | b |\n|---|---|\n| x\\|y |  |\n")


def test_main_tables_show_the_methods_own_runs_and_tagged_runs_only_on_request(tmp_path, write_fake_result):
    from shiplib.report import benchmark_summary, mini_table

    tasks = task_order("mini")
    for seed in (1, 2):
        for task in tasks:
            write_fake_result(task, "ship", seed, 60.0 + seed)
            write_fake_result(task, "vpt_deep", seed, 50.0 + seed)
    write_fake_result(tasks[0], "ship", 1, 10.0, tag="no-sip")  # an ablation variant: one seed, one task
    table = mini_table(tmp_path / "results")
    assert list(table.index) == ["ship", "vpt_deep"]
    assert table[f"mean ({len(tasks)})"].notna().all() and table[MEAN_3G].notna().all()
    assert (table["seeds"] == "2").all()
    tagged = mini_table(tmp_path / "results", include_tagged=True)
    assert list(tagged.index) == ["ship", "vpt_deep", "ship+no-sip"] and tagged.loc["ship+no-sip", "seeds"] == "1"
    assert set(benchmark_summary(tmp_path / "results", "mini", include_tagged=False)["run"]) == {"ship", "vpt_deep"}
    assert "ship+no-sip" in set(benchmark_summary(tmp_path / "results", "mini")["run"])  # figures pick their runs


def test_vtab_table_leaves_tagged_runs_out_by_default(tmp_path, write_fake_result):
    for task in VTAB:
        write_fake_result(task, "ship", 1, 50.0)
    write_fake_result("svhn", "ship", 1, 10.0, tag="no-sip")
    rows = vtab1k_table(tmp_path / "results", published=False).index
    assert list(rows) == ["ship (ours, last epoch)", "ship (ours, max over epochs)"]
    rows = vtab1k_table(tmp_path / "results", published=False, include_tagged=True).index
    assert "ship+no-sip (ours, last epoch)" in rows


def test_every_row_has_its_seeds(tmp_path, write_fake_result):
    table = vtab1k_table(tmp_path / "nothing")  # published rows only
    assert table["seeds"].tolist() == ["5", "5", "1", "1"]  # VPT: mean of 5 seeds; NOAH: single run; SHIP: seed 1
    assert (table["seeds"] != "").all() and table["seeds"].notna().all()
    assert published_seeds("mean of 3 runs") == "3" and published_seeds("no word on it") == "?"
    write_fake_result("svhn", "ship", 1, 50.0)
    ours = vtab1k_table(tmp_path / "results")
    assert ours["seeds"].notna().all() and (ours["seeds"] != "").all()


def test_footnotes_take_the_long_texts_out_of_the_table():
    table = vtab1k_table("no-such-results-folder")
    main, notes = footnotes(table)
    assert "source" not in main and "note" not in main and main["ref"].tolist() == ["[1]", "[2]", "[3]", "[4]"]
    texts = [v for v in main.select_dtypes(exclude="number").to_numpy().ravel() if isinstance(v, str)]
    assert max(map(len, texts)) <= 20  # nothing to cut ("selec…")
    with pd.option_context("display.max_colwidth", 50):
        assert "..." not in main.to_string()
    assert notes.loc["[4]", "note"] == table.loc["SHIP official (published)", "note"]  # in full
    assert list(notes.columns) == ["source", "note"] and notes.index.name == "ref"
    same, _ = footnotes(pd.DataFrame({"x": [1, 2], "note": ["a", "a"]}))
    assert same["ref"].tolist() == ["[1]", "[1]"]


def test_format_numbers_is_plain_text_with_fixed_decimals():
    frame = pd.DataFrame({"acc": [52.345, np.nan], "protocol": ["last epoch", "x"], "runs": [2, 3]}, index=["a", "b"])
    out = format_numbers(frame, decimals=1)
    assert out["acc"].tolist() == ["52.3", "–"] and out["protocol"].tolist() == ["last epoch", "x"]
    assert out["runs"].tolist() == [2, 3]
    assert isinstance(out, pd.DataFrame) and "0x" not in repr(out) and 'id="T_' not in out.to_html()


def test_overview_table_has_one_row_per_method_in_display_order(tmp_path, write_fake_result):
    from shiplib.report import markdown_table, overview_table

    for seed, shift in ((1, 0.0), (2, 2.0)):
        for task in ("mini_mnist", "mini_textures"):
            write_fake_result(task, "ship", seed, 60.0 + shift, trainable=900 if task == "mini_mnist" else 1100)
            write_fake_result(task, "linear", seed, 50.0 + shift, trainable=100)
    write_fake_result("mini_mnist", "ship", 1, 1.0, tag="no-sip")  # a variant: not a row
    table = overview_table(tmp_path / "results")
    assert list(table.index) == ["linear", "ship"]
    assert table.loc["ship", "mnist"] == "61.0 ± 1.4" and table.loc["ship", "clevr_count"] == ""
    assert table.loc["ship", "trainable (with head, mean over tasks)"] == "1,000" and table.loc["ship", "runs"] == "4"
    assert table.loc["linear", "mean of 7"] == ""  # only with a result on every task
    assert markdown_table(table).startswith("| method | mnist | textures |")


def test_a_grid_tag_selects_that_grids_runs_under_plain_method_names(tmp_path, write_fake_result):
    from shiplib.report import mini_table, overview_table

    for seed in (1, 2):
        write_fake_result("mini_mnist", "ship", seed, 60.0)  # the untagged grid
        write_fake_result("mini_mnist", "ship", seed, 70.0 + seed, tag="scaled-e20")
        write_fake_result("mini_mnist", "linear", seed, 40.0, tag="scaled-e20")
    write_fake_result("mini_mnist", "ship", 1, 1.0, tag="no-sip.scaled-e20")  # a variant in that grid: not a row
    scaled = overview_table(tmp_path / "results", grid_tag="scaled-e20")
    assert list(scaled.index) == ["linear", "ship"]
    assert scaled.loc["ship", "mnist"] == "71.5 ± 0.7" and scaled.loc["ship", "runs"] == "2"
    assert overview_table(tmp_path / "results").loc["ship", "mnist"] == "60.0 ± 0.0"
    assert list(overview_table(tmp_path / "results").index) == ["ship"]
    assert mini_table(tmp_path / "results", grid_tag="scaled-e20").loc["ship", "mini_mnist"] == "71.5 ± 0.7"
    assert overview_table(tmp_path / "results", grid_tag="scaled-e40").empty  # no such grid: no rows


def test_measured_accuracies_differ_only_where_the_notebook_sanitizer_replaces_them(tmp_path, write_fake_result):
    """Strict nbval compares vtab.ipynb's summary with the committed one through notebooks/nbval_sanitize.cfg: a
    re-run within tolerance renders the same sanitized text and HTML; one beyond it does not."""
    import configparser
    import re
    from pathlib import Path

    from shiplib.engine.results import read_result

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "notebooks" / "nbval_sanitize.cfg")

    def sanitized(acc_last):
        frame = result_summary(dict(committed, acc_last=acc_last), tmp_path / "results")
        texts = [frame.to_string(), frame.to_html()]
        for section in cfg.sections():
            texts = [re.sub(cfg[section]["regex"], cfg[section]["replace"], t) for t in texts]
        return texts

    committed = read_result(write_fake_result("mini_mnist", "ship", 1, 60.0, acc_max=61.0))
    assert sanitized(60.4) == sanitized(59.6) != sanitized(57.0)
