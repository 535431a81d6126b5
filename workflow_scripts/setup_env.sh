#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with every dependency resolved in one pip call.
# Idempotent: a stamp of pyproject.toml's hash skips the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.cads-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch and torchvision are pinned as a pair in pyproject.toml (see README: Installation).
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
