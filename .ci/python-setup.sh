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
req="$root/crates/rltrace/tests/python/requirements.txt"
venv="${RLTRACE_VENV:-$HOME/.cache/rltrace-venv}"
python="${PYTHON:-python3}"
py="$venv/bin/python"
stamp="$venv/.rltrace-requirements.sha256"

[ -f "$req" ] || { echo "python-setup: $req not found" >&2; exit 1; }
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [ -x "$py" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c 'import sys' 2>/dev/null; then
  echo "$py"
  exit 0
fi

if ! [ -x "$py" ] || ! "$py" -c 'import sys' 2>/dev/null; then
  echo "python-setup: creating virtualenv $venv with $("$python" --version 2>&1)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >&2
fi
rm -f "$stamp"
echo "python-setup: installing $req" >&2
"$py" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
"$py" -c 'import opentelemetry.sdk.trace, opentelemetry.exporter.otlp.proto.http.trace_exporter, opentelemetry.exporter.otlp.proto.grpc.trace_exporter, pyarrow.parquet, datasets' >&2
echo "$want" > "$stamp"
echo "$py"
