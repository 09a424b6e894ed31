"""shiplib: the reproducible companion to SHIP (Semantic Hierarchical Prompt Tuning) and its baselines."""
__version__ = "0.1.0"

from .backbones import create_backbone
from .errors import ConfigError, DataError, ResourceError, ShiplibError, StateError
from .methods import build_model, list_methods, method_options
from .params import count_parameters

__all__ = ["__version__", "ConfigError", "DataError", "ResourceError", "ShiplibError", "StateError", "build_model",
           "count_parameters", "create_backbone", "list_methods", "method_options"]
