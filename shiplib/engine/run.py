"""`run_experiment`: one training run from a `RunConfig` to an atomic result file, resumable after a crash.

A run is a sequence of stages, each a function of its own that can be tested alone:

    resolve          RunConfig -> ResolvedRun (every default filled in; `config.resolve_config`)
    validate         method options, writable folders, the task's data: before any work (`validate.py`)
    reuse_or_refuse  an existing result of the same run is returned; one of another configuration is an error
    build            data, backbone, the method's data step (cached), model, optimiser, schedule
    preflight        memory and epoch time of the built model, from a probe image: a run that cannot fit is
                     refused before training (`resources.py`)
    resume           the newest readable checkpoint of this run, or a fresh start
    fit              the epoch loop: train, evaluate at the configured epochs, checkpoint, log
    record           the result dict, written atomically, unless another run wrote one meanwhile (refused)

Per epoch the checkpoint (trainable parameters + optimizer + history) is written first, then the log is rewritten
from the history, so the log always mirrors a checkpoint and never holds an epoch twice. Randomness is re-seeded
from (seed, epoch) at each epoch start, so resuming from the checkpoint of epoch e gives exactly the
uninterrupted run.
"""
from __future__ import annotations

import datetime as _dt
import logging
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy
import timm
import torch

from .. import __version__
from ..backbones import create_backbone
from ..backbones.fingerprint import backbone_fingerprint
from ..backbones.loading import architecture_of
from ..data.folder import TaskLocation, VtabFolderDataset, build_dataset
from ..errors import ConfigError, setting_fix
from ..methods import build_model, get_method
from ..params import count_parameters
from ..utils.io import atomic_write_jsonl
from ..utils.paths import portable_path
from ..utils.progress import progress_bar
from ..utils.seed import auto_device, seed_everything
from .checkpoints import CheckpointStore, checkpoint_state
from .compiled import compile_model
from .config import RunConfig, as_resolved
from .loop import TrainStep, evaluate, train_one_epoch
from .optim import create_optimizer, optimizer_summary
from .precision import Precision
from .prepare import (DeviceBatches, data_cache_path, dataset_fingerprint, derived_seed, eval_loader, image_cache_dir,
                      load_or_compute_data_inputs, on_device, train_loader)
from .resolved import ResolvedRun, identity_diff, paths_for
from .resources import Estimate, preflight
from .results import RunState, check_result, commit_result, file_state, read_result
from .schedule import LRSchedule
from .validate import validate_before_work

log = logging.getLogger(__name__)

__all__ = ["run_experiment", "reuse_or_refuse", "build", "check_resources", "resume", "fit", "record", "Built",
           "Progress",
           "paths_for", "identity_diff", "package_versions"]


def package_versions() -> dict:
    return dict(python=platform.python_version(), torch=torch.__version__, timm=timm.__version__,
                numpy=numpy.__version__, shiplib=__version__)


# ----- reuse or refuse -----
def reuse_or_refuse(run: ResolvedRun, force: bool = False) -> dict | None:
    """The finished result of this very run (returned as is), or None when it has to be trained.

    A result of another configuration at the same path, or one made with other backbone weights, is an error
    (name the variant with a tag, or pass `force` to overwrite). An unreadable result file is moved aside."""
    if force:
        return None
    path, identity = run.paths.result, run.identity()
    check = check_result(path, identity, move_unreadable=True)
    if check.state is RunState.CONFLICT:
        raise ConfigError(f"{path} holds a run with another configuration "
                          f"({identity_diff(check.result.get('identity', {}), identity)}). Name this variant with a "
                          f"tag: {setting_fix('tag', 'e2', '--tag')}; or overwrite it: --force (in a notebook: "
                          "run_experiment(cfg, force=True)), or delete the file.")
    if check.state is RunState.STALE:
        raise ConfigError(f"{path} is out of date: {check.detail}. Re-run it with --force (force=True) or delete the "
                          "file.")
    if check.state is not RunState.DONE:
        return None
    log.info("already finished: %s", path)
    return check.result


# ----- build -----
@dataclass
class Built:
    """Everything `build` makes: data, backbone, model, optimiser, schedule."""

    device: torch.device
    data: TaskLocation
    train_set: VtabFolderDataset
    eval_set: VtabFolderDataset
    vit: torch.nn.Module
    fingerprint: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    eval_data: torch.utils.data.DataLoader | DeviceBatches
    hierarchy: dict | None
    precision: Precision
    started: float  # time.time() when the build began: wall time counts building as well
    started_at: str


def build(run: ResolvedRun, data: TaskLocation) -> Built:
    """Data (from the folder `validate` found), backbone, data step (cached), model, optimiser and schedule."""
    started, started_at = time.time(), _now()
    if run.runtime.threads:
        torch.set_num_threads(int(run.runtime.threads))
    device = auto_device(run.runtime.device)
    train_set, eval_set = (build_dataset(run.task.name, split, root=data.root, preset=run.model.preset,
                                         img_size=run.model.img_size, cache=run.runtime.cache_images,
                                         cache_dir=image_cache_dir(run.runtime.runs_dir),
                                         progress=run.runtime.progress)
                           for split in (run.train_split, run.eval_split))
    seed_everything(run.seed)
    vit = create_backbone(run.model.backbone, pretrained=run.model.pretrained, backbone_arch=run.model.backbone_arch)
    _check_img_size(vit, run.model.img_size, run.model.backbone)
    fingerprint = backbone_fingerprint(vit)
    options, hierarchy = _method_options(run, vit, fingerprint, train_set, device)

    seed_everything(run.seed)  # the same init whether the data step was computed or read from the cache
    model = build_model(run.method, backbone=vit, num_classes=run.task.num_classes, **options)
    compile_model(model.to(device), run.runtime.compile)
    if model.structure_record():
        hierarchy = dict(hierarchy or {}, **model.structure_record())
    for ds in (train_set, eval_set):  # from here on, cached images are normalised on the device, batch by batch
        ds.uint8 = ds.decoded is not None
    t = run.training
    return Built(device=device, data=data, train_set=train_set, eval_set=eval_set, vit=vit, fingerprint=fingerprint,
                 model=model, optimizer=create_optimizer(model, t.lr, t.weight_decay),
                 schedule=LRSchedule(t.lr, epochs=t.epochs, warmup_epochs=t.warmup_epochs, warmup_lr=t.warmup_lr,
                                     min_lr=t.min_lr, mode=t.lr_schedule),
                 eval_data=on_device(eval_loader(eval_set, t.eval_batch_size, run.runtime.num_workers,
                                                 device.type == "cuda"), device),
                 hierarchy=hierarchy, precision=Precision(t.precision, device), started=started,
                 started_at=started_at)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _check_img_size(vit, img_size: int, backbone) -> None:
    expected = tuple(getattr(vit.patch_embed, "img_size", None) or ())
    if expected and not getattr(vit, "dynamic_img_size", False) and expected != (img_size, img_size):
        raise ConfigError(f"backbone {backbone!r} expects {expected[0]}x{expected[1]} images but img_size={img_size}; "
                          f"set img_size={expected[0]} (or pick another backbone)")


def _method_options(run: ResolvedRun, vit, fingerprint: str, train_set, device) -> tuple[dict, dict | None]:
    """The options the model is built with: the run's, plus the arrays of the method's data step
    (`PeftModel.data_inputs`) from the on-disk cache, keyed on the backbone, the split's images and the method's
    `data_key`. What the user gave as options (e.g. files) leaves less or nothing to compute."""
    options = dict(run.options)
    method = get_method(run.method)
    method.check_backbone(options, vit)
    config = run.method_config
    key = method.data_key(config)
    if key is None:
        return options, None
    cache = data_cache_path(run, fingerprint, dataset_fingerprint(train_set), key)
    vit.to(device)  # the model is moved there next anyway
    loader = eval_loader(train_set, run.training.eval_batch_size, run.runtime.num_workers)
    arrays, cached = load_or_compute_data_inputs(method, config, vit, loader, cache, run.runtime.progress)
    options.update(arrays)
    return options, dict(computed=list(arrays), cache=portable_path(cache), from_cache=cached,
                         images=len(train_set), split=run.train_split, **key)


# ----- preflight -----
def check_resources(run: ResolvedRun, built: Built) -> Estimate:
    """Measure the built model on a probe image: `ResourceError` when training cannot fit in the memory limit, a
    warning when an epoch will take long. The probe restores the random state, so results do not change."""
    return preflight(built.model, run.training.batch_size, run.model.img_size, len(built.train_set), built.device)


# ----- resume -----
@dataclass
class Progress:
    """Where training stands: the finished epochs' history and what the run resumed from."""

    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    elapsed_before: float = 0.0
    resumed_from: int | None = None


def resume(run: ResolvedRun, built: Built, force: bool = False) -> Progress:
    """Load the newest usable checkpoint of this run into the model and optimiser, or start from scratch
    (`resume=False` / `force`: older checkpoints are discarded)."""
    paths = run.paths
    store = CheckpointStore(paths.checkpoint, paths.previous_checkpoint)
    progress = Progress()
    if not run.runtime.resume or force:
        store.discard()
    else:
        found = store.load(run.identity(), built.fingerprint)
        if found is not None:
            state, where = found
            _load_trainable(built.model, state["trainable"], where)
            built.optimizer.load_state_dict(state["optimizer"])
            built.precision.load_state_dict(state.get("scaler", {}))
            progress = Progress(history=list(state["history"]), start_epoch=int(state["epoch"]) + 1,
                                elapsed_before=float(state["elapsed"]), resumed_from=int(state["epoch"]))
            log.info("resuming %s after epoch %d (%s)", paths.work_dir, progress.resumed_from, where.name)
    atomic_write_jsonl(paths.log, progress.history)  # the log mirrors the checkpoint's history
    return progress


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model, state: dict[str, torch.Tensor], where) -> None:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        missing, extra = sorted(set(params) - set(state))[:5], sorted(set(state) - set(params))[:5]
        raise ConfigError(f"checkpoint {where} does not match the model's trainable parameters (missing {missing}, "
                          f"extra {extra}); start over with resume=False (--fresh)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


# ----- fit -----
def fit(run: ResolvedRun, built: Built, progress: Progress,
        on_step: Callable[[int, int], Any] | None = None) -> Progress:
    """Train the remaining epochs; after each one write the checkpoint, then the log."""
    t, rt, paths = run.training, run.runtime, run.paths
    store = CheckpointStore(paths.checkpoint, paths.previous_checkpoint)
    identity, eval_at = run.identity(), set(t.eval_epochs)
    pin = built.device.type == "cuda"
    train = TrainStep(built.model, built.optimizer, built.schedule, built.device, built.precision)
    bar = progress_bar(range(progress.start_epoch, t.epochs), initial=progress.start_epoch, total=t.epochs,
                       disable=not rt.progress, desc=f"{run.task.name}/{run.method}/seed{run.seed}", dynamic_ncols=True)
    for epoch in bar:
        t0 = time.perf_counter()
        seed_everything(derived_seed(run.seed, epoch, 2))  # drop path etc.: same draws after a resume
        loader = on_device(train_loader(built.train_set, t.batch_size, run.seed, epoch, rt.num_workers, pin),
                           built.device)
        record = dict(epoch=epoch, **train_one_epoch(train, loader, epoch, progress=rt.progress, on_step=on_step,
                                                     announce_time=epoch == progress.start_epoch))
        if epoch in eval_at:
            ev = evaluate(built.model, built.eval_data, built.device, progress=rt.progress,
                          desc=f"epoch {epoch} {run.eval_split}", precision=built.precision)
            record.update(eval_acc=ev["acc"], eval_loss=ev["loss"], eval_split=run.eval_split,
                          eval_seconds=ev["seconds"])
            bar.set_postfix_str(f"acc@epoch {epoch} {ev['acc']:.2f}")  # says which epoch until the next eval
        record["seconds"] = time.perf_counter() - t0
        progress.history.append(record)
        training = dict(trainable=_trainable_state(built.model), optimizer=built.optimizer.state_dict(),
                        scaler=built.precision.state_dict())
        store.save(checkpoint_state(training, identity=identity, fingerprint=built.fingerprint, epoch=epoch,
                                    history=progress.history, elapsed=_elapsed(built, progress)))
        atomic_write_jsonl(paths.log, progress.history)
    bar.close()
    return progress


def _elapsed(built: Built, progress: Progress) -> float:
    return progress.elapsed_before + time.time() - built.started


# ----- record -----
def record(run: ResolvedRun, built: Built, progress: Progress) -> dict:
    """The result dict of a finished run (see `shiplib.engine.results` for the layout); not yet written."""
    identity, t, vit = run.identity(), run.training, built.vit
    return dict(
        task=run.task.name, benchmark=run.benchmark, group=run.task.group, method=run.method, tag=run.tag,
        seed=run.seed, protocol=run.protocol, train_split=run.train_split, eval_split=run.eval_split,
        accuracy_unit="%",
        **_summary(progress.history, t.epochs),
        acc_note=("acc_last: accuracy after the last epoch (main number). acc_max_over_epochs: best accuracy over "
                  f"the evaluated epochs {identity['eval_epochs']}, selected on {run.eval_split} "
                  "(SHIP's reporting protocol; optimistic when that split is the test set)."),
        epochs=t.epochs, eval_epochs=identity["eval_epochs"],
        identity=identity, config=run.as_record(data_root=built.data.root), overrides=dict(run.overrides),
        sources=dict(run.sources),
        train_size=len(built.train_set), eval_size=len(built.eval_set),
        preprocessing=getattr(built.train_set, "preprocessing", None),
        parameters=count_parameters(built.model), optimizer=optimizer_summary(built.optimizer),
        backbone=dict(spec=run.model.backbone, pretrained=run.model.pretrained, sha256=built.fingerprint,
                      embed_dim=int(vit.embed_dim), depth=len(vit.blocks),
                      img_size=list(getattr(vit.patch_embed, "img_size", ())), architecture=architecture_of(vit)),
        hierarchy=built.hierarchy, versions=package_versions(), device=str(built.device),
        precision=run.training.precision,
        threads=torch.get_num_threads(), wall_time_s=_elapsed(built, progress),
        resumed_from_epoch=progress.resumed_from, started_at=built.started_at, finished_at=_now(),
        checkpoint=portable_path(run.paths.checkpoint), log=portable_path(run.paths.log), history=progress.history,
    )


def _summary(history: list[dict], epochs: int) -> dict:
    evaluated = [h for h in history if h.get("eval_acc") is not None]
    best = max(evaluated, key=lambda h: (h["eval_acc"], -h["epoch"]))  # first epoch reaching the max
    last = history[-1]
    if last["epoch"] != epochs - 1 or last.get("eval_acc") is None:
        raise RuntimeError("the last epoch was not evaluated; this is a bug in the evaluation schedule")
    return dict(acc_last=last["eval_acc"], acc_max_over_epochs=best["eval_acc"], max_epoch=best["epoch"],
                last_epoch=last["epoch"])


# ----- the whole run -----
def run_experiment(cfg: RunConfig | ResolvedRun, force: bool = False,
                   on_step: Callable[[int, int], Any] | None = None) -> dict:
    """Train and evaluate one (task, method, seed, protocol); write and return the result dict.

    `cfg`: a RunConfig (resolved here) or the ResolvedRun a caller already made of it.

    An existing result for the same configuration is returned without training unless `force`; one for a
    different configuration is an error (name the variant with `tag`, or pass `force` to overwrite).
    A checkpoint of the same configuration is resumed (unless `cfg.resume` is False).
    `on_step(epoch, step)` is called after each optimiser step (tests use it to interrupt a run).
    """
    run = as_resolved(cfg)
    if run.sources.get("warmup_epochs", "").startswith("scaled"):
        log.warning("warmup_epochs %s", run.sources["warmup_epochs"])
    data = validate_before_work(run)
    previous = reuse_or_refuse(run, force)
    if previous is not None:
        return previous
    seen = file_state(run.paths.result)  # what `force` may replace; anything written later by another run is kept
    built = build(run, data)
    check_resources(run, built)
    progress = fit(run, built, resume(run, built, force), on_step)
    path = commit_result(run.paths.result, record(run, built, progress), seen)
    log.info("result: %s", path)
    return read_result(path)
