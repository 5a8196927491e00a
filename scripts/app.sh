#!/usr/bin/env bash
# Set up, make sure the demo project exists, and open the dashboard. Extra arguments go to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m core demo-project --if-missing
exec .venv/bin/streamlit run app.py "$@"
