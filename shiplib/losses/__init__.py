"""Auxiliary training losses of the methods (returned raw; `model.loss_weights` holds their weights)."""
from .pml import gather_tokens, prompt_matching_loss, top_attended_tokens

__all__ = ["gather_tokens", "prompt_matching_loss", "top_attended_tokens"]
