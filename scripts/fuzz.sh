#!/usr/bin/env bash
# Fuzz each decoder of the edges for a bounded time (docs/FUZZING.md): OTLP protobuf and JSON
# bodies, the reward and callback bodies, the policy file, the config file and redaction. Needs a nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`). Crashes are saved under fuzz/artifacts/ and make the
# script fail; the corpora grow under fuzz/corpus/ (not committed).
#   scripts/fuzz.sh [SECONDS per target, default 60] [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(otlp_protobuf otlp_json reward_bodies policy config)
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/rltrace-fuzz-target}"
command -v cargo-fuzz >/dev/null 2>&1 || { echo "fuzz.sh: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2; exit 2; }
status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t for ${SECONDS_EACH}s"
  log="fuzz/corpus/$t.log"
  set +e
  cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 > "$log" 2>&1
  rc=$?
  set -e
  grep -E "Done [0-9]+ runs|ERROR|panicked|SUMMARY|artifact_prefix|Test unit written" "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -30 "$log"
    echo "== $t FAILED (exit $rc; see fuzz/artifacts/$t)"
    status=1
  fi
done
exit $status
