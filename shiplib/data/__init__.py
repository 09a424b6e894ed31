"""Task registry (VTAB-1k and mini-VTAB), the shared image-folder loader and preprocessing presets.

`python -m shiplib.data --help` prepares, lists and checks task folders.
"""
from .folder import (SPLITS, VtabFolderDataset, build_dataset, check_task_dir, find_task_dir, read_split_list,
                     resolve_task_dir)
from .tasks import TaskSpec, get_task, list_tasks, register_task
from .transforms import PRESETS, build_transform, preset_record

__all__ = ["PRESETS", "SPLITS", "TaskSpec", "VtabFolderDataset", "build_dataset", "build_transform",
           "check_task_dir", "find_task_dir", "get_task", "list_tasks", "preset_record", "read_split_list",
           "register_task", "resolve_task_dir"]
