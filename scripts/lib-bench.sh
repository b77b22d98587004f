# Shared by the bench-*.sh scripts (sourced, not run).

# wait_ready PID URL LOG [TRIES]: poll URL (a collector's /healthz or /readyz) every 0.1 s until it
# answers; stop the script when the process PID exits first (the end of LOG shown) or when TRIES
# polls (default 300) go unanswered.
wait_ready() {
  local pid="$1" url="$2" log="$3" tries="${4:-300}"
  for _ in $(seq 1 "$tries"); do
    kill -0 "$pid" 2>/dev/null || { echo "collector exited:"; tail -n 50 "$log"; exit 1; }
    curl -sf "$url" > /dev/null && return 0
    sleep 0.1
  done
  echo "collector not ready at $url"
  exit 1
}

# release_binary: build the release collector (unless BENCH_NO_BUILD=1: the binary as built) and
# set BIN to it; the target directory defaults to the one the tests and CI share.
release_binary() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rltrace-target}"
  [ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release -q -p rltrace
  BIN="$CARGO_TARGET_DIR/release/rltrace"
}
