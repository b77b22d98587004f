#!/usr/bin/env bash
# Collector benchmarks of DESIGN section 8, on loopback, with the release build:
#   ingest rate (and ratio to raw batched SQLite inserts of the same rows), latency below
#   saturation, RSS idle / under load / under overload, export of 1,000,000 triplets (CLI and API),
#   a reward on a 10,000-triplet sequence, and the peak RSS under an OTLP/JSON overload. Every
#   load is bounded in spans and seconds.
# Usage: scripts/bench-collector.sh [SPANS]   (default 1000000)
#        BENCH_ONLY=json-overload scripts/bench-collector.sh   (only the OTLP/JSON overload phase)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib-bench.sh
SPANS="${1:-1000000}"
ONLY="${BENCH_ONLY:-}"
release_binary
WORK="$(mktemp -d)"
HTTP=127.0.0.1:24318
GRPC=127.0.0.1:24317
SERVER=""
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT

start() {
  "$BIN" serve --db "$WORK/rltrace.db" --http $HTTP --grpc $GRPC "$@" > "$WORK/serve.log" 2>&1 &
  SERVER=$!
  wait_ready "$SERVER" "http://$HTTP/healthz" "$WORK/serve.log" 100
}
rss_mb() { echo $(( $(ps -o rss= -p "$SERVER") / 1024 )); }
sample_peak() { local peak=0; while kill -0 "$SERVER" 2>/dev/null && [ ! -f "$WORK/stop" ]; do r=$(ps -o rss= -p "$SERVER" || echo 0); [ "$r" -gt "$peak" ] && peak=$r; echo $((peak / 1024)) > "$WORK/peak"; sleep 0.2; done; }

echo "== machine: $(nproc) cores, $(uname -r)"
if [ -z "$ONLY" ]; then
start
sleep 1
echo "== idle RSS: $(rss_mb) MB"
rm -f "$WORK/stop"; sample_peak & SAMPLER=$!
echo "== ingest: $SPANS spans, http-protobuf, batches of 512, concurrency 4, with the raw SQLite baseline"
"$BIN" loadgen --target "http://$HTTP" --spans "$SPANS" --batch 512 --concurrency 4 --baseline --max-seconds 600
touch "$WORK/stop"; wait $SAMPLER || true
echo "== RSS after ingest: $(rss_mb) MB (peak $(cat "$WORK/peak") MB)"
echo "== latency below saturation: 100000 spans paced at 25000 spans/s"
"$BIN" loadgen --target "http://$HTTP" --spans 100000 --batch 512 --concurrency 4 --rate 25000 --max-seconds 60
echo "== grpc: 200000 spans"
"$BIN" loadgen --target "http://$GRPC" --protocol grpc --spans 200000 --batch 512 --concurrency 4 --max-seconds 120
rm -f "$WORK/stop"; sample_peak & SAMPLER=$!
echo "== overload: 300000 spans in batches of 2048, concurrency 64"
"$BIN" loadgen --target "http://$HTTP" --spans 300000 --batch 2048 --concurrency 64 --max-seconds 120 || true
touch "$WORK/stop"; wait $SAMPLER || true
echo "== peak RSS under overload: $(cat "$WORK/peak") MB"
TRIPLETS=$(curl -s "http://$HTTP/api/v1/stats" | sed -E 's/.*"triplets":([0-9]+).*/\1/')
echo "== export of $TRIPLETS triplets through the API"
/usr/bin/time -f "   %e s wall, %M KB max RSS of curl" curl -s -o "$WORK/api.jsonl" "http://$HTTP/api/v1/export?format=jsonl"
echo "   lines: $(wc -l < "$WORK/api.jsonl")"
rm -f "$WORK/api.jsonl"
kill $SERVER; wait $SERVER 2>/dev/null || true
echo "== export of $TRIPLETS triplets with the CLI"
/usr/bin/time -f "   %e s wall, %M KB max RSS" "$BIN" export --db "$WORK/rltrace.db" -o "$WORK/cli.jsonl"
rm -f "$WORK/cli.jsonl"
echo "== a reward on a 10,000-triplet sequence"
rm -f "$WORK"/rltrace.db*
start
"$BIN" loadgen --target "http://$HTTP" --spans 10000 --batch 500 --sequence-len 10000 --concurrency 2 > /dev/null
SEQ=$(curl -s "http://$HTTP/api/v1/sequences?limit=1" | sed -E 's/.*"sequence_id":"([^"]+)".*/\1/')
for i in 1 2 3; do
  curl -s -o /dev/null -w "   POST reward (discounted): %{time_total} s\n" -H 'content-type: application/json' \
    -d "{\"target\":{\"sequence_id\":\"$SEQ\",\"strategy\":\"discounted\",\"gamma\":0.99},\"value\":1,\"source\":\"tests\"}" "http://$HTTP/api/v1/rewards"
  curl -s -o /dev/null -w "   GET the sequence with its 10,000 effective rewards: %{time_total} s\n" "http://$HTTP/api/v1/sequences/$SEQ"
done
kill $SERVER; wait $SERVER 2>/dev/null || true
fi

if [ -z "$ONLY" ] || [ "$ONLY" = json-overload ]; then
# OTLP/JSON bodies near the limits, more requests than the collector decodes at once: the memory
# of decoding JSON (no value tree: about 1.5x the body), on a fresh store so the figures above
# keep their store.
rm -f "$WORK"/rltrace.db*
start
rm -f "$WORK/stop"; sample_peak & SAMPLER=$!
echo "== OTLP/JSON overload: 300000 spans in batches of 2048, concurrency 64 (the protobuf overload above, as JSON)"
"$BIN" loadgen --target "http://$HTTP" --protocol http-json --spans 300000 --batch 2048 --concurrency 64 --max-seconds 120 || true
touch "$WORK/stop"; wait $SAMPLER || true
echo "== peak RSS under OTLP/JSON overload (2048-span batches): $(cat "$WORK/peak") MB; after: $(rss_mb) MB"
rm -f "$WORK/stop"; sample_peak & SAMPLER=$!
echo "== OTLP/JSON overload: 200000 spans in batches of 10000 (bodies of ~14 MB), concurrency 8"
"$BIN" loadgen --target "http://$HTTP" --protocol http-json --spans 200000 --batch 10000 --concurrency 8 --max-seconds 180 || true
touch "$WORK/stop"; wait $SAMPLER || true
echo "== peak RSS under OTLP/JSON overload (14 MB bodies): $(cat "$WORK/peak") MB; after: $(rss_mb) MB"
rm -f "$WORK/stop"; sample_peak & SAMPLER=$!
echo "== OTLP/JSON overload, gzip: 240000 spans in batches of 40000 (bodies of ~55 MB inflated), concurrency 8"
"$BIN" loadgen --target "http://$HTTP" --protocol http-json --gzip --spans 240000 --batch 40000 --concurrency 8 --max-seconds 180 || true
touch "$WORK/stop"; wait $SAMPLER || true
echo "== peak RSS under OTLP/JSON overload (55 MB inflated bodies): $(cat "$WORK/peak") MB; after: $(rss_mb) MB"
kill $SERVER; wait $SERVER 2>/dev/null || true
fi
