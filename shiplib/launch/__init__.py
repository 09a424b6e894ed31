"""Launching sweeps: inline, on N local processes, or as a SLURM job array; per-cell locks and grid status.

    cells      the grid's cells (each holds its ResolvedRun) and the `CellState` of each (a `RunState`)
    locks      one lock file per cell (O_CREAT|O_EXCL, owner job/host/pid, stale owners taken over), failed.json
    job        `run_locked` / `run_cell` / `CellJob`: lock, train (resuming), release; submitit-checkpointable
    launchers  one loop (`launch`) over an executor: inline / local (submitit LocalExecutor) / slurm (job array)
    status     `grid_status(...)` -> pandas DataFrame, and its text form for `python -m shiplib status`
    slurm      sbatch/sinfo/squeue helpers
"""
from .cells import Cell, CellState, GridSettings, cell_state, make_cells
from .job import CellJob, run_cell, run_locked
from .launchers import LaunchError, LaunchOptions, SlurmOptions, launch
from .slurm import SlurmError
from .status import format_status, grid_status, status_frame

__all__ = ["Cell", "CellJob", "CellState", "GridSettings", "LaunchError", "LaunchOptions", "SlurmError",
           "SlurmOptions", "cell_state", "format_status", "grid_status", "launch", "make_cells", "run_cell",
           "run_locked", "status_frame"]
