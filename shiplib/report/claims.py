"""The paper's testable claims, each with the paper's number, the companion's paired evidence and a verdict.

Every verdict follows from the committed results by one rule (`verdict`): a claim that one run is better than
another holds at mini scale when the paired 95 % bootstrap CI of the difference lies above 0, and does not hold
when it lies below 0 or spans 0 (then the difference is within seed noise). Claims that need the real VTAB-1k data
and ViT-B/16 weights cannot be tested offline; their row gives the command that tests them on a GPU.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..data.tasks import get_task
from ..engine.results import load_results, run_name
from ..launch.ablations import METHOD, REFERENCE
from .ablations import ablation_paired, ablation_results, ablation_runs
from .histories import epoch_gradients, history_frame, step_frame, step_summary
from .paired import DIFFERENCE_COLUMNS, PairedComparison, difference_row, matched_pairs, paired_comparison
from .tables import METHODS, grid_rows, task_order, with_run_column
from .tuning import CHOSEN_BUDGET, scaled_grid_tag

HOLDS, FAILS, OFFLINE = "holds at mini scale", "does not hold at mini scale", "cannot be tested offline"
#: The abstract's figure: SHIP's mean of VTAB-1k group means minus VPT-deep's (official results vs the VPT paper).
PAPER_GAIN_OVER_VPT = 4.9
#: Components whose removal the paper's ablation credits with a gain; the tag of the variant without each.
COMPONENTS = {"SIP": "no-sip", "SSP": "no-ssp", "AP": "no-ap", "PML": "no-pml", "DA": "no-da"}
ROBUSTNESS = {"threshold α": ("alpha=0.00", "alpha=0.80", "alpha=0.95", "alpha=1.00"),
              "prompt length K": ("K=5", "K=20", "K=40")}
GPU_COMMAND = ("python -m shiplib sweep --tasks vtab1k --methods ship vpt_deep --seeds 1-3 --launcher slurm "
               "--gpus-per-run 1  # needs data/vtab-1k (python -m shiplib.data prepare) and ViT-B_16.npz")
BENCH_FILE = Path("results") / "bench" / "ship_vit_base_patch16_224.json"
#: The grids whose final runs the claims compare, the main one first: the scaled protocol's (20 epochs on the
#: official curve's shape, each task's lr chosen on its val200) and the earlier committed grid (untagged runs: 10
#: epochs of the official per-epoch schedule, one lr per method), whose rows name their protocol.
SCALED_GRID = scaled_grid_tag(CHOSEN_BUDGET)
GRIDS = {"scaled": SCALED_GRID, "committed": None}
MAIN_GRID = next(iter(GRIDS))


@dataclass(frozen=True)
class Claim:
    """One row of the verdict table."""

    claim: str
    paper: str
    companion: str
    verdict: str
    evidence: str


def evidence_text(c: PairedComparison, unit: str = "points", decimals: int = 1) -> str:
    f = f"{{:+.{decimals}f}}"
    return (f"{f.format(c.mean_diff)} {unit}, 95% CI [{f.format(c.ci_low)}, {f.format(c.ci_high)}], W/T/L "
            f"{c.wins}/{c.ties}/{c.losses} over {c.n_pairs} (task, seed) pairs")


def verdict(c: PairedComparison, higher_is_better: bool = True) -> str:
    """HOLDS when the CI of `a − b` lies on the claimed side of 0, else FAILS with the reason."""
    low, high = (c.ci_low, c.ci_high) if higher_is_better else (-c.ci_high, -c.ci_low)
    if low > 0:
        return HOLDS
    if high < 0:
        return f"{FAILS}: {c.a} is {'lower' if higher_is_better else 'higher'}"
    return f"{FAILS}: the difference is within seed noise"


def coverage(tasks, benchmark: str) -> str:
    """' (k of N tasks so far: …)' when a comparison rests on fewer than all of the benchmark's tasks, else ''."""
    every = task_order(benchmark)
    have = [t for t in every if t in set(tasks)]
    return "" if len(have) == len(every) else f" ({len(have)} of {len(every)} tasks so far: " + \
        ", ".join(t.removeprefix(f"{benchmark}_") for t in have) + ")"


def paired_tasks(results: pd.DataFrame, a: str, b: str, metric: str = "acc_last") -> list[str]:
    """The tasks on which runs `a` and `b` share at least one seed (none when either has no results)."""
    if results.empty or not {a, b} <= set(with_run_column(results)["run"]):
        return []
    return sorted(set(matched_pairs(results, a, b, metric)[0]["task"]))


def _better_than(results: pd.DataFrame, a: str, b: str, paper: str, claim: str, tasks: str) -> Claim:
    """`tasks`: the `coverage` of the comparison."""
    c = paired_comparison(results, a, b)
    return Claim(claim, paper, evidence_text(c), verdict(c) + tasks,
                 f"paired_comparison(results, {a!r}, {b!r}); means {c.mean_a:.1f} vs {c.mean_b:.1f}")


def _grid_claim(claim: str, grid: str) -> str:
    return claim if grid == MAIN_GRID else f"{claim} ({grid} protocol)"


def method_claims(results: pd.DataFrame, grid: str = MAIN_GRID, benchmark: str = "mini") -> list[Claim]:
    """SHIP against VPT-deep (the abstract's claim) and against every other method the grid pairs it with; a
    verdict resting on fewer than all tasks says which (`coverage`)."""
    rows = []
    for other in ("vpt_deep", *(m for m in METHODS if m not in ("ship", "vpt_deep"))):
        tasks = paired_tasks(results, "ship", other)
        if not tasks:
            continue
        paper = (f"+{PAPER_GAIN_OVER_VPT} points (VTAB-1k, ViT-B/16)" if other == "vpt_deep" else
                 "SHIP ahead (paper's table; per-method numbers not in this project's reference data)")
        name = "VPT-deep" if other == "vpt_deep" else other
        rows.append(_better_than(results, "ship", other, paper, _grid_claim(f"SHIP is more accurate than {name}",
                                                                            grid), coverage(tasks, benchmark)))
    return rows


def convergence_claim(history: pd.DataFrame, grid: str = MAIN_GRID, benchmark: str = "mini") -> Claim | None:
    """Fig. 3: SHIP's training loss ends lower than VPT-deep's (last epoch's cross-entropy, paired by task and
    seed); None when no (task, seed) has both."""
    if history.empty:
        return None
    last = history.loc[history.groupby(["task", "run", "seed"])["epoch"].idxmax()].rename(columns={"ce": "final_ce"})
    tasks = paired_tasks(last, "ship", "vpt_deep", "final_ce")
    if not tasks:
        return None
    c = paired_comparison(last, "ship", "vpt_deep", metric="final_ce")
    return Claim(_grid_claim("SHIP's training loss falls below VPT-deep's (Fig. 3)", grid),
                 "SHIP's curve lies below VPT-deep's",
                 evidence_text(c, unit="nats (last-epoch training CE, SHIP − VPT-deep)", decimals=2),
                 verdict(c, higher_is_better=False) + coverage(tasks, benchmark),
                 "history_frame(results): last epoch's `ce` per (task, seed)")


def component_claims(ablations: pd.DataFrame, grid: str = MAIN_GRID, benchmark: str = "mini") -> list[Claim]:
    """Each component helps: SHIP without it minus full SHIP, paired over the ablation's (task, seed) cells, lies
    below 0 (components without paired runs in the grid get no row)."""
    rows = []
    for name, tag in COMPONENTS.items():
        tasks = paired_tasks(ablation_runs(ablations), run_name(METHOD, tag), METHOD)
        if not tasks:
            continue
        c = ablation_paired(ablations, tag)
        rows.append(Claim(_grid_claim(f"{name} improves SHIP", grid), "each component adds accuracy (paper's "
                          "ablation; numbers not in this project's reference data)", f"without {name}: "
                          f"{evidence_text(c)}", verdict(c, higher_is_better=False) + coverage(tasks, benchmark),
                          f"ablation_paired(ablations, {tag!r})"))
    return rows


def robustness_claims(ablations: pd.DataFrame, grid: str = MAIN_GRID) -> list[Claim]:
    """Robust to α and K: no setting differs from the default beyond seed noise (every paired CI spans 0)."""
    rows = []
    for factor, tags in ROBUSTNESS.items():
        comps = {t: ablation_paired(ablations, t) for t in tags}
        worst = max(comps, key=lambda t: abs(comps[t].mean_diff))
        outside = [t for t, c in comps.items() if c.ci_low > 0 or c.ci_high < 0]
        rows.append(Claim(
            _grid_claim(f"SHIP is robust to {factor}", grid),
            "accuracy changes little across settings (paper's ablation)",
            f"largest change, {worst}: {evidence_text(comps[worst])}",
            HOLDS if not outside else f"{FAILS}: {', '.join(outside)} differ beyond seed noise",
            f"ablation_paired(ablations, <setting>) for {', '.join(tags)}"))
    return rows


def inference_claim(bench: dict) -> Claim:
    """Decoupled attention's inference saving: SHIP's evaluation FLOPs and time on ViT-B/16 against plain timm."""
    flops = bench["eval_gflops"] / bench["timm_eval_gflops"]
    ok = flops < 1
    return Claim(
        "Decoupled attention reduces inference cost", "reduced inference cost (no number in this project's "
        "reference data; the official code implements no saving)",
        f"eval {bench['eval_gflops']:.0f} GFLOPs vs {bench['timm_eval_gflops']:.0f} for plain ViT-B/16 "
        f"({flops:.2f}×); time {bench['eval_vs_timm']:.2f}× (batch {bench['batch']}, {bench['threads']} CPU threads)",
        ("holds" if ok else "does not hold") + " on ViT-B/16 shapes (FLOPs and time need no pretrained weights)",
        f"{BENCH_FILE.as_posix()} (python -m shiplib bench --method ship --backbone vit_base_patch16_224 --flops)")


def grid_tag(grid: str) -> str | None:
    """The tag of one of `GRIDS` (None: the untagged runs)."""
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}: use one of {', '.join(GRIDS)}")
    return GRIDS[grid]


def of_grid(frame: pd.DataFrame, grid: str) -> pd.DataFrame:
    """The rows of one of `GRIDS` in a frame of results or histories, under plain method names (`grid_rows`)."""
    return grid_rows(frame, grid_tag(grid))


def grid_results(results_dir: str | os.PathLike = "results", benchmark: str = "mini",
                 grid: str = MAIN_GRID) -> pd.DataFrame:
    """The final runs of one of `GRIDS` (`of_grid`)."""
    return of_grid(load_results(results_dir, protocol="final", benchmark=benchmark), grid)


def claims(results_dir: str | os.PathLike = "results", benchmark: str = "mini") -> list[Claim]:
    """Every testable claim, computed from the committed results under `results_dir`: the accuracy, convergence and
    component claims on the main grid (while it lacks tasks, each verdict says which tasks it rests on), the
    inference, robustness and VTAB-1k claims, then the first three again on the committed grid, for comparison."""
    ablations = {grid: grid_ablations(results_dir, benchmark, grid) for grid in GRIDS}
    bench = json.loads((Path(results_dir) / "bench" / BENCH_FILE.name).read_text(encoding="utf-8"))
    results = load_results(results_dir, protocol="final", benchmark=benchmark)
    histories = history_frame(results_dir, benchmark=benchmark,
                              runs=[run_name(m, t) for m in ("ship", "vpt_deep") for t in GRIDS.values()])
    rows = {}
    for grid in GRIDS:
        rows[grid] = dict(
            methods=method_claims(of_grid(results, grid), grid, benchmark),
            convergence=[c for c in [convergence_claim(of_grid(histories, grid), grid, benchmark)] if c is not None],
            components=component_claims(ablations[grid], grid, benchmark))
    # α and K were ablated on the committed grid only (their rows say so)
    return [
        *(claim for part in rows[MAIN_GRID].values() for claim in part),
        inference_claim(bench),
        *robustness_claims(ablations["committed"], "committed"),
        Claim("SHIP gains 4.9 points over VPT-deep on VTAB-1k", f"+{PAPER_GAIN_OVER_VPT} points",
              "needs the 19 VTAB-1k tasks and the in21k ViT-B/16 weights", OFFLINE, GPU_COMMAND),
        *(claim for grid in GRIDS if grid != MAIN_GRID for part in rows[grid].values() for claim in part),
    ]


def claims_table(results_dir: str | os.PathLike = "results", benchmark: str = "mini") -> pd.DataFrame:
    return pd.DataFrame([c.__dict__ for c in claims(results_dir, benchmark)]).set_index("claim")


def task_differences(results: pd.DataFrame, a: str = "ship", b: str = "vpt_deep") -> pd.Series:
    """Per task: the mean over seeds of `a − b` (paired cells only), most negative first."""
    c = paired_comparison(results, a, b)  # checks both runs exist
    wide = results.assign(run=[m if pd.isna(t) else f"{m}+{t}" for m, t in zip(results["method"], results["tag"])])
    wide = wide[wide["run"].isin([c.a, c.b])].pivot_table(index=["task", "seed"], columns="run", values="acc_last")
    return (wide[a] - wide[b]).dropna().groupby("task").mean().sort_values().rename(f"{a} − {b}")


def grid_ablations(results_dir: str | os.PathLike = "results", benchmark: str = "mini",
                   grid: str = MAIN_GRID) -> pd.DataFrame:
    """SHIP's ablations of one of `GRIDS` (`ablation_results`): the grid's own SHIP runs are the reference."""
    return ablation_results(results_dir, benchmark=benchmark, grid_tag=grid_tag(grid))


def losing_tasks(results: pd.DataFrame, a: str = "ship", b: str = "vpt_deep") -> pd.Series:
    """`task_differences` of the tasks where `a` is behind `b`, most negative first."""
    gaps = task_differences(results, a, b)
    return gaps[gaps < 0]


def costs_on_losing_tasks(results: pd.DataFrame, ablations: pd.DataFrame, a: str = "ship",
                          b: str = "vpt_deep") -> pd.DataFrame:
    """On the tasks where `a` is behind `b`: what switching each SHIP component off changes (variant − SHIP,
    paired over those tasks' seeds), largest gain first. The top row names the component that costs SHIP most.
    Empty while no component has a paired run on a losing task."""
    cols = ["tasks", *DIFFERENCE_COLUMNS]
    part = ablations[ablations["task"].isin(losing_tasks(results, a, b).index)]
    rows = []
    for name, tag in COMPONENTS.items():
        tasks = paired_tasks(ablation_runs(part), run_name(METHOD, tag), METHOD)
        if not tasks:
            continue
        rows.append({"switched off": name, "tasks": ", ".join(tasks), **difference_row(ablation_paired(part, tag))})
    if not rows:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="switched off"))
    return pd.DataFrame(rows).sort_values("difference", ascending=False).set_index("switched off")


def costs_sentence(results: pd.DataFrame, ablations: pd.DataFrame, a: str = "ship", b: str = "vpt_deep",
                   benchmark: str = "mini") -> str:
    """`costs_on_losing_tasks` in words, the component that costs `a` most first (the README quotes it for the
    scaled grid; a test holds the two together)."""
    gaps = losing_tasks(results, a, b)
    if gaps.empty:
        return f"{a} is behind {b} on no task of this grid."
    costs = costs_on_losing_tasks(results, ablations, a, b)
    where = ", ".join(f"{t.removeprefix(f'{benchmark}_')} {d:+.1f}" for t, d in gaps.items())
    if costs.empty:
        return f"{a} is behind {b} on {where}; no component ablation has run on those tasks yet."
    each = "; ".join(f"without {name} {r['difference']:+.1f} points, CI {r['CI']}, W/T/L {r['W/T/L']} over "
                     f"{r['pairs']} pairs" for name, r in costs.iterrows())
    return (f"{a} is behind {b} on {where} (mean over seeds). Switching one component off on those tasks, paired "
            f"with {a}'s own runs, changes its accuracy by: {each}.")


def variants_against(results: pd.DataFrame, ablations: pd.DataFrame, b: str = "vpt_deep",
                     factor: str = "components") -> pd.DataFrame:
    """SHIP and each of its `factor` variants against `b` of the same grid (variant − `b`, paired over the (task,
    seed) cells both have), best first: how close SHIP comes to `b` with parts of it switched off. The variants run
    at SHIP's lr per task, so a variant that would want another lr is, if anything, underrated."""
    runs = ablation_runs(ablations[ablations["variant"].eq(REFERENCE) | ablations["factor"].eq(factor)])
    both = pd.concat([runs, results[results["method"] == b]], ignore_index=True)
    rows = []
    for variant in dict.fromkeys(runs["variant"]):
        name = run_name(METHOD, None if variant == REFERENCE else variant)
        if not paired_tasks(both, name, b):
            continue
        rows.append({"run": name, **difference_row(paired_comparison(both, name, b))})
    frame = pd.DataFrame(rows, columns=["run", *DIFFERENCE_COLUMNS])
    return frame.sort_values("difference", ascending=False).set_index("run")


def protocol_differences(results_dir: str | os.PathLike = "results", benchmark: str = "mini", a: str = "ship",
                         b: str = "vpt_deep") -> tuple[pd.DataFrame, pd.DataFrame]:
    """`a − b` under each grid of `GRIDS`: per task (each run's mean over the paired seeds, the difference and the
    number of seeds), and overall (`difference_row`), paired over every (task, seed) cell each grid has and over the
    tasks all grids share."""
    results = load_results(results_dir, protocol="final", benchmark=benchmark)
    grids = {g: of_grid(results, g) for g in GRIDS}
    grids = {g: df for g, df in grids.items() if paired_tasks(df, a, b)}
    per_task = pd.DataFrame(index=pd.Index([t for t in task_order(benchmark)
                                            if any(t in set(df["task"]) for df in grids.values())], name="task"))
    for g, df in grids.items():
        pairs = matched_pairs(df, a, b)[0].groupby("task")
        for name, column in ((a, pairs[a].mean()), (b, pairs[b].mean()), (f"{a} − {b}", task_differences(df, a, b))):
            per_task[f"{g}: {name}"] = column.round(1)
        per_task[f"{g}: seeds"] = pairs.size().reindex(per_task.index).astype("Int64")
    shared = sorted(set.intersection(*(set(paired_tasks(df, a, b)) for df in grids.values()))) if grids else []
    rows = []
    for g, df in grids.items():
        for scope, part in (("every task it has", df), ("the tasks both grids have", df[df["task"].isin(shared)])):
            if scope != "every task it has" and (len(grids) < 2 or part.empty):
                continue
            c = paired_comparison(part, a, b)
            rows.append({"grid": g, "over": scope, "tasks": c.n_tasks, **difference_row(c), "verdict": verdict(c)})
    return per_task, pd.DataFrame(rows).set_index(["grid", "over"]) if rows else pd.DataFrame()


def protocol_overview(results_dir: str | os.PathLike = "results", benchmark: str = "mini",
                      a: str = "ship") -> pd.DataFrame:
    """`a` against every other method under each grid of `GRIDS`, one row per (method, grid): the tasks paired, both
    runs' means over the paired (task, seed) cells, `a − method` (`difference_row`) and its verdict."""
    results = load_results(results_dir, protocol="final", benchmark=benchmark)
    grids = {g: of_grid(results, g) for g in GRIDS}
    rows = []
    for other in (m for m in METHODS if m != a):
        for g, df in grids.items():
            tasks = paired_tasks(df, a, other)
            if not tasks:
                continue
            c = paired_comparison(df, a, other)
            rows.append({"method": other, "grid": g, "tasks": len(tasks), f"{a} mean": round(c.mean_a, 1),
                         "its mean": round(c.mean_b, 1), **difference_row(c), "verdict": verdict(c)})
    columns = ["method", "grid", "tasks", f"{a} mean", "its mean", *DIFFERENCE_COLUMNS, "verdict"]
    return pd.DataFrame(rows, columns=columns).set_index(["method", "grid"])


def losses_above_chance(results_dir: str | os.PathLike = "results", benchmark: str = "mini",
                        grid: str = MAIN_GRID) -> pd.DataFrame:
    """Per (task, method) of a grid's runs that log per-step losses: `step_summary` (the highest smoothed training
    cross-entropy after the warm-up, mean over seeds, against ln(number of classes)), and at the epoch after the
    warm-up with the highest mean cross-entropy its lr and the trainable part with the largest gradient norm
    (`epoch_gradients`); the rows above chance first."""
    runs = {run_name(m, grid_tag(grid)): m for m in METHODS}
    steps = step_frame(results_dir, runs=list(runs), benchmark=benchmark)
    parts = []
    for task, part in steps.groupby("task", sort=False):
        summary = step_summary(part, get_task(task).num_classes)
        per_epoch = epoch_gradients(part[part["fraction"] >= 0.1])
        for run in summary.index:
            epochs = per_epoch.loc[run]
            peak = epochs["ce"].idxmax()
            norms = epochs.loc[peak].drop(["lr", "ce"]).dropna()
            summary.loc[run, ["peak_epoch", "lr_there"]] = [peak, epochs.loc[peak, "lr"]]
            summary.loc[run, ["largest_gradient", "its_norm"]] = [norms.idxmax().removeprefix("grad_norm."),
                                                                  norms.max()] if len(norms) else [None, None]
        summary.index = [runs[run] for run in summary.index]
        parts.append(summary.rename_axis("method").reset_index().assign(task=task))
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts).set_index(["task", "method"]).astype({"peak_epoch": int})
    return out.sort_values(["above_chance", "peak_ce_after_warmup"], ascending=False)


def protocol_sentence(results_dir: str | os.PathLike = "results", benchmark: str = "mini", a: str = "ship",
                      b: str = "vpt_deep") -> str:
    """`protocol_differences` in words: `a − b` on the scaled grid, on the same tasks under the committed
    protocol, and per task (the README states it; a test holds the two together)."""
    per_task, overall = protocol_differences(results_dir, benchmark, a, b)
    if overall.empty or "scaled" not in overall.index.get_level_values("grid"):
        return f"The scaled grid has no paired runs of {a} and {b} yet."
    scaled = overall.loc[("scaled", "every task it has")]
    same = overall.loc[("committed", "the tasks both grids have")]
    diff = f"{a} − {b}"
    tasks = per_task[per_task[f"scaled: {diff}"].notna()]
    each = ", ".join(f"{t.removeprefix(f'{benchmark}_')} {r[f'scaled: {diff}']:+.1f} ({r[f'committed: {diff}']:+.1f})"
                     for t, r in tasks.iterrows())
    gain = {m: (tasks[f"scaled: {m}"] - tasks[f"committed: {m}"]).mean() for m in (a, b)}
    return (f"Under the scaled protocol, {diff} is {scaled['difference']:+.1f} points, 95 % CI {scaled['CI']}, "
            f"W/T/L {scaled['W/T/L']} over {scaled['pairs']} (task, seed) pairs on {scaled['tasks']} tasks; on the "
            f"same tasks the committed protocol gives {same['difference']:+.1f}, CI {same['CI']}, W/T/L "
            f"{same['W/T/L']}. Per task, scaled (committed): {each}. From the committed protocol to the scaled one, "
            f"{a} gains "
            f"{gain[a]:+.1f} and {b} {gain[b]:+.1f} points (mean over these tasks).")
