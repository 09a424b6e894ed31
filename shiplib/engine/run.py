"""`run_experiment`: one training run from a `RunConfig` to an atomic result file, resumable after a crash.

Per epoch: train (lr from the official per-epoch schedule), evaluate at the configured epochs, append the
epoch to the history, save a checkpoint (trainable parameters + optimizer + history; the frozen backbone is
rebuilt, not stored), then append the epoch to the JSONL log. Randomness is re-seeded from (seed, epoch) at
each epoch start, so resuming from the checkpoint of epoch e gives exactly the uninterrupted run.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import time
from pathlib import Path

import torch

from ..params import count_parameters
from ..utils.io import append_jsonl, atomic_torch_save, atomic_write_text
from ..utils.paths import portable_path
from ..utils.progress import progress_bar
from ..utils.seed import auto_device, seed_everything
from .config import ConfigError, RunConfig, resolve_config
from .loop import evaluate, train_one_epoch
from .optim import create_optimizer, optimizer_summary
from .prepare import (backbone_fingerprint, derived_seed, eval_loader, hierarchy_cache_path,
                      load_or_compute_hierarchy, stale_backbone, train_loader)
from .results import read_result, result_path, work_dir, write_result
from .schedule import LRSchedule

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
CHECKPOINT_FORMAT = 1
#: Runtime settings that are paths: results record them relative to the repository (see portable_path).
PATH_FIELDS = ("data_root", "results_dir", "runs_dir")


def package_versions() -> dict:
    import numpy
    import timm

    import shiplib

    return dict(python=platform.python_version(), torch=torch.__version__, timm=timm.__version__,
                numpy=numpy.__version__, shiplib=shiplib.__version__)


def paths_for(resolved: dict) -> dict:
    ident, rt = resolved["identity"], resolved["runtime"]
    key = (ident["benchmark"], ident["task"], ident["method"], ident["seed"], ident["protocol"])
    wd = work_dir(rt["runs_dir"], *key, tag=ident["tag"])
    return dict(result=result_path(rt["results_dir"], *key, tag=ident["tag"]), work_dir=wd,
                checkpoint=wd / CHECKPOINT_NAME, log=wd / LOG_NAME)


def _portable_runtime(rt: dict) -> dict:
    return {k: portable_path(v) if k in PATH_FIELDS and v is not None else v for k, v in rt.items()}


def identity_diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    diffs = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    return "; ".join(diffs[:8]) + (" …" if len(diffs) > 8 else "")


def _build_datasets(ident: dict, rt: dict) -> tuple:
    from ..data.folder import build_dataset

    kw = dict(root=rt["data_root"], preset=ident["preset"], img_size=ident["img_size"])
    if rt["cache_images"]:
        kw["cache"] = True
    train = build_dataset(ident["task"], ident["train_split"], **kw)
    evaluation = build_dataset(ident["task"], ident["eval_split"], **kw)
    return train, evaluation


def _check_img_size(vit, img_size: int, backbone) -> None:
    expected = tuple(getattr(vit.patch_embed, "img_size", None) or ())
    if expected and not getattr(vit, "dynamic_img_size", False) and expected != (img_size, img_size):
        raise ConfigError(f"backbone {backbone!r} expects {expected[0]}x{expected[1]} images but img_size={img_size}; "
                          f"set img_size={expected[0]} (or pick another backbone)")


def _hierarchy_needs(options: dict) -> list[str]:
    """Which of affinity/prototypes a SHIP-style method would otherwise extract from the training images itself."""
    if not {"affinity", "prototypes", "levels", "threshold"} <= set(options):
        return []
    needs = []
    uses_levels = options.get("sip", True) or options.get("ap", True)
    threshold = options.get("threshold")
    if uses_levels and options["levels"] is None and options["affinity"] is None \
            and not (threshold is not None and threshold >= 1.0):
        needs.append("affinity")
    if options.get("ap", True) and options["prototypes"] is None:
        needs.append("prototypes")
    return needs


def _method_options(ident, rt, vit, fingerprint, train_set, device) -> tuple[dict, dict | None]:
    """Build options; SHIP's affinity and prototype bank come from the on-disk cache (computed once per backbone,
    task and split) unless the user gave them (`affinity=path`, `prototypes=path`, `levels=[...]`)."""
    options = dict(ident["options"])
    needs = _hierarchy_needs(options)
    if not needs:
        return options, None
    pool, k = options.get("feature_pool", "cls"), options.get("num_prototypes", 200)
    seed = options.get("prototype_seed", 42)
    cache = hierarchy_cache_path(rt["runs_dir"], ident["benchmark"], ident["task"], ident["backbone"], fingerprint,
                                 pool, ident["train_split"], k, ident["preset"], ident["img_size"], seed)
    threshold = options["threshold"] if options["threshold"] is not None else 1.0  # levels are derived later
    h = load_or_compute_hierarchy(vit, train_set, cache, threshold, pool, k, ident["eval_batch_size"], device,
                                  rt["num_workers"], rt["progress"], kmeans_seed=seed)
    for key in needs:
        options[key] = h[key]
    return options, dict(computed=needs, cache=portable_path(h["cache"]), from_cache=h["cached"],
                         images=h["num_images"], split=ident["train_split"], pool=pool, k=k, kmeans_seed=seed)


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model, state: dict[str, torch.Tensor], where: Path) -> None:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state):
        missing, extra = sorted(set(params) - set(state))[:5], sorted(set(state) - set(params))[:5]
        raise ConfigError(f"checkpoint {where} does not match the model's trainable parameters (missing {missing}, "
                          f"extra {extra}); delete it to start over")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


def _summary(history: list[dict], epochs: int) -> dict:
    evaluated = [h for h in history if h.get("eval_acc") is not None]
    best = max(evaluated, key=lambda h: (h["eval_acc"], -h["epoch"]))  # first epoch reaching the max
    last = history[-1]
    if last["epoch"] != epochs - 1 or last.get("eval_acc") is None:
        raise RuntimeError("the last epoch was not evaluated; this is a bug in the evaluation schedule")
    return dict(acc_last=last["eval_acc"], acc_max_over_epochs=best["eval_acc"], max_epoch=best["epoch"],
                last_epoch=last["epoch"])


def run_experiment(cfg: RunConfig, force: bool = False, on_step=None) -> dict:
    """Train and evaluate one (task, method, seed, protocol); write and return the result dict.

    An existing result for the same configuration is returned without training unless `force`; one for a
    different configuration is an error (name the variant with `tag`, or pass `force` to overwrite).
    A checkpoint of the same configuration is resumed (unless `cfg.resume` is False).
    `on_step(epoch, step)` is called after each optimiser step (tests use it to interrupt a run).
    """
    resolved = resolve_config(cfg)
    ident, rt, spec = resolved["identity"], resolved["runtime"], resolved["task_spec"]
    paths = paths_for(resolved)
    if paths["result"].is_file() and not force:
        previous = read_result(paths["result"])
        if previous.get("identity") == ident:
            stale = stale_backbone(previous)
            if stale is None:
                log.info("already finished: %s", paths["result"])
                return previous
            raise ConfigError(f"{paths['result']} is out of date: {stale}. Re-run it with --force "
                              "(force=True) or delete the file.")
        raise ConfigError(f"{paths['result']} holds a run with another configuration "
                          f"({identity_diff(previous.get('identity', {}), ident)}). Name this variant with a tag "
                          "(--tag / tag=...), or overwrite with --force.")

    if rt["threads"]:
        torch.set_num_threads(int(rt["threads"]))
    device = auto_device(rt["device"])
    started = time.time()
    started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

    # Data first: a missing task folder fails at once, before any backbone is loaded.
    train_set, eval_set = _build_datasets(ident, rt)

    from ..backbones import create_backbone
    from ..methods import build_model, get_method

    method_cls = get_method(ident["method"])
    seed_everything(ident["seed"])
    vit = create_backbone(ident["backbone"], pretrained=ident["pretrained"])
    _check_img_size(vit, ident["img_size"], ident["backbone"])
    fingerprint = backbone_fingerprint(vit)
    options, hierarchy = _method_options(ident, rt, vit, fingerprint, train_set, device)
    data = eval_loader(train_set, ident["eval_batch_size"], rt["num_workers"]) if method_cls.needs_data else None

    seed_everything(ident["seed"])  # the same init whether the hierarchy was computed or read from the cache
    model = build_model(ident["method"], backbone=vit, num_classes=spec.num_classes, data=data, **options)
    model.to(device)
    if getattr(model, "levels", None) is not None:
        hierarchy = dict(hierarchy or {}, levels=list(model.levels), level_source=getattr(model, "level_source", None))
    optimizer = create_optimizer(model, ident["lr"], ident["weight_decay"])
    schedule = LRSchedule(ident["lr"], epochs=ident["epochs"], warmup_epochs=ident["warmup_epochs"],
                          warmup_lr=ident["warmup_lr"], min_lr=ident["min_lr"], mode=ident["lr_schedule"])
    eval_data = eval_loader(eval_set, ident["eval_batch_size"], rt["num_workers"], device.type == "cuda")

    history, start_epoch, elapsed_before, resumed_from = [], 0, 0.0, None
    ckpt_path, log_path = paths["checkpoint"], paths["log"]
    if ckpt_path.is_file() and rt["resume"] and not force:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ckpt.get("identity") != ident or ckpt.get("backbone_fingerprint") != fingerprint:
            diff = identity_diff(ckpt.get("identity", {}), ident) or "the backbone weights changed"
            raise ConfigError(f"checkpoint {ckpt_path} belongs to another configuration ({diff}). "
                              "Delete its folder, or start over with resume=False (--fresh).")
        _load_trainable(model, ckpt["trainable"], ckpt_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        history, start_epoch = list(ckpt["history"]), int(ckpt["epoch"]) + 1
        elapsed_before, resumed_from = float(ckpt.get("elapsed", 0.0)), int(ckpt["epoch"])
        log.info("resuming %s after epoch %d", paths["work_dir"], resumed_from)
    # The log mirrors the checkpoint's history (a crash between checkpoint and log loses nothing).
    atomic_write_text(log_path, "".join(json.dumps(h) + "\n" for h in history))

    pin = device.type == "cuda"
    epochs = ident["epochs"]
    eval_at = set(ident["eval_epochs"])
    bar = progress_bar(range(start_epoch, epochs), initial=start_epoch, total=epochs, disable=not rt["progress"],
               desc=f"{ident['task']}/{ident['method']}/seed{ident['seed']}", dynamic_ncols=True)
    for epoch in bar:
        t0 = time.perf_counter()
        seed_everything(derived_seed(ident["seed"], epoch, 2))  # drop path etc.: same draws after a resume
        loader = train_loader(train_set, ident["batch_size"], ident["seed"], epoch, rt["num_workers"], pin)
        record = dict(epoch=epoch, **train_one_epoch(model, loader, optimizer, schedule, epoch, device,
                                                     progress=rt["progress"], on_step=on_step))
        if epoch in eval_at:
            ev = evaluate(model, eval_data, device, progress=rt["progress"],
                          desc=f"epoch {epoch} {ident['eval_split']}")
            record.update(eval_acc=ev["acc"], eval_loss=ev["loss"], eval_split=ident["eval_split"],
                          eval_seconds=ev["seconds"])
            bar.set_postfix(acc=f"{ev['acc']:.2f}")
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        atomic_torch_save(dict(format=CHECKPOINT_FORMAT, identity=ident, backbone_fingerprint=fingerprint,
                               epoch=epoch, trainable=_trainable_state(model), optimizer=optimizer.state_dict(),
                               history=history, elapsed=elapsed_before + time.time() - started), ckpt_path)
        append_jsonl(log_path, record)
    bar.close()

    result = dict(
        task=ident["task"], benchmark=ident["benchmark"], group=spec.group, method=ident["method"],
        tag=ident["tag"], seed=ident["seed"], protocol=ident["protocol"], train_split=ident["train_split"],
        eval_split=ident["eval_split"], accuracy_unit="%",
        **_summary(history, epochs),
        acc_note=("acc_last: accuracy after the last epoch (main number). acc_max_over_epochs: best accuracy over "
                  f"the evaluated epochs {ident['eval_epochs']}, selected on {ident['eval_split']} "
                  "(SHIP's reporting protocol; optimistic when that split is the test set)."),
        epochs=epochs, eval_epochs=ident["eval_epochs"],
        identity=ident, config={**ident, **_portable_runtime(rt)}, overrides=resolved["overrides"],
        sources=resolved["sources"],
        train_size=len(train_set), eval_size=len(eval_set),
        preprocessing=getattr(train_set, "preprocessing", None),
        parameters=count_parameters(model), optimizer=optimizer_summary(optimizer),
        backbone=dict(spec=ident["backbone"], pretrained=ident["pretrained"], sha256=fingerprint,
                      embed_dim=int(vit.embed_dim), depth=len(vit.blocks),
                      img_size=list(getattr(vit.patch_embed, "img_size", ()))),
        hierarchy=hierarchy, versions=package_versions(), device=str(device), threads=torch.get_num_threads(),
        wall_time_s=elapsed_before + time.time() - started, resumed_from_epoch=resumed_from,
        started_at=started_at, finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        checkpoint=portable_path(ckpt_path), log=portable_path(log_path), history=history,
    )
    write_result(paths["result"], result)
    log.info("result: %s", paths["result"])
    return read_result(paths["result"])
