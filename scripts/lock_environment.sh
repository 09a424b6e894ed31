#!/usr/bin/env bash
# Write constraints.txt: every package a fresh install of requirements.txt brings, direct and transitive, at the
# version it brought (pip freeze of a throwaway venv). requirements.txt applies it with "-c constraints.txt", so
# scripts/setup.sh (and CI) install exactly the environment the tests ran in, whatever PyPI released since.
# Run after changing requirements.txt, then run the tests. Usage: scripts/lock_environment.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-python3}}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
grep -v '^-c ' requirements.txt > "$tmp/requirements.txt"  # resolve afresh, without the old lock
"$tmp/venv/bin/pip" install --quiet --disable-pip-version-check -r "$tmp/requirements.txt"
{
    echo "# The locked environment: pip freeze of a fresh install of requirements.txt (scripts/lock_environment.sh)."
    echo "# Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version(), platform.machine())')."
    "$tmp/venv/bin/pip" freeze --disable-pip-version-check --exclude-editable | LC_ALL=C sort -f
} > constraints.txt.tmp
mv constraints.txt.tmp constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
