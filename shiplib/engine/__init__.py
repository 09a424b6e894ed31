"""Training engine: the official SHIP recipe (AdamW, per-epoch warm-up + cosine, batch 64 drop_last),
resumable runs, result files and per-task defaults."""
from .config import ConfigError, RunConfig, as_resolved, eval_epochs, parse_overrides, resolve_config
from .defaults import official_settings, published_results, resolve_defaults
from .loop import TrainStep, evaluate, train_one_epoch
from .optim import create_optimizer, weight_decay_groups
from .resolved import ResolvedRun, RunPaths
from .results import RunState, load_results, read_result, result_path, work_dir
from .run import run_experiment
from .schedule import LRSchedule
from .validate import validate_before_work

__all__ = ["ConfigError", "RunConfig", "as_resolved", "RunState", "eval_epochs", "parse_overrides", "resolve_config",
           "official_settings", "published_results", "resolve_defaults", "evaluate", "TrainStep", "train_one_epoch",
           "create_optimizer", "weight_decay_groups", "ResolvedRun", "RunPaths", "load_results", "read_result",
           "result_path", "work_dir", "run_experiment", "LRSchedule", "validate_before_work"]
