"""The one registry of fine-tuning methods and `build_model`.

It imports no method module: `shiplib.methods` (the package) imports them, and each registers itself here.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from ..backbones import DEFAULT_BACKBONE, create_backbone
from .base import PeftModel

_METHODS: dict[str, type[PeftModel]] = {}


def register_method(name: str) -> Callable[[type[PeftModel]], type[PeftModel]]:
    def deco(cls: type[PeftModel]) -> type[PeftModel]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered by {_METHODS[name].__name__}")
        cls.method = name
        _METHODS[name] = cls
        return cls

    return deco


def list_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str) -> type[PeftModel]:
    if name not in _METHODS:
        close = difflib.get_close_matches(str(name), list(_METHODS), n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown method {name!r}.{hint} Valid methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def build_model(
    method: str,
    backbone: Any = DEFAULT_BACKBONE,
    num_classes: int = 1000,
    pretrained: bool = True,
    data: Any = None,
    **options,
) -> nn.Module:
    """Build `method` on a timm ViT backbone.

    backbone: timm name (default: the paper's in21k ViT-B/16), "mini", a .npz/.safetensors/.pth path, or a module
              (e.g. `create_backbone(path, backbone_arch=...)` for a weights file that does not say its architecture).
    data: training images (a DataLoader yielding (x, y) or x, or an image tensor) for the method's data step
          (`PeftModel.data_inputs`: SPT's prompt init, SHIP's affinity/prototypes when not given as options).
    options: the method's config fields (`shiplib.method_options(method)` lists them).
    """
    cls = get_method(method)
    config = cls.config_class.from_options(method, options)
    if data is not None and not takes_data(method):
        raise TypeError(f"method {method!r} does not use `data`; drop the argument")
    vit = create_backbone(backbone, pretrained=pretrained, drop_path_rate=config.drop_path_rate)
    if data is not None and cls.data_key(config) is not None:
        with torch.random.fork_rng(devices=[]):  # the same init as when the arrays are given as options
            config = cls.config_class.from_options(method, {**options, **cls.data_inputs(vit, data, config)})
    return cls(vit, num_classes, config)


def takes_data(method: str) -> bool:
    """Whether `method` has a data step (`PeftModel.data_inputs`), i.e. may derive options from training images."""
    return get_method(method).data_inputs.__func__ is not PeftModel.data_inputs.__func__


def method_options(method: str) -> dict[str, Any]:
    """The options of a method with their defaults."""
    cls = get_method(method)
    return cls.config_class().to_dict()


def check_option_names(method: str, names: Iterable[str], error: type[Exception] = TypeError) -> None:
    """Fail (with `error`) on names that are not options of `method`, listing the valid ones."""
    get_method(method).config_class.check_option_names(method, names, error)
