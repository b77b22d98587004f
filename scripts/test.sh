#!/usr/bin/env bash
# The test command: sets up the Python OpenTelemetry SDK used by the exporter tests (a virtualenv
# under ~/.cache), then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RLTRACE_PYTHON:-}" ] && [ -f .ci/python-setup.sh ]; then
  RLTRACE_PYTHON="$(bash .ci/python-setup.sh)"
  export RLTRACE_PYTHON
fi
cargo test --workspace "$@"
