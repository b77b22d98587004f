#!/usr/bin/env bash
# PostgreSQL ingest benchmark of DESIGN section 8, on loopback, with the release build: one
# collector on a durable throwaway server (scripts/postgres.sh start DIR --durable), a warm-up
# load, then RUNS loads of SPANS spans, each against a raw binary COPY of the same rows into a
# table without indexes, in the same run (`rltrace loadgen --baseline --baseline-store URL`).
#
# The warm-up fills the server's buffer pool and leaves it log segments to recycle, as a server in
# use has them: on a new server the first baseline COPY finds an empty pool and recycled segments
# that the collector's load after it no longer finds, and runs up to twice as fast as any later
# one, while the collector's load changes far less (docs/BENCHMARKS.md, "PostgreSQL store").
#
# Usage: scripts/bench-postgres.sh [SPANS] [RUNS]   (default 200000 3)
#        BENCH_STORE=postgres://... uses that database instead of starting a server.
#        BENCH_CONCURRENCY (default 4), BENCH_NO_BUILD=1 (use the release binary as built).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-bench.sh
SPANS="${1:-200000}"
RUNS="${2:-3}"
CONC="${BENCH_CONCURRENCY:-4}"
release_binary
WORK="$(mktemp -d)"
HTTP=127.0.0.1:24328
SERVER=""
PGDIR=""
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  if [ -n "$PGDIR" ]; then bash scripts/postgres.sh stop "$PGDIR" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
if [ -n "${BENCH_STORE:-}" ]; then
  URL="$BENCH_STORE"
else
  PGDIR="$(mktemp -d /tmp/rltrace-pg.XXXXXX)"
  URL="$(bash scripts/postgres.sh start "$PGDIR" --durable)"
fi
"$BIN" serve --store "$URL" --http "$HTTP" --grpc 127.0.0.1:24327 > "$WORK/serve.log" 2>&1 &
SERVER=$!
wait_ready "$SERVER" "http://$HTTP/readyz" "$WORK/serve.log" 100
echo "== machine: $(nproc) cores; $SPANS spans a load, batches of 512, concurrency $CONC"
echo "== warm-up: $((2 * SPANS)) spans (not counted)"
"$BIN" loadgen --target "http://$HTTP" --spans "$((2 * SPANS))" --concurrency "$CONC" --max-seconds 300 --json > "$WORK/warmup.json"
PSQL="$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -1)"
[ -n "$PSQL" ] || { echo "bench-postgres.sh: psql not found (apt-get install postgresql-client)"; exit 2; }
for r in $(seq 1 "$RUNS"); do
  # At rest before each run: the previous load's aftermath (autovacuum of its rows, its dirty
  # pages) done now rather than inside either measurement of this run.
  "$PSQL" "$URL" -qAtc "VACUUM (ANALYZE)" -c "CHECKPOINT" > /dev/null || echo "   (VACUUM/CHECKPOINT refused: measuring without them)"
  "$BIN" loadgen --target "http://$HTTP" --spans "$SPANS" --concurrency "$CONC" --baseline --baseline-store "$URL" \
    --max-seconds 300 --json > "$WORK/run-$r.json"
done
python3 - "$WORK" "$RUNS" <<'PY'
import json, sys
work, runs = sys.argv[1], int(sys.argv[2])
print("| run | collector spans/s | p99 ms | raw COPY rows/s | ratio |")
print("|---|---|---|---|---|")
rates, ratios = [], []
for r in range(1, runs + 1):
    j = json.load(open(f"{work}/run-{r}.json"))
    rates.append(j["spans_per_s"]); ratios.append(j["ratio_to_baseline"])
    print(f"| {r} | {j['spans_per_s']:,.0f} | {j['latency_ms']['p99']:.0f} | {j['baseline_rows_per_s']:,.0f} | {j['ratio_to_baseline']:.2f} |")
print(f"collector {min(rates):,.0f}-{max(rates):,.0f} spans/s, ratio {min(ratios):.2f}-{max(ratios):.2f}")
PY
