#!/usr/bin/env bash
# Soak run, not part of CI: SESSIONS concurrent sessions (3/8 writers, the rest processes of
# four competing followers) for SECONDS against a real server, then the checks of
# tests/soak.rs: no unexpected error, contiguous ids, every notification processed exactly
# once, positions = heads, the backends' private memory steady (samples printed).
#   bash scripts/soak.sh [SECONDS] [SESSIONS]      defaults: 600 64
# PG_MAJOR (default 15) selects the PostgreSQL major (scripts/pg.sh). The test suite
# (scripts/test.sh) runs the same test for 60 seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh
export PATH="$HOME/.cargo/bin:$PATH"

seconds=${1:-600}
sessions=${2:-64}
case "$seconds$sessions" in
*[!0-9]*)
    echo "usage: $0 [SECONDS] [SESSIONS]" >&2
    exit 2
    ;;
esac
if [ "$sessions" -lt 8 ] || [ "$sessions" -gt 180 ]; then
    echo "SESSIONS must be between 8 and 180 (the test server allows 200 connections)" >&2
    exit 2
fi

bash scripts/setup.sh

echo "[soak] PostgreSQL $PG_MAJOR: $sessions sessions for $seconds s"
export CARGO_PGRX_TEST_RUNAS=postgres CARGO_PGRX_TEST_PGDATA=/var/tmp/pgrx-test
export RUST_TEST_NOCAPTURE=1 BIOMERO_SOAK_SECONDS=$seconds BIOMERO_SOAK_SESSIONS=$sessions
cargo pgrx test "pg$PG_MAJOR" soak_
