"""Task registry (VTAB-1k and mini-VTAB), the shared image-folder loader and preprocessing presets.

Importing this package registers every task: the registry (`tasks`) imports no table, the tables (`vtab1k`,
`mini_vtab`) import the registry. `python -m shiplib.data --help` prepares, lists and checks task folders.
"""
# Importing a task table registers its tasks; VTAB-1k first, since listings follow registration order.
from . import vtab1k, mini_vtab  # noqa: F401
from .folder import (VtabFolderDataset, build_dataset, check_task_dir, find_task_dir, locate_task, read_split_list,
                     resolve_task_dir)
from .splits import SPLITS
from .tasks import TaskSpec, get_task, list_tasks, register_task
from .transforms import PRESETS, build_transform, preset_record

__all__ = ["PRESETS", "SPLITS", "TaskSpec", "VtabFolderDataset", "build_dataset", "build_transform",
           "check_task_dir", "find_task_dir", "get_task", "list_tasks", "locate_task", "preset_record",
           "read_split_list", "register_task", "resolve_task_dir"]
