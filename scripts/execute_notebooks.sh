#!/usr/bin/env bash
# Re-execute notebooks in place with their default parameters, so the committed outputs match the code and
# the committed results/, and write them in the exact form JupyterLab saves (shiplib.report.notebook_format).
# Usage: scripts/execute_notebooks.sh [notebooks/x.ipynb ...]  (default: all of them)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
if [ $# -eq 0 ]; then
    set -- notebooks/*.ipynb
fi
for nb in "$@"; do
    start=$(date +%s)
    echo "== $nb"
    "$PYTHON" -c "import sys; from shiplib.report.notebook_format import execute_notebook; execute_notebook(sys.argv[1])" "$nb"
    echo "   done in $(( $(date +%s) - start )) s"
done
