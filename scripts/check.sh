#!/usr/bin/env bash
# A long run of the randomized checker (tests/checker.rs): random operations and faults
# against a primary and a hot standby, the recorded history checked against the guarantees.
# CI runs one seed for 40 s; this runs as many and as long as asked, and prints each seed's
# figures and any violation (a seed reproduces its choices, not the interleaving).
#   bash scripts/check.sh [SECONDS] [SEEDS]     e.g. bash scripts/check.sh 300 1,2,3
# PG_MAJOR (default 15) selects the PostgreSQL major (scripts/pg.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
seeds=${2:-$(python3 -c 'import random; print(",".join(str(random.getrandbits(32)) for _ in range(3)))')}
echo "[check] $seconds s per seed, seeds $seeds"
CHECK_SECONDS="$seconds" CHECK_SEEDS="$seeds" bash scripts/test-extension.sh checker
