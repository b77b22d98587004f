#!/usr/bin/env bash
# Fuzz the REST API against its own OpenAPI document with schemathesis: a collector on a fresh
# SQLite store on free loopback ports, a little data from `rltrace demo`, then every operation
# of /openapi.json with generated requests (bounded in examples per operation and in time), and
# no response may be a server error (5xx). It runs twice: with no keys configured, and with a
# key in [auth] sent as `Authorization: Bearer` (so the key checks are fuzzed too).
#
#   scripts/schemathesis.sh [--binary PATH] [--max-examples N] [--time SECONDS]
#
# Defaults: the debug binary of $CARGO_TARGET_DIR (or target/), 20 examples per operation, 300 s
# per run. Exits non-zero on any finding, or when a run overruns its time.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${RLTRACE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/rltrace}"
examples=20
limit=300
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin="$2"; shift 2 ;;
    --max-examples) examples="$2"; shift 2 ;;
    --time) limit="$2"; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--max-examples N] [--time SECONDS]" >&2; exit 2 ;;
  esac
done
[ -x "$bin" ] || { echo "schemathesis: no binary at $bin (cargo build first)" >&2; exit 1; }
py="$(bash .ci/schemathesis-setup.sh)"
st="$(dirname "$py")/schemathesis"
work="$(mktemp -d /tmp/rltrace-schemathesis.XXXXXX)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# One run: $1 names it, $2 is a config file or "", $3 a header or "".
run() {
  local name="$1" config="$2" header="$3"
  local http grpc
  http="$(free_port)"; grpc="$(free_port)"
  rm -rf "$work/db"; mkdir -p "$work/db"
  local args=(serve --db "$work/db/rltrace.db" --http "127.0.0.1:$http" --grpc "127.0.0.1:$grpc")
  [ -n "$config" ] && args+=(--config "$config")
  RLTRACE_LOG=error RLTRACE_SCHEMATHESIS_KEY="schemathesis-key-0123456789" "$bin" "${args[@]}" >"$work/serve.out" 2>"$work/serve.err" &
  pid=$!
  local url="http://127.0.0.1:$http"
  for _ in $(seq 1 100); do
    curl -fsS "$url/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "$url/readyz" >/dev/null || { echo "schemathesis: the collector did not start" >&2; cat "$work/serve.err" >&2; return 1; }
  local hdr=()
  [ -n "$header" ] && hdr=(-H "$header")
  if [ -z "$config" ]; then
    # Real ids to follow: a few tasks of the reference pipeline.
    "$bin" demo --tasks 3 --target "$url" >/dev/null
  fi
  echo "schemathesis ($name): $examples examples per operation, at most ${limit}s"
  local status=0
  timeout "$limit" "$st" run "$url/openapi.json" "${hdr[@]}" --checks not_a_server_error -n "$examples" \
    --request-timeout 30 --generation-deterministic --no-color --suppress-health-check all || status=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
  if [ "$status" -eq 124 ]; then echo "schemathesis ($name): overran ${limit}s" >&2; fi
  if grep -q 'panicked' "$work/serve.err"; then echo "schemathesis ($name): the collector panicked" >&2; cat "$work/serve.err" >&2; status=1; fi
  return "$status"
}

run "no keys" "" ""
cat > "$work/keys.toml" <<'TOML'
[auth]
[[auth.keys]]
name = "schemathesis"
scopes = ["ingest", "write", "read", "admin"]
env = "RLTRACE_SCHEMATHESIS_KEY"
TOML
run "with a key" "$work/keys.toml" "Authorization: Bearer schemathesis-key-0123456789"
echo "schemathesis: no server error"
