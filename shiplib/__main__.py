"""Command line: `python -m shiplib <command> …` (also installed as `shiplib`).

    run    one (task, method, seed): train, evaluate, write results/<benchmark>/<task>/<method>/seed<k>.json
    sweep  the product tasks × methods × seeds, skipping runs whose result already exists; --launcher inline
           (default), local (--jobs N processes) or slurm (a submitit job array); --dry-run, --status
    status per cell of a sweep grid: done / running / queued / failed / pending
    bench  seconds per batch, peak memory and FLOPs of a method against the plain timm ViT

Each subcommand is one entry of `COMMANDS` (name -> (help, add_arguments, handler)); new ones plug in there.
A problem the user can fix (`shiplib.errors.ShiplibError`, a missing file, …) is printed as one `error: …` line:
exit code 2 when the command cannot work as given (settings, options, paths, data), 1 when it failed while
working. `--debug` (or SHIPLIB_DEBUG=1) shows the traceback instead.
Ctrl-C, SIGTERM (kill, docker stop, scancel) and SIGHUP stop a command the same way: one line, exit code 128 + the
signal number (130, 143, 129); files being written are removed, the last epoch checkpoint stays consistent, and a
local sweep cancels its runs.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import sys

from .engine.precision import PRECISIONS
from .errors import ConfigError, debug_enabled, exit_code, message, reported_errors
from .utils.signals import Stopped, stop_on_signals

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
    p.add_argument("--precision", choices=PRECISIONS,
                   help="numeric precision: fp32 (default), tf32 (CUDA Ampere+), bf16 or fp16 autocast")
    p.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                   help="compile the model with torch.compile (default backend inductor; off by default: slower on "
                        "CPU today)")
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
    if args.precision is not None:
        overrides["precision"] = args.precision
    base = RunConfig(task=task, method=method, seed=seed, protocol=args.protocol, tag=args.tag,
                     results_dir=args.results, runs_dir=args.runs, data_root=args.data_root, device=args.device,
                     threads=args.threads, num_workers=args.workers, compile=args.compile,
                     progress=not args.no_progress,
                     resume=not args.fresh)
    return base.with_overrides(overrides)


def _report(result: dict) -> str:
    from .engine.results import run_name

    return (f"{result['task']} {run_name(result['method'], result.get('tag') or None)} "
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
    from .launch.job import run_locked

    result = run_locked(_config(args, args.task, args.method, args.seed), force=args.force)
    print(_report(result))
    return 0


# ----- sweep -----
def _expand_seeds(items: list[str]) -> list[int]:
    seeds = []
    for item in items:
        lo, sep, hi = item.partition("-")
        try:
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(item)]
        except ValueError:
            raise ConfigError(f"--seeds takes integers or ranges like 1-5, got {item!r}") from None
        if sep and int(hi) < int(lo):
            raise ConfigError(f"--seeds range {item!r} is empty: write it low-high, e.g. {hi}-{lo}")
    return seeds


def _add_grid(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tasks", nargs="+", required=True,
                   help="task names; 'vtab1k' or 'mini' stands for all tasks of that benchmark")
    p.add_argument("--methods", nargs="+", required=True, help="method names")
    p.add_argument("--seeds", nargs="+", default=["1"], help="seeds or ranges (e.g. 1 2 3 or 1-5; default 1)")


def _add_sweep(p: argparse.ArgumentParser) -> None:
    _add_grid(p)
    p.add_argument("--keep-going", action="store_true",
                   help="inline: continue after an unexpected exception too (a run that fails with a clear error "
                        "never stops the other cells; local/slurm always continue)")
    p.add_argument("--dry-run", action="store_true",
                   help="per cell: to run / finished / stale / running elsewhere; submits nothing")
    p.add_argument("--status", action="store_true", help="show the grid's status (as `status`) and stop")
    g = p.add_argument_group("launcher")
    g.add_argument("--launcher", choices=("inline", "local", "slurm"), default="inline",
                   help="inline: this process, one run after another (default); local: --jobs processes on this "
                        "machine; slurm: one job array, one task per cell")
    g.add_argument("--jobs", type=int, help="local: runs at once (default: one per GPU, else 1 … cores)")
    g.add_argument("--gpus-per-run", type=int, help="local/slurm: GPUs per run (local default: 1 when GPUs exist)")
    g.add_argument("--partition", help="slurm: partition (checked with sinfo)")
    g.add_argument("--time", type=int, default=24 * 60, help="slurm: time limit per run in minutes (default 1440)")
    g.add_argument("--cpus-per-run", type=int, help="slurm: CPUs per run (default: --threads, else 1)")
    g.add_argument("--mem", help="slurm: memory per run, e.g. 16G")
    g.add_argument("--array-parallelism", type=int, help="slurm: most array tasks running at once")
    g.add_argument("--setup", action="append", default=[], metavar="LINE",
                   help="slurm: shell line run before the job, e.g. 'module load cuda' (repeatable)")
    g.add_argument("--slurm", dest="slurm_params", action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: extra sbatch option, e.g. --slurm account=abc --slurm qos=high (repeatable)")
    g.add_argument("--wait", action="store_true", help="slurm: wait until the submitted cells end, then show status")
    _add_run_options(p)


def _grid_cells(args) -> list:
    from .launch.cells import cell_of, expand_tasks

    jobs = list(itertools.product(expand_tasks(args.tasks), args.methods, _expand_seeds(args.seeds)))
    return [cell_of(_config(args, *job)) for job in jobs]  # bad names / --set keys fail here, before any training


def _launch_options(args):
    from .launch.launchers import LaunchOptions, SlurmOptions, parse_slurm_params

    slurm = SlurmOptions(partition=args.partition, time_min=args.time, cpus_per_run=args.cpus_per_run, mem=args.mem,
                         array_parallelism=args.array_parallelism, setup=args.setup,
                         extra=parse_slurm_params(args.slurm_params), wait=args.wait)
    return LaunchOptions(launcher=args.launcher, force=args.force, keep_going=args.keep_going, jobs=args.jobs,
                         threads=args.threads, gpus_per_run=args.gpus_per_run, slurm=slurm)


@command("sweep", "run tasks × methods × seeds (inline, on local processes or SLURM), skipping finished runs",
         _add_sweep)
def _sweep(args) -> int:
    from .launch import launchers

    if args.status:
        return _print_status(args)
    options = _launch_options(args)
    options.check()  # before the cells are resolved: a bad option is named first
    cells = _grid_cells(args)
    if args.dry_run:
        return launchers.dry_run(cells, force=args.force)
    return launchers.launch(cells, options)


# ----- status -----
def _add_status(p: argparse.ArgumentParser) -> None:
    _add_grid(p)
    _add_run_options(p)


def _print_status(args) -> int:
    from .launch.status import format_status, status_frame

    frame = status_frame(_grid_cells(args))
    print(format_status(frame))
    return 0


@command("status", "per cell of a sweep grid: done / running / queued / failed / pending, and counts", _add_status)
def _status(args) -> int:
    return _print_status(args)


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
    parser.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (help_text, add_arguments, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        # also accepted after the command; SUPPRESS keeps a --debug given before it
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="full tracebacks instead of one-line errors")
        p.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    show_traceback = args.verbose or args.debug or debug_enabled()
    try:
        with stop_on_signals():
            return args.handler(args)
    except reported_errors() as e:
        if show_traceback:
            raise
        print(f"error: {message(e)}", file=sys.stderr)
        return exit_code(e)
    except KeyboardInterrupt as e:
        if show_traceback:
            raise
        how = f"stopped by {e}" if isinstance(e, Stopped) else "interrupted"
        print(f"{how} (a run started again resumes after its last saved epoch)", file=sys.stderr)
        return e.exit_code if isinstance(e, Stopped) else 130


if __name__ == "__main__":
    sys.exit(main())
