#!/usr/bin/env bash
# Regenerate requirements.lock (runtime dependencies) and requirements-test.lock (runtime + the
# `test` extra) from pyproject.toml with pip-compile, for Python 3.11. Every pin carries the
# sha256 of every file of that release (wheels for each platform and the sdist), so the locks
# install on x86_64 and aarch64 alike. The test lock is constrained by the runtime lock: both
# pin the same versions of what they share.
#
# Pins already in the locks are kept; arguments go to both pip-compile runs:
#   scripts/lock.sh                            after adding or changing a dependency
#   scripts/lock.sh --upgrade-package litellm  move one package to the newest allowed release
#   scripts/lock.sh --upgrade                  move everything to the newest allowed releases
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3.11}
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "lock.sh: the locks are for Python 3.11; set PYTHON to a python3.11" >&2
  exit 1
fi

# Resolve against the package index alone: a local wheel folder, extra index or constraint from
# pip's configuration would put hashes into the locks that no other machine can match.
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_NO_INDEX
export PIP_DISABLE_PIP_VERSION_CHECK=1

tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
"$python" -m venv "$tools"
"$tools/bin/python" -m pip install --quiet pip==26.3 pip-tools==7.6.2

compile() {
  CUSTOM_COMPILE_COMMAND=scripts/lock.sh "$tools/bin/pip-compile" --quiet --generate-hashes \
    --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links "$@"
}
compile -o requirements.lock "$@" pyproject.toml
compile --extra test -c requirements.lock -o requirements-test.lock "$@" pyproject.toml
echo "lock.sh: wrote requirements.lock and requirements-test.lock"
