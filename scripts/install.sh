#!/usr/bin/env bash
# Builds biomero_tracking (release) and installs it into the system PostgreSQL 15.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config 2>&1 \
    | grep -E "^error|Installing|Finished" || true
test -f /usr/share/postgresql/15/extension/biomero_tracking.control
