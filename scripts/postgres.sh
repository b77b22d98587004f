#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the tests and benchmarks, from Debian's
# `postgresql` package: `initdb` into a new directory as an unprivileged user, a free port,
# password authentication.
#
#   scripts/postgres.sh start DIR [--durable] [--tls CERT KEY]
#                                               prints the URL (postgres://rltrace:...@127.0.0.1:PORT/rltrace);
#                                               --tls: TLS on, with that certificate (PEM) and key
#   scripts/postgres.sh stop DIR                stops the server by the PID it wrote, removes DIR
#   scripts/postgres.sh pause DIR / resume DIR  stops and starts the same server (fault tests)
#   scripts/postgres.sh crash DIR               stops it as a crash would (immediate shutdown: no
#                                               flush of the write-ahead log), `resume` recovers it
#
# PG_EXTRA_OPTS (for example "-c wal_writer_delay=10000") is added to the server's settings.
#
# Without --durable the server runs with fsync off (the tests' speed; a commit is still a commit
# for every client). The benchmarks pass --durable.
set -euo pipefail

bindir=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && bindir="$d"; done
if [ -z "$bindir" ]; then
  echo "postgres.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
  exit 2
fi

cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|pause|crash|resume DIR [--durable] [--tls CERT KEY]" >&2; exit 2; }

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u nobody -- "$@"
  else
    "$@"
  fi
}

pg_ctl_run() {
  local port
  port="$(cat "$dir/port")"
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/sock $(cat "$dir/opts")" "$@"
}

case "$cmd" in
  start)
    durable=""
    tls_cert=""
    tls_key=""
    shift 2
    while [ $# -gt 0 ]; do
      case "$1" in
        --durable) durable="--durable"; shift ;;
        --tls) [ $# -ge 3 ] || { echo "postgres.sh: --tls CERT KEY" >&2; exit 2; }; tls_cert="$2"; tls_key="$3"; shift 3 ;;
        *) echo "postgres.sh: unknown option $1" >&2; exit 2 ;;
      esac
    done
    mkdir -p "$dir/sock"
    if [ "$(id -u)" -eq 0 ]; then chown -R nobody "$dir"; fi
    password="rltrace-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    printf '%s\n' "$password" > "$dir/password"
    chmod 600 "$dir/password"
    if [ "$(id -u)" -eq 0 ]; then chown nobody "$dir/password"; fi
    as_owner "$bindir/initdb" -D "$dir/data" -U rltrace --pwfile="$dir/password" --auth=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    echo "$port" > "$dir/port"
    if [ "$durable" = "--durable" ]; then
      # Durable (fsync on, synchronous_commit on), with the WAL room an ingest-heavy server is given.
      echo "-c max_connections=200 -c shared_buffers=512MB -c max_wal_size=8GB -c checkpoint_timeout=30min -c wal_buffers=64MB" > "$dir/opts"
    else
      echo "-c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" > "$dir/opts"
    fi
    if [ -n "$tls_cert" ]; then
      # The server reads its key only when the key belongs to it and no one else may read it.
      cp "$tls_cert" "$dir/data/server.crt"
      cp "$tls_key" "$dir/data/server.key"
      chmod 600 "$dir/data/server.key"
      if [ "$(id -u)" -eq 0 ]; then chown nobody "$dir/data/server.crt" "$dir/data/server.key"; fi
      echo "$(cat "$dir/opts") -c ssl=on" > "$dir/opts"
    fi
    if [ -n "${PG_EXTRA_OPTS:-}" ]; then echo "$(cat "$dir/opts") $PG_EXTRA_OPTS" > "$dir/opts"; fi
    pg_ctl_run start >/dev/null
    head -1 "$dir/data/postmaster.pid" > "$dir/pid"
    PGPASSWORD="$password" "$bindir/psql" -h 127.0.0.1 -p "$port" -U rltrace -d postgres -qAtc "CREATE DATABASE rltrace" >/dev/null
    echo "postgres://rltrace:$password@127.0.0.1:$port/rltrace"
    ;;
  pause)
    as_owner "$bindir/pg_ctl" -D "$dir/data" -w -t 60 -m fast stop >/dev/null
    ;;
  crash)
    as_owner "$bindir/pg_ctl" -D "$dir/data" -w -t 60 -m immediate stop >/dev/null
    ;;
  resume)
    pg_ctl_run start >/dev/null
    head -1 "$dir/data/postmaster.pid" > "$dir/pid"
    ;;
  stop)
    if [ -f "$dir/pid" ]; then
      pid="$(cat "$dir/pid")"
      if kill -0 "$pid" 2>/dev/null; then
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop|pause|crash|resume DIR [--durable]" >&2
    exit 2
    ;;
esac
