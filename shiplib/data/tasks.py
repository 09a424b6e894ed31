"""The one task registry: every task of every benchmark (VTAB-1k and the offline mini-VTAB).

The task name alone picks the benchmark: VTAB-1k names (`svhn`, …) and mini-VTAB names (`mini_*`)
never collide. The registry imports no task table: `shiplib.data` imports them (`vtab1k`, `mini_vtab`), and
importing a table registers its tasks.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..utils.checks import choice, positive_int

GROUPS = ("natural", "specialized", "structured")


@dataclass(frozen=True)
class TaskSpec:
    name: str                     # canonical folder name
    benchmark: str                # "vtab1k" or "mini"
    group: str                    # natural / specialized / structured
    num_classes: int
    aliases: tuple[str, ...] = ()
    image_size: int | None = None  # native size of the stored images, when fixed (mini: 32)
    test_size: int | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        choice(f"task {self.name}: group", self.group, GROUPS)


_TASKS: dict[str, TaskSpec] = {}
_ALIASES: dict[str, str] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    for key in (spec.name, *spec.aliases):
        owner = _ALIASES.get(key.lower())
        if owner is not None and owner != spec.name:
            raise ValueError(f"task name/alias {key!r} is already used by {owner!r}")
    _TASKS[spec.name] = spec
    for key in (spec.name, *spec.aliases):
        _ALIASES[key.lower()] = spec.name
    return spec


def get_task(name: str) -> TaskSpec:
    """Look a task up by canonical name or alias (case-insensitive); unknown names fail with suggestions."""
    key = str(name).strip().lower()
    if key in _ALIASES:
        return _TASKS[_ALIASES[key]]
    close = difflib.get_close_matches(key, list(_ALIASES), n=3, cutoff=0.5)
    suggestions = dict.fromkeys(_ALIASES[c] for c in close)  # several aliases may name one task
    hint = f" Did you mean {', '.join(map(repr, suggestions))}?" if close else ""
    raise KeyError(f"unknown task {name!r}.{hint} Valid tasks: {', '.join(list_tasks())}")


def list_tasks(benchmark: str | None = None, group: str | None = None) -> list[str]:
    return [t.name for t in _TASKS.values()
            if (benchmark is None or t.benchmark == benchmark) and (group is None or t.group == group)]


def pick_tasks(benchmark: str = "mini", per_group: int = 1, tasks=None) -> list[str]:
    """`tasks` if given (a list, or text as papermill's `-p` passes it: '["a", "b"]' or 'a, b'), else the first
    `per_group` tasks of each group (registry order). Unknown names are a ConfigError listing the valid ones."""
    if tasks is not None:
        if isinstance(tasks, str):
            text = tasks.strip()
            try:
                tasks = json.loads(text) if text.startswith("[") else [t for t in text.split(",") if t.strip()]
            except json.JSONDecodeError as e:
                raise ConfigError(f"tasks {tasks!r} is not a JSON list ({e.msg}); give a list such as "
                                  "[\"mini_mnist\", \"mini_clevr_count\"] or 'mini_mnist, mini_clevr_count'") from None
        try:
            return [get_task(str(t).strip()).name for t in tasks]
        except KeyError as e:
            raise ConfigError(e.args[0] if e.args else str(e)) from None
    names = list_tasks(benchmark=benchmark)
    if not names:
        raise ConfigError(f"no tasks registered for benchmark {benchmark!r}; valid: vtab1k, mini")
    positive_int("per_group", per_group)
    picked = [t for g in GROUPS for t in [n for n in names if get_task(n).group == g][:per_group]]
    return picked
