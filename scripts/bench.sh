#!/usr/bin/env bash
# Benchmark of biomero_tracking (not part of the tests); docs/benchmarks.md explains it.
#   bash scripts/bench.sh                 full run (about 28 minutes on 2 cores); rewrites
#                                         docs/benchmarks.md and docs/benchmarks.png
#   BENCH_QUICK=1 bash scripts/bench.sh   a short run of every scenario, report in bench/results/
# Environment:
#   BENCH_REF       build the extension from this git revision (e.g. HEAD) instead of the
#                   working tree, in a separate target directory (/var/tmp/biomero-bench-target)
#   BENCH_PACKAGE   measure this `cargo pgrx package --out-dir` directory instead of building
#   BENCH_SETUP_SQL a SQL file run in the benchmark database before measuring (to try a change)
#   BENCH_ONLY      comma-separated groups: append1, append8, batch10, batch100, wakeup,
#                   follower, read, growth
#   BENCH_SECONDS   seconds per point; BENCH_OUT report directory; BENCH_PG_OPTIONS more
#                   server -c options
# Needs what scripts/setup.sh installs; runs as root like the other scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# PG_MAJOR (default 15) selects the PostgreSQL major: PG_CONFIG, PG_BIN, pg_roots_of.
source scripts/pg.sh

say() { printf '[bench.sh] %s\n' "$*"; }
as_postgres() { sudo -u postgres -- "$@"; }

venv=bench/.venv
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || ! cmp -s bench/requirements.txt "$stamp"; then
    say "creating the benchmark's Python environment in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r bench/requirements.txt
    cp bench/requirements.txt "$stamp"
fi

run_id=$(date +%Y%m%d-%H%M%S)
work=/var/tmp/biomero-bench-$$
pg=$work/pg
data=$work/data
cleanup() {
    if [ -f "$data/postmaster.pid" ]; then
        as_postgres "$pg$PG_BIN/pg_ctl" -D "$data" -m fast -w stop \
            >/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
install -d -m 755 "$work"

# The extension under test, as `cargo pgrx package` lays it out (library and SQL scripts of the
# same source), in release mode.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain -- src sql Cargo.toml Cargo.lock 2>/dev/null | wc -l)
if [ -n "${BENCH_PACKAGE:-}" ]; then
    package=$(readlink -f "$BENCH_PACKAGE")
    built="the package directory given as BENCH_PACKAGE"
elif [ -n "${BENCH_REF:-}" ]; then
    source="$work/source"
    mkdir -p "$source"
    git archive "$BENCH_REF" | tar -x -C "$source"
    commit=$(git rev-parse --short "$BENCH_REF")
    dirty=0
    package="$work/package"
    say "building the release package of $BENCH_REF ($commit); the first build takes minutes"
    (cd "$source" && CARGO_TARGET_DIR=/var/tmp/biomero-bench-target \
        cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$package") >"$work/build.log" 2>&1 \
        || { tail -20 "$work/build.log"; exit 1; }
    built="release build of $BENCH_REF (cargo pgrx package)"
else
    package="$work/package"
    say "building the release package of the working tree (cargo pgrx package)"
    cargo pgrx package --pg-config "$PG_CONFIG" --out-dir "$package" >"$work/build.log" 2>&1 \
        || { tail -20 "$work/build.log"; exit 1; }
    built="release build of the working tree (cargo pgrx package)"
fi
library=$(find "$package" -name biomero_tracking.so | head -1)
test -n "$library" || { say "no biomero_tracking.so in $package"; exit 1; }

# A private copy of the PostgreSQL installation with that package in it: PostgreSQL finds its
# share and library directories relative to its binaries, so the cluster loads exactly this
# library and these SQL scripts, whatever is (re)installed system-wide during the run.
say "preparing a private PostgreSQL $PG_MAJOR installation in $pg"
for root in $(pg_roots_of "$PG_MAJOR"); do
    mkdir -p "$pg${root%/*}"
    cp -a "$root" "$pg${root%/*}/"
done
pkglibdir=$("$PG_CONFIG" --pkglibdir)
rm -rf "$pg$pkglibdir/biomero_tracking.so" "$pg$pkglibdir/bitcode/biomero_tracking"* \
    "$pg$("$PG_CONFIG" --sharedir)/extension/biomero_tracking"*
cp -a "$package/." "$pg/"
bin="$pg$PG_BIN"

# Server settings: PostgreSQL's defaults (fsync and synchronous_commit on) except memory and
# checkpoint spacing, so that the bulk loads neither thrash nor checkpoint during a point; the
# library preloaded, which concurrent append mode needs.
options="-c shared_buffers=2GB -c max_wal_size=8GB -c checkpoint_timeout=30min -c max_connections=300 -c shared_preload_libraries=biomero_tracking ${BENCH_PG_OPTIONS:-}"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
install -d -o postgres -g postgres "$data" "$work/run"
say "starting a throwaway cluster on port $port"
as_postgres "$bin/initdb" -D "$data" -U postgres -A trust --no-sync >/dev/null
as_postgres "$bin/pg_ctl" -D "$data" -l "$work/run/server.log" -w \
    -o "-p $port -k $work/run -c listen_addresses=127.0.0.1 $options" start >/dev/null \
    || { tail -20 "$work/run/server.log"; exit 1; }
url="postgresql://postgres@127.0.0.1:$port/biomero"
as_postgres "$bin/psql" -qAt -h 127.0.0.1 -p "$port" -d postgres -c "CREATE DATABASE biomero" >/dev/null
as_postgres "$bin/psql" -qAt -h 127.0.0.1 -p "$port" -d biomero -c "CREATE EXTENSION biomero_tracking" >/dev/null

info=$(printf '{"built": "%s", "sha256": "%s", "bytes": %s, "commit": "%s", "uncommitted_source_files": %s}' \
    "$built" "$(sha256sum "$library" | cut -c1-16)" "$(stat -c %s "$library")" "$commit" "$dirty")

mkdir -p bench/results
results="bench/results/$run_id.json"
"$venv/bin/python" bench/bench.py --url "$url" --pgbench "$bin/pgbench" --library-info "$info" \
    --out "$results"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    out=${BENCH_OUT:-bench/results/$run_id}
else
    out=${BENCH_OUT:-docs}
fi
"$venv/bin/python" bench/report.py "$results" --md "$out/benchmarks.md" --png "$out/benchmarks.png" \
    --command "${BENCH_COMMAND:-bash scripts/bench.sh}"
say "report: $out/benchmarks.md, plot: $out/benchmarks.png, raw results: $results"
say "done in $SECONDS s"
