#!/usr/bin/env bash
# First run: install, migrate and run the receiver and a worker on the embedded defaults
# (SQLite database and broker under ./var). Arguments go to `zapreply up` (e.g. --port 8000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/zapreply up "$@"
