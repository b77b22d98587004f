#!/usr/bin/env bash
# The shared part of the .ci/*-setup.sh scripts: create (or reuse) a cached virtualenv with a
# pinned requirements file, check it, and print the path of its python on stdout.
#
#   bash .ci/cached-venv.sh NAME REQUIREMENTS VENV STAMP CHECK
#
# NAME prefixes the messages; STAMP is the file in VENV holding the sha256 of REQUIREMENTS after a
# successful install and CHECK (a shell command run with "$py" set to the venv's python, e.g. an
# import of every package the tests need); when it matches, nothing is installed again.
# Interpreter: ${PYTHON:-python3}. Everything but the final path goes to stderr.
set -euo pipefail

name="$1" req="$2" venv="$3" stamp="$3/$4" check="$5"
python="${PYTHON:-python3}"
py="$venv/bin/python"

[ -f "$req" ] || { echo "$name: $req not found" >&2; exit 1; }
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [ -x "$py" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c 'import sys' 2>/dev/null; then
  echo "$py"
  exit 0
fi

if ! [ -x "$py" ] || ! "$py" -c 'import sys' 2>/dev/null; then
  echo "$name: creating virtualenv $venv with $("$python" --version 2>&1)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" >&2
fi
rm -f "$stamp"
echo "$name: installing $req" >&2
"$py" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
export py
bash -c "$check" >&2
echo "$want" > "$stamp"
echo "$py"
