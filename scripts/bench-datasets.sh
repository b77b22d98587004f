#!/usr/bin/env bash
# Dataset exports at scale (DESIGN section 8): fills a new store through a running release
# collector with `rltrace loadgen --spans N` (default 1,000,000 triplets), then times `rltrace
# export` (read-only, beside the live collector) for each shape and format, with its peak RSS,
# and the same Parquet export over `GET /api/v1/export`. Loopback only.
# Usage: scripts/bench-datasets.sh [SPANS] [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-bench.sh
SPANS="${1:-1000000}"
WORK="${2:-$(mktemp -d)}"
release_binary
HTTP=127.0.0.1:24338
GRPC=127.0.0.1:24337
trap 'kill $SERVER 2>/dev/null || true' EXIT

"$BIN" serve --db "$WORK/rltrace.db" --http $HTTP --grpc $GRPC >> "$WORK/serve.log" 2>&1 &
SERVER=$!
wait_ready "$SERVER" "http://$HTTP/healthz" "$WORK/serve.log"

echo "== machine: $(nproc) cores, $(uname -r); store in $WORK"
if [ ! -f "$WORK/filled" ]; then
  "$BIN" loadgen --target "http://$HTTP" --spans "$SPANS" --concurrency 4 --max-seconds 600
  touch "$WORK/filled"
fi
echo "== store: $(curl -s "http://$HTTP/api/v1/stats")"

run() {
  local label="$1"; shift
  /usr/bin/time -f "   $label: %e s wall, %M KB max RSS" "$BIN" export --db "$WORK/rltrace.db" "$@" 2> "$WORK/export.err" || { cat "$WORK/export.err"; exit 1; }
  grep -E "max RSS|^exported" "$WORK/export.err" | sed 's/^/   /'
}

echo "== rltrace export (beside the live collector)"
run "triplets jsonl" --shape triplets --format jsonl -o "$WORK/t.jsonl"
run "triplets parquet" --shape triplets --format parquet -o "$WORK/t.parquet"
run "trl-dpo parquet (every prompt distinct: 1,000,000 prompts kept)" --shape trl-dpo --format parquet -o "$WORK/dpo.parquet"
run "trl-dpo parquet (prompt_field /state/agent_role)" --shape trl-dpo --format parquet --prompt-field /state/agent_role --margin 0 -o "$WORK/dpo-role.parquet"
run "trl-sft parquet" --shape trl-sft --format parquet -o "$WORK/sft.parquet"
run "trl-stepwise parquet" --shape trl-stepwise --format parquet -o "$WORK/step.parquet"
run "agentlightning jsonl" --shape agentlightning --format jsonl -o "$WORK/al.jsonl"
run "rebuild triplets parquet from its manifest" --from-manifest "$WORK/t.parquet.manifest.json" -o "$WORK/t-again.parquet"
ls -l "$WORK"/*.parquet "$WORK"/*.jsonl | awk '{printf "   %-40s %12d bytes\n", $9, $5}'

echo "== GET /api/v1/export (curl)"
for q in "shape=triplets&format=parquet" "shape=trl-dpo&format=parquet"; do
  curl -s -o "$WORK/api.out" -w "   $q: %{time_total} s, %{size_download} bytes, HTTP %{http_code}\n" "http://$HTTP/api/v1/export?$q"
done
echo "   collector RSS after the exports: $(ps -o rss= -p $SERVER) KB"
