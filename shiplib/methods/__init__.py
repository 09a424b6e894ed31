"""Fine-tuning methods: one small module each, one registry.

The registry imports no method; importing this package imports every method module, which registers itself.
"""
from .base import MethodConfig, PeftModel
from .registry import (build_model, check_option_names, get_method, list_methods, method_options, register_method,
                       takes_data)
from . import full, linear, sep, ship, spt, vpt  # noqa: F401  (each registers its method)

__all__ = ["MethodConfig", "PeftModel", "build_model", "check_option_names", "get_method", "list_methods",
           "method_options", "register_method", "takes_data"]
