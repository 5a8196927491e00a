#!/usr/bin/env bash
# Set up (with test tools) and run the whole test suite, browser tests included (they need Debian's chromium:
# `apt-get install chromium`; never `playwright install`). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev || exit 1
if [ ! -x "${REACTOMO_CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "Browser tests need Chromium at /usr/bin/chromium: run 'apt-get install chromium' (or set REACTOMO_CHROMIUM)." >&2
  exit 1
fi
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1 '; then
  echo "3D tests need Mesa's EGL (VTK renders without a display): run 'apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri'." >&2
  exit 1
fi
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: that is a failure, not a pass." >&2; exit 1; fi
exit "$rc"
