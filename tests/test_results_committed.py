"""The committed mini-VTAB results: complete, made with the current defaults, and reproduced by a re-run."""
from pathlib import Path

import pytest

from shiplib import repro
from shiplib.data import list_tasks
from shiplib.engine import RunConfig, resolve_config, run_experiment
from shiplib.engine.results import read_result, result_path, run_name
from shiplib.methods import list_methods
from shiplib.report import FACTORS

RESULTS = Path(__file__).resolve().parents[1] / "results"
SEEDS = (1, 2, 3)


def committed(task, method, seed):
    return result_path(RESULTS, "mini", task, method, seed)


def test_every_method_task_and_seed_is_committed():
    missing = [f"{t}/{m}/seed{s}" for t in list_tasks("mini") for m in list_methods() for s in SEEDS
               if not committed(t, m, s).is_file()]
    assert not missing, f"{len(missing)} mini results missing, e.g. {missing[:3]}: python -m shiplib sweep " \
                        "--tasks mini --methods <all> --seeds 1-3 --threads 1"


@pytest.mark.parametrize("method", list_methods())
def test_committed_results_use_the_current_defaults(method):
    for task in list_tasks("mini"):
        for seed in SEEDS:
            r = read_result(committed(task, method, seed))
            identity = resolve_config(RunConfig(task=task, method=method, seed=seed)).identity()
            assert r["identity"] == identity, f"{task}/{method}/seed{seed} was made with other settings"
            assert r["protocol"] == "final" and r["eval_split"] == "test" and r["last_epoch"] == r["epochs"] - 1
            assert 0.0 <= r["acc_last"] <= r["acc_max_over_epochs"] <= 100.0


def _made_with_other_weights(paths) -> list[str]:
    from shiplib.engine.results import stale_backbone

    return [str(p.relative_to(RESULTS)) for p in paths if stale_backbone(read_result(p))]


def test_committed_results_were_made_with_the_committed_mini_weights():
    stale = _made_with_other_weights(committed(t, m, s) for t in list_tasks("mini") for m in list_methods()
                                     for s in SEEDS)
    assert not stale, f"{len(stale)} results predate the committed mini backbone's weights, e.g. " \
                      f"{stale[:3]}: re-run them with python -m shiplib sweep ... --force"


def assert_rerun_reproduces(path, config: RunConfig):
    """`config` re-run (1 thread, into a scratch folder) gives the committed result at `path` within the
    cross-machine tolerances (bit for bit on the machine that made it)."""
    r = read_result(path)
    again = run_experiment(config)
    assert again["identity"] == r["identity"]
    failed = [(c.name, c.value, c.reference) for c in repro.result_comparisons(again, r) if not c.ok]
    assert not failed, (f"the re-run differs from {path.relative_to(RESULTS.parent)} "
                        f"beyond shiplib.repro's tolerances: {failed}")


def scratch(tmp_path) -> dict:
    return dict(threads=1, progress=False, results_dir=str(tmp_path / "results"), runs_dir=str(tmp_path / "runs"))


def test_a_committed_result_is_reproduced_by_rerunning_it(tmp_path):
    """The cheapest committed run (linear probe) re-run with its seed and thread count."""
    assert_rerun_reproduces(committed("mini_mnist", "linear", 1),
                            RunConfig(task="mini_mnist", method="linear", seed=1, **scratch(tmp_path)))


def test_tuned_learning_rates_are_the_validation_choices_of_the_committed_tune_runs():
    """Every `tuned` lr in mini_defaults.csv is the one the committed val200 runs (results/tune) select."""
    from shiplib.engine.defaults import mini_defaults_table
    from shiplib.report import lr_grid, selected_lr

    chosen = selected_lr(lr_grid(RESULTS))
    tuned = [r for r in mini_defaults_table() if r["status"] == "tuned"]
    assert tuned and set(chosen.index) >= {r["method"] for r in tuned}
    wrong = {r["method"]: (float(r["lr"]), chosen.loc[r["method"], "lr"]) for r in tuned
             if float(r["lr"]) != chosen.loc[r["method"], "lr"]}
    assert not wrong, f"mini_defaults.csv lr vs the val200 choice: {wrong}"


def test_committed_tune_runs_were_made_with_the_committed_mini_weights():
    tune_files = sorted((RESULTS / "tune" / "mini").glob("*/*/seed*.json"))
    stale = _made_with_other_weights(tune_files)
    assert tune_files and not stale, (
        f"{len(stale)} of {len(tune_files)} tune runs predate the committed mini weights, "
        f"e.g. {stale[:2]}: re-run them (python -m shiplib sweep --protocol tune ... --force)")


def test_committed_files_hold_no_absolute_path_of_the_machine_that_wrote_them():
    roots = ("/work/", "/root/", "/home/", "/tmp/", "/Users/")
    offenders = [str(p.relative_to(RESULTS.parent)) for p in [*RESULTS.rglob("*.json"), *RESULTS.rglob("*.csv"),
                                                              *(RESULTS.parent / "data" / "checkpoints").glob("*.json")]
                 if any(f'"{r}' in p.read_text() for r in roots)]
    assert not offenders, f"{len(offenders)} committed files record an absolute path, e.g. {offenders[:3]}"


# ---------------------------------------------------------------- SHIP's ablations (shiplib.report.ABLATION_VARIANTS)
def _ablation_runs():
    from shiplib.launch.ablations import ablation_plan

    return ablation_plan("mini", seeds=SEEDS)


def _ablation_path(variant, task, seed):
    return result_path(RESULTS, "mini", task, run_name("ship", variant.tag), seed)


def test_committed_ablation_results_use_the_current_settings():
    from shiplib.launch.ablations import variant_config

    other = []
    for variant, task, seed in _ablation_runs():
        path = _ablation_path(variant, task, seed)
        if (path.is_file()
                and read_result(path)["identity"] != resolve_config(variant_config(variant, task, seed)).identity()):
            other.append(str(path.relative_to(RESULTS)))
    assert not other, f"{len(other)} ablation results were made with other settings, e.g. {other[:3]}"


def test_committed_ablation_results_were_made_with_the_committed_mini_weights():
    stale = _made_with_other_weights(p for p in (_ablation_path(*run) for run in _ablation_runs()) if p.is_file())
    assert not stale, f"{len(stale)} ablation results predate the committed mini weights, e.g. {stale[:3]}"


def test_every_planned_ablation_run_is_committed():
    """Every (variant, task, seed) of the ablation plan has its result, so each table compares like with like."""
    missing = [f"{task}/ship+{v.tag}/seed{seed}" for v, task, seed in _ablation_runs()
               if not _ablation_path(v, task, seed).is_file()]
    assert not missing, f"{len(missing)} planned ablation runs are not committed, e.g. {missing[:3]}: " \
                        "scripts/run_mini_benchmark.sh ablations"


def test_a_committed_ablation_result_is_reproduced_by_rerunning_it(tmp_path):
    """One variant run (SHIP without PML on mini_mnist, seed 1) re-run through the variant's own configuration."""
    from shiplib.launch.ablations import get_variant, variant_config

    variant = get_variant("no-pml")
    assert_rerun_reproduces(_ablation_path(variant, "mini_mnist", 1),
                            variant_config(variant, "mini_mnist", 1, **scratch(tmp_path)))


# ---------------------------------------------------------------- the README's numbers are the committed data's
README = RESULTS.parent / "README.md"


@pytest.mark.parametrize("grid", ["scaled", "committed"])
def test_readme_tables_are_the_overviews_of_the_committed_results(grid):
    from shiplib.report import markdown_table, overview_table
    from shiplib.report.claims import grid_tag

    table = markdown_table(overview_table(RESULTS, grid_tag=grid_tag(grid)))
    assert table in README.read_text(encoding="utf-8"), f"README's mini-VTAB table of the {grid} grid is not:\n{table}"


def test_readme_answers_ship_vs_vpt_deep_with_the_paired_comparison():
    from shiplib.engine import load_results
    from shiplib.report import paired_comparison

    c = paired_comparison(load_results(RESULTS, protocol="final", benchmark="mini"), "ship", "vpt_deep")
    assert c.n_pairs == 7 * len(SEEDS)
    assert c.sentence() in " ".join(README.read_text(encoding="utf-8").split()), c.sentence()


@pytest.mark.parametrize("name, row", [("mini_distill", "`mini` (distilled)"),
                                       ("mini_distill", "same architecture, random weights"),
                                       ("mini_fmnist", "`mini_fmnist` (Fashion-MNIST, supervised)")])
def test_readme_probe_table_is_the_cards(name, row):
    from shiplib.backbones.evidence import load_card, probe_table

    table = probe_table(load_card(name=name))
    column = "random_init" if "random" in row else "pretrained"
    line = next(ln for ln in README.read_text(encoding="utf-8").splitlines() if ln.startswith(f"| {row} |"))
    cells = [c.strip().strip("*") for c in line.strip("|").split("|")[1:]]
    expected = [f"{v:.1f}" for v in table[column].drop(index="mean")] + [f"{table.loc['mean', column]:.1f}"]
    assert cells == expected, (row, cells, expected)


@pytest.fixture(scope="module")
def committed_ablations():
    from shiplib.report import ablation_results, ablation_summary

    results = ablation_results(RESULTS, "mini", seeds=SEEDS)
    return results, ablation_summary(results)


@pytest.mark.parametrize("factor", list(FACTORS))
def test_readme_ablation_tables_are_the_committed_results(factor, committed_ablations):
    from shiplib.report import ablation_table, markdown_table

    results, summary = committed_ablations
    table = markdown_table(ablation_table(summary, factor, results=results))
    assert table in README.read_text(encoding="utf-8"), f"README's {factor} ablation table is not:\n{table}"


def test_committed_alphas_give_one_level_and_every_block_its_own_level():
    """α = 0 groups all blocks into one semantic level, α = 1 makes each of the 12 blocks its own level."""
    wrong = {}
    for variant, task, seed in _ablation_runs():
        expected = {"alpha=0.00": [0], "alpha=1.00": list(range(12))}.get(variant.tag)
        if expected is not None:
            levels = read_result(_ablation_path(variant, task, seed))["hierarchy"]["levels"]
            if levels != expected:
                wrong[f"{task}/ship+{variant.tag}/seed{seed}"] = levels
    assert not wrong, f"level starts other than expected: {wrong}"


def test_committed_scaled_runs_use_the_lr_their_task_search_chose():
    from shiplib.report.tuning import lr_mismatches

    wrong = lr_mismatches(RESULTS, 20)
    assert not wrong, f"{len(wrong)} scaled-protocol runs were made with another lr than their task's choice, " \
                      f"e.g. {wrong[:3]}: remove them and run scripts/run_mini_benchmark.sh scaled"
