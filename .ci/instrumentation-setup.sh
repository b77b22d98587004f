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
req="$root/tests/instrumentation/requirements.txt"
venv="${RLTRACE_INSTR_VENV:-$HOME/.cache/rltrace-instr-venv}"
python="${PYTHON:-python3}"
py="$venv/bin/python"
stamp="$venv/.rltrace-instr-requirements.sha256"

[ -f "$req" ] || { echo "instrumentation-setup: $req not found" >&2; exit 1; }
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [ -x "$py" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c 'import sys' 2>/dev/null; then
  echo "$py"
  exit 0
fi

if ! [ -x "$py" ] || ! "$py" -c 'import sys' 2>/dev/null; then
  echo "instrumentation-setup: creating virtualenv $venv with $("$python" --version 2>&1)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >&2
fi
rm -f "$stamp"
echo "instrumentation-setup: installing $req" >&2
"$py" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
"$py" -m pip check >&2
"$py" -c '
import openai, anthropic
import opentelemetry.instrumentation.openai, opentelemetry.instrumentation.anthropic
import openinference.instrumentation.openai, openinference.instrumentation.anthropic
import opentelemetry.instrumentation.openai_v2
import opentelemetry.processor.baggage
import opentelemetry.exporter.otlp.proto.http.trace_exporter
import pytest
' >&2
echo "$want" > "$stamp"
echo "$py"
