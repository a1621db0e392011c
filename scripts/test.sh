#!/usr/bin/env bash
# Install with the test extras, lint, and run the whole suite against the PostgreSQL and Redis
# of this machine (TEST_POSTGRES_URL, TEST_REDIS_URL to point elsewhere). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh test
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
