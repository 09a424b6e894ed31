"""Numeric precision of a run's forward and backward passes (`precision=fp32|tf32|bf16|fp16`).

- `fp32`: plain float32, the default (as in the official code);
- `tf32`: float32 tensors, matrix products in TensorFloat-32 (`torch.set_float32_matmul_precision("high")`);
  a CUDA feature of Ampere and newer GPUs;
- `bf16`, `fp16`: `torch.autocast` to bfloat16 / float16 around forward and losses; parameters, optimiser state
  and gradients stay float32. fp16 also scales the loss (`torch.amp.GradScaler`), because its small exponent
  range underflows gradients; bf16 has float32's range and needs no scaling.

`check_precision` refuses a mode the device cannot run, with one line, before any work.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, setting_fix

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
DEFAULT_PRECISION = "fp32"
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class PrecisionError(ConfigError):
    """The device cannot run the requested precision (exit 2, as a device that is not there)."""


def check_precision_name(precision) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not supported; valid: {', '.join(PRECISIONS)} "
                          f"(default {DEFAULT_PRECISION}), e.g. --precision bf16")
    return precision


def check_precision(precision: str, device: torch.device | str) -> None:
    """`PrecisionError` when `device` cannot run `precision` (tf32 off CUDA or before Ampere, bf16 on a GPU
    without it, an autocast dtype the device's autocast does not support)."""
    check_precision_name(precision)
    device = torch.device(device)
    fix = f"use {setting_fix('precision', 'fp32', flag='--precision')}, or bf16 where supported"
    if precision == "tf32":
        if device.type != "cuda":
            raise PrecisionError(f"precision tf32 needs a CUDA GPU of the Ampere generation or newer; device "
                                 f"{device} is not one: {fix}")
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            raise PrecisionError(f"precision tf32 needs a CUDA GPU of compute capability 8.0 or newer; "
                                 f"{torch.cuda.get_device_name(device)} has {major}.{minor}: {fix}")
    elif precision in _AUTOCAST_DTYPES:
        native_bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False)
        if precision == "bf16" and not native_bf16:
            raise PrecisionError(f"precision bf16 needs a GPU with bfloat16 support (Ampere or newer); "
                                 f"{torch.cuda.get_device_name(device)} has none: {fix}")
        problem = _autocast_problem(device, _AUTOCAST_DTYPES[precision])
        if problem:
            raise PrecisionError(f"precision {precision} cannot run on device {device} ({problem}): "
                                 "use --precision fp32" + ("" if precision == "bf16" else " or bf16"))


def _autocast_problem(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why autocast to `dtype` does not work on `device` (a tiny forward + backward is tried), or None."""
    if not torch.amp.is_autocast_available(device.type):
        return f"torch has no autocast for {device.type}"
    try:
        with torch.enable_grad():  # the caller may be inside no_grad
            w = torch.ones(4, 4, device=device, requires_grad=True)
            with torch.autocast(device.type, dtype=dtype):
                out = torch.ones(2, 4, device=device) @ w
            if out.dtype != dtype:
                return f"autocast leaves matrix products in {out.dtype}"
            out.float().sum().backward()
    except RuntimeError as e:
        return str(e).splitlines()[0]
    return None


@dataclass
class Precision:
    """How training and evaluation run the model at one precision on one device."""

    name: str = DEFAULT_PRECISION
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        check_precision_name(self.name)
        self.device = torch.device(self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None

    @contextlib.contextmanager
    def autocast(self):
        """The context a forward pass (and its losses) runs in."""
        if self.name in _AUTOCAST_DTYPES:
            with torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.name]):
                yield
        elif self.name == "tf32":
            before = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("high")
            try:
                yield
            finally:
                torch.set_float32_matmul_precision(before)
        else:
            yield

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """The backward pass; for fp16 through the gradient scaler, with the gradients unscaled afterwards, so that
        what reads them before `step` (gradient norms, clipping) sees their true values."""
        if self.scaler is None:
            loss.backward()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimiser step (fp16: skipped when a gradient is not finite, and the scale adapted)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        """The gradient scaler's state (empty without one), checkpointed so that a resumed fp16 run is exact."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
