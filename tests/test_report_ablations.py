"""Ablation variants: valid tags and options, the CLI's code path, summaries/tables, running missing variants."""
import numpy as np
import pytest

from shiplib.__main__ import _config, build_parser
from shiplib.engine import resolve_config
from shiplib.engine.results import check_tag
from shiplib.methods import method_options
from shiplib.launch.ablations import (ABLATION_VARIANTS, FACTORS, REFERENCE, get_variant, missing_runs, run_ablations,
                                     select_variants, sweep_commands, variant_config, variants_frame)
from shiplib.report import ablation_results, ablation_summary, ablation_table


def test_variants_are_unique_valid_and_cover_every_factor():
    tags = [v.tag for v in ABLATION_VARIANTS]
    assert len(tags) == len(set(tags))
    options = method_options("ship")
    for v in ABLATION_VARIANTS:
        assert check_tag(v.tag) == v.tag and v.factor in FACTORS and v.options
        assert set(v.options) <= set(options), v
    assert {v.factor for v in ABLATION_VARIANTS} == set(FACTORS)
    assert {tuple(v.options) for v in select_variants(factors=["components"])} >= {(p,) for p in
                                                                                   ("sip", "ssp", "ap", "pml", "da")}
    assert len(variants_frame()) == len(ABLATION_VARIANTS)
    with pytest.raises(KeyError, match="unknown ablation variant"):
        get_variant("no-such")
    with pytest.raises(ValueError, match="unknown ablation factor"):
        select_variants(factors=["depth"])


@pytest.mark.parametrize("tag", ["no-sip", "sip-only", "alpha=0.95", "K=5", "protos=50", "protos=random",
                                 "da_scale=0.3"])
def test_sweep_command_and_variant_config_are_the_cli_path(tag):
    (cmd,) = sweep_commands(tasks=["svhn"], seeds=["2"], tags=[tag])
    argv = cmd.split()[3:]  # drop "python -m shiplib"
    args = build_parser().parse_args(argv)
    assert (args.command, args.tag, args.tasks, args.methods) == ("sweep", tag, ["svhn"], ["ship"])
    cli = resolve_config(_config(args, "svhn", "ship", 2)).identity()
    ours = resolve_config(variant_config(tag, "svhn", seed=2)).identity()
    assert cli == ours
    for key, value in get_variant(tag).options.items():
        assert ours["options"][key] == value


def test_variant_options_win_over_shared_settings():
    cfg = variant_config("K=5", "svhn", prompt_length=2, epochs=3, results_dir="somewhere")
    assert cfg.options["prompt_length"] == 5 and cfg.epochs == 3 and cfg.results_dir == "somewhere"


def test_summary_and_tables_from_tagged_results(tmp_path, write_fake_result):
    for seed, shift in ((1, 0.0), (2, 2.0)):
        for task, base in (("dtd", 70.0), ("svhn", 80.0)):
            write_fake_result(task, "ship", seed, base + shift)
            write_fake_result(task, "ship", seed, base - 5 + shift, tag="no-sip")
            write_fake_result(task, "ship", seed, base - 1 + shift, tag="K=5")
        write_fake_result("dtd", "ship", seed, 60.0 + shift, tag="K=40")  # one task only
    write_fake_result("dtd", "ship", 1, 1.0, tag="unrelated-tag")  # not an ablation variant: ignored
    write_fake_result("dtd", "vpt_deep", 1, 1.0)  # other method: ignored
    res = ablation_results(tmp_path / "results", benchmark="vtab1k")
    assert set(res["variant"]) == {REFERENCE, "no-sip", "K=5", "K=40"}
    summary = ablation_summary(res)
    row = summary[(summary["variant"] == "no-sip") & (summary["task"] == "dtd")].iloc[0]
    assert (row["mean"], row["delta"], row["n_seeds"]) == (66.0, -5.0, 2)
    assert row["std"] == pytest.approx(np.std([65, 67], ddof=1))
    comp = ablation_table(summary, "components")
    assert list(comp.index) == [REFERENCE, "no-sip"]
    assert comp.loc["no-sip", "Δ vs reference"] == -5.0 and comp.loc[REFERENCE, "mean over tasks"] == 76.0
    k = ablation_table(summary, "prompt_length")
    assert list(k.index) == [REFERENCE, "K=5", "K=40"] and k.loc["K=5", "value"] == 5
    assert np.isnan(k.loc["K=40", "mean over tasks"])  # svhn missing: no mean over tasks
    assert ablation_table(summary, "da_scale").index.tolist() == [REFERENCE]
    assert ablation_summary(ablation_results(tmp_path / "none")).empty


def test_run_missing_variants_through_the_engine(tiny_task_root, tiny_vit_file, tmp_path):
    settings = dict(backbone=str(tiny_vit_file), img_size=32, epochs=1, batch_size=16, lr=1e-2, prompt_length=2,
                    num_prototypes=4, threshold=0.9, data_root=str(tiny_task_root), progress=False,
                    results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"))
    tags = ["no-ap", "protos=25"]
    todo = missing_runs(["svhn"], seeds=[1], tags=tags, **settings)
    assert [c.tag for c in todo] == tags
    results = run_ablations(["svhn"], seeds=[1], tags=tags, **settings)
    assert [(r["tag"], r["config"]["options"]["ap"], r["config"]["options"]["num_prototypes"]) for r in results] \
        == [("no-ap", False, 4), ("protos=25", True, 25)]
    assert missing_runs(["svhn"], seeds=[1], tags=tags, **settings) == []
    assert run_ablations(["svhn"], seeds=[1], tags=tags, **settings) == []
    res = ablation_results(tmp_path / "results", benchmark="vtab1k")
    assert sorted(res["variant"]) == ["no-ap", "protos=25"]


def test_table_shows_the_variants_tasks_and_the_reference_on_their_seeds(tmp_path, write_fake_result):
    from shiplib.report import ablation_results, ablation_summary, ablation_table

    for seed, acc in ((1, 60.0), (2, 70.0)):
        write_fake_result("mini_mnist", "ship", seed, acc)
        write_fake_result("mini_textures", "ship", seed, acc)
    write_fake_result("mini_mnist", "ship", 1, 55.0, tag="no-sip")
    table = ablation_table(ablation_summary(ablation_results(tmp_path / "results", seeds=[1])), "components")
    assert [c for c in table.columns if c.startswith("mini_")] == ["mini_mnist"]
    assert table.loc["no-sip", "Δ vs reference"] == -5.0  # against the reference's seed 1 only


def test_plan_runs_components_on_every_task_and_hyperparameters_on_one_task_per_group():
    from shiplib.data import list_tasks
    from shiplib.data.tasks import get_task
    from shiplib.launch.ablations import ablation_plan, factor_tasks

    assert factor_tasks("components") == list_tasks("mini")
    per_group = factor_tasks("threshold")
    assert len(per_group) == 3 and len({get_task(t).group for t in per_group}) == 3
    plan = ablation_plan("mini", seeds=(1, 2, 3))
    counts = {f: sum(v.factor == f for v, _, _ in plan) for f in FACTORS}
    n_variants = {f: len(select_variants(factors=[f])) for f in FACTORS}
    assert counts["components"] == n_variants["components"] * 7 * 3
    assert all(counts[f] == n_variants[f] * 3 * 3 for f in FACTORS if f != "components")
    # the hyperparameter sweeps have the sizes the paper's questions need (with the reference: one more value)
    assert n_variants["threshold"] >= 4 and 1.0 in [v.value for v in select_variants(factors=["threshold"])]
    assert n_variants["prompt_length"] >= 3 and n_variants["da_scale"] >= 3
    banks = [v.options for v in select_variants(factors=["prototype_bank"])]
    assert sum("num_prototypes" in o for o in banks) >= 3 and {"prototype_bank": "random"} in banks
    assert ablation_plan("mini", tags=["K=5"], tasks=["mini_textures"]) == [(get_variant("K=5"), "mini_textures", 1)]
    (cmd,) = sweep_commands(seeds=[1, 2], tags=["protos=random"])
    assert f"--tasks {' '.join(per_group)} " in cmd and "--set prototype_bank=random" in cmd


def test_table_gives_the_paired_difference_to_the_reference(tmp_path, write_fake_result):
    for seed in (1, 2, 3):
        for task, base in (("mini_mnist", 70.0), ("mini_textures", 50.0)):
            write_fake_result(task, "ship", seed, base + seed)
            write_fake_result(task, "ship", seed, base + seed - (2.0 if seed < 3 else -1.0), tag="no-pml")
    res = ablation_results(tmp_path / "results")
    table = ablation_table(ablation_summary(res), "components", results=res)
    assert table.loc["no-pml", "paired Δ"] == -1.0 and table.loc["no-pml", "W/T/L"] == "2/0/4"
    lo, hi = (float(x) for x in table.loc["no-pml", "95% CI"].strip("[]").split(","))
    assert -2.0 <= lo < -1.0 < hi <= 1.0
    assert np.isnan(table.loc[REFERENCE, "paired Δ"])


def test_threshold_table_shows_the_levels_each_alpha_gave(tmp_path, write_fake_result):
    for seed in (1, 2):
        for task, levels in (("mini_mnist", [0, 3, 7]), ("mini_ihc_dab", [0, 5])):
            write_fake_result(task, "ship", seed, 60.0, levels=levels)
            write_fake_result(task, "ship", seed, 58.0, tag="alpha=0.00", levels=[0])
            write_fake_result(task, "ship", seed, 59.0, tag="alpha=1.00", levels=range(12))
    res = ablation_results(tmp_path / "results")
    table = ablation_table(ablation_summary(res), "threshold", results=res)
    assert table.loc[REFERENCE, "levels per task"] == "3 / 2"
    assert table.loc["alpha=0.00", "levels per task"] == "1 / 1"
    assert table.loc["alpha=1.00", "levels per task"] == "12 / 12"
    assert table.loc["alpha=0.00", "paired Δ"] == -2.0 and table.loc["alpha=0.00", "W/T/L"] == "0/0/4"
    assert "levels per task" not in ablation_table(ablation_summary(res), "components").columns


def test_table_columns_follow_the_benchmarks_task_order_whatever_order_the_files_come_in(tmp_path,
                                                                                         write_fake_result):
    from shiplib.report import task_order

    written = ["mini_clevr_count", "mini_ihc_dab", "mini_mnist"]  # structured, specialized, natural
    for task in written:
        write_fake_result(task, "ship", 1, 60.0)
        write_fake_result(task, "ship", 1, 55.0, tag="no-ap")
    table = ablation_table(ablation_summary(ablation_results(tmp_path / "results")), "components")
    shown = [c for c in table.columns if c.startswith("mini_")]
    assert sorted(shown) == sorted(written)
    assert shown == [t for t in task_order("mini") if t in written] == ["mini_mnist", "mini_ihc_dab",
                                                                        "mini_clevr_count"]


def test_ablations_figure_plots_each_variants_paired_difference(tmp_path, write_fake_result):
    import matplotlib

    matplotlib.use("Agg")
    from shiplib.report.figure_files import ablations_figure

    for seed in (1, 2, 3):
        for task, base in (("mini_mnist", 70.0), ("mini_textures", 50.0)):
            write_fake_result(task, "ship", seed, base + seed)
            write_fake_result(task, "ship", seed, base + seed + 1.0, tag="K=5")
            write_fake_result(task, "ship", seed, base + seed - 2.0, tag="no-pml")
    fig, data = ablations_figure(ablation_results(tmp_path / "results"))
    assert list(data["variant"]) == ["no-pml", "K=5"]  # ABLATION_VARIANTS order, whatever order the files have
    row = data.set_index("variant").loc["no-pml"]
    assert (row.mean_diff, row.ci_low, row.ci_high, row.wins, row.losses, row.n_pairs, row.n_tasks) == \
        (-2.0, -2.0, -2.0, 0, 6, 6, 2)
    ax = fig.axes[0]
    assert [c.lines[0].get_xdata()[0] for c in ax.containers] == data["mean_diff"].tolist()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["no-pml  (0/0/6)", "K=5  (6/0/0)"]


def test_a_difference_that_rounds_to_zero_reads_zero_whatever_its_sign(tmp_path, write_fake_result):
    for seed in (1, 2):
        write_fake_result("mini_mnist", "ship", seed, 60.0 + seed)
        write_fake_result("mini_mnist", "ship", seed, 60.0 + seed - (0.02 if seed == 1 else 0.04), tag="no-ap")
    res = ablation_results(tmp_path / "results")
    table = ablation_table(ablation_summary(res), "components", results=res)
    assert str(table.loc["no-ap", "Δ vs reference"]) == "0.0" and str(table.loc["no-ap", "paired Δ"]) == "0.0"
    assert table.loc["no-ap", "95% CI"] == "[0.0, 0.0]"


def test_a_tagged_grids_ablations_read_as_the_committed_grids_do(tmp_path, write_fake_result):
    from shiplib.launch.ablations import grid_variant_tag

    assert grid_variant_tag("no-da") == "no-da" and grid_variant_tag("no-da", "scaled-e20") == "no-da.scaled-e20"
    for seed in (1, 2):
        write_fake_result("dtd", "ship", seed, 70.0)  # the committed grid: not this grid's reference
        write_fake_result("dtd", "ship", seed, 60.0, tag="no-da")
        write_fake_result("dtd", "ship", seed, 80.0, tag="scaled-e20")
        write_fake_result("dtd", "ship", seed, 75.0 + seed, tag="no-da.scaled-e20")
    res = ablation_results(tmp_path / "results", benchmark="vtab1k", grid_tag="scaled-e20")
    assert sorted(res["variant"]) == sorted([REFERENCE] * 2 + ["no-da"] * 2)
    assert res.loc[res["variant"] == REFERENCE, "acc_last"].tolist() == [80.0, 80.0]
    assert sorted(res.loc[res["variant"] == "no-da", "acc_last"]) == [76.0, 77.0]
    assert (res.loc[res["variant"] == "no-da", "factor"] == "components").all()
    committed = ablation_results(tmp_path / "results", benchmark="vtab1k")
    assert sorted(committed["acc_last"]) == [60.0, 60.0, 70.0, 70.0]  # the grids never mix


def test_scaled_ablation_runs_wait_for_ships_lr_and_skip_finished_ones(tmp_path, write_fake_result):
    import json

    from shiplib.report.tuning import SCALED_ABLATION_FACTORS, ablation_commands

    def tune(lr, acc):
        path = write_fake_result("mini_ihc_dab", "ship", 1, acc, protocol="tune", tag=f"tune-e20-lr{lr}")
        r = json.loads(path.read_text())
        r["config"]["lr"] = lr
        path.write_text(json.dumps(r))

    results = tmp_path / "results"
    assert ablation_commands(results, 20) == []
    tune(0.1, 60.0), tune(0.3, 70.0)
    assert ablation_commands(results, 20) == []  # 1.0 is still to try
    tune(1.0, 50.0)
    cmds = ablation_commands(results, 20, seeds=(1, 2))
    variants = select_variants(factors=SCALED_ABLATION_FACTORS)
    assert len(cmds) == 2 * len(variants)  # ihc_dab is the first specialized task: every factor runs on it
    assert cmds[0] == ("--task mini_ihc_dab --method ship --seed 1 --protocol final --epochs 20 "
                       "--tag no-sip.scaled-e20 --set lr=3e-01 --set lr_schedule=scaled --set warmup_epochs=2 "
                       "--set eval_every=2 --set sip=false")
    components = select_variants(factors=["components"])
    assert all(" --seed 1 " in c for c in cmds[:len(components)])  # seed by seed within a factor ...
    assert all(" --seed 2 " in c for c in cmds[len(components):2 * len(components)])
    assert all("da_scale" in c for c in cmds[2 * len(components):])  # ... the components before the DA scale
    assert " --seed 1 " in cmds[2 * len(components)] and " --seed 2 " in cmds[-1]
    write_fake_result("mini_ihc_dab", "ship", 1, 50.0, tag="no-sip.scaled-e20")
    assert len(ablation_commands(results, 20, seeds=(1, 2))) == 2 * len(variants) - 1
