#!/usr/bin/env bash
# Creates (or reuses) the virtualenv with Agent Lightning pinned in
# crates/rltrace/tests/python/agentlightning-requirements.txt and prints the path of its python
# on stdout:
#
#   RLTRACE_AGL_PYTHON="$(.ci/agentlightning-setup.sh)" && export RLTRACE_AGL_PYTHON
#
# It is large (about 800 MB, a few minutes to install), so it is kept apart from the test
# virtualenv and cached: location ${RLTRACE_AGL_VENV:-$HOME/.cache/rltrace-agl-venv}; the sha256
# of the requirements file is stored after a successful install, and when it matches nothing is
# installed again. Interpreter: ${PYTHON:-python3}. Everything but the final path goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$root/crates/rltrace/tests/python/agentlightning-requirements.txt"
venv="${RLTRACE_AGL_VENV:-$HOME/.cache/rltrace-agl-venv}"
python="${PYTHON:-python3}"
py="$venv/bin/python"
stamp="$venv/.rltrace-requirements.sha256"

[ -f "$req" ] || { echo "agentlightning-setup: $req not found" >&2; exit 1; }
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [ -x "$py" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c 'import sys' 2>/dev/null; then
  echo "$py"
  exit 0
fi

if ! [ -x "$py" ] || ! "$py" -c 'import sys' 2>/dev/null; then
  echo "agentlightning-setup: creating virtualenv $venv with $("$python" --version 2>&1)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >&2
fi
rm -f "$stamp"
echo "agentlightning-setup: installing $req (large; cached afterwards)" >&2
"$py" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
LITELLM_LOCAL_MODEL_COST_MAP=True "$py" -c 'from agentlightning.types import Triplet; import pyarrow.parquet' >&2
echo "$want" > "$stamp"
echo "$py"
