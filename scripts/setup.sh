#!/usr/bin/env bash
# Create .venv and install the project: CPU torch 2.13.0 first (a wheel on local disk; an unpinned
# torch would pull a multi-GB CUDA build), then the package with its dev extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.hwnas-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  pipq() { "$VENV/bin/pip" --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
  echo "setup: installing CPU torch 2.13.0"
  pipq install "torch==2.13.0"
  echo "setup: installing the project and its dependencies"
  pipq install -e ".[dev]"
  "$VENV/bin/python" -c "import torch, onnxruntime, optuna, ray, pandas, matplotlib" \
    || { echo "setup: installation failed (see the messages above)" >&2; exit 1; }
  touch "$stamp"
fi
