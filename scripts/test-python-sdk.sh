#!/usr/bin/env bash
# The Python SDK's checks: mypy --strict, ruff, and pytest against the real collector binary
# (debug build under ${CARGO_TARGET_DIR:-target}, or $RLTRACE_BIN). Ends with one line
# `python-sdk: N passed, M failed`; any failure makes it exit non-zero. Run by scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export RLTRACE_BIN="${RLTRACE_BIN:-$CARGO_TARGET_DIR/debug/rltrace}"
status=0
if ! py="$(bash .ci/python-sdk-setup.sh)"; then
  echo "python-sdk: 0 passed, 1 failed (setup)"
  exit 1
fi
if ! [ -x "$RLTRACE_BIN" ]; then
  echo "python-sdk: the collector binary $RLTRACE_BIN is missing (cargo build -p rltrace)" >&2
  echo "python-sdk: 0 passed, 1 failed (no collector binary)"
  exit 1
fi
bindir="$(dirname "$py")"

failed_checks=0
echo "== mypy --strict"
if ! (cd python && "$bindir/mypy" --strict --cache-dir "$(dirname "$bindir")/.mypy_cache" src tests benchmarks ../examples/python-platform); then
  failed_checks=$((failed_checks + 1)); status=1
fi
echo "== ruff"
if ! (cd python && "$bindir/ruff" check --no-cache src tests benchmarks ../examples/python-platform && "$bindir/ruff" format --no-cache --check src tests benchmarks ../examples/python-platform); then
  failed_checks=$((failed_checks + 1)); status=1
fi
echo "== pytest against $RLTRACE_BIN"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
(cd python && "$py" -m pytest -q -p no:cacheprovider tests) 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
summary="$(grep -E '^[0-9]+ (passed|failed|error)|^=+ .*(passed|failed|error)' "$log" | tail -1)"
passed=$(echo "$summary" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+' || true)
failed=$(echo "$summary" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || true)
errors=$(echo "$summary" | grep -oE '[0-9]+ errors?' | grep -oE '[0-9]+' || true)
passed=${passed:-0}; failed=$(( ${failed:-0} + ${errors:-0} + failed_checks ))
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "python-sdk: ${passed} passed, ${failed} failed"
exit "$status"
