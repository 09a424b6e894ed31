#!/usr/bin/env bash
# A first check of a GPU: speed of ViT-B/16 and SHIP per precision, 2 epochs of SHIP on a synthetic VTAB-1k-layout
# task at 224 px with peak memory, GPU logits against CPU logits; one table (shiplib/gpu_check.py).
# Without a CUDA device it says so in one line and exits 0. Python: $PYTHON, else the project's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
exec "$python" -m shiplib.gpu_check "$@"
