#!/usr/bin/env bash
# Latency of BIOMERO's own commands (bench/biomero_commands.py): the module with replay,
# without replay, and stock eventsourcing-sqlalchemy, at 1, 4 and 8 processes. Not a test:
# the figures go to bench/analysis.md.
#   bash scripts/bench-biomero.sh [ARGS...]   e.g. --rounds 3 --release 2.9.0b15
# PG_MAJOR (default 15) selects the PostgreSQL major. Needs what scripts/setup.sh installs
# and the extension installed (scripts/install.sh); writes bench/results/biomero-commands.json.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=/var/tmp/biomero-bench-commands-$$
trap 'bash "$root/scripts/cluster.sh" stop "$dir"' EXIT
url=$(bash scripts/cluster.sh start "$dir")
mkdir -p bench/results
BIOMERO_TEST_URL="$url" PYTHONDONTWRITEBYTECODE=1 clients/python/.venv/bin/python \
    bench/biomero_commands.py --out bench/results/biomero-commands.json "$@"
