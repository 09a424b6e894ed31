"""`compile=<backend>`: the model's forward through `torch.compile`, in place.

Compiling in place (`nn.Module.compile`) keeps the module's parameter names, so checkpoints, the optimiser's
groups and results are those of the eager run; compiled and eager steps agree within 1e-5
(tests/test_ship_compile.py). Off by default: on CPU the eager step is faster today (see the README), and
inductor's first compilation takes minutes on a small CPU. The backend is checked before any work.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError


def compile_backends() -> list[str]:
    """Backends `torch.compile` accepts here (inductor, aot_eager, eager, …)."""
    import torch._dynamo  # deferred: importing dynamo takes about a second

    return sorted(torch._dynamo.list_backends(exclude_tags=()))


def check_compile_backend(backend) -> str | None:
    """`backend` when torch.compile knows it, None for eager; otherwise one line naming the valid backends."""
    if backend is None:
        return None
    valid = compile_backends()
    if not isinstance(backend, str) or backend not in valid:
        raise ConfigError(f"compile={backend!r} is not a torch.compile backend; valid: {', '.join(valid)} "
                          "(e.g. --compile inductor; leave it unset to run eagerly)")
    return backend


def compile_model(model: torch.nn.Module, backend: str | None) -> torch.nn.Module:
    """`model` with its forward compiled by `backend` (in place; eager when None)."""
    if backend is not None:
        model.compile(backend=backend)
    return model
