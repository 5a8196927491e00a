#!/usr/bin/env bash
# Set up, make sure the demo project exists, and open the dashboard. Extra arguments go to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m core demo-project --if-missing
port=8501
prev=""
for a in "$@"; do
  case "$a" in --server.port=*) port=${a#*=} ;; esac
  [ "$prev" = "--server.port" ] && port=$a
  prev=$a
done
echo "Reactomo: open http://localhost:${port} in your browser (Ctrl+C stops the server)."
exec .venv/bin/streamlit run app.py "$@"
