#!/usr/bin/env bash
# A throwaway PostgreSQL server for the store tests, on 127.0.0.1 only.
#
#   scripts/pg.sh start   start it (or find it running) and print its SQLAlchemy URL on stdout:
#                         postgresql+psycopg://postgres@127.0.0.1:PORT/robustlab_test
#   scripts/pg.sh stop    stop it and remove its data directory
#   scripts/pg.sh url     print the URL of the running server (non-zero if none)
#
# The server lives in $ROBUSTLAB_PG_DIR (default /tmp/robustlab-pg-<uid>), listens on loopback TCP
# only (port 54329, or the next free one), has trust authentication for loopback connections and
# its Unix socket inside that directory, and runs with fsync off: it is for tests, never for data.
# Run as root, the server runs as the `postgres` OS user (initdb refuses root). Binaries come from
# $PG_BIN, else the newest /usr/lib/postgresql/*/bin (Debian), else $PATH.
# Messages go to stderr; on failure the exit status is non-zero.
set -euo pipefail

DIR=${ROBUSTLAB_PG_DIR:-/tmp/robustlab-pg-$(id -u)}
DATA=$DIR/data
DB=robustlab_test
FIRST_PORT=${ROBUSTLAB_PG_PORT:-54329}

die() {
  echo "pg.sh: $*" >&2
  exit 1
}

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then
    [ -x "$PG_BIN/pg_ctl" ] || die "PG_BIN=$PG_BIN has no pg_ctl"
    echo "$PG_BIN"
    return
  fi
  local d best
  # the highest major version (numerically: 9.6 < 15)
  best=$(for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && echo "$d"
  done | sort -t/ -k5,5n | tail -n1)
  if [ -n "$best" ]; then
    echo "$best"
  elif command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
  else
    die "PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql (Debian: apt-get install postgresql) or set PG_BIN"
  fi
}

# as_pg CMD...: run CMD as the server's OS user (postgres when we are root, else ourselves)
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      su -s /bin/sh postgres -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

port_busy() {
  # true if something accepts TCP connections on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

url() {
  echo "postgresql+psycopg://postgres@127.0.0.1:$1/$DB"
}

running_port() {
  # the port of our running server, or nothing
  [ -f "$DIR/port" ] && [ -f "$DATA/postmaster.pid" ] || return 1
  local port
  port=$(cat "$DIR/port")
  as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1 || return 1
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 5 || return 1
  echo "$port"
}

ensure_db() {
  local port=$1 exists
  exists=$("$BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -XAtq \
    -c "SELECT 1 FROM pg_database WHERE datname = '$DB'") ||
    die "cannot connect to the server on 127.0.0.1:$port (log: $DIR/server.log)"
  if [ "$exists" != 1 ]; then
    "$BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 \
      -c "CREATE DATABASE $DB" >/dev/null || die "cannot create database $DB"
  fi
}

start() {
  local port
  if port=$(running_port); then
    ensure_db "$port"
    url "$port"
    return
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    die "running as root, but there is no 'postgres' OS user to run the server as"
  fi
  # a stale directory (a crashed or killed server): stop what may be left and start afresh
  if [ -d "$DIR" ]; then
    [ -f "$DATA/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$DIR"
  fi
  mkdir -p "$DIR"
  chmod 700 "$DIR"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$DIR"; fi

  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
    >"$DIR/initdb.log" 2>&1 ||
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-locale \
      >"$DIR/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n 5 "$DIR/initdb.log")"
  # trust, but only for loopback TCP and the private socket (no other host can connect)
  as_pg sh -c "cat > '$DATA/pg_hba.conf'" <<'EOF'
local all all              trust
host  all all 127.0.0.1/32 trust
EOF

  # the first free port from FIRST_PORT; if the server still cannot bind it (another process took
  # it meanwhile), try the next ones
  port=$FIRST_PORT
  local tries=0 started=0 opts
  while [ $tries -lt 20 ]; do
    while port_busy "$port"; do port=$((port + 1)); done
    echo "$port" >"$DIR/port"
    opts="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$DIR"
    opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    opts+=" -c max_connections=100 -c shared_buffers=32MB"
    if as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -o "$opts" -w -t 60 start >/dev/null 2>&1; then
      started=1
      break
    fi
    grep -q "could not bind\|Address already in use" "$DIR/server.log" 2>/dev/null || break
    port=$((port + 1))
    tries=$((tries + 1))
  done
  [ $started = 1 ] || die "the server did not start: $(tail -n 5 "$DIR/server.log" 2>/dev/null)"
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 30 ||
    die "the server does not accept connections on 127.0.0.1:$port (log: $DIR/server.log)"
  ensure_db "$port"
  url "$port"
}

stop() {
  if [ -f "$DATA/postmaster.pid" ] && [ -n "$BIN" ]; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      as_pg "$BIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
  fi
  rm -rf "$DIR"
}

case "${1:-}" in
  start)
    BIN=$(find_bin)
    start
    ;;
  stop)
    BIN=$(find_bin 2>/dev/null) || BIN=""
    stop
    ;;
  url)
    BIN=$(find_bin)
    port=$(running_port) || die "no server running in $DIR"
    url "$port"
    ;;
  *)
    echo "usage: $0 start|stop|url" >&2
    exit 2
    ;;
esac
