#!/usr/bin/env bash
# Measure SPEC §7 on this machine and print one table (docs/PERFORMANCE.md).
# Needs the virtualenv (scripts/bootstrap.sh test), PostgreSQL and Redis; arguments go to
# `python -m bench` (--help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m bench "$@"
