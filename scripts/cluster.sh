#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a loopback port, with biomero_tracking created in a database.
#   scripts/cluster.sh start DIR [PORT]   -> prints the connection URL
#   scripts/cluster.sh stop DIR
# The extension must already be installed into the system PostgreSQL (scripts/install.sh).
set -euo pipefail

PG_BIN=/usr/lib/postgresql/15/bin
command=${1:?start or stop}
dir=${2:?cluster directory}

as_postgres() { sudo -u postgres -- "$@"; }

case "$command" in
start)
    port=${3:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    install -d -o postgres -g postgres "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
    fi
    as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 ${PG_OPTIONS:-}" \
        start >/dev/null
    echo "$port" >"$dir/port"
    url="postgresql://postgres@127.0.0.1:$port/biomero"
    as_postgres "$PG_BIN/psql" -qAt -h 127.0.0.1 -p "$port" -d postgres \
        -c "CREATE DATABASE biomero" >/dev/null
    as_postgres "$PG_BIN/psql" -qAt -h 127.0.0.1 -p "$port" -d biomero \
        -c "CREATE EXTENSION biomero_tracking" >/dev/null
    echo "$url"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start DIR [PORT] | stop DIR" >&2
    exit 2
    ;;
esac
