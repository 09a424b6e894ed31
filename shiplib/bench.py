"""Speed, memory and FLOPs of a fine-tuning method against the plain timm ViT (`python -m shiplib bench`).

What is measured, per batch of random images at the backbone's input size:
- `timm_eval_s`: the plain timm forward of the same backbone (`model.vit(x)`, inference mode);
- `eval_s`: the method's forward in eval mode (inference mode). For SHIP the fast path's prompt cache is warm,
  i.e. steady-state inference with fixed parameters (it is rebuilt after any parameter change);
- `train_s`: one training step as the engine runs it: forward with auxiliary losses, CE + weighted losses,
  backward, AdamW step (`shiplib.engine.optim.create_optimizer`), on a copy of the model so that eval keeps its
  parameters;
- `reference_*`: the same for the readable implementation, for methods that have one (`model.implementations`
  holds "reference", chosen per call: `model(x, implementation="reference")`), on the same weights;
- `compiled_eval_s`, `compiled_train_s` (optional, `compile=True`): the same eval and training step through
  `torch.compile` (default inductor backend; compilation happens in the warm-up rounds), the training step on its
  own copy of the model; `compiled_*_vs_eager` are their ratios to the eager `eval`/`train` of the same rounds;
- `timm_train_floor_s` (optional): forward + backward of the plain timm blocks with the gradient taken w.r.t. the
  block-0 input only (no weight gradients, whatever the method trains). Exact prompt gradients need the backward
  through every image row of every block, so this is a practical lower bound of a prompt method's training step.
Timing: all variants run once per round, in a rotating order (interleaved), for `warmup + repeats` rounds; the
warm-up rounds are dropped and the median is reported. Ratios (`*_vs_timm`, `*_vs_timm_train_floor`,
`reference_*_speedup`) are medians of the per-round ratios of two variants timed in the same rounds: they hold
across machines and loads far better than absolute seconds, which are this machine's under its load.

Load: `load_average` holds os.getloadavg() before and after the timed rounds. `other_cpu` is the average number
of cores that other processes kept busy during the timed rounds, on the CPUs this process may use (Linux:
busy time in /proc/stat minus this process's CPU time; None elsewhere). A measurement is `under_load` when that
exceeds the cores the benchmark leaves free (`cpu_cores - threads`) by more than `LOAD_TOLERANCE` cores: then
other work competed with the benchmark's threads (without /proc/stat: the 1-min load average before the rounds
instead of `other_cpu`). See `UNDER_LOAD_RULE`.

Peak memory: on CPU, the peak of live tensor bytes of the CPU allocator during one call, above what was
allocated when the call started (model weights and the input excluded), from torch.profiler's memory events
(allocations/frees at operator granularity; temporaries freed inside one operator are not seen). It counts
tensors, not the process RSS (no allocator caching or fragmentation). On CUDA: torch.cuda.max_memory_allocated
minus the memory allocated before the call. Each figure is taken on a second profiled call with the random
generator seeded (the first profiled call misses frees of tensors allocated before profiling started; SHIP's
training step has data-dependent shapes): it does not depend on the number of timed rounds, the thread count or
what ran before in the process.

FLOPs (`count_flops`): torch.utils.flop_counter.FlopCounterMode, plus formulas for the CPU flash-attention kernels
it does not know (forward 4*B*H*Lq*Lk*d, backward as torch's SDPA backward formula); counted with the random
generator seeded, like the memory.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import pathlib
import statistics
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from .backbones import create_backbone
from .engine.config import check_device_name, method_option_overrides
from .engine.loop import loss_weights, total_loss
from .engine.optim import create_optimizer
from .engine.precision import DEFAULT_PRECISION, PRECISIONS, Precision, check_precision, check_precision_name
from .engine.resources import check_device
from .engine.validate import method_config
from .errors import ConfigError
from .methods import build_model, get_method, list_methods
from .methods.base import embed_tokens
from .params import count_parameters
from .utils.io import atomic_write_json
from .utils.checks import is_int
from .utils.progress import bars_off
from .utils.progress import progress_bar
from .utils.seed import auto_device
from .utils.units import (format_flops, format_megabytes, format_ratio, format_seconds, format_throughput,
                          missing, significant)

if TYPE_CHECKING:  # annotations only: pandas is imported where a table is built
    import pandas as pd

DEFAULT_BENCH_BACKBONE = "vit_base_patch16_224"


@dataclass(frozen=True)
class BenchSettings:
    """What `run_bench` measures and how (see the module docstring). Checked when made: a bad value fails with a
    ConfigError naming it and the fix. `options`: the method's options as a dict or in any form `--set` takes
    (`shiplib.engine.config.parse_overrides`, aliases such as K included); stored as a dict of option names."""

    method: str = "ship"
    backbone: Any = DEFAULT_BENCH_BACKBONE  # timm name, "mini", a weights file or a VisionTransformer
    batch: int = 8
    threads: int | None = 2  # torch CPU threads during the measurement; None: leave torch's setting
    repeats: int = 3  # timed rounds
    warmup: int = 1  # untimed rounds first
    num_classes: int = 100
    pretrained: bool = False
    options: Any = None
    device: str = "cpu"  # cpu, cuda, cuda:N or auto
    precision: str = DEFAULT_PRECISION
    memory: bool = True  # peak memory of each variant
    floor: bool = False  # also time the plain timm forward+backward to the input
    flops: bool = False  # also count FLOPs
    compile: bool = False  # also time eval and training step through torch.compile
    progress: bool = True
    seed: int = 0  # random weights, images and the draws of the memory and FLOP measurements

    def __post_init__(self) -> None:
        for name, least in (("batch", 1), ("repeats", 1), ("warmup", 0), ("num_classes", 1), ("seed", 0)):
            _check_count(name, getattr(self, name), least)
        if self.threads is not None:
            _check_count("threads", self.threads, 1)
        for name in ("pretrained", "memory", "floor", "flops", "compile", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}; e.g. "
                                  f"BenchSettings({name}=True)")
        check_precision_name(self.precision)
        check_device_name(self.device)
        if self.compile and self.warmup < 1:
            raise ConfigError("compile needs at least one warm-up round (compilation happens there), got warmup=0; "
                              f"use {_fix('warmup', 1)}")
        object.__setattr__(self, "options", method_option_overrides(self.method, self.options))


#: Command-line flags of the settings whose flag is not `--<name>` (None: the command line has none).
_FLAGS = {"num_classes": "--classes", "seed": None}


def _fix(name: str, value: Any) -> str:
    """How to set `name` to `value` on the command line and in a notebook."""
    flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
    notebook = f"BenchSettings({name}={value!r})"
    return f"{flag} {value} (in a notebook: {notebook})" if flag else notebook


def _check_count(name: str, value: Any, least: int) -> None:
    if not is_int(value) or value < least:
        example = max(least, BenchSettings.__dataclass_fields__[name].default or least)
        raise ConfigError(f"{name} must be an int >= {least}, got {value!r}; e.g. {_fix(name, example)}")


# ----- models -----
def build_bench_model(method: str, backbone: Any = DEFAULT_BENCH_BACKBONE, num_classes: int = 100,
                      pretrained: bool = False, options: dict | None = None, seed: int = 0) -> nn.Module:
    """`build_model` with the method's `bench_options` (overridden by `options`); random images as `data` if the
    method still needs images with these options."""
    cls = get_method(method)
    torch.manual_seed(seed)
    vit = create_backbone(backbone, pretrained=pretrained)
    opts = {**cls.bench_options(vit, seed), **(options or {})}
    data = None
    if cls.data_key(method_config(method, opts)) is not None:
        g = torch.Generator().manual_seed(seed)
        data = [torch.randn(16, 3, *vit.patch_embed.img_size, generator=g)]
    return build_model(method, backbone=vit, num_classes=num_classes, pretrained=False, data=data, **opts)


def has_reference_implementation(model: nn.Module) -> bool:
    """Methods that keep a readable implementation as the reference, chosen per call (`implementation=`)."""
    return "reference" in getattr(model, "implementations", ())


# ----- measurements -----
def _implementation_kwargs(implementation: str | None) -> dict[str, str]:
    return {} if implementation is None else {"implementation": implementation}


def _train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, implementation: str | None = None,
                   precision: Precision | None = None, compiled: bool = False) -> Callable[[], None]:
    optimizer = create_optimizer(model, lr=1e-3, weight_decay=1e-3)
    weights = loss_weights(model)
    kw = _implementation_kwargs(implementation)
    precision = precision or Precision(device=x.device)
    forward = torch.compile(model) if compiled else model  # the optimiser groups the module's own names

    def step():
        model.train()
        with precision.autocast():
            logits, aux = forward(x, return_losses=True, **kw)
            loss, _ = total_loss(logits, y, aux, weights)
        optimizer.zero_grad(set_to_none=True)
        precision.backward(loss, optimizer)
        precision.step(optimizer)

    return step


def _eval_fn(model: nn.Module, x: torch.Tensor, inference_mode: bool = True, implementation: str | None = None,
             precision: Precision | None = None, compiled: bool = False) -> Callable[[], None]:
    """An eval forward. `inference_mode=False` (for FlopCounterMode, whose module tracker cannot hook tensors that
    require grad inside inference mode or no_grad) runs it in normal mode with every parameter's requires_grad
    switched off for the call: the same forward, with SHIP's prompt cache used as at inference."""
    kw = _implementation_kwargs(implementation)
    precision = precision or Precision(device=x.device)
    forward = torch.compile(model) if compiled else model

    def run():
        model.eval()
        if inference_mode:
            with torch.inference_mode(), precision.autocast():
                forward(x, **kw)
            return
        flags = [(p, p.requires_grad) for p in model.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            with precision.autocast():
                model(x, **kw)
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)

    return run


def _timm_floor_fn(vit: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   precision: Precision | None = None) -> Callable[[], None]:
    precision = precision or Precision(device=x.device)

    def run():
        vit.train()
        with precision.autocast():
            with torch.no_grad():
                h = embed_tokens(vit, x)  # the methods' own embedding: timm's forward_features up to the blocks
            h.requires_grad_(True)
            loss = F.cross_entropy(vit.forward_head(vit.norm(vit.blocks(h))), y)
        torch.autograd.grad(loss, h)  # the input gradient only: no weight gradients even where weights train

    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(variants: dict[str, Callable[[], None]], repeats: int, warmup: int,
                     device: torch.device = torch.device("cpu"), progress: bool = True) -> dict[str, list[float]]:
    """Seconds per call of each variant over `warmup + repeats` rounds (rotating order); warm-up rounds dropped."""
    names = list(variants)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in progress_bar(range(warmup + repeats), desc="bench rounds", disable=not progress, leave=False):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            variants[name]()
            _sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


#: Cores of other work tolerated beyond the cores a benchmark leaves free before it counts as under load.
LOAD_TOLERANCE = 0.2
UNDER_LOAD_RULE = (f"under load: other processes kept more than (CPU cores - threads) + {LOAD_TOLERANCE} cores busy "
                   "on average during the timed rounds (Linux /proc/stat minus this process's CPU time; elsewhere "
                   "the 1-min load average before the rounds)")


def usable_cores() -> int:
    """The number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_cpu_seconds() -> float | None:
    """Seconds the CPUs this process may use have been busy since boot (Linux /proc/stat; None elsewhere)."""
    try:
        cpus = os.sched_getaffinity(0)
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        ticks = os.sysconf("SC_CLK_TCK")
    except (AttributeError, OSError, ValueError):
        return None
    busy, seen = 0, 0
    for line in lines:
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(x) for x in values[:8]] + [0] * (8 - len(values[:8]))
            user, nice, system, _idle, _iowait, irq, softirq, steal = v
            busy += user + nice + system + irq + softirq + steal
            seen += 1
    return busy / ticks if seen else None


class OtherLoadMeter:
    """Average number of cores other processes kept busy between `start()` and `stop()` (None where unknown)."""

    def start(self) -> "OtherLoadMeter":
        self.wall, self.own, self.busy = time.perf_counter(), time.process_time(), busy_cpu_seconds()
        return self

    def stop(self) -> float | None:
        wall, own, busy = time.perf_counter() - self.wall, time.process_time() - self.own, busy_cpu_seconds()
        if busy is None or self.busy is None or wall <= 0:
            return None
        return max(0.0, (busy - self.busy - own) / wall)


def is_under_load(other_cpu: float | None, cores: int, threads: int, load_before: float | None = None) -> bool:
    """The `UNDER_LOAD_RULE`: other work beyond the cores the benchmark leaves free (+ `LOAD_TOLERANCE`)."""
    free = max(cores - threads, 0)
    other = other_cpu if other_cpu is not None else load_before
    return bool(other is not None and other > free + LOAD_TOLERANCE)


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


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device = torch.device("cpu")):
    """Run with the random generator(s) seeded, restoring their state afterwards (nothing when seed is None)."""
    if seed is None:
        yield
        return
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def peak_memory_bytes(fn: Callable[[], None], device: torch.device = torch.device("cpu"), seed: int | None = None,
                      warmup: int = 0) -> int:
    """Peak tensor bytes allocated during fn() above those allocated when it started (see the module docstring).

    `warmup`: profiled calls made and discarded first; `seed`: seed the random generator before every call.
    """
    for _ in range(warmup):
        with _seeded(seed, device):
            _peak_memory_once(fn, device)
    with _seeded(seed, device):
        return _peak_memory_once(fn, device)


def _peak_memory_once(fn: Callable[[], None], device: torch.device) -> int:
    if device.type == "cuda":
        _sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        # operator events carry their own net allocation; "[memory]" events are frees/allocs outside any operator
        live += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, live)
    return int(peak)


# FlopCounterMode calls these with the kernel's other arguments and `out_shape=`, which the counts do not need.
def _sdpa_cpu_flops(query, key, value, *_, **__) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *_, **__) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def count_flops(fn: Callable[[], None]) -> int:
    """FLOPs of fn() (matmuls, convolutions and attention kernels; elementwise ops are not counted)."""
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


def _bench_variants(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: BenchSettings,
                    precision: Precision) -> tuple[dict[str, Callable[[], None]], dict[str, Callable]]:
    """(the timed variants, the variants also measured for memory and FLOPs), all at `precision`. The training
    steps run on a copy of `model`, so that the eval variants keep its parameters."""
    vit, train_model = model.vit, copy.deepcopy(model)
    with_reference = has_reference_implementation(model)

    def plain_eval():
        vit.eval()
        with torch.inference_mode(), precision.autocast():
            vit(x)

    variants = {"timm_eval": plain_eval}
    # the model's own default first, then (where it has one) the readable reference on the same weights
    for impl, prefix in ((None, ""), ("reference", "reference_")) if with_reference else ((None, ""),):
        variants[f"{prefix}eval"] = _eval_fn(model, x, implementation=impl, precision=precision)
        variants[f"{prefix}train"] = _train_step_fn(train_model, x, y, implementation=impl,
                                                    precision=Precision(precision.name, x.device))
    measured = dict(variants)
    if settings.compile:  # timed only: compiled code is not what the memory and FLOP counters measure
        variants["compiled_eval"] = _eval_fn(model, x, precision=precision, compiled=True)
        variants["compiled_train"] = _train_step_fn(copy.deepcopy(train_model), x, y, compiled=True,
                                                    precision=Precision(precision.name, x.device))
    if settings.floor:  # the train copy's frozen blocks, in train mode (same drop path as the train step)
        variants["timm_train_floor"] = _timm_floor_fn(train_model.vit, x, y, precision)
    return variants, measured


def _time_ratios(times: dict[str, list[float]], with_reference: bool, floor: bool) -> dict[str, float]:
    """Medians of per-round ratios of variants timed in the same rounds."""
    pairs = [("eval_vs_timm", "eval", "timm_eval")]
    if "compiled_eval" in times:
        pairs += [("compiled_eval_vs_eager", "compiled_eval", "eval"), ("compiled_train_vs_eager", "compiled_train",
                                                                          "train")]
    if with_reference:
        pairs += [("reference_eval_vs_timm", "reference_eval", "timm_eval"),
                  ("reference_eval_speedup", "reference_eval", "eval"),
                  ("reference_train_speedup", "reference_train", "train")]
    if floor:
        pairs += [("train_vs_timm_train_floor", "train", "timm_train_floor")]
        if with_reference:
            pairs += [("reference_train_vs_timm_train_floor", "reference_train", "timm_train_floor")]
    return {key: _median_ratio(times[num], times[den]) for key, num, den in pairs}


def _memory_figures(fns: dict[str, Callable[[], None]], device: torch.device, seed: int,
                    with_reference: bool) -> dict[str, float]:
    out = {f"{name}_mem_mb": peak_memory_bytes(fn, device, seed=seed, warmup=1) / 2 ** 20 for name, fn in fns.items()}
    if with_reference:
        out["train_mem_vs_reference"] = out["train_mem_mb"] / out["reference_train_mem_mb"]
        out["eval_mem_vs_reference"] = out["eval_mem_mb"] / out["reference_eval_mem_mb"]
    return out


def _flop_figures(fns: dict[str, Callable[[], None]], model: nn.Module, x: torch.Tensor, device: torch.device,
                  seed: int, precision: Precision) -> dict[str, float]:
    fns = dict(fns)
    for name in [n for n in fns if n.endswith("eval") and n != "timm_eval"]:  # FlopCounterMode: no inference mode
        fns[name] = _eval_fn(model, x, inference_mode=False,
                             implementation="reference" if name.startswith("reference") else None,
                             precision=precision)
    out = {}
    for name, fn in fns.items():
        with _seeded(seed, device):
            out[f"{name}_gflops"] = count_flops(fn) / 1e9
    return out


def run_bench(settings: BenchSettings | None = None, model: nn.Module | None = None) -> dict:
    """Time (and measure memory of) one method against the plain timm forward; see the module docstring.

    Returns a flat dict: seconds per batch (`*_s`), peak memory in MB (`*_mem_mb`), ratios, parameter counts,
    and the settings. `model`: an already built model to measure instead of building `settings.method` on
    `settings.backbone`. Every variant (plain timm included) runs at `settings.precision`
    (`shiplib.engine.precision`).
    """
    settings = settings or BenchSettings()
    dev = auto_device(settings.device)
    check_device(str(dev))
    check_precision(settings.precision, dev)
    prev_threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        if model is None:
            with bars_off(not settings.progress):
                model = build_bench_model(settings.method, settings.backbone, settings.num_classes,
                                          settings.pretrained, settings.options, settings.seed)
        return _measure(model.to(dev), settings, dev)
    finally:
        torch.set_num_threads(prev_threads)


def _measure(model: nn.Module, settings: BenchSettings, dev: torch.device) -> dict:
    """`run_bench` on a built model, on its device, with the threads set."""
    s, prec = settings, Precision(settings.precision, dev)
    image_size = list(model.vit.patch_embed.img_size)
    x = torch.randn(s.batch, 3, *image_size, generator=torch.Generator().manual_seed(s.seed)).to(dev)
    y = (torch.arange(s.batch) % model.num_classes).to(dev)
    with_reference = has_reference_implementation(model)
    variants, measured = _bench_variants(model, x, y, s, prec)
    load_before = os.getloadavg()
    meter = OtherLoadMeter().start()
    times = time_interleaved(variants, s.repeats, s.warmup, dev, s.progress)
    other_cpu = meter.stop()
    load_after = os.getloadavg()

    counts = count_parameters(model)
    cores, used = usable_cores(), torch.get_num_threads()
    out: dict[str, Any] = dict(
        method=getattr(model, "method", s.method), backbone=str(s.backbone) if not isinstance(s.backbone, nn.Module)
        else type(s.backbone).__name__, image_size=image_size, batch=s.batch, threads=used, device=str(dev),
        precision=s.precision, repeats=s.repeats, warmup=s.warmup, compile=s.compile,
        trainable_params=counts["trainable"], total_params=counts["total"])
    out.update({f"{name}_s": statistics.median(ts) for name, ts in times.items()})
    out.update(_time_ratios(times, with_reference, s.floor))
    if s.memory:
        out.update(_memory_figures(measured, dev, s.seed, with_reference))
    if s.flops:
        out.update(_flop_figures(measured, model, x, dev, s.seed, prec))
    out["samples_s"] = {k: [round(t, 4) for t in v] for k, v in times.items()}
    out["load_average"] = dict(before=list(load_before), after=list(load_after))
    out["cpu_cores"] = cores
    out["other_cpu"] = None if other_cpu is None else round(other_cpu, 3)
    out["under_load"] = is_under_load(other_cpu, cores, used, load_before[0])
    out["under_load_rule"] = UNDER_LOAD_RULE
    out["memory_method"] = ("torch.cuda.max_memory_allocated" if dev.type == "cuda" else
                            "torch.profiler CPU allocator events: peak live tensor bytes above the start")
    return out


# ----- tables for notebooks -----
#: The settings of `efficiency_table` unless given: the mini backbone, a 100-class head, the train floor timed.
TABLE_SETTINGS = BenchSettings(backbone="mini", batch=8, threads=2, repeats=2, warmup=1, num_classes=100, floor=True,
                               flops=True)


def table_settings(**changes: Any) -> BenchSettings:
    """`TABLE_SETTINGS` with `changes` (e.g. `backbone=`, `batch=`, `threads=`, `repeats=`), checked."""
    return dataclasses.replace(TABLE_SETTINGS, **changes)


def efficiency_table(methods: list[str] | None = None, settings: BenchSettings | None = None,
                     options: dict[str, dict] | None = None):
    """One row per method (plus `<method> (reference)` rows where a reference implementation exists), each
    measured by `run_bench` against the plain timm ViT timed in the same rounds. Returns (table, raw `run_bench`
    results per method).

    `settings`: the measurement of every method (default `TABLE_SETTINGS`; memory and FLOPs are always
    measured, the table shows them); `options`: method options by method name.

    Columns (numbers; `format_efficiency` renders them for reading):
    - deterministic: trainable_params, total_params, trainable_%, eval/train_gflops_per_image, eval/train_mem_mb
      (peak tensor memory, MB);
    - ratios to plain timm from the same rounds (medians of per-round ratios; the figures to compare):
      eval_vs_timm (eval forward / timm forward), train_vs_timm_floor (training step / timm forward+backward to
      the input; NaN without `floor`);
    - absolute, this machine under its load: eval_s, train_s, timm_eval_s, timm_train_floor_s (median seconds
      per batch), eval/train_images_per_s;
    - load: load_before, load_after (1-min load average), other_cpu (cores busy with other work during the
      timed rounds), under_load (see `UNDER_LOAD_RULE`).
    """
    import pandas as pd  # deferred: pandas takes about a second to import, only the tables need it

    nan = float("nan")
    settings = settings or TABLE_SETTINGS
    batch = settings.batch
    rows, raw = [], {}
    for method in (methods or list_methods()):
        r = run_bench(dataclasses.replace(settings, method=method, options=(options or {}).get(method),
                                          memory=True, flops=True))
        raw[method] = r
        impls = [("", method)] + ([("reference_", f"{method} (reference)")] if "reference_eval_s" in r else [])
        for prefix, label in impls:
            rows.append({
                "method": label,
                "trainable_params": r["trainable_params"],
                "total_params": r["total_params"],
                "trainable_%": 100.0 * r["trainable_params"] / r["total_params"],
                "eval_gflops_per_image": r[f"{prefix}eval_gflops"] / batch,
                "train_gflops_per_image": r[f"{prefix}train_gflops"] / batch,
                "eval_vs_timm": r[f"{prefix}eval_vs_timm"],
                "train_vs_timm_floor": r.get(f"{prefix}train_vs_timm_train_floor", nan),
                "eval_s": r[f"{prefix}eval_s"],
                "train_s": r[f"{prefix}train_s"],
                "timm_eval_s": r["timm_eval_s"],
                "timm_train_floor_s": r.get("timm_train_floor_s", nan),
                "eval_images_per_s": batch / r[f"{prefix}eval_s"],
                "train_images_per_s": batch / r[f"{prefix}train_s"],
                "eval_mem_mb": r[f"{prefix}eval_mem_mb"],
                "train_mem_mb": r[f"{prefix}train_mem_mb"],
                "load_before": r["load_average"]["before"][0],
                "load_after": r["load_average"]["after"][0],
                "other_cpu": nan if r["other_cpu"] is None else r["other_cpu"],
                "under_load": r["under_load"],
            })
    return pd.DataFrame(rows), raw


#: (column of `efficiency_table`, label, formatter) in display order. Labels are wider than any value of their
#: column, so the plain-text rendering keeps its layout whatever the measured numbers are.
EFFICIENCY_DISPLAY = (
    ("trainable_params", "trainable params", lambda v: f"{int(v):,}"),
    ("trainable_%", "trainable share", lambda v: f"{significant(v)} %"),
    ("eval_gflops_per_image", "eval FLOPs / image", format_flops),
    ("train_gflops_per_image", "train FLOPs / image", format_flops),
    ("eval_mem_mb", "eval peak memory", format_megabytes),
    ("train_mem_mb", "train peak memory", format_megabytes),
    ("eval_vs_timm", "eval time vs timm", format_ratio),
    ("train_vs_timm_floor", "train time vs timm floor", format_ratio),
    ("eval_s", "eval time / batch", format_seconds),
    ("train_s", "train time / batch", format_seconds),
    ("timm_eval_s", "timm eval / batch", format_seconds),
    ("timm_train_floor_s", "timm floor / batch", format_seconds),
    ("eval_images_per_s", "eval throughput", format_throughput),
    ("train_images_per_s", "train throughput", format_throughput),
    ("under_load", "under load", lambda v: "–" if missing(v) else ("yes" if v else "no")),
    ("other_cpu", "other processes", lambda v: "–" if missing(v) else f"{v:.2f} cores"),
)


def format_efficiency(table, load: bool = True):
    """`efficiency_table` for reading: a DataFrame of text indexed by method (not a Styler, whose HTML carries a
    random id). Seconds as `0.799 s`, ratios as `1.02×`, throughput as `159 img/s`, parameters with thousands
    separators, FLOPs per image as `267 GFLOPs` / `193 MFLOPs`, peak memory as `29.0 MB` (deterministic, see the
    module docstring), load as `yes`/`no` and `0.05 cores` (`load=False`: without the two load columns)."""
    import pandas as pd  # deferred: see efficiency_table

    out = pd.DataFrame(index=pd.Index(list(table["method"]), name="method"))
    for column, label, fmt in EFFICIENCY_DISPLAY:
        if column not in table or (not load and column in ("under_load", "other_cpu")):
            continue
        out[label] = [fmt(v) for v in table[column]]
    return out


def efficiency_note() -> str:
    """How to read `efficiency_table` / `format_efficiency` (the same text on every machine)."""
    return ("Ratios to plain timm are medians of per-round ratios, each method timed in the same interleaved rounds "
            "as the plain timm forward (eval) and the timm forward+backward to the input (train floor): compare "
            "these. Seconds per batch and images/s are this machine's under its current load. Parameters, FLOPs "
            "and peak tensor memory do not depend on the machine's load. " + UNDER_LOAD_RULE[0].upper()
            + UNDER_LOAD_RULE[1:] + "; its measurements may be slow and noisy.")


#: The figures of a saved `run_bench` result shown by `bench_summary`, with what each is.
BENCH_FIGURES = (
    ("timm_eval_s", "Seconds per batch: plain timm forward (inference mode)"),
    ("eval_s", "Seconds per batch: eval forward (inference mode)"),
    ("train_s", "Seconds per batch: training step (forward, losses, backward, AdamW)"),
    ("reference_eval_s", "Seconds per batch: eval forward, reference implementation"),
    ("reference_train_s", "Seconds per batch: training step, reference implementation"),
    ("timm_train_floor_s", "Seconds per batch: timm forward + backward to the input (train floor)"),
    ("eval_vs_timm", "Ratio: eval forward / timm forward (same rounds)"),
    ("reference_eval_vs_timm", "Ratio: reference eval forward / timm forward (same rounds)"),
    ("train_vs_timm_train_floor", "Ratio: training step / timm train floor (same rounds)"),
    ("reference_train_vs_timm_train_floor", "Ratio: reference training step / timm train floor (same rounds)"),
    ("reference_eval_speedup", "Ratio: reference eval forward / eval forward (same rounds)"),
    ("reference_train_speedup", "Ratio: reference training step / training step (same rounds)"),
    ("timm_eval_mem_mb", "Peak tensor memory, MB: timm forward"),
    ("eval_mem_mb", "Peak tensor memory, MB: eval forward"),
    ("train_mem_mb", "Peak tensor memory, MB: training step"),
    ("reference_eval_mem_mb", "Peak tensor memory, MB: eval forward, reference implementation"),
    ("reference_train_mem_mb", "Peak tensor memory, MB: training step, reference implementation"),
    ("eval_mem_vs_reference", "Ratio: eval peak memory / reference's"),
    ("train_mem_vs_reference", "Ratio: training-step peak memory / reference's"),
    ("timm_eval_gflops", "GFLOPs per batch: timm forward"),
    ("eval_gflops", "GFLOPs per batch: eval forward"),
    ("train_gflops", "GFLOPs per batch: training step"),
    ("reference_eval_gflops", "GFLOPs per batch: eval forward, reference implementation"),
    ("reference_train_gflops", "GFLOPs per batch: training step, reference implementation"),
    ("other_cpu", "Cores busy with other work during the timed rounds"),
)


def bench_summary(result: dict, decimals: int = 3) -> "pd.DataFrame":
    """The measured figures of one `run_bench` result (e.g. a saved `--json` file) as a table of text: index
    `figure` (the result's key), columns `meaning` and `value` (`decimals` decimals, as stored in the file: the
    same text wherever it is shown). Figures the result does not hold are left out; `under_load` is shown when
    the result records it."""
    import pandas as pd  # deferred: see efficiency_table

    rows = [dict(figure=key, meaning=meaning, value=f"{float(result[key]):.{decimals}f}")
            for key, meaning in BENCH_FIGURES if key in result and result[key] is not None]
    if "under_load" in result:
        rows.append(dict(figure="under_load", meaning=result.get("under_load_rule", UNDER_LOAD_RULE),
                         value="yes" if result["under_load"] else "no"))
    return pd.DataFrame(rows, columns=["figure", "meaning", "value"]).set_index("figure")


def load_bench(path) -> dict:
    """A result saved from `python -m shiplib bench --json` (one JSON object)."""
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
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help=f"numeric precision of every variant (default {DEFAULT_PRECISION})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, e.g. --set prompt_length=10 or --set K=10 (repeatable; read as "
                             "`run --set`)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--floor", action="store_true",
                        help="also time the plain timm forward+backward to the input (a prompt method's floor)")
    parser.add_argument("--flops", action="store_true", help="also count FLOPs (FlopCounterMode)")
    parser.add_argument("--compile", action="store_true",
                        help="also time eval and training step through torch.compile (compiled in the warm-up)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: a short summary)")
    parser.add_argument("--out", help="also write the JSON object to this file (atomically)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """The settings the `bench` command line asks for; `--set` items as `run --set` reads them."""
    return BenchSettings(method=args.method, backbone=args.backbone, batch=args.batch, threads=args.threads,
                         repeats=args.repeats, warmup=args.warmup, num_classes=args.classes,
                         pretrained=args.pretrained, options=args.overrides, device=args.device,
                         precision=args.precision, memory=not args.no_memory, floor=args.floor, flops=args.flops,
                         compile=args.compile, progress=not args.no_progress)


def main(args: argparse.Namespace) -> int:
    """`python -m shiplib bench`: a bad setting raises a ConfigError, which the command line reports in one line."""
    result = run_bench(settings_from_args(args))
    if args.out:
        atomic_write_json(args.out, result)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key != "samples_s":
                print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    return 0
