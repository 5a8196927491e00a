#!/usr/bin/env bash
# Create .venv with Python 3.11 and install the pinned requirements (idempotent: skips pip when nothing changed).
# Usage: bash scripts/setup.sh [dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then PY=$cand; break; fi
  done
fi
if [ -z "$PY" ]; then echo "Reactomo needs Python 3.11 (python3.11 not found); set PYTHON=/path/to/python3.11." >&2; exit 1; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
req=requirements.txt; [ "${1:-}" = dev ] && req=requirements-dev.txt
stamp=.reactomo-setup-stamp
want="$req $(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >> "$stamp"
fi
