#!/usr/bin/env bash
# Fuzz the REST API against its own OpenAPI document (GET /openapi.json) with schemathesis
# (pinned in python/requirements-schemathesis.txt, cached virtualenv: .ci/schemathesis-setup.sh).
# Each pass starts `rltrace serve` on a fresh SQLite store on free loopback ports, filled first
# with a few tasks of `rltrace demo` (so that real sequence, triplet and trace ids exist), then
# sends generated requests to every operation of the document (coverage, fuzzing and stateful
# phases), bounded in examples per operation and in time, and stops the collector by its PID.
#
#   no-keys   no [auth]: every route is open (loopback only), so the auth checks are left out
#   with-key  [auth] with one key holding every scope, sent as `Authorization: Bearer`; a request
#             with no key or a wrong one must then be 401
#
# Checks: all of schemathesis's checks (not_a_server_error: no 5xx; status_code_, content_type_,
# response_headers_ and response_schema_conformance; negative_data_rejection; missing_required_
# header; unsupported_method; use_after_free; ensure_resource_availability; ignored_auth with a
# key) but positive_data_acceptance: the handlers enforce rules that the document does not (and
# partly cannot) state, such as two fields that must differ, a body key equal to its header, or
# opaque cursors, so a schema-valid request may rightly get 400 or 422.
#
#   scripts/schemathesis.sh [--binary PATH] [--max-examples N] [--time SECONDS]
#                           [--header 'NAME: VALUE']... [--seed N]
#
#   --binary        the collector (default $RLTRACE_BIN, else ${CARGO_TARGET_DIR:-target}/debug/rltrace)
#   --max-examples  test cases per operation (default 30)
#   --time          bound in seconds on all passes together, enforced with `timeout` (default 300;
#                   counted once the virtualenv is ready)
#   --header        sent with every request (repeatable). `Authorization: Bearer KEY` or
#                   `x-api-key: KEY` runs only the with-key pass, with that key (16 bytes at least)
#   --seed          of the generated data (default 1): the same seed sends the same requests
#
# Exits non-zero when schemathesis reports a failure or an error, the collector panics or dies, or
# the time bound is hit. Ends with `schemathesis: N passed, M failed` (passes).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${RLTRACE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/rltrace}"
examples=30
limit=300
seed=1
headers=()
key=""

usage() {
  echo "usage: $0 [--binary PATH] [--max-examples N] [--time SECONDS] [--header 'NAME: VALUE']... [--seed N]" >&2
  exit 2
}
positive() { [[ "$1" =~ ^[1-9][0-9]{0,8}$ ]] || { echo "schemathesis: $2 must be a positive integer, got '$1'" >&2; exit 2; }; }

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || usage; bin="$2"; shift 2 ;;
    --max-examples) [ $# -ge 2 ] || usage; positive "$2" --max-examples; examples="$2"; shift 2 ;;
    --time) [ $# -ge 2 ] || usage; positive "$2" --time; limit="$2"; shift 2 ;;
    --seed) [ $# -ge 2 ] || usage; [[ "$2" =~ ^[0-9]{1,18}$ ]] || { echo "schemathesis: --seed must be an integer" >&2; exit 2; }; seed="$2"; shift 2 ;;
    --header)
      [ $# -ge 2 ] || usage
      [[ "$2" == *:* ]] || { echo "schemathesis: --header wants 'NAME: VALUE', got '$2'" >&2; exit 2; }
      headers+=("$2")
      name="${2%%:*}" value="${2#*:}"
      value="${value#"${value%%[! ]*}"}"
      case "${name,,}" in
        authorization) [[ "$value" =~ ^[Bb]earer\ +(.+)$ ]] && key="${BASH_REMATCH[1]}" ;;
        x-api-key) key="$value" ;;
      esac
      shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) usage ;;
  esac
done
[ -x "$bin" ] || { echo "schemathesis: no collector binary at $bin (cargo build first, or --binary PATH)" >&2; exit 1; }

py="$(bash .ci/schemathesis-setup.sh)"
st="$(dirname "$py")/schemathesis"
echo "schemathesis: $("$st" --version 2>&1 | head -1), collector $bin"

work="$(mktemp -d /tmp/rltrace-schemathesis.XXXXXX)"
pid=""
stop_collector() {
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}
cleanup() {
  stop_collector
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two free loopback ports (both held at once, so they differ).
free_ports() {
  "$py" -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()'
}

cat > "$work/keys.toml" <<'TOML'
[auth]
[[auth.keys]]
name = "schemathesis"
scopes = ["ingest", "write", "read", "admin"]
env = "RLTRACE_SCHEMATHESIS_KEY"
TOML

if [ -n "$key" ]; then
  passes=(with-key)
else
  passes=(no-keys with-key)
fi
deadline=$((SECONDS + limit))
passed=0
failed=0
status=0

# One pass: $1 is its name (no-keys or with-key).
run_pass() {
  local name="$1" dir="$work/$1" http grpc k="" hdr=() exclude="positive_data_acceptance"
  if [ $((deadline - SECONDS)) -le 0 ]; then
    echo "schemathesis ($name): no time left of the ${limit}s bound" >&2
    return 124
  fi
  mkdir -p "$dir"
  if [ "$name" = with-key ]; then
    k="${key:-rltrace-schemathesis-key-0123456789}"
    [ -n "$key" ] || hdr+=(-H "Authorization: Bearer $k")
  else
    exclude+=",ignored_auth"
  fi
  local h
  for h in "${headers[@]}"; do hdr+=(-H "$h"); done
  # Run the collector with only what is passed here (no store, config or policy from the caller).
  local clean=(env -u RLTRACE_STORE -u RLTRACE_DB -u RLTRACE_CONFIG -u RLTRACE_POLICY -u RLTRACE_HTTP -u RLTRACE_GRPC -u RLTRACE_API_KEY RLTRACE_LOG=error)

  # A little data first: the reference pipeline into the pass's store, by an embedded collector.
  read -r http grpc < <(free_ports)
  if ! timeout 60 "${clean[@]}" "$bin" demo --embedded --exit --tasks 3 --db "$dir/rltrace.db" --http "127.0.0.1:$http" --grpc "127.0.0.1:$grpc" >"$dir/demo.log" 2>&1; then
    echo "schemathesis ($name): rltrace demo failed" >&2
    cat "$dir/demo.log" >&2
    return 1
  fi

  read -r http grpc < <(free_ports)
  local args=(serve --db "$dir/rltrace.db" --http "127.0.0.1:$http" --grpc "127.0.0.1:$grpc")
  [ -n "$k" ] && args+=(--config "$work/keys.toml")
  RLTRACE_SCHEMATHESIS_KEY="$k" "${clean[@]}" "$bin" "${args[@]}" >"$dir/serve.out" 2>"$dir/serve.err" &
  pid=$!
  local url="http://127.0.0.1:$http" ready=""
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    if curl -fsS --max-time 1 "$url/readyz" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "schemathesis ($name): the collector did not become ready on $url" >&2
    cat "$dir/serve.err" >&2
    stop_collector
    return 1
  fi
  local stats
  stats="$(curl -sS --max-time 5 "${hdr[@]}" "$url/api/v1/stats" 2>&1 || true)"
  echo
  echo "schemathesis ($name): $url, $examples examples per operation, seed $seed, checks all but ${exclude//,/ and }; store: $stats"

  local remaining=$((deadline - SECONDS)) rc=0
  if [ "$remaining" -le 0 ]; then
    echo "schemathesis ($name): no time left of the ${limit}s bound" >&2
    stop_collector
    return 124
  fi
  # From the pass's directory: schemathesis and hypothesis keep their caches in the working one.
  (cd "$dir" && timeout -k 10 "$remaining" "$st" run "$url/openapi.json" "${hdr[@]}" \
    --checks all --exclude-checks "$exclude" --max-examples "$examples" --seed "$seed" \
    --request-timeout 30 --suppress-health-check all --generation-database none \
    --output-sanitize false --no-color) || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "schemathesis ($name): stopped at the ${limit}s bound" >&2
    rc=124
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "schemathesis ($name): the collector died during the run" >&2
    [ "$rc" -ne 0 ] || rc=1
  fi
  stop_collector
  if grep -aq 'panicked' "$dir/serve.err"; then
    echo "schemathesis ($name): the collector panicked:" >&2
    grep -a -A5 'panicked' "$dir/serve.err" | head -40 >&2
    [ "$rc" -ne 0 ] || rc=1
  fi
  if [ "$rc" -ne 0 ] && [ -s "$dir/serve.err" ]; then
    echo "schemathesis ($name): collector errors (last lines):" >&2
    tail -20 "$dir/serve.err" >&2
  fi
  return "$rc"
}

for p in "${passes[@]}"; do
  rc=0
  run_pass "$p" || rc=$?
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    [ "$status" -ne 0 ] || status="$rc"
  fi
done
echo
echo "schemathesis: $passed passed, $failed failed"
exit "$status"
