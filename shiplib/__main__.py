"""Command line: `python -m shiplib <command> …` (also installed as `shiplib`).

    run    one (task, method, seed): train, evaluate, write results/<benchmark>/<task>/<method>/seed<k>.json
    sweep  the product tasks × methods × seeds, skipping runs whose result already exists
    bench  seconds per batch, peak memory and FLOPs of a method against the plain timm ViT

Each subcommand is one entry of `COMMANDS` (name -> (help, add_arguments, handler)); new ones plug in there.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import sys

COMMANDS: dict = {}


def command(name: str, help: str, add_arguments):
    def deco(handler):
        COMMANDS[name] = (help, add_arguments, handler)
        return handler

    return deco


# ----- shared options -----
def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, help="number of epochs (default: the per-task default, 100)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run setting or method option, e.g. --set lr=5e-4 --set K=50 (repeatable)")
    p.add_argument("--protocol", choices=("final", "tune"), default="final",
                   help="final: train800val200 -> test (default); tune: train800 -> val200, for model selection")
    p.add_argument("--tag", help="name this variant (results go to <method>+<tag>/), e.g. for an lr sweep")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--runs", default="runs", help="folder for checkpoints, logs and caches (default: runs)")
    p.add_argument("--data-root", help="folder holding <task>/train800.txt … (default: $SHIPLIB_DATA, then data/)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1 …")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start from epoch 0")
    p.add_argument("--force", action="store_true", help="re-run even if a result exists (overwrites it)")


def _config(args, task: str, method: str, seed: int):
    from .engine import RunConfig, parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    base = RunConfig(task=task, method=method, seed=seed, protocol=args.protocol, tag=args.tag,
                     results_dir=args.results, runs_dir=args.runs, data_root=args.data_root, device=args.device,
                     threads=args.threads, num_workers=args.workers, progress=not args.no_progress,
                     resume=not args.fresh)
    return base.with_overrides(overrides)


def _report(result: dict) -> str:
    return (f"{result['task']} {result['method']}{'+' + result['tag'] if result.get('tag') else ''} "
            f"seed {result['seed']} [{result['protocol']}, {result['eval_split']}]: "
            f"acc_last {result['acc_last']:.2f}%  acc_max_over_epochs {result['acc_max_over_epochs']:.2f}% "
            f"(epoch {result['max_epoch']})")


# ----- run -----
def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="task name (e.g. svhn, or a mini-VTAB task)")
    p.add_argument("--method", required=True, help="method name (shiplib.list_methods())")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1, as the official runs)")
    _add_run_options(p)


@command("run", "train and evaluate one task/method/seed", _add_run)
def _run(args) -> int:
    from .engine import run_experiment

    result = run_experiment(_config(args, args.task, args.method, args.seed), force=args.force)
    print(_report(result))
    return 0


# ----- sweep -----
def _expand_tasks(names: list[str]) -> list[str]:
    from .data.tasks import get_task, list_tasks

    out = []
    for name in names:
        expanded = list_tasks(benchmark=name) if name in ("vtab1k", "mini") else [get_task(name).name]
        out += [t for t in expanded if t not in out]
    return out


def _expand_seeds(items: list[str]) -> list[int]:
    seeds = []
    for item in items:
        lo, sep, hi = item.partition("-")
        try:
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(item)]
        except ValueError:
            raise SystemExit(f"error: --seeds takes integers or ranges like 1-5, got {item!r}") from None
    return seeds


def _add_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", nargs="+", required=True,
                   help="task names; 'vtab1k' or 'mini' stands for all tasks of that benchmark")
    p.add_argument("--methods", nargs="+", required=True, help="method names")
    p.add_argument("--seeds", nargs="+", default=["1"], help="seeds or ranges (e.g. 1 2 3 or 1-5; default 1)")
    p.add_argument("--keep-going", action="store_true", help="continue after a failed run (report at the end)")
    p.add_argument("--dry-run", action="store_true", help="list what would run or be skipped, and stop")
    _add_run_options(p)


@command("sweep", "run tasks × methods × seeds, skipping finished runs", _add_sweep)
def _sweep(args) -> int:
    from .engine import resolve_config, run_experiment
    from .engine.results import is_finished
    from .engine.run import paths_for

    jobs = list(itertools.product(_expand_tasks(args.tasks), args.methods, _expand_seeds(args.seeds)))
    configs = [_config(args, *job) for job in jobs]  # bad names / --set keys fail here, before any training
    failed, done, skipped = [], 0, 0
    for i, cfg in enumerate(configs, 1):
        resolved = resolve_config(cfg)
        path = paths_for(resolved)["result"]
        label = f"[{i}/{len(configs)}] {cfg.task} {cfg.method} seed {cfg.seed}"
        if not args.force and is_finished(path, resolved["identity"]):
            print(f"{label}: skip (finished: {path})")
            skipped += 1
            continue
        if args.dry_run:
            print(f"{label}: would run -> {path}")
            continue
        print(f"{label}: run", flush=True)
        try:
            print(f"{label}: {_report(run_experiment(cfg, force=args.force))}", flush=True)
            done += 1
        except Exception as e:  # noqa: BLE001 (reported and counted; re-raised unless --keep-going)
            if not args.keep_going:
                raise
            failed.append((label, e))
            print(f"{label}: FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    print(f"sweep: {done} run, {skipped} skipped, {len(failed)} failed")
    return 1 if failed else 0


def _add_bench(p: argparse.ArgumentParser) -> None:
    from .bench import add_arguments

    add_arguments(p)


@command("bench", "time a method (eval, train step, reference implementation) against the plain timm ViT",
         _add_bench)
def _bench(args) -> int:
    from .bench import main as bench_main

    return bench_main(args)


# ----- entry point -----
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shiplib", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (help_text, add_arguments, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(handler=handler)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from .backbones import BackboneError
    from .engine import ConfigError
    from .engine.loop import NonFiniteLossError

    return ConfigError, BackboneError, NonFiniteLossError, FileNotFoundError, NotADirectoryError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.handler(args)
    except _user_errors() as e:
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
