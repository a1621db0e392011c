#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install zapreply into it; extras as arguments, e.g. "test".
# Dependencies come from the hash-checked lock (requirements-test.lock with the test extra,
# requirements.lock without), then the project itself without dependencies. A second run with
# the same lock and pyproject.toml does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
extras=${1:-}
case "$extras" in
  "") lock=requirements.lock ;;
  test) lock=requirements-test.lock ;;
  *) echo "bootstrap.sh: no lock for extras '$extras' (known: test)" >&2; exit 2 ;;
esac
if [ "$extras" = test ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  # The console's browser tests drive Debian's headless Chromium (tests/console_app).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null
  else
    echo "bootstrap.sh: install chromium and chromium-driver for the browser tests" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.zapreply-lock
installed="$lock $(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$installed" ]; then
  exit 0
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install --quiet --require-hashes -r "$lock"
"${pip[@]}" install --quiet --no-deps -e .
if ! broken=$("${pip[@]}" check); then
  echo "$broken" >&2
  echo "bootstrap.sh: the lock does not meet pyproject.toml; run scripts/lock.sh" >&2
  exit 1
fi
echo "$installed" >"$stamp"
