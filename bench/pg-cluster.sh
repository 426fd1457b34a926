#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL cluster for annal-bench and its
# tests: durable settings (fsync and synchronous_commit on), loopback only.
#
# Usage:
#   bench/pg-cluster.sh start DIR PORT
#       Creates a cluster in DIR if DIR is empty or missing (superuser
#       "annal", trust authentication), starts it on 127.0.0.1:PORT with its
#       unix socket in DIR, creates the database annal_bench if absent, and
#       prints its connection string on stdout:
#         postgresql://annal@127.0.0.1:PORT/annal_bench
#   bench/pg-cluster.sh stop DIR
#       Stops the cluster in DIR (fast shutdown); does nothing if it is not
#       running.
#
# Needs Debian's postgresql package (server binaries); exits 3 when they
# cannot be found. initdb, pg_ctl and postgres refuse to run as root, so as
# root they run as the "postgres" system user, DIR is given to that user,
# and every parent of DIR must be traversable by it (a directory under /tmp
# is).
#
# Environment: PG_BINDIR overrides where the server binaries are looked for.
set -euo pipefail

usage() {
  echo "usage: $0 start DIR PORT | stop DIR" >&2
  exit 2
}

die() {
  echo "pg-cluster.sh: $*" >&2
  exit 1
}

# Prints the directory holding initdb, pg_ctl and postgres, or exits 3.
find_bindir() {
  local candidates=()
  [[ -n "${PG_BINDIR:-}" ]] && candidates+=("$PG_BINDIR")
  # libpq-dev's pg_config names the server's directory even when the server
  # is not installed, so every candidate is checked for the binaries.
  if command -v pg_config >/dev/null 2>&1; then
    candidates+=("$(pg_config --bindir 2>/dev/null || true)")
  fi
  candidates+=(/usr/lib/postgresql/15/bin)
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -rn); do
    candidates+=("$d")
  done
  if command -v initdb >/dev/null 2>&1; then
    candidates+=("$(dirname "$(readlink -f "$(command -v initdb)")")")
  fi
  for d in "${candidates[@]}"; do
    if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
      echo "$d"
      return 0
    fi
  done
  echo "PostgreSQL server binaries not found: install Debian's postgresql package" >&2
  exit 3
}

# Runs a server binary, as the postgres user when we are root.
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Runs a command quietly, showing its output only if it fails.
quietly() {
  local log
  log="$(mktemp)"
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

is_running() {
  [[ -f "$1/postmaster.pid" ]] && as_pg "$bindir/pg_ctl" status -D "$1" >/dev/null 2>&1
}

start() {
  local dir="$1" port="$2"
  [[ "$port" =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "bad port: $port"
  [[ "$dir" != *"'"* && "$dir" != *'\'* ]] || die "DIR may not contain quotes or backslashes: $dir"
  bindir="$(find_bindir)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd -P)"
  # The socket path must fit in sun_path (107 bytes and a NUL).
  ((${#dir} + ${#port} + 12 <= 107)) || die "DIR is too long for a unix socket path: $dir"
  if [[ "$(id -u)" == 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the postgres system user"
    chown -R postgres: "$dir"
    as_pg test -w "$dir" || die "the postgres user cannot reach $dir: use a directory under /tmp"
  fi
  chmod 700 "$dir"
  # Server binaries resolve their own path and may chdir; the caller's
  # working directory may be closed to the postgres user.
  cd /

  if [[ ! -f "$dir/PG_VERSION" ]]; then
    [[ -z "$(ls -A "$dir")" ]] || die "$dir is neither empty nor a PostgreSQL cluster"
    quietly as_pg "$bindir/initdb" -D "$dir" -A trust -U annal --no-locale -E UTF8 ||
      die "initdb failed in $dir"
    echo "include_if_exists = 'annal-bench.conf'" >>"$dir/postgresql.conf"
  fi
  is_running "$dir" && die "a server is already running in $dir; stop it first"

  # Rewritten at every start, so that a cluster can be restarted on another
  # port; postgresql.conf includes it last, so it wins.
  cat >"$dir/annal-bench.conf" <<EOF
# Written by bench/pg-cluster.sh at every start.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = on
synchronous_commit = on
shared_buffers = 256MB
max_connections = 200
EOF
  [[ "$(id -u)" == 0 ]] && chown postgres: "$dir/annal-bench.conf"

  if ! as_pg "$bindir/pg_ctl" start -D "$dir" -l "$dir/server.log" -w -t 60 >/dev/null 2>&1; then
    echo "pg-cluster.sh: the server did not start; the end of $dir/server.log:" >&2
    tail -n 30 "$dir/server.log" >&2 || true
    exit 1
  fi

  local psql=("$bindir/psql" -X -q -h 127.0.0.1 -p "$port" -U annal -d postgres -v ON_ERROR_STOP=1)
  if [[ "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'annal_bench'")" != 1 ]]; then
    "${psql[@]}" -c "CREATE DATABASE annal_bench" >/dev/null || die "cannot create the database annal_bench"
  fi
  echo "postgresql://annal@127.0.0.1:$port/annal_bench"
}

stop() {
  local dir="$1"
  # Nothing was started there (or it is gone): nothing to stop.
  [[ -f "$dir/postmaster.pid" ]] || return 0
  bindir="$(find_bindir)"
  dir="$(cd "$dir" && pwd -P)"
  cd /
  is_running "$dir" || return 0
  quietly as_pg "$bindir/pg_ctl" stop -D "$dir" -m fast -w -t 60 || die "pg_ctl stop failed in $dir"
}

bindir=""
case "${1:-}" in
  start)
    [[ $# == 3 ]] || usage
    start "$2" "$3"
    ;;
  stop)
    [[ $# == 2 ]] || usage
    stop "$2"
    ;;
  *) usage ;;
esac
