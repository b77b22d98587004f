#!/usr/bin/env bash
# The test command: sets up the Python OpenTelemetry SDK and dataset readers used by the tests (a
# virtualenv under ~/.cache) and Agent Lightning (its own cached virtualenv), runs every test of
# the workspace, then the Python SDK's checks (mypy --strict, ruff, pytest against the collector
# binary just built; scripts/test-python-sdk.sh), the instrumentation-library tests (OpenLLMetry,
# OpenInference, the contrib GenAI instrumentation and the Anthropic client's own spans against the
# same binary, in their own cached virtualenv; scripts/test-instrumentation.sh), the REST API fuzzed
# against its OpenAPI document (schemathesis, scripts/schemathesis.sh), then `cargo clippy
# --workspace --all-targets -- -D warnings`, and ends with one
# line of totals. A PostgreSQL server for the tests is started on loopback first (and stopped at
# the end) unless RLTRACE_TEST_POSTGRES names one. Any failure makes it exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RLTRACE_PYTHON:-}" ] && [ -f .ci/python-setup.sh ]; then
  RLTRACE_PYTHON="$(bash .ci/python-setup.sh)"
  export RLTRACE_PYTHON
fi
if [ -z "${RLTRACE_AGL_PYTHON:-}" ] && [ -f .ci/agentlightning-setup.sh ]; then
  RLTRACE_AGL_PYTHON="$(bash .ci/agentlightning-setup.sh)"
  export RLTRACE_AGL_PYTHON
fi
log="$(mktemp)"
pylog="$(mktemp)"
instrlog="$(mktemp)"
pgdir=""
cleanup() {
  rm -f "$log" "$pylog" "$instrlog"
  if [ -n "$pgdir" ]; then bash scripts/postgres.sh stop "$pgdir" || true; fi
}
trap cleanup EXIT
# The PostgreSQL half of the store's conformance suite and the multi-collector tests run against
# a throwaway server on loopback (scripts/postgres.sh), unless RLTRACE_TEST_POSTGRES names one.
if [ -z "${RLTRACE_TEST_POSTGRES:-}" ]; then
  pgdir="$(mktemp -d /tmp/rltrace-pg.XXXXXX)"
  RLTRACE_TEST_POSTGRES="$(bash scripts/postgres.sh start "$pgdir")"
  export RLTRACE_TEST_POSTGRES
  export RLTRACE_TEST_POSTGRES_DIR="$pgdir"
  echo "postgres for the tests: ${RLTRACE_TEST_POSTGRES%%:*}://...@${RLTRACE_TEST_POSTGRES##*@}"
fi
set +e
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
profile=debug
for a in "$@"; do [ "$a" = "--release" ] && profile=release; done
RLTRACE_BIN="${RLTRACE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/$profile/rltrace}" bash scripts/test-python-sdk.sh 2>&1 | tee "$pylog"
pystatus=${PIPESTATUS[0]}
RLTRACE_BIN="${RLTRACE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/$profile/rltrace}" bash scripts/test-instrumentation.sh 2>&1 | tee "$instrlog"
instrstatus=${PIPESTATUS[0]}
# The REST API fuzzed against its own OpenAPI document (schemathesis, bounded; no 5xx allowed).
RLTRACE_BIN="${RLTRACE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/$profile/rltrace}" bash scripts/schemathesis.sh --binary "${RLTRACE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/$profile/rltrace}"
ststatus=$?
# The workspace's lints, every target, warnings refused (after the tests, so a lint does not hide
# a failing test).
cargo clippy --workspace --all-targets -- -D warnings
clstatus=$?
set -e
passed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) passed.*/\1/' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:' "$log" | sed -E 's/.* ([0-9]+) failed.*/\1/' | awk '{s+=$1} END {print s+0}')
pyline="$(grep -E '^python-sdk: [0-9]+ passed, [0-9]+ failed' "$pylog" | tail -1)"
pypassed=$(echo "$pyline" | sed -E 's/^python-sdk: ([0-9]+) passed.*/\1/')
pyfailed=$(echo "$pyline" | sed -E 's/.* ([0-9]+) failed.*/\1/')
pypassed=${pypassed:-0}
pyfailed=${pyfailed:-0}
if [ "$pystatus" -ne 0 ] && [ "$pyfailed" -eq 0 ]; then pyfailed=1; fi
inline="$(grep -E '^instrumentation: [0-9]+ passed, [0-9]+ failed' "$instrlog" | tail -1)"
inpassed=$(echo "$inline" | sed -E 's/^instrumentation: ([0-9]+) passed.*/\1/')
infailed=$(echo "$inline" | sed -E 's/.* ([0-9]+) failed.*/\1/')
inpassed=${inpassed:-0}
infailed=${infailed:-0}
if [ "$instrstatus" -ne 0 ] && [ "$infailed" -eq 0 ]; then infailed=1; fi
echo
stpassed=$((ststatus == 0 ? 1 : 0))
clpassed=$((clstatus == 0 ? 1 : 0))
[ "$clstatus" -eq 0 ] || echo "clippy: warnings (above)"
echo "tests: $((passed + pypassed + inpassed + stpassed + clpassed)) passed, $((failed + pyfailed + infailed + 1 - stpassed + 1 - clpassed)) failed"
[ "$status" -eq 0 ] || exit "$status"
[ "$pystatus" -eq 0 ] || exit "$pystatus"
[ "$instrstatus" -eq 0 ] || exit "$instrstatus"
[ "$ststatus" -eq 0 ] || exit "$ststatus"
exit "$clstatus"
