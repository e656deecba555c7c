#!/usr/bin/env bash
# The main job on an embedded default: builds and installs biomero_tracking, starts a throwaway
# cluster on a loopback port, creates the extension and runs the demo against it.
#   bash scripts/demo.sh [CLIENTS] [WORKFLOWS_PER_CLIENT] [PROCESSES_PER_FOLLOWER]
# PG_MAJOR (default 15) selects the PostgreSQL major (scripts/pg.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh
echo "[demo] building and installing the extension into PostgreSQL ${PG_MAJOR:-15}"
bash scripts/install.sh >/dev/null
echo "[demo] building the demo"
cargo build --quiet --release --manifest-path demo/Cargo.toml

cluster=$(mktemp -d /var/tmp/biomero-demo.XXXXXX)
trap 'bash scripts/cluster.sh stop "$cluster"' EXIT
url=$(bash scripts/cluster.sh start "$cluster")
echo "[demo] throwaway cluster at $url"
demo/target/release/biomero_demo "$url" "$@"
