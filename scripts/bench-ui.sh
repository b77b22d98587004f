#!/usr/bin/env bash
# Response time of every web UI page on a filled store (DESIGN section 8: each under 200 ms),
# with curl, five runs each (median and slowest printed). Fills a new store through a release
# collector with `rltrace loadgen --fill` unless DIR already holds one (as scripts/bench-reads.sh
# leaves it), restarts the collector so nothing is cached, then times the pages.
# Usage: scripts/bench-ui.sh [TRIPLETS] [SEQUENCES] [DIR]   (default 10,000,000 in 1,000,000)
set -euo pipefail
cd "$(dirname "$0")/.."
TRIPLETS="${1:-10000000}"
SEQUENCES="${2:-1000000}"
WORK="${3:-$(mktemp -d)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rltrace-target}"
cargo build --release -q -p rltrace
BIN="$CARGO_TARGET_DIR/release/rltrace"
HTTP=127.0.0.1:24338
GRPC=127.0.0.1:24337
trap 'kill $SERVER 2>/dev/null || true' EXIT

start() {
  "$BIN" serve --db "$WORK/rltrace.db" --http $HTTP --grpc $GRPC >> "$WORK/serve.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 300); do
    kill -0 "$SERVER" 2>/dev/null || { echo "server exited:"; tail "$WORK/serve.log"; exit 1; }
    curl -sf "http://$HTTP/healthz" > /dev/null && return
    sleep 0.1
  done
  echo "server did not start"; exit 1
}

# median and max of five timings of one page; fails when the page does not answer 200
timed() {
  local label="$1" url="$2"
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' "$url")
  [ "$code" = 200 ] || { echo "   $label answered $code"; exit 1; }
  local times=()
  for _ in 1 2 3 4 5; do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' "$url")")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v l="$label" '{t[NR]=$1} END {printf "   %-64s median %6.1f ms, max %6.1f ms\n", l, t[3]*1000, t[5]*1000}'
}

echo "== machine: $(nproc) cores, $(uname -r); store in $WORK"
start
if [ ! -f "$WORK/filled" ]; then
  echo "== fill: $TRIPLETS triplets in $SEQUENCES sequences"
  /usr/bin/time -f "   fill took %e s" "$BIN" loadgen --fill --target "http://$HTTP" --triplets "$TRIPLETS" --sequences "$SEQUENCES" \
    --long-sequence 10000 --seed 1 --max-seconds 7200
  touch "$WORK/filled"
fi
echo "== store: $(curl -s "http://$HTTP/api/v1/stats"), $(du -sh "$WORK" | cut -f1) on disk"
kill $SERVER; wait $SERVER 2>/dev/null || true
start
U="http://$HTTP/ui"
MID="task-$((SEQUENCES / 2))"
TRIPLET=$(curl -s "http://$HTTP/api/v1/triplets?sequence_id=$MID&limit=1" | sed -E 's/.*"triplet_id":"([^"]+)".*/\1/')
TRACE=$(curl -s "http://$HTTP/api/v1/triplets?sequence_id=$MID&limit=1" | sed -E 's/.*"trace_id":"([^"]+)".*/\1/')
timed "/ui/ (overview: counts, charts over the newest 500 sequences)" "$U/"
timed "/ui/sequences (first page of 50)" "$U/sequences"
timed "/ui/sequences?role=Code&rewarded=true" "$U/sequences?role=Code&rewarded=true"
timed "/ui/sequences?review=pending" "$U/sequences?review=pending"
timed "/ui/sequences/$MID (a 10-triplet sequence)" "$U/sequences/$MID"
timed "/ui/sequences/task-0 (10,000 triplets: the first 50)" "$U/sequences/task-0"
timed "/ui/triplets/{id} (a triplet of $MID)" "$U/triplets/$TRIPLET"
timed "/ui/traces/{id} (its trace)" "$U/traces/$TRACE"
timed "/ui/review (the queue, 20 oldest)" "$U/review"
timed "/ui/whatif (the newest 1,000 sequences, current policy)" "$U/whatif"
timed "/ui/whatif?edit=1&w.hitl=3&a.hitl=mean (an edited policy)" "$U/whatif?edit=1&w.hitl=3&a.hitl=mean"
timed "/ui/whatif?...&role=Code&sequences=200" "$U/whatif?edit=1&w.hitl=3&role=Code&sequences=200"
