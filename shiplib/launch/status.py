"""The state of every cell of a grid, as a DataFrame (notebooks) or as text (`python -m shiplib status`)."""
from __future__ import annotations

from collections import Counter

from ..engine.results import RunState, run_name
from .cells import Cell, cell_state, make_cells


def status_frame(cells: list[Cell]):
    import pandas as pd

    rows = []
    for cell in cells:
        st = cell_state(cell)
        rows.append(dict(**cell.key(), state=st.state.value, job=st.job, acc_last=st.acc_last,
                         acc_max_over_epochs=st.acc_max_over_epochs, detail=st.detail,
                         result=str(cell.result), work_dir=str(cell.work_dir)))
    return pd.DataFrame(rows, columns=["task", "method", "tag", "seed", "protocol", "state", "job", "acc_last",
                                       "acc_max_over_epochs", "detail", "result", "work_dir"])


def grid_status(tasks, methods, seeds=(1,), **settings):
    """One row per cell of tasks × methods × seeds: state (done/running/queued/failed/pending/stale/conflict/
    corrupt), job (SLURM job id or pid@host), accuracies of a finished result, and details (e.g. a failure's last
    lines).
    `settings` as `make_cells` (epochs, overrides, tag, protocol, results, runs, …)."""
    return status_frame(make_cells(tasks, methods, seeds, **settings))


def summary_line(states) -> str:
    states = list(states)
    counts = Counter(states)
    parts = [f"{counts[s.value]} {s.value}" for s in RunState if counts.get(s.value)]
    return f"{len(states)} cells: " + (", ".join(parts) or "none")


def format_status(frame) -> str:
    lines = []
    for i, row in enumerate(frame.itertuples(index=False), 1):
        name = f"{row.task} {run_name(row.method, row.tag or None)} seed {row.seed}"
        state = RunState(row.state)
        text = f"[{i}/{len(frame)}] {name}: {state}"
        if state is RunState.DONE and row.acc_last is not None:
            text += f" (acc_last {row.acc_last:.2f}%, acc_max_over_epochs {row.acc_max_over_epochs:.2f}%)"
        elif state.elsewhere:
            text += f" ({row.detail})"
        elif row.detail and state is not RunState.MISSING:
            first, *rest = str(row.detail).splitlines()
            text += f": {first}" + "".join(f"\n      {line}" for line in rest)
        lines.append(text)
    lines.append(summary_line(list(frame["state"])))
    return "\n".join(lines)
