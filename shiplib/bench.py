"""Speed, memory and FLOPs of a fine-tuning method against the plain timm ViT (`python -m shiplib bench`).

What is measured, per batch of random images at the backbone's input size:
- `timm_eval_s`: the plain timm forward of the same backbone (`model.vit(x)`, inference mode);
- `eval_s`: the method's forward in eval mode (inference mode). For SHIP the fast path's prompt cache is warm,
  i.e. steady-state inference with fixed parameters (it is rebuilt after any parameter change);
- `train_s`: one training step as the engine runs it: forward with auxiliary losses, CE + weighted losses,
  backward, AdamW step (`shiplib.engine.optim.create_optimizer`), on a copy of the model so that eval keeps its
  parameters;
- `reference_*`: the same for the straightforward implementation, for methods that have one (SHIP:
  `implementation="reference"`), on the same weights;
- `timm_train_floor_s` (optional): forward + backward of the plain timm blocks with the gradient taken w.r.t. the
  block-0 input. Exact prompt gradients need the backward through every image row of every block, so this is a
  practical lower bound of a prompt method's training step.
Timing: all variants run once per round, in a rotating order (interleaved), for `warmup + repeats` rounds; the
warm-up rounds are dropped and the median is reported. Ratios are medians of the per-round ratios (robust to a
drifting machine load); `load_average` gives os.getloadavg() before and after.

Peak memory: on CPU, the peak of live tensor bytes of the CPU allocator during one call, above what was
allocated when the call started (model weights and the input excluded), from torch.profiler's memory events
(allocations/frees at operator granularity; temporaries freed inside one operator are not seen). It counts
tensors, not the process RSS (no allocator caching or fragmentation). On CUDA: torch.cuda.max_memory_allocated
minus the memory allocated before the call.

FLOPs (`count_flops`): torch.utils.flop_counter.FlopCounterMode, plus formulas for the CPU flash-attention kernels
it does not know (forward 4*B*H*Lq*Lk*d, backward as torch's SDPA backward formula).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import time
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_BENCH_BACKBONE = "vit_base_patch16_224"
CIFAR100_LEVELS = (0, 2, 4, 6, 8, 11)  # official cifar100 prompt_indices (ship_spec.md §7), for 12 blocks


# ----- models -----
def ship_bench_levels(depth: int) -> list[int]:
    """The cifar100 level starts, rescaled to `depth` blocks (unchanged for 12)."""
    return sorted({round(s * (depth - 1) / (CIFAR100_LEVELS[-1])) for s in CIFAR100_LEVELS})


def default_bench_options(method: str, vit: nn.Module, seed: int = 0) -> dict[str, Any]:
    """Options that make every method buildable from random weights without a dataset.

    SHIP: K=50, the cifar100 levels, a random (200, D) prototype bank. SPT: prompts drawn from random images'
    tokens (`init="random"`; k-means would only add build time).
    """
    if method == "ship":
        g = torch.Generator().manual_seed(seed)
        return dict(prompt_length=50, levels=ship_bench_levels(len(vit.blocks)),
                    prototypes=torch.randn(200, vit.embed_dim, generator=g))
    if method == "spt":
        return dict(init="random")
    return {}


def build_bench_model(method: str, backbone: Any = DEFAULT_BENCH_BACKBONE, num_classes: int = 100,
                      pretrained: bool = False, options: dict | None = None, seed: int = 0) -> nn.Module:
    """`build_model` with `default_bench_options` (overridden by `options`); random images as `data` if needed."""
    from .backbones import create_backbone
    from .methods import build_model, get_method

    torch.manual_seed(seed)
    vit = create_backbone(backbone, pretrained=pretrained)
    opts = {**default_bench_options(method, vit, seed), **(options or {})}
    data = None
    if get_method(method).needs_data and not (method == "ship" and "levels" in opts and "prototypes" in opts):
        g = torch.Generator().manual_seed(seed)
        data = [torch.randn(16, 3, *vit.patch_embed.img_size, generator=g)]
    kw = dict(data=data) if get_method(method).needs_data else {}
    return build_model(method, backbone=vit, num_classes=num_classes, pretrained=False, **kw, **opts)


def has_reference_implementation(model: nn.Module) -> bool:
    """Methods with a straightforward implementation kept as the reference (selected by config.implementation)."""
    return getattr(getattr(model, "config", None), "implementation", None) is not None


# ----- measurements -----
def _train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    from .engine.optim import create_optimizer

    optimizer = create_optimizer(model, lr=1e-3, weight_decay=1e-3)
    weights = getattr(model, "loss_weights", {})

    def step():
        model.train()
        logits, aux = model(x, return_losses=True)
        loss = F.cross_entropy(logits, y)
        for name, value in aux.items():
            loss = loss + weights.get(name, 1.0) * value
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _eval_fn(model: nn.Module, x: torch.Tensor, inference_mode: bool = True) -> Callable[[], None]:
    """An eval forward. `inference_mode=False` (for FlopCounterMode, whose module tracker cannot hook tensors that
    require grad inside inference mode or no_grad) runs it in normal mode with every parameter's requires_grad
    switched off for the call: the same forward, with SHIP's prompt cache used as at inference."""
    def run():
        model.eval()
        if inference_mode:
            with torch.inference_mode():
                model(x)
            return
        flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            model(x)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)

    return run


def _timm_floor_fn(vit: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def run():
        vit.train()
        with torch.no_grad():
            h = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
        h.requires_grad_(True)
        F.cross_entropy(vit.forward_head(vit.norm(vit.blocks(h))), y).backward()

    return run


def _with_implementation(model: nn.Module, impl: str, fn: Callable[[], None]) -> Callable[[], None]:
    def run():
        model.config.implementation = impl
        fn()

    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(variants: dict[str, Callable[[], None]], repeats: int, warmup: int,
                     device: torch.device = torch.device("cpu"), progress: bool = True) -> dict[str, list[float]]:
    """Seconds per call of each variant over `warmup + repeats` rounds (rotating order); warm-up rounds dropped."""
    from tqdm.auto import tqdm

    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in tqdm(range(warmup + repeats), desc="bench rounds", disable=not progress, leave=False):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            variants[name]()
            _sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence file descriptor 2 for a while: the profiler's native library logs start/stop lines there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_bytes(fn: Callable[[], None], device: torch.device = torch.device("cpu")) -> int:
    """Peak tensor bytes allocated during fn() above those allocated when it started (see the module docstring)."""
    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        # operator events carry their own net allocation; "[memory]" events are frees/allocs outside any operator
        live += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, live)
    return int(peak)


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, query, key, value)


def count_flops(fn: Callable[[], None]) -> int:
    """FLOPs of fn() (matmuls, convolutions and attention kernels; elementwise ops are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_cpu_backward_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def _median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


def run_bench(method: str = "ship", backbone: Any = DEFAULT_BENCH_BACKBONE, batch: int = 8, threads: int | None = 2,
              repeats: int = 3, warmup: int = 1, num_classes: int = 100, pretrained: bool = False,
              options: dict | None = None, device: str = "cpu", memory: bool = True, floor: bool = False,
              flops: bool = False, progress: bool = True, seed: int = 0, model: nn.Module | None = None) -> dict:
    """Time (and measure memory of) one method against the plain timm forward; see the module docstring.

    Returns a flat dict: seconds per batch (`*_s`), peak memory in MB (`*_mem_mb`), ratios, parameter counts,
    and the settings. `model`: an already built model to measure instead of building `method` on `backbone`.
    """
    from .params import count_parameters

    if batch < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"batch and repeats must be >= 1 and warmup >= 0, got {batch}, {repeats}, {warmup}")
    dev = torch.device(device)
    prev_threads = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        load_before = os.getloadavg()
        if model is None:
            model = build_bench_model(method, backbone, num_classes, pretrained, options, seed)
        model = model.to(dev)
        vit = model.vit
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, 3, *vit.patch_embed.img_size, generator=g).to(dev)
        y = (torch.arange(batch) % model.num_classes).to(dev)
        train_model = copy.deepcopy(model)
        with_reference = has_reference_implementation(model)

        def plain_eval():
            vit.eval()
            with torch.inference_mode():
                vit(x)

        variants = {"timm_eval": plain_eval}
        memory_fns = {"timm_eval": plain_eval}
        if with_reference:
            for impl, prefix in (("fast", ""), ("reference", "reference_")):
                variants[f"{prefix}eval"] = _with_implementation(model, impl, _eval_fn(model, x))
                variants[f"{prefix}train"] = _with_implementation(
                    train_model, impl, _train_step_fn(train_model, x, y))
            model.config.implementation = train_model.config.implementation = "fast"
        else:
            variants["eval"] = _eval_fn(model, x)
            variants["train"] = _train_step_fn(train_model, x, y)
        memory_fns.update(variants)
        if floor:  # the train copy's frozen blocks, in train mode (same drop path as the train step)
            variants["timm_train_floor"] = _timm_floor_fn(train_model.vit, x, y)
        times = time_interleaved(variants, repeats, warmup, dev, progress)

        counts = count_parameters(model)
        out: dict[str, Any] = dict(
            method=getattr(model, "method", method), backbone=str(backbone) if not isinstance(backbone, nn.Module)
            else type(backbone).__name__, image_size=list(vit.patch_embed.img_size), batch=batch,
            threads=torch.get_num_threads(), device=str(dev), repeats=repeats, warmup=warmup,
            trainable_params=counts["trainable"], total_params=counts["total"])
        for name, ts in times.items():
            out[f"{name}_s"] = statistics.median(ts)
        out["eval_vs_timm"] = _median_ratio(times["eval"], times["timm_eval"])
        if with_reference:
            out["reference_eval_vs_timm"] = _median_ratio(times["reference_eval"], times["timm_eval"])
            out["reference_eval_speedup"] = _median_ratio(times["reference_eval"], times["eval"])
            out["reference_train_speedup"] = _median_ratio(times["reference_train"], times["train"])
        if floor:
            out["train_vs_timm_train_floor"] = _median_ratio(times["train"], times["timm_train_floor"])
        if memory:
            for name, fn in memory_fns.items():
                out[f"{name}_mem_mb"] = peak_memory_bytes(fn, dev) / 2 ** 20
            if with_reference:
                model.config.implementation = train_model.config.implementation = "fast"
                out["train_mem_vs_reference"] = out["train_mem_mb"] / out["reference_train_mem_mb"]
                out["eval_mem_vs_reference"] = out["eval_mem_mb"] / out["reference_eval_mem_mb"]
        if flops:
            flop_fns = dict(memory_fns)
            for name in [n for n in flop_fns if n.endswith("eval") and n != "timm_eval"]:
                impl = "reference" if name.startswith("reference") else "fast"
                flop_fns[name] = _with_implementation(model, impl, _eval_fn(model, x, inference_mode=False)) \
                    if with_reference else _eval_fn(model, x, inference_mode=False)
            for name, fn in flop_fns.items():
                out[f"{name}_gflops"] = count_flops(fn) / 1e9
            if with_reference:
                model.config.implementation = train_model.config.implementation = "fast"
        out["samples_s"] = {k: [round(t, 4) for t in v] for k, v in times.items()}
        out["load_average"] = dict(before=list(load_before), after=list(os.getloadavg()))
        out["memory_method"] = ("torch.cuda.max_memory_allocated" if dev.type == "cuda" else
                                "torch.profiler CPU allocator events: peak live tensor bytes above the start")
        return out
    finally:
        torch.set_num_threads(prev_threads)


# ----- tables for notebooks -----
def efficiency_table(methods: list[str] | None = None, backbone: Any = "mini", batch: int = 8, threads: int = 2,
                     repeats: int = 2, warmup: int = 1, num_classes: int = 100, pretrained: bool = False,
                     options: dict[str, dict] | None = None, progress: bool = True):
    """One row per method (plus `<method> (reference)` rows where a reference implementation exists):
    trainable parameters, GFLOPs per image (eval forward, train step), images/s, seconds per batch, eval time
    relative to the plain timm forward, and peak memory. Returns (table, raw `run_bench` results per method).
    """
    import pandas as pd

    from .methods import list_methods

    rows, raw = [], {}
    for method in (methods or list_methods()):
        r = run_bench(method, backbone, batch, threads, repeats, warmup, num_classes, pretrained,
                      (options or {}).get(method), memory=True, flops=True, progress=progress)
        raw[method] = r
        impls = [("", method)] + ([("reference_", f"{method} (reference)")] if "reference_eval_s" in r else [])
        for prefix, label in impls:
            rows.append({
                "method": label,
                "trainable_params": r["trainable_params"],
                "trainable_%": 100.0 * r["trainable_params"] / r["total_params"],
                "eval_gflops_per_image": r[f"{prefix}eval_gflops"] / batch,
                "train_gflops_per_image": r[f"{prefix}train_gflops"] / batch,
                "eval_images_per_s": batch / r[f"{prefix}eval_s"],
                "train_images_per_s": batch / r[f"{prefix}train_s"],
                "eval_s": r[f"{prefix}eval_s"],
                "train_s": r[f"{prefix}train_s"],
                "eval_vs_timm": r[f"{prefix}eval_s"] / r["timm_eval_s"],
                "eval_mem_mb": r[f"{prefix}eval_mem_mb"],
                "train_mem_mb": r[f"{prefix}train_mem_mb"],
            })
    return pd.DataFrame(rows), raw


#: Targets of the efficient-SHIP issue (ViT-B/16, 224 px, batch 8, 2 threads, K=50, cifar100 levels).
TARGETS = {"eval_vs_timm": ("<=", 1.0), "reference_train_speedup": (">=", 2.0), "train_mem_vs_reference": ("<=", 0.6)}


def bench_summary(result: dict) -> "pd.DataFrame":
    """The headline figures of one `run_bench` result (e.g. a saved `--json` output) beside the targets."""
    import pandas as pd

    rows = []
    for key in ("timm_eval_s", "eval_s", "train_s", "reference_eval_s", "reference_train_s", "timm_train_floor_s",
                "timm_eval_mem_mb", "eval_mem_mb", "train_mem_mb", "reference_train_mem_mb",
                "eval_vs_timm", "reference_eval_speedup", "reference_train_speedup", "train_mem_vs_reference"):
        if key in result:
            op, bound = TARGETS.get(key, ("", None))
            met = None if bound is None else (result[key] <= bound if op == "<=" else result[key] >= bound)
            rows.append(dict(figure=key, value=result[key], target=f"{op} {bound}" if bound else "", met=met))
    return pd.DataFrame(rows).set_index("figure")


def load_bench(path) -> dict:
    """A result saved from `python -m shiplib bench --json` (one JSON object)."""
    import pathlib

    return json.loads(pathlib.Path(path).read_text())


# ----- command line -----
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="ship", help="method name (shiplib.list_methods()); default ship")
    parser.add_argument("--backbone", default=DEFAULT_BENCH_BACKBONE,
                        help=f"timm name, 'mini' or a weights file (default {DEFAULT_BENCH_BACKBONE})")
    parser.add_argument("--pretrained", action="store_true", help="load pretrained weights (default: random)")
    parser.add_argument("--batch", type=int, default=8, help="images per batch (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after warm-up (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (default 1)")
    parser.add_argument("--classes", type=int, default=100, help="classifier outputs (default 100)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:k]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, e.g. --set prompt_length=10 (repeatable; values parsed as JSON)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--floor", action="store_true",
                        help="also time the plain timm forward+backward to the input (a prompt method's floor)")
    parser.add_argument("--flops", action="store_true", help="also count FLOPs (FlopCounterMode)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: a short summary)")
    parser.add_argument("--out", help="also write the JSON object to this file (atomically)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _parse_options(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --set takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(args: argparse.Namespace) -> int:
    try:
        result = run_bench(args.method, args.backbone, args.batch, args.threads, args.repeats, args.warmup,
                           args.classes, args.pretrained, _parse_options(args.overrides), args.device,
                           memory=not args.no_memory, floor=args.floor, flops=args.flops,
                           progress=not args.no_progress)
    except (KeyError, ValueError, TypeError) as e:  # unknown method/option, bad value: a message, no traceback
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise SystemExit(f"error: {message}") from e
    if args.out:
        from .utils.io import atomic_write_json

        atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key != "samples_s":
                print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0
