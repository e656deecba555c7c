#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a loopback port, started with
# shared_preload_libraries = biomero_tracking (the recommended setup: concurrent append mode
# needs it), with biomero_tracking created in a database `biomero`.
#   scripts/cluster.sh start DIR [PORT]   -> prints the connection URL
#   scripts/cluster.sh stop DIR
# PG_MAJOR (default 15) selects the PostgreSQL major (scripts/pg.sh); the extension must already
# be installed into that major's installation (scripts/install.sh). PG_OPTIONS adds server
# options (-c name=value), after the ones here, so it can override them.
set -euo pipefail
source "$(dirname "$0")/pg.sh"

command=${1:?start or stop}
dir=${2:?cluster directory}

as_postgres() { sudo -u postgres -- "$@"; }

case "$command" in
start)
    control="$("$PG_CONFIG" --sharedir)/extension/biomero_tracking.control"
    if [ ! -f "$control" ]; then
        echo "cluster.sh: biomero_tracking is not installed into PostgreSQL $PG_MAJOR" \
            "($control is missing): run PG_MAJOR=$PG_MAJOR scripts/install.sh" >&2
        exit 1
    fi
    port=${3:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    install -d -o postgres -g postgres "$dir"
    # Stopped later with the same installation, whatever PG_MAJOR says then.
    echo "$PG_BIN" >"$dir/bin"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
    fi
    as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 \
            -c shared_preload_libraries=biomero_tracking ${PG_OPTIONS:-}" \
        start >/dev/null || { tail -20 "$dir/server.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
    url="postgresql://postgres@127.0.0.1:$port/biomero"
    as_postgres "$PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$port" -d postgres \
        -c "CREATE DATABASE biomero" >/dev/null
    as_postgres "$PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$port" -d biomero \
        -c "CREATE EXTENSION biomero_tracking" >/dev/null
    echo "$url"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        bin=$(cat "$dir/bin" 2>/dev/null || echo "$PG_BIN")
        as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start DIR [PORT] | stop DIR" >&2
    exit 2
    ;;
esac
