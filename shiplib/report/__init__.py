"""Reporting: result tables, training histories, ablations, affinity data, feature maps (data first).

Figures live in `shiplib.report.figures` (imported separately: it loads matplotlib).
"""
from ..launch.ablations import (ABLATION_VARIANTS, FACTOR_TASKS, FACTORS, REFERENCE, AblationVariant, factor_tasks,
                                get_variant, select_variants, variants_frame)
from .ablations import ablation_paired, ablation_paired_frame, ablation_results, ablation_summary, ablation_table
from .affinity import (adjacent_frame, adjacent_stats_frame, adjacent_stats_table, affinity_range, levels_frame,
                       load_affinity_dir, task_affinities, task_backbone)
from .feature_maps import block_patch_tokens, layer_feature_maps, sample_images
from .histories import final_losses, history_frame
from .parameters import UnknownParameterError, check_parameters
from .paired import Bootstrap, PairedComparison, matched_pairs, paired_comparison, paired_table
from .notebook import cli_command, describe_config, pick_tasks, setup_notebook, suggest_thresholds
from .tuning import lr_grid, selected_lr
from .tables import (METHODS, METRICS, benchmark_summary, committed_comparison, comparable_published, group_means,
                     markdown_table, mini_table, overview_table, published_table, result_summary, run_label,
                     seed_summary, seed_table, task_comparison, task_order, vtab1k_table, write_tables)

__all__ = [
    "ABLATION_VARIANTS", "FACTOR_TASKS", "FACTORS", "REFERENCE", "AblationVariant", "ablation_paired",
    "ablation_paired_frame", "ablation_results", "ablation_summary", "ablation_table", "factor_tasks",
    "get_variant", "select_variants", "variants_frame",
    "UnknownParameterError", "check_parameters",
    "Bootstrap", "PairedComparison", "matched_pairs", "paired_comparison", "paired_table",
    "adjacent_frame", "adjacent_stats_frame", "adjacent_stats_table", "affinity_range", "levels_frame",
    "load_affinity_dir", "task_affinities", "task_backbone",
    "block_patch_tokens", "layer_feature_maps", "sample_images",
    "final_losses", "history_frame",
    "cli_command", "describe_config", "pick_tasks", "setup_notebook", "suggest_thresholds",
    "lr_grid", "selected_lr",
    "METHODS", "METRICS", "benchmark_summary", "committed_comparison", "comparable_published", "group_means",
    "markdown_table", "mini_table", "overview_table", "published_table",
    "result_summary", "run_label", "seed_summary", "seed_table", "task_comparison", "task_order", "vtab1k_table",
    "write_tables",
]
