#!/usr/bin/env bash
# Forwarding benchmarks (docs/BENCHMARKS.md, "Forwarding"), everything on loopback:
#   1. throughput: a store of SPANS spans (filled by `rltrace loadgen`) is forwarded from the
#      beginning to a receiver that acknowledges every request (a null sink in Python, the same
#      over HTTPS with a CA made here by `openssl`, and a second `rltrace serve`); spans/s = SPANS /
#      time until the target's lag is 0.
#   2. lag: `rltrace loadgen --rate RATE` into a collector forwarding to a second `rltrace serve`;
#      lag_seconds of GET /api/v1/forwarders sampled every 0.2 s, its maximum and 99th percentile.
# Usage: scripts/bench-forward.sh [--spans N] [--rate R] [--seconds S] [--binary PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS=500000
RATE=10000
SECONDS_LOAD=30
BIN=""
while [ $# -gt 0 ]; do
  case "$1" in
    --spans) SPANS="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --seconds) SECONDS_LOAD="$2"; shift 2 ;;
    --binary) BIN="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$BIN" ]; then
  cargo build --release -q -p rltrace
  BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/rltrace"
fi
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# serve NAME DB [args...]: start a collector, wait for its listening line, set $URL.
serve() {
  local name=$1 db=$2; shift 2
  "$BIN" serve --db "$db" --http 127.0.0.1:0 --grpc 127.0.0.1:0 "$@" > "$WORK/$name.out" 2> "$WORK/$name.err" &
  PIDS+=($!)
  LAST_PID=$!
  for _ in $(seq 1 300); do
    if grep -q "listening" "$WORK/$name.out" 2>/dev/null; then break; fi
    sleep 0.1
  done
  URL=$(grep -o 'http=[^ ]*' "$WORK/$name.out" | head -1 | cut -d= -f2)
  [ -n "$URL" ] || { echo "$name did not start" >&2; cat "$WORK/$name.err" >&2; exit 1; }
}

lag_of() {
  curl -s "$1/api/v1/forwarders" | python3 -c '
import json, sys
try:
    f = json.load(sys.stdin)["forwarders"][0]
    print(f["lag_spans"], f["lag_seconds"], f["sent_spans"], f["retried"])
except Exception:
    print(-1, 0, 0, 0)'
}

# A null sink: answers 200 to every POST after reading its body; with a certificate and key, over
# TLS. The certificate is signed by a CA made here, which the HTTPS target trusts by `ca_file`.
command -v openssl > /dev/null || { echo "bench-forward.sh: openssl is needed for the HTTPS sink" >&2; exit 2; }
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/ca.key" -out "$WORK/ca.pem" -days 1 -subj "/CN=bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2> /dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$WORK/sink.key" -out "$WORK/sink.csr" -subj "/CN=127.0.0.1" 2> /dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$WORK/sink.ext"
openssl x509 -req -in "$WORK/sink.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -out "$WORK/sink.pem" -days 1 \
  -extfile "$WORK/sink.ext" 2> /dev/null
sink() { # PORT [CERT KEY]
  python3 - "$@" > "$WORK/sink-$1.out" 2>&1 <<'EOF' &
import ssl, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
if len(sys.argv) > 3:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
EOF
  PIDS+=($!)
}
SINK_PORT=$(free_port)
sink "$SINK_PORT"
TLS_SINK_PORT=$(free_port)
sink "$TLS_SINK_PORT" "$WORK/sink.pem" "$WORK/sink.key"
sleep 0.5

echo "== filling a store with $SPANS spans"
serve fill "$WORK/sender.db"
FILL_PID=$LAST_PID
"$BIN" loadgen --target "$URL" --spans "$SPANS" --batch 512 --concurrency 4 --max-seconds 600 | tail -3
kill -TERM "$FILL_PID"; wait "$FILL_PID" 2>/dev/null || true

catch_up() { # NAME ENDPOINT EXTRA_TOML
  local name=$1 endpoint=$2 extra=$3
  cp "$WORK/sender.db" "$WORK/$name.db"
  printf '[[forward]]\nname = "%s"\nendpoint = "%s"\n%s\n' "$name" "$endpoint" "$extra" > "$WORK/$name.toml"
  local t0; t0=$(date +%s.%N)
  serve "sender-$name" "$WORK/$name.db" --config "$WORK/$name.toml"
  local pid=$LAST_PID url=$URL
  for _ in $(seq 1 6000); do
    read -r lag _ _ _ < <(lag_of "$url")
    [ "$lag" = "0" ] && break
    sleep 0.05
  done
  local t1; t1=$(date +%s.%N)
  read -r lag _ sent retried < <(lag_of "$url")
  python3 -c "import sys; s=$SPANS; t=$t1-$t0; print(f'$name: {s} spans in {t:.2f} s = {s/t:,.0f} spans/s (lag {sys.argv[1]}, sent {sys.argv[2]}, retried {sys.argv[3]})')" "$lag" "$sent" "$retried"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

echo "== throughput: catching up $SPANS spans"
catch_up null-sink "http://127.0.0.1:$SINK_PORT/v1/traces" ""
catch_up null-sink-gzip "http://127.0.0.1:$SINK_PORT/v1/traces" 'compression = "gzip"'
catch_up null-sink-https "https://127.0.0.1:$TLS_SINK_PORT/v1/traces" "ca_file = \"$WORK/ca.pem\""
serve receiver "$WORK/receiver.db"
RECEIVER=$URL
catch_up rltrace-receiver "$RECEIVER/v1/traces" ""

echo "== lag at $RATE spans/s for $SECONDS_LOAD s"
serve receiver2 "$WORK/receiver2.db"
RECEIVER2=$URL
printf '[[forward]]\nname = "lag"\nendpoint = "%s/v1/traces"\n' "$RECEIVER2" > "$WORK/lag.toml"
serve lag-sender "$WORK/lag-sender.db" --config "$WORK/lag.toml"
SENDER=$URL
( for _ in $(seq 1 $((SECONDS_LOAD * 5 + 50))); do lag_of "$SENDER"; sleep 0.2; done ) > "$WORK/lag.samples" &
SAMPLER=$!
"$BIN" loadgen --target "$SENDER" --spans $((RATE * SECONDS_LOAD)) --rate "$RATE" --batch 512 --concurrency 4 --max-seconds $((SECONDS_LOAD + 60)) | tail -3
sleep 3
kill "$SAMPLER" 2>/dev/null || true
python3 - "$WORK/lag.samples" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
lags = sorted(float(r[1]) for r in rows)
spans = sorted(int(r[0]) for r in rows)
p = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))]
print(f"lag over {len(rows)} samples: seconds max {lags[-1]:.2f} p99 {p(lags, 0.99):.2f} p50 {p(lags, 0.5):.2f}; span rows max {spans[-1]} p50 {p(spans, 0.5)}; final {rows[-1]}")
EOF
