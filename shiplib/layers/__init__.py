"""Attention variants run over a timm ViT block's own weights (no forked blocks)."""
from .block_parts import check_block
from .decoupled_attention import decoupled_attention, decoupled_block_forward
from .joint_attention import joint_block_forward

__all__ = ["check_block", "decoupled_attention", "decoupled_block_forward", "joint_block_forward"]
