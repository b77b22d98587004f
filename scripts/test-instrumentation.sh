#!/usr/bin/env bash
# The instrumentation-library tests (tests/instrumentation/): agents traced by OpenLLMetry,
# OpenInference, the OpenTelemetry contrib GenAI instrumentation and the Anthropic client's own
# spans, with the real openai and anthropic clients against a fake server on loopback, exporting
# to the real collector binary (debug build under ${CARGO_TARGET_DIR:-target}, or $RLTRACE_BIN).
# The libraries live in the cached virtualenv of .ci/instrumentation-setup.sh; ruff checks the
# suite's code. Ends with one line
# `instrumentation: N passed, M failed`; any failure makes it exit non-zero. Run by scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export RLTRACE_BIN="${RLTRACE_BIN:-$CARGO_TARGET_DIR/debug/rltrace}"
if ! py="${RLTRACE_INSTR_PYTHON:-$(bash .ci/instrumentation-setup.sh)}"; then
  echo "instrumentation: 0 passed, 1 failed (setup)"
  exit 1
fi
if ! [ -x "$RLTRACE_BIN" ]; then
  echo "instrumentation: the collector binary $RLTRACE_BIN is missing (cargo build -p rltrace)" >&2
  echo "instrumentation: 0 passed, 1 failed (no collector binary)"
  exit 1
fi
status=0
failed_checks=0
echo "== ruff tests/instrumentation"
if ! (cd tests/instrumentation && "$(dirname "$py")/ruff" check --no-cache . && "$(dirname "$py")/ruff" format --no-cache --check .); then
  failed_checks=1; status=1
fi
echo "== pytest tests/instrumentation against $RLTRACE_BIN"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
(cd tests/instrumentation && "$py" -m pytest -q -p no:cacheprovider .) 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
summary="$(grep -E '^[0-9]+ (passed|failed|error)|^=+ .*(passed|failed|error)' "$log" | tail -1)"
passed=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || true)
failed=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || true)
errors=$(echo "$summary" | grep -oE '[0-9]+ errors?' | grep -oE '[0-9]+' || true)
skipped=$(echo "$summary" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+' || true)
passed=${passed:-0}; failed=$(( ${failed:-0} + ${errors:-0} + ${skipped:-0} + failed_checks ))
# A skipped test is a failure here: every library the suite needs is installed by the setup.
if [ "${skipped:-0}" -gt 0 ]; then status=1; fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "instrumentation: ${passed} passed, ${failed} failed"
exit "$status"
