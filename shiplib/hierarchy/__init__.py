"""Semantic hierarchy of a frozen ViT (docs/ship_computation.md §2-§4): block features, inter-layer affinity,
semantic levels (greedy chain) and the attribute prototype bank."""
from shiplib.hierarchy.affinity import (
    adjacent_affinity,
    adjacent_affinity_stats,
    inter_layer_affinity,
    load_affinity,
    save_affinity,
    validate_affinity,
)
from shiplib.hierarchy.features import extract_block_features, extract_last_layer_features, resolve_vit
from shiplib.hierarchy.levels import (
    check_level_order,
    check_level_starts,
    decision_margins,
    level_of_block,
    level_ranges,
    semantic_levels,
    threshold_sweep,
)
from shiplib.hierarchy.prototypes import (
    attribute_prototypes,
    compute_task_hierarchy,
    load_prototype_bank,
    random_bank_like,
    save_prototype_bank,
)

__all__ = [
    "extract_block_features", "extract_last_layer_features", "resolve_vit",
    "inter_layer_affinity", "adjacent_affinity", "adjacent_affinity_stats", "validate_affinity",
    "save_affinity", "load_affinity",
    "semantic_levels", "level_ranges", "level_of_block", "threshold_sweep", "decision_margins",
    "check_level_order",
    "check_level_starts",
    "attribute_prototypes", "load_prototype_bank", "random_bank_like", "save_prototype_bank", "compute_task_hierarchy",
]
