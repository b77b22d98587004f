#!/usr/bin/env bash
# The test command: sets up the Python OpenTelemetry SDK and dataset readers used by the tests (a
# virtualenv under ~/.cache) and Agent Lightning (its own cached virtualenv), runs every test of
# the workspace, and ends with one line of totals.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RLTRACE_PYTHON:-}" ] && [ -f .ci/python-setup.sh ]; then
  RLTRACE_PYTHON="$(bash .ci/python-setup.sh)"
  export RLTRACE_PYTHON
fi
if [ -z "${RLTRACE_AGL_PYTHON:-}" ] && [ -f .ci/agentlightning-setup.sh ]; then
  RLTRACE_AGL_PYTHON="$(bash .ci/agentlightning-setup.sh)"
  export RLTRACE_AGL_PYTHON
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
echo
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
