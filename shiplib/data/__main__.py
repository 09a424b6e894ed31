"""`python -m shiplib.data {prepare,list,build-mini,check}`: create, list and validate task folders."""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import ConfigError, debug_enabled, exit_code, message, reported_errors
from .checks import check_task_folder
from .folder import DEFAULT_FOLDERS, default_root, expected_split_sizes, find_task_dir, resolve_task_dir
from .tasks import get_task, list_tasks

#: Problems printed per task by `check` (the rest are counted).
SHOWN_PROBLEMS = 50


def _task_names(names: list[str] | None, benchmark: str) -> list[str] | None:
    if not names:
        return None
    specs = [get_task(n) for n in names]
    wrong = [s.name for s in specs if s.benchmark != benchmark]
    if wrong:
        raise ConfigError(f"{', '.join(wrong)} not {benchmark} task(s); "
                          f"valid: {', '.join(list_tasks(benchmark))}")
    return [s.name for s in specs]


def cmd_prepare(args) -> int:
    from .tfds_prepare import PrepareError, prepare_tasks

    if not args.all and not args.task:
        raise ConfigError("give --task NAME (repeatable) or --all")
    try:
        results = prepare_tasks(None if args.all else _task_names(args.task, "vtab1k"),
                                args.out or default_root("vtab1k"),
                                data_dir=args.data_dir, manual_dir=args.manual_dir, fmt=args.format,
                                overwrite=args.overwrite, strict_version=args.strict_version)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for task, status in results.items():  # errors were logged in full as they happened
        print(f"{task:22s} {status if status.startswith('ok') else 'error (see above)'}")
    return 1 if any(s.startswith("error") for s in results.values()) else 0


def cmd_list(args) -> int:
    print(f"{'task':22s} {'benchmark':9s} {'group':12s} {'classes':>7s} {'test':>6s}  on disk")
    for name in list_tasks(benchmark=args.benchmark):
        spec = get_task(name)
        found = find_task_dir(name, args.root)
        print(f"{name:22s} {spec.benchmark:9s} {spec.group:12s} {spec.num_classes:7d} "
              f"{spec.test_size or '-':>6}  {found or 'missing'}")
    return 0


def cmd_build_mini(args) -> int:
    try:
        from .mini_vtab import build_mini_vtab
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.mini_vtab":
            raise
        print("error: shiplib.data.mini_vtab is not available in this checkout", file=sys.stderr)
        return 1
    build_mini_vtab(args.out or default_root("mini"), _task_names(args.task, "mini"))
    return 0


def cmd_check(args) -> int:
    """Every problem of each task folder, with its file and line; exit 1 when there is any."""
    if args.max_images is not None and args.max_images < 0:
        print(f"error: --max-images must be 0 or more, got {args.max_images}", file=sys.stderr)
        return 2
    status = 0
    for name in args.task:
        spec = get_task(name)
        try:
            task_dir = resolve_task_dir(spec.name, args.root)
        except (FileNotFoundError, NotADirectoryError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        report = check_task_folder(task_dir, spec.num_classes, expected_split_sizes(spec),
                                   max_images=args.max_images, progress=sys.stderr.isatty())
        problems = report["problems"]
        counts = ", ".join(f"{s}={n}" for s, n in report["counts"].items())
        verdict = "ok" if not problems else f"{len(problems)} problem(s)"
        print(f"{spec.name}: {verdict} ({report['dir']}; {counts or 'no readable split'})")
        if report.get("prepared"):
            print(f"  prepared from {report['prepared']}")
        for problem in problems[:SHOWN_PROBLEMS]:
            print(f"  - {problem}")
        if len(problems) > SHOWN_PROBLEMS:
            print(f"  … and {len(problems) - SHOWN_PROBLEMS} more")
        status = status or (1 if problems else 0)
    return status


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shiplib.data", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare", help="build VTAB-1k task folders from TensorFlow Datasets")
    s.add_argument("--task", action="append", help="task name or alias (repeatable)")
    s.add_argument("--all", action="store_true", help="all 19 VTAB-1k tasks")
    s.add_argument("--out", help=f"root of the folder layout (default: <project>/{DEFAULT_FOLDERS['vtab1k']})")
    s.add_argument("--data-dir", help="TFDS data dir (default: TFDS's, i.e. $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    s.add_argument("--manual-dir",
                   help="folder with manually downloaded sources (default: <data-dir>/downloads/manual)")
    s.add_argument("--format", choices=("jpeg", "png"), default="jpeg",
                   help="image format (default: jpeg, PIL quality 75)")
    s.add_argument("--overwrite", action="store_true", help="rebuild task folders that already exist")
    s.add_argument("--strict-version", action="store_true",
                   help="refuse a TFDS version other than VTAB-1k's instead of warning")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("list", help="list tasks and whether their folders are on disk")
    s.add_argument("--benchmark", choices=("vtab1k", "mini"))
    s.add_argument("--root", help="search only this root (default: $SHIPLIB_DATA, then data/vtab-1k or data/mini-vtab)")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("build-mini", help="build the offline mini-VTAB folders")
    s.add_argument("--out", help=f"output root (default: <project>/{DEFAULT_FOLDERS['mini']})")
    s.add_argument("--task", action="append", help="mini task name (repeatable; default: all)")
    s.set_defaults(func=cmd_build_mini)

    s = sub.add_parser("check", help="validate prepared task folders (counts, labels, images decode)")
    s.add_argument("--task", action="append", required=True, help="task name or alias (repeatable)")
    s.add_argument("--root", help="root of the folder layout (default: as for `list`)")
    s.add_argument("--max-images", type=int, help="decode only the first N images per split")
    s.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except KeyError as e:  # unknown task name: the message already lists suggestions
        if args.debug or debug_enabled():
            raise
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    except reported_errors() as e:
        if args.debug or debug_enabled():
            raise
        print(f"error: {message(e)}", file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
