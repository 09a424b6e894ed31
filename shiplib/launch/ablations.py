"""SHIP ablations: the one table of variants (tag -> SHIP options) and running the missing ones.

A variant's results live in `results/<benchmark>/<task>/ship+<tag>/seed<k>.json`; the untagged `ship` run is
the reference ("SHIP, all on", per-task defaults). Running a variant is the CLI's code path:
`python -m shiplib sweep --tasks mini --methods ship --tag no-sip --set sip=false` (see `sweep_commands`);
`shiplib.report.ablations` reads the results.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..data.tasks import list_tasks, pick_tasks
from ..engine import RunConfig, resolve_config, run_experiment
from ..engine.resolved import paths_for
from ..engine.results import is_finished, run_name


METHOD = "ship"
REFERENCE = "ship (all on, defaults)"
#: Factors in display order, with what each varies.
FACTORS = {
    "components": "switch one part off (SIP, SSP, AP, PML, decoupled attention) or keep SIP only",
    "threshold": "share threshold α of the semantic-level search (1.0: every block its own level; low: one level)",
    "prompt_length": "K, tokens per semantic-independent prompt",
    "prototype_bank": "attribute prototypes: k-means with k clusters of last-block features, or a random bank "
                      "(Gaussian draws at the k-means bank's per-dimension mean and std)",
    "da_scale": "decoupled-attention scale s in (1 - s)·image-image + s·image-prompt",
}
#: Which tasks each factor is run on: "all" tasks of the benchmark, or the first task of each "group".
#: α values around the default 0.9: one that gives a single level on the mini backbone (its blocks' affinity to
#: block 0 stays above it on every mini task), two between, and 1.0.
ONE_LEVEL_AND_OTHER_ALPHAS = (0.0, 0.8, 0.95, 1.0)
FACTOR_TASKS = {"components": "all", "threshold": "group", "prompt_length": "group", "prototype_bank": "group",
                "da_scale": "group"}


@dataclass(frozen=True)
class AblationVariant:
    tag: str
    factor: str
    value: object  # what the variant sets (a number for sweeps, a name for components)
    options: dict = field(default_factory=dict)

    @property
    def run(self) -> str:
        return run_name(METHOD, self.tag)

    @property
    def set_flags(self) -> str:
        """The CLI flags that make a SHIP run this variant (`--set da=false`)."""
        return " ".join(f"--set {k}={_cli_value(x)}" for k, x in self.options.items())


def _variants() -> tuple[AblationVariant, ...]:
    """Each hyperparameter around its mini default (α 0.9, K 10, k-means k 200, s 0.1), which the reference runs."""
    out = [AblationVariant(f"no-{part}", "components", f"no {part.upper()}", {part: False})
           for part in ("sip", "ssp", "ap", "pml", "da")]
    out.append(AblationVariant("sip-only", "components", "SIP only",
                               dict(ssp=False, ap=False, pml=False, da=False)))
    out += [AblationVariant(f"alpha={a:.2f}", "threshold", a, {"threshold": a}) for a in ONE_LEVEL_AND_OTHER_ALPHAS]
    out += [AblationVariant(f"K={k}", "prompt_length", k, {"prompt_length": k}) for k in (5, 20, 40)]
    out += [AblationVariant(f"protos={k}", "prototype_bank", f"k-means, k={k}", {"num_prototypes": k})
            for k in (25, 50, 100)]
    out.append(AblationVariant("protos=random", "prototype_bank", "random, k=200", {"prototype_bank": "random"}))
    out += [AblationVariant(f"da_scale={s:g}", "da_scale", s, {"da_scale": s}) for s in (0.02, 0.3, 0.5)]
    return tuple(out)


#: The one list of ablation variants (used by the notebook, `sweep_commands` and `run_ablations`).
ABLATION_VARIANTS: tuple[AblationVariant, ...] = _variants()


def grid_variant_tag(variant_tag: str, grid_tag: str | None = None) -> str:
    """The tag of a variant's runs in a grid: its own tag in the committed grid (untagged reference), or
    `<variant>.<grid tag>` beside that grid's tagged SHIP runs (`no-da.scaled-e20` beside `ship+scaled-e20`)."""
    return variant_tag if grid_tag is None else f"{variant_tag}.{grid_tag}"


def get_variant(tag: str) -> AblationVariant:
    for v in ABLATION_VARIANTS:
        if v.tag == tag:
            return v
    raise KeyError(f"unknown ablation variant {tag!r}; valid: {', '.join(v.tag for v in ABLATION_VARIANTS)}")


def select_variants(tags=None, factors=None) -> list[AblationVariant]:
    """Variants by tag and/or factor (None: all)."""
    if factors is not None:
        unknown = sorted(set(factors) - set(FACTORS))
        if unknown:
            raise ValueError(f"unknown ablation factor(s) {unknown}; valid: {', '.join(FACTORS)}")
    chosen = [get_variant(t) for t in tags] if tags is not None else list(ABLATION_VARIANTS)
    return [v for v in chosen if factors is None or v.factor in factors]


def factor_tasks(factor: str, benchmark: str = "mini", tasks=None) -> list[str]:
    """The tasks the factor's variants run on (`FACTOR_TASKS`), or `tasks` when given."""
    if factor not in FACTORS:
        raise ValueError(f"unknown ablation factor {factor!r}; valid: {', '.join(FACTORS)}")
    if tasks is not None:
        return pick_tasks(benchmark, tasks=tasks)
    return list_tasks(benchmark=benchmark) if FACTOR_TASKS[factor] == "all" else pick_tasks(benchmark, 1)


def ablation_plan(benchmark: str = "mini", seeds=(1,), tags=None, factors=None,
                  tasks=None) -> list[tuple[AblationVariant, str, int]]:
    """Every (variant, task, seed) of the chosen variants; tasks per factor unless `tasks` is given."""
    return [(v, task, int(seed)) for v in select_variants(tags, factors)
            for task in factor_tasks(v.factor, benchmark, tasks) for seed in seeds]


def _cli_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else str(value)


def variants_frame() -> pd.DataFrame:
    """The variant table: tag, factor, value, options and the CLI `--set` flags."""
    return pd.DataFrame([dict(tag=v.tag, factor=v.factor, value=v.value, options=v.options,
                              set_flags=v.set_flags)
                         for v in ABLATION_VARIANTS])


def sweep_commands(tasks=None, seeds=("1",), tags=None, factors=None, extra: str = "",
                   benchmark: str = "mini") -> list[str]:
    """The CLI commands that run the chosen variants (one `sweep` per variant, on its factor's tasks unless `tasks`
    is given; finished runs are skipped)."""
    cmds = []
    for v in select_variants(tags, factors):
        cmd = (f"python -m shiplib sweep --tasks {' '.join(factor_tasks(v.factor, benchmark, tasks))} "
               f"--methods {METHOD} --seeds {' '.join(map(str, seeds))} --tag {v.tag} {v.set_flags}")
        cmds.append(f"{cmd} {extra}".strip())
    return cmds


def variant_config(variant: AblationVariant | str, task: str, seed: int = 1, **settings) -> RunConfig:
    """The RunConfig of one variant, built as the CLI builds it (`RunConfig(...).with_overrides(options)`).

    `settings`: RunConfig fields (results_dir, runs_dir, data_root, device, progress, epochs, …) or SHIP options
    shared by all variants; an option the variant itself sets keeps the variant's value.
    """
    v = get_variant(variant) if isinstance(variant, str) else variant
    runtime = {k: settings.pop(k) for k in list(settings) if k in RunConfig.RUNTIME_FIELDS}
    base = RunConfig(task=task, method=METHOD, seed=int(seed), tag=v.tag, **runtime)
    return base.with_overrides({**settings, **v.options})  # the variant's own options win


def missing_runs(tasks=None, seeds=(1,), tags=None, factors=None, benchmark: str = "mini",
                 **settings) -> list[RunConfig]:
    """Configurations of the planned variant runs (`ablation_plan`) whose result file does not exist yet (the
    same check as `sweep`)."""
    missing = []
    for v, task, seed in ablation_plan(benchmark, seeds, tags, factors, tasks):
        cfg = variant_config(v, task, seed, **dict(settings))
        resolved = resolve_config(cfg)
        if not is_finished(paths_for(resolved).result, resolved.identity()):
            missing.append(cfg)
    return missing


def run_ablations(tasks=None, seeds=(1,), tags=None, factors=None, benchmark: str = "mini",
                  **settings) -> list[dict]:
    """Run every missing variant run (resumable; finished ones are skipped) and return the new results."""
    return [run_experiment(cfg) for cfg in missing_runs(tasks, seeds, tags, factors, benchmark, **settings)]
