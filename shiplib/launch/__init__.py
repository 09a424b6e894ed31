"""Launching sweeps: inline, on N local processes, or as a SLURM job array; per-cell locks and grid status.

    cells      the grid's cells and the state of each (done/running/queued/failed/pending/stale/conflict/corrupt)
    locks      one lock file per cell (O_CREAT|O_EXCL, owner job/host/pid, stale owners taken over), failed.json
    job        `run_cell` / `CellJob`: lock, train (resuming), release; submitit-checkpointable (requeue on preemption)
    launchers  inline / local (submitit LocalExecutor) / slurm (submitit job array), dry run, wait
    status     `grid_status(...)` -> pandas DataFrame, and its text form for `python -m shiplib status`
    slurm      sbatch/sinfo/squeue helpers
"""
from .cells import Cell, cell_state, make_cells
from .job import CellJob, run_cell
from .launchers import LaunchError
from .slurm import SlurmError
from .status import format_status, grid_status, status_frame

__all__ = ["Cell", "CellJob", "LaunchError", "SlurmError", "cell_state", "format_status", "grid_status",
           "make_cells", "run_cell", "status_frame"]
