#!/usr/bin/env bash
# Creates (or reuses) a virtualenv with the Python OpenTelemetry SDK and the dataset readers
# (pyarrow, datasets) pinned in crates/rltrace/tests/python/requirements.txt and prints the path
# of its python on stdout.
#
#   RLTRACE_PYTHON="$(.ci/python-setup.sh)" && export RLTRACE_PYTHON
#
# Location: ${RLTRACE_VENV:-$HOME/.cache/rltrace-venv}. Interpreter: ${PYTHON:-python3}.
# Idempotent: the sha256 of requirements.txt is stored in the venv after a successful install;
# when it matches (and the venv's python runs) nothing is installed again.
# Everything but the final path goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$root/.ci/cached-venv.sh" python-setup "$root/crates/rltrace/tests/python/requirements.txt" "${RLTRACE_VENV:-$HOME/.cache/rltrace-venv}" .rltrace-requirements.sha256 \
  '"$py" -c "import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http.trace_exporter, opentelemetry.exporter.otlp.proto.grpc.trace_exporter, pyarrow.parquet, datasets"'
