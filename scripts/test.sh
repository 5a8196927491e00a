#!/usr/bin/env bash
# Set up (with test tools) and run the whole test suite, browser and 3D tests included. They need Debian's chromium
# (never `playwright install`) and Mesa's EGL (VTK draws without a display): installed here when missing, as root or
# with passwordless sudo; otherwise the one command to run is printed. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
need=""
[ -x "${REACTOMO_CHROMIUM:-/usr/bin/chromium}" ] || need="chromium"
ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1 ' || need="$need libegl1 libegl-mesa0 libgl1-mesa-dri"
need="${need# }"
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ]; then
    as_root=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
  else
    as_root="no"
  fi
  if [ "$as_root" = "no" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "The browser and 3D tests need Debian packages this user cannot install; run this once, then this command again:" >&2
    echo "  sudo apt-get install -y $need" >&2
    exit 1
  fi
  echo "Installing Debian packages for the browser and 3D tests: $need" >&2
  # shellcheck disable=SC2086
  if ! { $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null; }; then
    echo "Installing them failed; run this once, then this command again:  sudo apt-get install -y $need" >&2
    exit 1
  fi
fi
bash scripts/setup.sh dev || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: that is a failure, not a pass." >&2; exit 1; fi
exit "$rc"
