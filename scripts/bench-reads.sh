#!/usr/bin/env bash
# Read paths at scale (DESIGN section 8): fills a new store through a running collector with
# `rltrace loadgen --fill` (default 10,000,000 triplets in 1,000,000 sequences, one of them
# 10,000 triplets long: task-0), then times each read of section 8 with curl, five runs each
# (the median and the slowest are printed), then every web UI page the same way. Loopback only; the
# fill is bounded in count and time.
# Usage: scripts/bench-reads.sh [TRIPLETS] [SEQUENCES] [DIR]   (DIR holding a filled store is reused;
# SKIP_EXPORT=1 leaves out the export of every triplet; BENCH_STORE=postgres://... fills and reads that
# PostgreSQL database instead of DIR/rltrace.db, DIR then holding the log and the fill marker;
# BENCH_NO_BUILD=1 uses the release binary as it is)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-bench.sh
TRIPLETS="${1:-10000000}"
SEQUENCES="${2:-1000000}"
WORK="${3:-$(mktemp -d)}"
release_binary
HTTP=127.0.0.1:24328
GRPC=127.0.0.1:24327
trap 'kill $SERVER 2>/dev/null || true' EXIT

start() {
  "$BIN" serve "${STORE_ARGS[@]}" --http $HTTP --grpc $GRPC "$@" >> "$WORK/serve.log" 2>&1 &
  SERVER=$!
  wait_ready "$SERVER" "http://$HTTP/healthz" "$WORK/serve.log"
}

# median and max of five timings of one request
timed() {
  local label="$1"; shift
  local times=()
  for _ in 1 2 3 4 5; do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' "$@")")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v l="$label" '{t[NR]=$1} END {printf "   %-72s median %6.1f ms, max %6.1f ms\n", l, t[3]*1000, t[5]*1000}'
}

if [ -n "${BENCH_STORE:-}" ]; then
  STORE_ARGS=(--store "$BENCH_STORE")
else
  STORE_ARGS=(--db "$WORK/rltrace.db")
fi
size() {
  if [ -n "${BENCH_STORE:-}" ]; then
    psql "$BENCH_STORE" -qAtc "SELECT pg_size_pretty(pg_database_size(current_database()))"
  else
    du -sh "$WORK" | cut -f1
  fi
}
echo "== machine: $(nproc) cores, $(uname -r); store in ${BENCH_STORE:+PostgreSQL, }$WORK"
start
if [ ! -f "$WORK/filled" ]; then
  echo "== fill: $TRIPLETS triplets in $SEQUENCES sequences"
  /usr/bin/time -f "   fill took %e s" "$BIN" loadgen --fill --target "http://$HTTP" --triplets "$TRIPLETS" --sequences "$SEQUENCES" \
    --long-sequence 10000 --seed 1 --max-seconds 3000
  touch "$WORK/filled"
fi
echo "== store: $(curl -s "http://$HTTP/api/v1/stats"), $(size) on disk"
kill $SERVER; wait $SERVER 2>/dev/null || true
# A cold start: reads below come from a collector that has not touched the store yet.
start
S="http://$HTTP/api/v1"
MID="task-$((SEQUENCES / 2))"
timed "GET /sequences?role=Code&rewarded=true (first page of 100)" "$S/sequences?role=Code&rewarded=true"
timed "GET /sequences?role=Code&rewarded=true&limit=10" "$S/sequences?role=Code&rewarded=true&limit=10"
timed "GET /triplets?sequence_id=$MID" "$S/triplets?sequence_id=$MID"
timed "GET /triplets?sequence_id=task-0&limit=100 (the 10,000-triplet sequence)" "$S/triplets?sequence_id=task-0&limit=100"
timed "GET /stats" "$S/stats"
timed "GET /triplets?role=Test (first page, arrival order)" "$S/triplets?role=Test"
n=0
for strategy in '"strategy":"discounted","gamma":0.99' '"strategy":"last"' '"strategy":"role","role":"Code"' '"strategy":"uniform"' '"strategy":"discounted","gamma":0.9'; do
  n=$((n + 1))
  curl -s -o /dev/null -w "   POST /rewards on task-0 (10,000 triplets, $(echo "$strategy" | cut -d'"' -f4)): %{time_total} s\n" \
    -H 'content-type: application/json' -d "{\"target\":{\"sequence_id\":\"task-0\",$strategy},\"value\":0.$n,\"source\":\"bench$n\"}" "$S/rewards"
done
for t in 11 222 3333 44444 555555; do
  curl -s -o /dev/null -w "   POST /callbacks/defects by task id task-$t: %{time_total} s (HTTP %{http_code})\n" -H 'content-type: application/json' \
    -d "{\"task_id\":\"task-$t\",\"defect_type\":\"80_Function\",\"severity\":\"High\",\"phase_injected\":\"Code\",\"phase_removed\":\"Test\",\"description\":\"bench\"}" \
    "$S/callbacks/defects"
done
timed "GET /stats (after the rewards)" "$S/stats"

# The web UI's pages (DESIGN section 8: each under 200 ms); each must answer 200 first.
page() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' "$2")
  [ "$code" = 200 ] || { echo "   $1 answered $code"; exit 1; }
  timed "$@"
}
echo "== web UI pages"
U="http://$HTTP/ui"
TRIPLET=$(curl -s "$S/triplets?sequence_id=$MID&limit=1" | sed -E 's/.*"triplet_id":"([^"]+)".*/\1/')
TRACE=$(curl -s "$S/triplets?sequence_id=$MID&limit=1" | sed -E 's/.*"trace_id":"([^"]+)".*/\1/')
page "/ui/ (overview: counts, charts over the newest 500 sequences)" "$U/"
page "/ui/sequences (first page of 50)" "$U/sequences"
page "/ui/sequences?role=Code&rewarded=true" "$U/sequences?role=Code&rewarded=true"
page "/ui/sequences?review=pending" "$U/sequences?review=pending"
page "/ui/sequences/$MID (a 10-triplet sequence)" "$U/sequences/$MID"
page "/ui/sequences/task-0 (10,000 triplets: the first 50)" "$U/sequences/task-0"
page "/ui/triplets/{id} (a triplet of $MID)" "$U/triplets/$TRIPLET"
page "/ui/traces/{id} (its trace)" "$U/traces/$TRACE"
page "/ui/review (the queue, 20 oldest)" "$U/review"
page "/ui/whatif (the newest 1,000 sequences, current policy)" "$U/whatif"
page "/ui/whatif?edit=1&w.hitl=3&a.hitl=mean (an edited policy)" "$U/whatif?edit=1&w.hitl=3&a.hitl=mean"
page "/ui/whatif?...&role=Code&sequences=200" "$U/whatif?edit=1&w.hitl=3&role=Code&sequences=200"
[ "${SKIP_EXPORT:-0}" = 1 ] && exit 0
echo "== export of every triplet"
/usr/bin/time -f "   %e s wall, %M KB max RSS of curl" curl -s -o "$WORK/export.jsonl" "$S/export?format=jsonl"
echo "   lines: $(wc -l < "$WORK/export.jsonl")"
rm -f "$WORK/export.jsonl"
