#!/usr/bin/env bash
# Create .venv from the repo's own files (requirements.txt + this package), idempotently, register its
# Jupyter kernel "shiplib" (pointing at this clone's .venv) and create runs/. Re-running it when nothing changed takes seconds: pip runs only when
# requirements.txt, constraints.txt or pyproject.toml differ from what .venv was built from (a stamp of
# their hash).
# Optional system parts (Debian/Ubuntu, as root): dataset-fashion-mnist (the mini backbone's pretraining data;
# its checks skip without it) and, with SHIPLIB_BROWSER=1, chromium + chromium-driver for the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.shiplib-setup-stamp
WANT=$(cat requirements.txt constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -e .
  echo "$WANT" > "$STAMP"
else
  echo "setup: .venv matches requirements.txt, constraints.txt and pyproject.toml; nothing to install"
fi
# the kernel "shiplib" runs this clone's .venv (installed into the venv, which its Jupyter prefers, and for the user)
.venv/bin/python scripts/register_kernel.py
mkdir -p runs  # checkpoints, caches and papermill's output notebooks (git-ignored)
# JupyterLab's news and update check off for the venv's JupyterLab (offline; the toast would cover figures)
install -D -m 644 scripts/jupyterlab_overrides.json .venv/share/jupyter/lab/settings/overrides.d/shiplib.json
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }) \
      || echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will skip"
  else
    echo "note: Fashion-MNIST not found; 'sudo apt-get install dataset-fashion-mnist' enables the pretraining notebook's checks"
  fi
fi
if [ "${SHIPLIB_BROWSER:-0}" = 1 ]; then
  bash scripts/install_browser.sh
fi
.venv/bin/python -c "import shiplib, torch, timm; print(f'shiplib {shiplib.__version__} ready (torch {torch.__version__}, timm {timm.__version__})')"
