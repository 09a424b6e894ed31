"""Model selection on validation: which learning rate each method gets, from `--protocol tune` runs.

Tune runs train on train800 and evaluate on val200 (`results/tune/...`); the test split is never read. A method's
lr is the one with the best mean `acc_last` over the tuned tasks (ties: the smaller lr).

Learning rates are labelled in an exact, readable form (`format_lr`: 3e-05, 1e-04, 2.5e-04, …): pandas' display
precision would show small floats as 0.00.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine.results import find_result_files, load_results, read_result, result_path, run_name
from ..launch.ablations import METHOD, factor_tasks, grid_variant_tag, select_variants
from .histories import step_frame
from .tables import task_order


def format_lr(lr) -> str:
    """A learning rate as the shortest scientific text that reads back as the same float ('3e-05', '2.5e-04')."""
    return np.format_float_scientific(float(lr), trim="-", exp_digits=2)


def _of_study(results: pd.DataFrame, prefixes: tuple[str, ...]) -> pd.DataFrame:
    """The rows of `load_results` tagged `<prefix><lr>` for one of `prefixes`: one study's runs, no other's."""
    study = re.compile("(?:" + "|".join(map(re.escape, prefixes)) + r")[0-9.eE+-]+")
    return results[[isinstance(t, str) and bool(study.fullmatch(t)) for t in results["tag"]]]


def lr_grid(results_dir="results", benchmark: str = "mini", tag_prefix: str = "lr") -> pd.DataFrame:
    """Validation accuracy (acc_last, %) of the tune runs of one study: one row per (method, lr), one column per
    task, + mean and the number of runs.

    A study is the tune runs tagged `<tag_prefix><lr>` (`lr1e-1`: the committed lr tuning; other prefixes name
    other studies, e.g. a budget pilot), so runs made under another protocol never mix into the choice.

    The `lr` index level holds exact labels (`format_lr`), in increasing numeric order within each method; the
    accuracies are numbers.
    """
    df = load_results(results_dir, protocol="tune", benchmark=benchmark)
    if not df.empty:
        df = _of_study(df, (tag_prefix,))
    if df.empty:
        return pd.DataFrame()
    grid = df.pivot_table(index=["method", "lr"], columns="task", values="acc_last", aggfunc="mean")
    grid["mean"] = grid.mean(axis=1, skipna=False)  # NaN unless every tuned task has a run
    grid["runs"] = df.groupby(["method", "lr"]).size()
    grid = grid.sort_index()  # numeric lr order
    grid.index = pd.MultiIndex.from_tuples([(m, format_lr(lr)) for m, lr in grid.index], names=["method", "lr"])
    grid.columns.name = "task"
    return grid


def selected_lr(grid: pd.DataFrame) -> pd.DataFrame:
    """Per method: the chosen lr (a number), its label, its mean validation accuracy, the lrs it was chosen from
    (those tuned on every task, as text) and whether it lies at an end of that range."""
    rows = []
    for method, part in grid.groupby(level="method", sort=True):
        part = part.droplevel("method")
        part = part.set_axis([float(lr) for lr in part.index]).sort_index()  # labels read back exactly
        if part["mean"].isna().all():
            continue
        best = part["mean"].idxmax()  # first maximum = the smallest lr among ties; incomplete rows are NaN
        lrs = list(part.index[part["mean"].notna()])  # the lrs tuned on every task
        rows.append(dict(method=method, lr=best, lr_label=format_lr(best), val_acc_mean=part.loc[best, "mean"],
                         grid=", ".join(format_lr(x) for x in lrs),
                         at_grid_edge=best in (lrs[0], lrs[-1]) and len(lrs) > 1))
    return pd.DataFrame(rows).set_index("method")


_PILOT_TAG = re.compile(r"pilot-e(?P<epochs>\d+)-lr(?P<lr>[0-9.eE+-]+)")


def budget_pilot(results_dir="results", benchmark: str = "mini") -> pd.DataFrame:
    """The budget pilot's tune runs (tags `pilot-e<epochs>-lr<lr>`): one row per (task, method, lr, epochs, seed)
    with the validation accuracy and cross-entropy after the last epoch and the last epoch's training
    cross-entropy."""
    rows = []
    for path in find_result_files(Path(results_dir) / "tune" / benchmark):
        r = read_result(path)
        m = _PILOT_TAG.fullmatch(r.get("tag") or "")
        if m is None:
            continue
        last = r["history"][-1]
        rows.append(dict(task=r["task"], method=r["method"], lr=format_lr(float(m["lr"])), epochs=int(m["epochs"]),
                         seed=int(r["seed"]), val_acc=r["acc_last"], val_loss=last["eval_loss"], train_ce=last["ce"]))
    cols = ["task", "method", "lr", "epochs", "seed", "val_acc", "val_loss", "train_ce"]
    return pd.DataFrame(rows, columns=cols).sort_values(["task", "method", "lr", "epochs"]).reset_index(drop=True)


def chosen_budget(pilot: pd.DataFrame, flat: float = 0.02) -> tuple[int | None, pd.DataFrame]:
    """The smallest budget after which doubling no longer helps: for every (task, method), the best lr's validation
    cross-entropy (mean over seeds) at the next budget is lower by at most `flat` (relative), or higher.

    Returns (epochs, or None when no budget qualifies yet; per (task, method, epochs): the best lr, its validation
    loss and accuracy, and `next_gain`, the relative drop of that loss at the next budget)."""
    if pilot.empty:
        return None, pd.DataFrame()
    means = pilot.groupby(["task", "method", "epochs", "lr"], as_index=False)[["val_loss", "val_acc"]].mean()
    best = means.loc[means.groupby(["task", "method", "epochs"])["val_loss"].idxmin()].set_index(
        ["task", "method", "epochs"]).sort_index()
    best["next_gain"] = 1 - best.groupby(level=["task", "method"])["val_loss"].shift(-1) / best["val_loss"]
    budgets = sorted(best.index.get_level_values("epochs").unique())
    for epochs in budgets[:-1]:
        at = best.xs(epochs, level="epochs")["next_gain"]
        if len(at) and at.notna().all() and (at <= flat).all():
            return int(epochs), best
    return None, best


# ----- per-task learning rates on a ladder that brackets the optimum -----
#: The lr search's hard limits: below, prompts and heads barely move in a mini budget; above, SGD diverges.
LR_BOUNDS = (1e-5, 3.0)
#: Top-two validation accuracies closer than this (points) are decided on the mean of at least `CLOSE_SEEDS` seeds.
CLOSE_POINTS = 2.0
CLOSE_SEEDS = 2


def lr_neighbours(lr: float) -> tuple[float | None, float | None]:
    """The next lower and higher rung of the 1-3-10 ladder (…, 1e-2, 3e-2, 1e-1, 3e-1, 1, 3), None past a bound."""
    exp = int(np.floor(np.log10(lr) + 1e-9))
    mant = lr / 10 ** exp
    eps = 1e-6  # 0.3 / 0.1 is 2.9999999999999996
    # rungs from text: 3e-1 is 0.3, where 3 * 10 ** -1 is 0.30000000000000004
    lower = float(f"3e{exp}") if mant > 3 + eps else float(f"1e{exp}") if mant > 1 + eps else float(f"3e{exp - 1}")
    higher = float(f"3e{exp}") if mant < 3 - eps else float(f"1e{exp + 1}")
    return (lower if lower >= LR_BOUNDS[0] * (1 - 1e-9) else None,
            higher if higher <= LR_BOUNDS[1] * (1 + 1e-9) else None)


def study_prefixes(epochs: int) -> tuple[str, ...]:
    """Tag prefixes of the runs a per-task lr study at `epochs` reads: its own, and the budget pilot's runs at the
    same budget, which have exactly the same settings (`scaled_protocol`)."""
    return f"tune-e{epochs}-lr", f"pilot-e{epochs}-lr"


def task_lr_runs(results_dir="results", benchmark: str = "mini", prefixes: tuple[str, ...] = study_prefixes(20)
                 ) -> pd.DataFrame:
    """The finished tune runs of one per-task study (tags `<prefix><lr>`): method, task, lr, seed, val_acc, tag."""
    cols = ["method", "task", "lr", "seed", "val_acc", "tag"]
    df = load_results(results_dir, protocol="tune", benchmark=benchmark)
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = _of_study(df, prefixes)
    return df.rename(columns={"acc_last": "val_acc"})[cols].reset_index(drop=True)


def _decide(runs: pd.DataFrame, start: float) -> dict:
    """One (method, task): the chosen lr and the runs still needed to choose it (see `per_task_lr`)."""
    if runs.empty:
        lower, higher = lr_neighbours(start)
        return dict(lr=None, needs=[(lr, 1) for lr in (lower, start, higher) if lr is not None])
    mean = runs.groupby("lr")["val_acc"].mean().sort_index()
    seeds = runs.groupby("lr")["seed"].apply(set)
    best = float(mean.idxmax())  # first maximum: the smaller lr among ties
    out = dict(lr=best, lr_label=format_lr(best), val_acc=float(mean[best]), seeds=len(seeds[best]),
               tried=", ".join(format_lr(x) for x in mean.index), at_edge=None, runner_up=None, gap=None, needs=[])
    lower, higher = lr_neighbours(best)
    for neighbour, edge in ((lower, best == mean.index[0]), (higher, best == mean.index[-1])):
        if edge and neighbour is not None:
            out["needs"].append((neighbour, 1))
        elif edge and len(mean) > 1:
            out["at_edge"] = f"at the hard limit {format_lr(best)}"
    if out["needs"] or len(mean) < 2:
        return out
    runner = float(mean.drop(best).idxmax())
    out.update(runner_up=format_lr(runner), gap=float(mean[best] - mean[runner]))
    if out["gap"] < CLOSE_POINTS:
        for lr in (best, runner):
            have = seeds[lr]
            out["needs"] += [(lr, s) for s in range(1, CLOSE_SEEDS + 1) if s not in have][:CLOSE_SEEDS - len(have)]
    return out


def per_task_lr(runs: pd.DataFrame, start: dict[str, float]) -> pd.DataFrame:
    """Per (method, task): the lr with the best mean validation accuracy over its seeds (ties: the smaller lr),
    and `needs`, the (lr, seed) runs still missing before that choice stands:

    - the next rung of the 1-3-10 ladder beyond the best lr when the best lies at an end of the lrs tried (unless
      that end is a hard limit, `LR_BOUNDS`; then `at_edge` says so);
    - a second seed of the best and the runner-up when they lie within `CLOSE_POINTS` points.

    A (method, task) without runs needs `start[method]` and its two neighbours. `settled` is True when nothing is
    missing."""
    rows = []
    for method, first in start.items():
        for task in sorted(runs["task"].unique()) if "task" in runs else []:
            part = runs[(runs["method"] == method) & (runs["task"] == task)]
            rows.append(dict(method=method, task=task, **_decide(part, first)))
    table = pd.DataFrame(rows)
    if not table.empty:
        table["settled"] = table["needs"].apply(lambda n: not n)
    return table


def next_tuning_runs(runs: pd.DataFrame, start: dict[str, float],
                     tasks: list[str]) -> list[tuple[str, str, float, int]]:
    """The (task, method, lr, seed) runs to make next, methods in the order of `start`, tasks in the given order."""
    todo = []
    for method, first in start.items():
        for task in tasks:
            part = runs[(runs["method"] == method) & (runs["task"] == task)]
            todo += [(task, method, lr, seed) for lr, seed in _decide(part, first)["needs"]]
    return todo


def scaled_protocol(epochs: int) -> list[str]:
    """The run settings of the scaled protocol at `epochs`: the official curve's shape sampled per step, a tenth
    of training as warm-up, evaluated at every tenth."""
    tenth = max(1, epochs // 10)
    return ["lr_schedule=scaled", f"warmup_epochs={tenth}", f"eval_every={tenth}"]


def default_lrs(methods: list[str], task: str) -> dict[str, float]:
    """Each method's current default lr on `task`: where a per-task search starts."""
    from ..engine import RunConfig, resolve_config

    return {m: resolve_config(RunConfig(task=task, method=m)).training.lr for m in methods}


def scaled_run_args(task: str, method: str, seed: int, protocol: str, epochs: int, tag: str, lr: float,
                    extra: str = "") -> str:
    """`python -m shiplib run` arguments of one run of the scaled protocol at `epochs` (`scaled_protocol`)."""
    settings = " ".join(f"--set {s}" for s in scaled_protocol(epochs))
    return (f"--task {task} --method {method} --seed {seed} --protocol {protocol} --epochs {epochs} --tag {tag} "
            f"--set lr={format_lr(lr)} {settings} {extra}").strip()


def tuning_commands(results_dir, epochs: int, tasks: list[str], methods: list[str],
                    benchmark: str = "mini") -> list[str]:
    """`python -m shiplib run` arguments of the next per-task tuning runs at `epochs` (tags `tune-e<epochs>-lr<lr>`,
    train800 -> val200); empty when every (method, task) is settled (`per_task_lr`)."""
    prefixes = study_prefixes(epochs)
    runs = task_lr_runs(results_dir, benchmark, prefixes)
    todo = next_tuning_runs(runs, default_lrs(methods, tasks[0]), tasks)
    return [scaled_run_args(task, method, seed, "tune", epochs, f"{prefixes[0]}{format_lr(lr)}", lr)
            for task, method, lr, seed in todo]


def _study_of(runs: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """`per_task_lr` of a study's tune runs (`task_lr_runs`) for `methods`."""
    runs = runs[runs["method"].isin(methods)]
    # where a search starts plays no part once a (method, task) has runs
    return pd.DataFrame() if runs.empty else per_task_lr(runs, {m: 0.1 for m in methods})


def study_table(results_dir, epochs: int, methods: list[str], benchmark: str = "mini") -> pd.DataFrame:
    """`per_task_lr` of the per-task study at `epochs` for `methods`, over the (method, task) pairs it has runs of."""
    return _study_of(task_lr_runs(results_dir, benchmark, study_prefixes(epochs)), methods)


def _settled_of(table: pd.DataFrame) -> dict[tuple[str, str], float]:
    return {} if table.empty else {(r.method, r.task): r.lr for r in table.itertuples()
                                   if r.settled and r.lr is not None}


def settled_lrs(results_dir, epochs: int, methods: list[str], benchmark: str = "mini") -> dict[tuple[str, str], float]:
    """(method, task) -> the lr chosen by the per-task study at `epochs`, for the settled ones (`per_task_lr`)."""
    return _settled_of(study_table(results_dir, epochs, methods, benchmark))


def chosen_lr_table(results_dir, epochs: int, methods: list[str], benchmark: str = "mini") -> pd.DataFrame:
    """The per-task study at `epochs` as a method × task table: the chosen lr (`per_task_lr`) with its mean
    validation accuracy and seeds, e.g. `3e-01 (76.0, 2 seeds)`, or `open: best so far 1e-01` while runs are
    missing; tasks without any run are left out."""
    table = study_table(results_dir, epochs, methods, benchmark)
    if table.empty:
        return pd.DataFrame()
    table = table[table["lr"].notna()]
    seeds = table["seeds"].astype(int).astype(str) + table["seeds"].map({1: " seed"}).fillna(" seeds")
    table["cell"] = (table["lr_label"] + " (" + table["val_acc"].map("{:.1f}".format) + ", " + seeds + ")").where(
        table["settled"], "open: best so far " + table["lr_label"])
    wide = table.pivot(index="method", columns="task", values="cell")
    wide = wide.reindex(index=[m for m in methods if m in wide.index],
                        columns=[t for t in task_order(benchmark) if t in wide.columns])
    wide.columns = [t.removeprefix(f"{benchmark}_") for t in wide.columns]
    return wide.fillna("")


#: The scaled protocol's budget, chosen by the budget pilot (README, "The scaled mini protocol").
CHOSEN_BUDGET = 20


def scaled_grid_tag(epochs: int) -> str:
    """The tag of the scaled protocol's final runs at `epochs` (test accuracy; each task with its own lr)."""
    return f"scaled-e{epochs}"


def _has_result(results_dir, benchmark: str, task: str, method: str, tag: str, seed: int) -> bool:
    """Whether the final run of (task, `method`+`tag`, seed) has a result file."""
    return result_path(results_dir, benchmark, task, run_name(method, tag), seed).exists()


def final_commands(results_dir, epochs: int, tasks: list[str], methods: list[str], seeds=(1, 2, 3),
                   benchmark: str = "mini") -> list[str]:
    """`python -m shiplib run` arguments of the scaled protocol's final runs (train800val200 -> test, tag
    `scaled_grid_tag(epochs)`) for every (method, task) whose per-task lr is settled (`per_task_lr`) and whose
    result is missing; a (method, task) still being tuned waits. Tasks first, so a task's methods finish together."""
    chosen = settled_lrs(results_dir, epochs, methods, benchmark)
    tag = scaled_grid_tag(epochs)
    return [scaled_run_args(task, method, seed, "final", epochs, tag, chosen[method, task])
            for task in tasks for seed in seeds for method in methods if (method, task) in chosen
            and not _has_result(results_dir, benchmark, task, method, tag, seed)]


def grid_progress(results_dir, epochs: int, methods: list[str], seeds=(1, 2, 3), benchmark: str = "mini"
                  ) -> pd.DataFrame:
    """How far the scaled protocol at `epochs` has come, one row per method: lr-search runs made, tasks whose lr
    is settled (`per_task_lr`), final runs made (tag `scaled_grid_tag(epochs)`), each out of the benchmark's tasks
    and `seeds`; `status` is `done` when every task is settled and every final run exists."""
    tasks = task_order(benchmark)
    runs = task_lr_runs(results_dir, benchmark, study_prefixes(epochs))
    settled = _settled_of(_study_of(runs, methods))
    tag = scaled_grid_tag(epochs)
    rows = []
    for method in methods:
        n_settled = sum((method, t) in settled for t in tasks)
        n_final = sum(_has_result(results_dir, benchmark, t, method, tag, s) for t in tasks for s in seeds)
        done = n_settled == len(tasks) and n_final == len(tasks) * len(seeds)
        rows.append({"method": method, "lr-search runs": int((runs["method"] == method).sum()),
                     "lr settled": f"{n_settled} of {len(tasks)} tasks",
                     "final runs": f"{n_final} of {len(tasks) * len(seeds)}",
                     "status": "done" if done else "being run"})
    return pd.DataFrame(rows).set_index("method")


#: The ablations re-run under the scaled protocol; the others stay with the committed grid, labelled with it.
SCALED_ABLATION_FACTORS = ("components", "da_scale")


def ablation_commands(results_dir, epochs: int, seeds=(1, 2, 3), factors=SCALED_ABLATION_FACTORS,
                      benchmark: str = "mini") -> list[str]:
    """`python -m shiplib run` arguments of SHIP's ablations under the scaled protocol at `epochs` (final
    protocol, tags `grid_variant_tag(variant, scaled_grid_tag(epochs))`), each on its factor's tasks at SHIP's
    settled lr for that task, missing results only. Factor by factor in `factors` order (the components before
    the decoupled-attention scale, should the budget run out), and within a factor seed by seed, so that early
    runs already pair up."""
    chosen = {task: lr for (_, task), lr in settled_lrs(results_dir, epochs, [METHOD], benchmark).items()}
    todo = []
    for factor, seed in itertools.product(factors, seeds):
        for v in select_variants(factors=[factor]):
            tag = grid_variant_tag(v.tag, scaled_grid_tag(epochs))
            todo += [scaled_run_args(task, METHOD, seed, "final", epochs, tag, chosen[task], v.set_flags)
                     for task in factor_tasks(v.factor, benchmark) if task in chosen
                     and not _has_result(results_dir, benchmark, task, METHOD, tag, seed)]
    return todo


def lr_mismatches(results_dir, epochs: int, benchmark: str = "mini") -> list[str]:
    """Final runs of the scaled grid at `epochs` and of its ablations whose lr is not the one the per-task study
    now chooses for their (method, task) (a later run changed the choice). `final_commands` skips a finished
    run, so each listed one is removed and made again by the `scaled` stage (or re-run with `--force`)."""
    df = load_results(results_dir, protocol="final", benchmark=benchmark)
    if df.empty:
        return []
    tag = scaled_grid_tag(epochs)
    df = df[[isinstance(t, str) and (t == tag or t.endswith(f".{tag}")) for t in df["tag"]]]
    chosen = settled_lrs(results_dir, epochs, sorted(set(df["method"])), benchmark)
    return [f"{Path(p).relative_to(results_dir).as_posix()}: lr {format_lr(lr)}, now chosen "
            f"{format_lr(chosen[m, t]) if (m, t) in chosen else 'nothing (the search is open again)'}"
            for p, m, t, lr in zip(df["path"], df["method"], df["task"], df["lr"])
            if not np.isclose(lr, chosen.get((m, t), np.nan))]


def chosen_runs(results_dir, epochs: int, task: str, methods: list[str], benchmark: str = "mini") -> list[str]:
    """Run labels (`method+tag`) holding each method's chosen lr on `task` in the per-task study at `epochs`
    (`per_task_lr`; the pilot's and the study's own tags alike), methods in the given order."""
    runs = task_lr_runs(results_dir, benchmark, study_prefixes(epochs))
    runs = runs[runs["task"] == task]
    if runs.empty:
        return []
    table = per_task_lr(runs, {m: 0.1 for m in methods}).set_index("method")
    return [f"{m}+{tag}" for m in methods if m in table.index and table.loc[m, "lr"] is not None
            for tag in sorted(set(runs.loc[(runs["method"] == m) & (runs["lr"] == table.loc[m, "lr"]), "tag"]))]


def pilot_differences(pilot: pd.DataFrame, a: str = "ship", b: str = "vpt_deep") -> pd.DataFrame:
    """Per (task, epochs) of the budget pilot: each method's best validation accuracy over the lrs run at that budget
    (mean over seeds), the lr that gave it, and `a − b`: how the gap between two methods moves with the budget."""
    cols = ["task", "epochs", a, f"lr {a}", b, f"lr {b}", f"{a} − {b}", "lrs tried"]
    if pilot.empty:
        return pd.DataFrame(columns=cols).set_index(["task", "epochs"])
    means = pilot.groupby(["task", "epochs", "method", "lr"], as_index=False)["val_acc"].mean()
    rows = []
    for (task, epochs), part in means.groupby(["task", "epochs"], sort=True):
        best = {m: part[part["method"] == m].sort_values(["val_acc", "lr"], ascending=[False, True]).head(1)
                for m in (a, b)}
        if any(v.empty for v in best.values()):
            continue
        acc = {m: float(v["val_acc"].iloc[0]) for m, v in best.items()}
        rows.append({"task": task, "epochs": int(epochs), a: acc[a], f"lr {a}": best[a]["lr"].iloc[0], b: acc[b],
                     f"lr {b}": best[b]["lr"].iloc[0], f"{a} − {b}": acc[a] - acc[b],
                     "lrs tried": ", ".join(sorted(set(part["lr"]), key=float))})
    return pd.DataFrame(rows, columns=cols).set_index(["task", "epochs"])


def scaled_steps(results_dir, epochs: int, task: str, methods: list[str],
                 benchmark: str = "mini") -> tuple[pd.DataFrame, str]:
    """Per-step training values of the scaled protocol at `epochs` on `task`, one run label per method with its lr
    (`ship (lr 3e-01)`), and a line saying where they come from: the final runs of its grid (train800val200,
    seeds 1-3) when every method has them, else each method's chosen lr in the per-task study (train800)."""
    grid = [run_name(m, scaled_grid_tag(epochs)) for m in methods]
    steps = step_frame(results_dir, task=task, runs=grid, benchmark=benchmark, protocol="final")
    if not steps.empty and set(steps["run"]) == set(grid):
        steps["run"] = [f"{run.partition('+')[0]} (lr {format_lr(lr)})"
                        for run, lr in zip(steps["run"], steps["base_lr"])]
        return steps, f"the final runs of the scaled grid (tag {scaled_grid_tag(epochs)}, train800val200, " \
                      f"{steps['seed'].nunique()} seeds)"
    study = chosen_runs(results_dir, epochs, task, methods, benchmark)
    steps = step_frame(results_dir, task=task, runs=study, benchmark=benchmark, protocol="tune")
    steps["run"] = steps["run"].map(study_run_label)  # seeds of one lr made under the pilot's and the study's tags
    return steps, f"the per-task lr study's runs at each method's chosen lr (train800 -> val200, {epochs} epochs)"


_STUDY_RUN = re.compile(r"(?P<method>[^+]+)\+(?:tune|pilot)-e\d+-lr(?P<lr>[0-9.eE+-]+)")


def study_run_label(run: str) -> str:
    """One label per (method, lr) of a per-task study, whichever tag a seed was made under: `ship (lr 3e-01)`."""
    m = _STUDY_RUN.fullmatch(run)
    return f"{m['method']} (lr {format_lr(float(m['lr']))})" if m else run
