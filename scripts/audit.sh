#!/usr/bin/env bash
# Check every version pinned in the locks against the Python Packaging Advisory Database with
# pip-audit (it asks the package index, so it needs the network). Fails on a known
# vulnerability, and also when a package could not be checked (--strict), so an unreachable
# database never reads as a clean audit. Arguments go to pip-audit (e.g. --desc, -f json).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$python" -m venv "$tools"
"$tools/bin/python" -m pip install --quiet pip-audit==2.10.1

"$tools/bin/pip-audit" --strict --require-hashes --disable-pip \
  -r requirements.lock -r requirements-test.lock "$@"
