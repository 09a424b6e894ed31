"""Notebook parameters, checked: a papermill `-p name value` whose name the notebook does not declare is an error
that names the valid parameters (papermill itself only logs a warning and runs with the defaults).

papermill runs a notebook's `parameters` cell, then the `injected-parameters` cell it adds (a `# Parameters`
line, then one assignment per `-p`), then the rest. `check_parameters()`, called first in the cell after the
parameters, reads those two cells from the kernel's input history (IPython's `In`) and compares the names they
assign. Where no injected cell ran just before it (JupyterLab, nbval, papermill without `-p`) it does nothing.
"""
from __future__ import annotations

import ast
import difflib

from ..errors import ConfigError

#: The first line of the cell papermill injects (papermill's PythonTranslator writes `# Parameters`).
INJECTED_HEADER = "# Parameters"
#: The parameter through which a notebook takes any other run setting.
OVERRIDES = "overrides"
QUOTES = "\"'"


class UnknownParameterError(ConfigError):
    """A papermill parameter that the notebook's parameters cell does not declare."""


def assigned_names(source: str) -> dict[str, str]:
    """{name: value's source} of the top-level `name = value` lines of a cell (empty if it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    names = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) and node.value is not None else []
        for target in targets:
            if isinstance(target, ast.Name):
                names[target.id] = ast.get_source_segment(source, node.value) or ""
    return names


def unknown_parameters(declared: dict[str, str], injected: dict[str, str]) -> str | None:
    """The one-line error for the injected names that are not declared, or None when every name is declared."""
    unknown = [name for name in injected if name not in declared]
    if not unknown:
        return None
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(declared), n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    text = (f"unknown notebook parameter{'s' if len(unknown) > 1 else ''} {', '.join(parts)}; "
            f"this notebook's parameters: {', '.join(declared)}.")
    settings = [name for name in unknown if not difflib.get_close_matches(name, list(declared), n=1)]
    if OVERRIDES in declared and settings:
        pairs = ", ".join(f"{name}={injected[name].strip(QUOTES)}" for name in settings)
        text += f" Other run settings go through {OVERRIDES}: -p {OVERRIDES} '{pairs}'."
    return text


def check_parameters(history: list[str] | None = None) -> None:
    """Raise `UnknownParameterError` when papermill injected a parameter that the parameters cell does not declare.

    `history`: the cells run so far, the current one last (default: the kernel's `In`). The two before the current
    one must be the parameters cell and papermill's injected cell; otherwise this is a no-op."""
    if history is None:
        from IPython import get_ipython  # deferred: only a kernel has an input history

        shell = get_ipython()
        history = list(shell.user_ns.get("In", [])) if shell is not None else []
    if len(history) < 3 or history[-2].strip().splitlines()[:1] != [INJECTED_HEADER]:
        return
    text = unknown_parameters(assigned_names(history[-3]), assigned_names(history[-2]))
    if text is not None:
        raise UnknownParameterError(text)
