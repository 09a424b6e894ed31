"""SHIP's inference cache: the keys and values of the input-independent prompts (SIP, SSP), per block.

In blocks where prompts are not queries, SIP and SSP rows are `p <- p + proj(LN1 p)`, `p <- p + MLP(LN2 p)`: at
inference they do not depend on the input, and neither do their keys and values. The first forward that may use them
stores them (`PromptKVCache.store`); later forwards pass them to the block (`PromptSegment.kv`) and skip those rows.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..layers.ship_block import PromptSegment

CACHED_KINDS = ("sip", "ssp")  # input-independent prompts, whose keys/values the inference cache holds


def _state_key(model: nn.Module) -> tuple:
    return tuple((id(t), t._version, t.data_ptr(), t.dtype, t.device, tuple(t.shape))
                 for t in (*model.parameters(), *model.buffers()))


def uses_prompt_cache(model) -> bool:
    """Eval mode, cached prompts that are queries in no block but the last (decoupled attention everywhere), no
    gradient wanted for the prompts, and not under `torch.compile` (whose graph computes those rows itself)."""
    steps = model.plan.steps
    if model.training or torch.compiler.is_compiling() or not any(k in CACHED_KINDS for s in steps for k in s.prompts):
        return False
    if any(s.attention != "decoupled" or (s.prompts_query and not s.last) for s in steps):
        return False
    prompts = [*model.sip_prompts, *([model.ssp_prompt] if model.ssp_prompt is not None else [])]
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in prompts))


def cache_entry(prompts: list[PromptSegment]) -> dict[str, torch.Tensor]:
    """{"sip": kv, "ssp": kv, "shared": [sip | ssp] kv} of one block's segments, keys|values (1, L, 2 * width)."""
    entry = {seg.name: seg.kv.detach() for seg in prompts if seg.name in CACHED_KINDS}
    entry["shared"] = torch.cat(list(entry.values()), dim=1) if entry else None  # for blocks without an AP
    return entry


class PromptKVCache:
    """Per-block keys/values of the input-independent prompts (SIP, SSP) at inference.

    Valid while no parameter changes: the key holds every parameter's id, version counter (bumped by optimizer
    steps and `load_state_dict`'s in-place copies), storage, dtype and device. `SHIP.train()` and
    `load_state_dict` also clear it. Entries stored in inference mode are used only in inference mode (inference
    tensors cannot enter autograd); elsewhere they are recomputed.
    """

    def __init__(self):
        self._key: tuple | None = None
        self._kv: list[dict[str, torch.Tensor]] | None = None
        self._inference = False

    def clear(self) -> None:
        self._key, self._kv = None, None

    @property
    def filled(self) -> bool:
        return self._kv is not None

    def lookup(self, model) -> list[dict[str, torch.Tensor]] | None:
        """The entries (one per block) if they are valid for `model`'s current parameters, else None."""
        if self._kv is None or (self._inference and not torch.is_inference_mode_enabled()):
            return None
        return self._kv if _state_key(model) == self._key else None

    def store(self, model, entries: list[dict[str, torch.Tensor]]) -> None:
        self._key, self._kv, self._inference = _state_key(model), entries, torch.is_inference_mode_enabled()
