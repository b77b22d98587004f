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
exec bash "$root/.ci/cached-venv.sh" agentlightning-setup "$root/crates/rltrace/tests/python/agentlightning-requirements.txt" "${RLTRACE_AGL_VENV:-$HOME/.cache/rltrace-agl-venv}" .rltrace-requirements.sha256 \
  'LITELLM_LOCAL_MODEL_COST_MAP=True "$py" -c "from agentlightning.types import Triplet; import pyarrow.parquet"'
