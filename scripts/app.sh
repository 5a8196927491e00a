#!/usr/bin/env bash
# Set up, make sure the demo project exists, and open the dashboard. Extra arguments go to `streamlit run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m core demo-project --if-missing
# The worker runs the dashboard's jobs (training, segmentation, analysis) outside the web server, in its own
# session: stopping the server leaves a running job going; the worker exits after 30 idle minutes, and a page
# starts one again when a job is queued. A worker already running for this workspace makes this one exit at once.
setsid .venv/bin/python -m core worker --idle-exit 1800 >> "${REACTOMO_WORKSPACE:-workspace}/worker.log" 2>&1 < /dev/null &
port=8501
prev=""
for a in "$@"; do
  case "$a" in --server.port=*) port=${a#*=} ;; esac
  [ "$prev" = "--server.port" ] && port=$a
  prev=$a
done
# Only this machine can reach the dashboard unless the administrator sets REACTOMO_ADDRESS (e.g. 0.0.0.0 behind a
# reverse proxy with authentication: see the README's "Serving a team"). There is no login in the dashboard itself.
address=${REACTOMO_ADDRESS:-127.0.0.1}
echo "Reactomo: open http://${address/0.0.0.0/localhost}:${port} in your browser (Ctrl+C stops the server)."
exec .venv/bin/streamlit run app.py --server.address "$address" "$@"
