"""Resource sense before training: is the device there, will the run fit in memory, how long will an epoch take.

`estimate_run(model, batch_size, img_size)` measures a built model on a probe image: the most tokens a layer
sees (prompts included) and the activation bytes autograd keeps for the backward pass (measured with
`torch.autograd.graph.saved_tensors_hooks`, so it holds for any method). Scaled to the batch and added to
parameters, gradients and AdamW's two moments, this is what training keeps in memory, a lower bound of the real
peak (temporary buffers come on top), so `check_memory` refuses only runs that cannot fit. The time per image is
the cost of one more image in a forward (a batch of 2 minus a batch of 1, so fixed per-call costs cancel); the
first timed training batch gives the accurate figure (`log_epoch_time`). The probe draws its input from its own
generator and restores the random state, so a run's numbers do not change.

Memory limit: the device's free memory (`MemAvailable` of /proc/meminfo or psutil on CPU, `cuda.mem_get_info` on
a GPU), or `$SHIPLIB_MEMORY_LIMIT` (e.g. `64G`, `512M`; `off` disables the check).
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import os
import re
import time
from dataclasses import dataclass

import torch

from ..errors import ConfigError, ResourceError, setting_fix
from ..utils.checks import positive_int
from ..utils.units import format_bytes

log = logging.getLogger(__name__)

MEMORY_LIMIT_ENV = "SHIPLIB_MEMORY_LIMIT"
#: An epoch estimated longer than this (minutes) is announced as a warning, not just an info line.
LONG_EPOCH_MIN = 10.0
#: A training step costs about this many forward passes (forward + backward ≈ 1 + 2).
STEP_FORWARDS = 3.0
_UNITS = {"": 1, "b": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}


# ----- device -----
def check_device(device: str | None) -> None:
    """The device a (validated) run names is on this machine: `cuda` needs a CUDA GPU, `cuda:N` at least N+1.
    Checked where the run starts, not when it is configured: a SLURM login node may have no GPU."""
    name = str(device or "auto").strip()
    if not name.startswith("cuda"):
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"device {device!r} asks for a CUDA GPU, but torch sees none on this machine "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu, "
                          "or auto (CUDA when present, else CPU)")
    index = int(name.partition(":")[2] or 0)
    if index >= count:
        raise ConfigError(f"device {device!r}: this machine has {count} CUDA GPU(s), valid: "
                          f"{', '.join(f'cuda:{i}' for i in range(count))} (or cuda, auto)")


# ----- sizes -----
_WARNED_THREADS: set = set()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def warn_threads(threads: int) -> None:
    """Warn (once per value and process) when more torch threads are asked for than this process has cores:
    oversubscribed threads make training slower, not faster."""
    cores = usable_cores()
    if threads > cores and threads not in _WARNED_THREADS:
        _WARNED_THREADS.add(threads)
        log.warning("--threads %d is more than the %d CPU core(s) this process may use: training gets slower, not "
                    "faster; use --threads %d or fewer", threads, cores, cores)


def parse_bytes(text: str) -> int:
    """'64G', '512M', '1.5GB', '2000000' -> bytes (binary units: 1G = 2**30)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgtKMGT]?)[bB]?\s*", str(text))
    if not match:
        raise ConfigError(f"memory size {text!r} is not understood; give a number with an optional unit, e.g. "
                          f"64G, 512M, 1.5T (${MEMORY_LIMIT_ENV}=off disables the memory check)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def memory_limit() -> int | None:
    """`$SHIPLIB_MEMORY_LIMIT` in bytes; None when unset; 0 when set to off/none/0 (no check)."""
    value = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if not value:
        return None
    if value.lower() in ("off", "none", "0"):
        return 0
    return parse_bytes(value)


def available_memory(device: torch.device | str = "cpu") -> tuple[int | None, str]:
    """(free bytes, where the number comes from) of a device; (None, why) when it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free memory of {device}"
    try:
        import psutil

        return int(psutil.virtual_memory().available), "available RAM (psutil)"
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except OSError:
        pass
    return None, "this system reports no available memory"


# ----- the estimate -----
@dataclass(frozen=True)
class Estimate:
    """Memory and time of a training run as measured on a probe image (bytes and seconds)."""

    batch_size: int
    img_size: int
    tokens: int  # the most tokens a layer sees per image (image tokens + prompts)
    parameter_bytes: int  # parameters and buffers
    trainable_bytes: int
    activation_bytes_per_image: int  # kept for the backward pass
    seconds_per_image: float  # forward time of one more image in a batch
    complete: bool = True  # False: the probe stopped early because the run clearly cannot fit

    @property
    def state_bytes(self) -> int:
        """Parameters, their gradients and AdamW's two moments."""
        return self.parameter_bytes + 3 * self.trainable_bytes

    @property
    def activation_bytes(self) -> int:
        return self.activation_bytes_per_image * self.batch_size

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes

    def largest_batch(self, budget: int) -> int:
        """The largest batch whose estimate fits in `budget` bytes (0 if none)."""
        per_image = max(self.activation_bytes_per_image, 1)
        return max(0, (budget - self.state_bytes) // per_image)

    def describe(self) -> str:
        at_least = "" if self.complete else "at least "
        return (f"batch {self.batch_size} × {self.tokens} tokens per {self.img_size} px image: activations "
                f"{at_least}{format_bytes(self.activation_bytes)}, parameters, gradients and optimizer state "
                f"{format_bytes(self.state_bytes)}")


class _TooLarge(Exception):
    """Raised inside the probe's hooks to stop a forward that already shows the run cannot fit."""


def _forward_kwargs(model: torch.nn.Module) -> dict:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"return_losses": True} if "return_losses" in params else {}


def estimate_run(model: torch.nn.Module, batch_size: int, img_size: int, budget: int | None = None,
                 in_chans: int = 3) -> Estimate:
    """Measure `model` (built, on its device) on one probe image in training mode; see the module docstring.

    `budget` (bytes): stop the probe as soon as the run clearly needs more (`Estimate.complete` is then False), so
    that a huge configuration is refused without first allocating its memory.
    """
    positive_int("batch_size", batch_size)
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    own = {p.untyped_storage().data_ptr() for p in params} | {b.untyped_storage().data_ptr() for b in model.buffers()}
    parameter_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    trainable_bytes = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    seen: set[int] = set()
    state = dict(saved=0, tokens=0, complete=True)

    def over_budget(images: int) -> bool:
        needed = parameter_bytes + 3 * trainable_bytes + state["saved"] * images
        return budget is not None and budget > 0 and needed > budget

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own and ptr not in seen:
            seen.add(ptr)
            state["saved"] += t.untyped_storage().nbytes()
            if over_budget(batch_size):  # the probe itself then holds at most budget / batch_size
                raise _TooLarge
        return t

    def count_tokens(module, args) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() == 3:
            state["tokens"] = max(state["tokens"], int(x.shape[1]))

    def forward_seconds(images: int) -> float:
        x = torch.randn(images, in_chans, img_size, img_size, generator=generator).to(device)
        start = time.perf_counter()
        model(x, **_forward_kwargs(model))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    hooks = [m.register_forward_pre_hook(count_tokens) for m in norms]
    was_training = model.training
    generator = torch.Generator(device="cpu").manual_seed(0)
    seconds = math.nan
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        model.train()
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                forward_seconds(1)  # also the warm-up of the timed forwards
        except _TooLarge:
            state["complete"] = False
        finally:
            for h in hooks:
                h.remove()
        if state["complete"] and not over_budget(2):
            seconds = max(forward_seconds(2) - forward_seconds(1), 0.0)
        model.train(was_training)
    return Estimate(batch_size=batch_size, img_size=img_size, tokens=state["tokens"],
                    parameter_bytes=parameter_bytes, trainable_bytes=trainable_bytes,
                    activation_bytes_per_image=state["saved"], seconds_per_image=seconds,
                    complete=state["complete"])


def memory_budget(device: torch.device | str = "cpu") -> tuple[int | None, str]:
    """(bytes a run may use, where the number comes from): `$SHIPLIB_MEMORY_LIMIT`, else the device's free memory.
    (None, …) means no check."""
    limit = memory_limit()
    if limit == 0:
        return None, f"${MEMORY_LIMIT_ENV}=off"
    if limit is not None:
        return limit, f"${MEMORY_LIMIT_ENV}"
    return available_memory(device)


def check_memory(estimate: Estimate, device: torch.device | str = "cpu", budget: int | None = None,
                 source: str | None = None) -> None:
    """`ResourceError` when the estimate exceeds the budget (default: `memory_budget(device)`), saying what fits."""
    if budget is None:
        budget, source = memory_budget(device)
    if budget is None or estimate.total_bytes <= budget:
        return
    fit = estimate.largest_batch(budget)
    if fit >= 1 and estimate.complete:
        smaller = dataclasses.replace(estimate, batch_size=min(fit, estimate.batch_size))
        advice = (f"lower batch_size to {smaller.batch_size} (it needs about {format_bytes(smaller.total_bytes)}): "
                  f"{setting_fix('batch_size', smaller.batch_size)}")
    elif fit >= 1:  # the probe stopped early: its figure per image is a lower bound
        advice = f"lower batch_size to {fit} at most, {setting_fix('batch_size', fit)}, or use fewer prompt tokens"
    else:
        advice = "even batch_size=1 does not fit: use fewer prompt tokens (e.g. a smaller K) or a smaller img_size"
    need = ("at least " if not estimate.complete else "about ") + format_bytes(estimate.total_bytes)
    raise ResourceError(f"this run needs {need} of memory ({estimate.describe()}), but {format_bytes(budget)} is "
                        f"the limit on {device} ({source}). To fix: {advice}; or, if more memory is really usable, "
                        f"set {MEMORY_LIMIT_ENV}=<size> (e.g. 64G; off disables this check).")


# ----- time -----
def epoch_time_note(seconds_per_step: float, steps: int, how: str = "from the first batch") -> str:
    """'one epoch ≈ N min (S s per batch × B batches, from the first batch)'."""
    total = seconds_per_step * steps
    when = f"{total / 60:.1f} min" if total >= 60 else f"{total:.0f} s"
    return f"one epoch ≈ {when} ({seconds_per_step:.2f} s per batch × {steps} batches, {how})"


def log_epoch_time(seconds_per_step: float, steps: int, how: str = "from the first batch",
                   long_min: float = LONG_EPOCH_MIN, short_level: int = logging.INFO) -> None:
    """Log the epoch time of a timed batch (the training loop calls it after its first batch): a warning when an
    epoch takes longer than `long_min` minutes, else a line at `short_level`."""
    note = epoch_time_note(seconds_per_step, steps, how)
    if seconds_per_step * steps > long_min * 60:
        log.warning("%s: a long epoch; check the settings (batch_size, prompt length, img_size, device)", note)
    else:
        log.log(short_level, "%s", note)


def preflight(model: torch.nn.Module, batch_size: int, img_size: int, train_size: int,
              device: torch.device | str = "cpu") -> Estimate:
    """Before training: estimate the run, refuse it (`ResourceError`) when it cannot fit, log the epoch time."""
    budget, source = memory_budget(device)
    estimate = estimate_run(model, batch_size, img_size, budget=budget)
    check_memory(estimate, device, budget, source)
    steps = train_size // batch_size
    log.debug("estimate: %s; total about %s", estimate.describe(), format_bytes(estimate.total_bytes))
    if steps and math.isfinite(estimate.seconds_per_image):  # rough: only a long epoch is worth a line here
        log_epoch_time(estimate.seconds_per_image * batch_size * STEP_FORWARDS, steps, "estimated from a probe image",
                       short_level=logging.DEBUG)
    return estimate
