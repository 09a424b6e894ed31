"""Fine-tuning methods: one small module each, one registry."""
from .base import MethodConfig, PeftModel
from .registry import build_model, get_method, list_methods, method_options, register_method

__all__ = ["MethodConfig", "PeftModel", "build_model", "get_method", "list_methods", "method_options",
           "register_method"]
