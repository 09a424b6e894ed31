"""Full fine-tuning: every backbone parameter trains."""
from __future__ import annotations

from dataclasses import dataclass

from .base import MethodConfig, PeftModel
from .registry import register_method


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    pass


@register_method("full")
class FullFineTune(PeftModel):
    config_class = FullConfig

    def freeze_backbone(self) -> None:
        for p in self.vit.parameters():
            p.requires_grad_(True)
