"""SHIP's block plan: which tokens enter each block, which prompts are inserted or carried, and which rows a block
must hand on; computed once from the config and the semantic levels (docs/ship_computation.md §4).

`SHIP.run_plan` runs this one schedule with `shiplib.layers.ship_block`: the readable path asks every block for every
row (`BlockPlan.every_row`), the fast path only for the rows a later step reads (`BlockPlan.rows_read`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch.nn as nn

from ..layers.ship_block import RowsRead

PROMPT_KINDS = ("sip", "ap", "ssp")  # token order after the image tokens: [image | SIP | AP | SSP]


def attribute_prompt_starts(levels: Sequence[int], count: int) -> list[int]:
    """The last `count` level starts after block 0: where the APs go (block 0 has no previous block)."""
    return [s for s in levels if s > 0][-count:] if count > 0 else []


@dataclass(frozen=True)
class BlockStep:
    """What block `index` receives and what it hands on."""

    index: int
    prompts: tuple[str, ...]  # prompt kinds entering the block, in token order
    carried: tuple[str, ...]  # those that are the previous block's outputs; the others are inserted fresh
    sip_level: int | None  # the level starting here, whose SIP is inserted
    ap_row: int | None  # the attribute-prompt row built here from the previous block's output
    attention: str  # "decoupled" or "joint"
    prompts_query: bool  # prompt rows are queries; otherwise their normed input passes through to proj
    hands_on: tuple[str, ...]  # prompt kinds whose outputs the next block reads
    cls_row_for_next: bool  # the next block builds an AP from this block's CLS logit row
    last: bool

    @property
    def inserted(self) -> tuple[str, ...]:
        return tuple(k for k in self.prompts if k not in self.carried)


def head_rows(vit: nn.Module) -> int | None:
    """The leading image rows timm's head reads after the last block: the prefix tokens for token pooling (the class
    token, and the distillation token of DeiT's distilled head), None (every row) for other pooling."""
    if getattr(vit, "global_pool", None) == "token" and getattr(vit, "attn_pool", None) is None \
            and getattr(vit, "cls_token", None) is not None:
        return vit.num_prefix_tokens
    return None


@dataclass(frozen=True)
class BlockPlan:
    """The per-block schedule of a SHIP model (`steps[i]` for block i)."""

    levels: tuple[int, ...]
    ap_starts: tuple[int, ...]
    steps: tuple[BlockStep, ...]

    @classmethod
    def build(cls, depth: int, levels: Sequence[int], ap_starts: Sequence[int], switches) -> "BlockPlan":
        """SIP (one per level) inserted at its level start and carried to the level's end; an AP likewise from
        its level start; the SSP inserted at every block; prompts as queries with joint attention, with
        `prompt_queries="all"`, and in the last block. `switches`: the `sip`, `ssp`, `da` and `prompt_queries`
        of a `ShipConfig` (or any object with them)."""
        sip, ssp, da, prompt_queries = switches.sip, switches.ssp, switches.da, switches.prompt_queries
        level_of = {s: c for c, s in enumerate(levels)}
        ap_row_of = {s: j for j, s in enumerate(ap_starts)}
        kinds, has_ap = [], False
        for i in range(depth):
            has_ap = i in ap_row_of if i in level_of else has_ap  # an AP lives from its level start to the level end
            kinds.append(tuple(k for k, on in zip(PROMPT_KINDS, (sip and bool(levels), has_ap, ssp)) if on))
        carried = [() if i in level_of else tuple(k for k in kinds[i] if k != "ssp") for i in range(depth)] + [()]
        steps = [BlockStep(index=i, prompts=kinds[i], carried=carried[i],
                           sip_level=level_of[i] if sip and i in level_of else None, ap_row=ap_row_of.get(i),
                           attention="decoupled" if da else "joint",
                           prompts_query=not da or prompt_queries == "all" or i == depth - 1,
                           hands_on=carried[i + 1], cls_row_for_next=i + 1 in ap_row_of, last=i == depth - 1)
                 for i in range(depth)]
        return cls(tuple(levels), tuple(ap_starts), tuple(steps))

    def rows_read(self, step: BlockStep, head_rows: int | None, pml: bool, skip: tuple[str, ...] = ()) -> RowsRead:
        """What the rest of the forward reads of `step`'s outputs. `head_rows`: the caller reads only the leading
        image rows of the last block (a token-pooled head; None: every row); `pml`: PML is computed (training);
        `skip`: prompt kinds whose outputs the caller has already (the inference cache)."""
        if not step.last:
            return RowsRead(None, tuple(k for k in step.hands_on if k not in skip), step.cls_row_for_next, False)
        return RowsRead(head_rows, step.prompts if pml else (), pml, pml)

    @staticmethod
    def every_row(step: BlockStep, pml: bool) -> RowsRead:
        """Every image row and every prompt output of `step` (the readable path)."""
        targets = step.last and pml
        return RowsRead(None, step.prompts, step.cls_row_for_next or targets, targets)
