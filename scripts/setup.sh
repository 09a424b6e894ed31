#!/usr/bin/env bash
# Create .venv from the repo's own files (requirements.txt + this package), idempotently.
# Optional system data: the Debian package dataset-fashion-mnist (mini backbone pretraining; tests skip without it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
pip install --quiet --disable-pip-version-check -r requirements.txt
pip install --quiet --disable-pip-version-check --no-deps -e .
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) \
      || echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will skip"
  else
    echo "note: Fashion-MNIST not found; 'sudo apt-get install dataset-fashion-mnist' enables the pretraining notebook's checks"
  fi
fi
python -c "import shiplib, torch, timm; print(f'shiplib {shiplib.__version__} ready (torch {torch.__version__}, timm {timm.__version__})')"
