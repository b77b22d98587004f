#!/usr/bin/env bash
# Creates (or reuses) the virtualenv of the API fuzzing run (scripts/schemathesis.sh): schemathesis
# and its dependencies, pinned in python/requirements-schemathesis.txt; prints its python's path.
#
#   py="$(bash .ci/schemathesis-setup.sh)"
#
# Location: ${RLTRACE_SCHEMATHESIS_VENV:-$HOME/.cache/rltrace-schemathesis-venv}. Interpreter:
# ${PYTHON:-python3}. Idempotent (the requirements' sha256 is stamped in the venv).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$root/.ci/cached-venv.sh" schemathesis-setup "$root/python/requirements-schemathesis.txt" "${RLTRACE_SCHEMATHESIS_VENV:-$HOME/.cache/rltrace-schemathesis-venv}" .rltrace-schemathesis-requirements.sha256 \
  '"$py" -m pip check && "$py" -c "import schemathesis"'
