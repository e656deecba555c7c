#!/usr/bin/env bash
# Builds biomero_tracking (release) and installs it into the PostgreSQL major PG_MAJOR
# (default 15: the system PostgreSQL; scripts/pg.sh says where each major is).
set -euo pipefail
cd "$(dirname "$0")/.."
# What is missing first (Rust, cargo-pgrx, the PostgreSQL majors): quick when present.
bash scripts/setup.sh >&2
source scripts/pg.sh
export PATH="$HOME/.cargo/bin:$PATH"

log=$(mktemp /var/tmp/biomero-install.XXXXXX)
trap 'rm -f "$log"' EXIT
cargo pgrx install --release --no-default-features --features "pg$PG_MAJOR" \
    --pg-config "$PG_CONFIG" >"$log" 2>&1 || { tail -30 "$log" >&2; exit 1; }
grep -E "Installing|Finished" "$log" || true
test -f "$("$PG_CONFIG" --sharedir)/extension/biomero_tracking.control"
echo "installed into PostgreSQL $PG_MAJOR ($("$PG_CONFIG" --pkglibdir))"
