"""Linear probe: the frozen backbone's final-normed CLS feature into a trained linear head."""
from __future__ import annotations

from dataclasses import dataclass

from .base import MethodConfig, PeftModel
from .registry import register_method


@dataclass(frozen=True)
class LinearConfig(MethodConfig):
    drop_path_rate: float = 0.0  # nothing before the head trains, so stochastic depth only adds noise


@register_method("linear")
class LinearProbe(PeftModel):
    config_class = LinearConfig

    def train(self, mode: bool = True):
        super().train(mode)
        self.vit.eval()  # frozen features: deterministic, no drop path
        self.vit.head.train(mode)
        return self
