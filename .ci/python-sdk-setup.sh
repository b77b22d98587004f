#!/usr/bin/env bash
# Creates (or reuses) the virtualenv of the Python SDK's checks, with python/requirements-test.txt,
# installs the package from ./python into it (a regular install, as a user would), and prints the
# path of its python on stdout.
#
#   py="$(bash .ci/python-sdk-setup.sh)"
#
# Location: ${RLTRACE_SDK_VENV:-$HOME/.cache/rltrace-pyenv}. Interpreter: ${PYTHON:-python3}.
# The dependencies are installed again only when the sha256 of requirements-test.txt and
# pyproject.toml changes; the package itself is reinstalled every time (a few seconds, no network).
# Everything but the final path goes to stderr.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
req="$root/python/requirements-test.txt"
venv="${RLTRACE_SDK_VENV:-$HOME/.cache/rltrace-pyenv}"
python="${PYTHON:-python3}"
py="$venv/bin/python"
stamp="$venv/.rltrace-sdk-requirements.sha256"

want="$(cat "$req" "$root/python/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if ! [ -x "$py" ] || ! "$py" -c 'import sys' 2>/dev/null; then
  echo "python-sdk-setup: creating virtualenv $venv with $("$python" --version 2>&1)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >&2
fi
if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -f "$stamp"
  echo "python-sdk-setup: installing $req" >&2
  "$py" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
  echo "$want" > "$stamp"
fi
"$py" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --force-reinstall "$root/python" >&2
"$py" -c 'import rltrace, rltrace.asgi, rltrace.fastapi, rltrace.client' >&2
echo "$py"
