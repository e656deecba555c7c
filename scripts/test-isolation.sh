#!/usr/bin/env bash
# Runs the interleavings of sessions that read as examples (tests/isolation: specs/*.spec
# with the output they must give in expected/*.out) with PostgreSQL's isolation tester
# against a throwaway cluster with biomero_tracking installed (scripts/install.sh) and
# prepared transactions enabled, and fails when a spec has no expected output.
#   scripts/test-isolation.sh [SPEC...]
# PG_MAJOR (default 15) selects the PostgreSQL major (scripts/pg.sh). ISOLATION_ACCEPT=1
# copies the output of failing specs over their expected files (review with git diff).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/pg.sh
isolation="$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/isolation"

specs=()
for spec in tests/isolation/specs/*.spec; do
    name=$(basename "$spec" .spec)
    if [ ! -f "tests/isolation/expected/$name.out" ]; then
        echo "test-isolation: $spec has no expected output (tests/isolation/expected/$name.out)" >&2
        exit 1
    fi
    specs+=("$name")
done
if (($#)); then
    specs=("$@")
fi

dir=/var/tmp/biomero-isolation-$$
out=$dir/out
trap 'bash "$root/scripts/cluster.sh" stop "$dir"' EXIT
url=$(PG_OPTIONS="-c max_prepared_transactions=10" bash scripts/cluster.sh start "$dir")
port=$(cat "$dir/port")
install -d "$out"
echo "[test-isolation] cluster at $url"
"$isolation/pg_isolation_regress" --bindir="$("$PG_CONFIG" --bindir)" --host=127.0.0.1 \
    --port="$port" --user=postgres --dbname=biomero_isolation \
    --load-extension=biomero_tracking --inputdir=tests/isolation --outputdir="$out" \
    "${specs[@]}" || {
    cat "$out/regression.diffs" >&2
    if [ "${ISOLATION_ACCEPT:-0}" = 1 ]; then
        cp "$out"/results/*.out tests/isolation/expected/
        echo "[test-isolation] accepted the new output; review it: git diff tests/isolation" >&2
    fi
    exit 1
}
