#!/usr/bin/env bash
# Runs the single-session regression tests (tests/pg_regress: sql/*.sql with the output they
# must give in expected/*.out) with PostgreSQL's pg_regress against a throwaway cluster with
# biomero_tracking installed (scripts/install.sh), and fails when a test has no expected output.
#   scripts/test-regress.sh [TEST...]
# PG_MAJOR (default 15) selects the PostgreSQL major (scripts/pg.sh). REGRESS_ACCEPT=1 copies
# the output of failing tests over their expected files (review the change with git diff).
# (cargo pgrx regress runs the same files; as root it cannot, because it starts its server as
# the calling user.)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/pg.sh
pg_config=$PG_CONFIG
pg_regress="$("$pg_config" --pkglibdir)/pgxs/src/test/regress/pg_regress"

tests=()
for sql in tests/pg_regress/sql/*.sql; do
    name=$(basename "$sql" .sql)
    if [ ! -f "tests/pg_regress/expected/$name.out" ]; then
        echo "test-regress: $sql has no expected output (tests/pg_regress/expected/$name.out)" >&2
        exit 1
    fi
    tests+=("$name")
done
if (($#)); then
    tests=("$@")
fi

dir=/var/tmp/biomero-regress-$$
out=$dir/out
trap 'bash "$root/scripts/cluster.sh" stop "$dir"' EXIT
url=$(bash scripts/cluster.sh start "$dir")
port=$(cat "$dir/port")
install -d "$out"
echo "[test-regress] cluster at $url"
"$pg_regress" --bindir="$("$pg_config" --bindir)" --host=127.0.0.1 --port="$port" \
    --user=postgres --dbname=biomero_regress --load-extension=biomero_tracking \
    --inputdir=tests/pg_regress --outputdir="$out" "${tests[@]}" || {
    cat "$out/regression.diffs" >&2
    if [ "${REGRESS_ACCEPT:-0}" = 1 ]; then
        cp "$out"/results/*.out tests/pg_regress/expected/
        echo "[test-regress] accepted the new output; review it: git diff tests/pg_regress" >&2
    fi
    exit 1
}
