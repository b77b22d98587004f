#!/usr/bin/env bash
# Creates (or reuses) the virtualenv of the instrumentation-library tests (tests/instrumentation/):
# the openai and anthropic clients, OpenLLMetry, OpenInference and the OpenTelemetry contrib GenAI
# instrumentations, the OpenTelemetry SDK with its OTLP/HTTP exporter, pytest and ruff, all pinned in
# tests/instrumentation/requirements.txt, and prints the path of its python on stdout.
#
#   py="$(bash .ci/instrumentation-setup.sh)"
#
# Location: ${RLTRACE_INSTR_VENV:-$HOME/.cache/rltrace-instr-venv}. Interpreter: ${PYTHON:-python3}.
# Idempotent: the sha256 of requirements.txt is stored in the venv after a successful install
# (and a successful import of every library); when it matches nothing is installed again.
# Everything but the final path goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec bash "$root/.ci/cached-venv.sh" instrumentation-setup "$root/tests/instrumentation/requirements.txt" "${RLTRACE_INSTR_VENV:-$HOME/.cache/rltrace-instr-venv}" .rltrace-instr-requirements.sha256 \
  '"$py" -m pip check && "$py" -c "import openai, anthropic, opentelemetry.instrumentation.openai, opentelemetry.instrumentation.anthropic, openinference.instrumentation.openai, openinference.instrumentation.anthropic, opentelemetry.instrumentation.openai_v2, opentelemetry.processor.baggage, opentelemetry.exporter.otlp.proto.http.trace_exporter, pytest"'
