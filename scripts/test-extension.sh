#!/usr/bin/env bash
# The extension's Rust tests against real servers of one PostgreSQL major (PG_MAJOR, default
# 15; scripts/pg.sh): what `cargo pgrx test pgNN` runs, with a choice of test targets. Each test
# binary installs the test build into that major's installation and starts its own server
# (shared_preload_libraries = biomero_tracking) as the postgres user.
#   bash scripts/test-extension.sh            every target: the #[pg_test] unit tests and every
#                                             integration test in tests/
#   bash scripts/test-extension.sh core       the unit tests and the ordering, race, concurrent
#                                             mode, fault, update and checker tests
#   bash scripts/test-extension.sh TARGET...  these targets: lib (the unit tests) or a file of
#                                             tests/ (ordering, faults, ...)
# Needs what scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh
export PATH="$HOME/.cargo/bin:$PATH"

CORE=(lib ordering follower_race concurrent faults upgrade checker)

targets=("$@")
if [ "${targets[*]:-}" = core ]; then
    targets=("${CORE[@]}")
fi
selection=()
for target in "${targets[@]}"; do
    if [ "$target" = lib ]; then
        selection+=(--lib)
    elif [ -f "tests/$target.rs" ]; then
        selection+=(--test "$target")
    else
        echo "test-extension: no test target '$target' (lib or a file of tests/)" >&2
        exit 2
    fi
done

features="pg$PG_MAJOR pg_test"
# The settings `cargo pgrx test` gives the test framework, which installs the same build.
export PGRX_FEATURES="$features" PGRX_NO_DEFAULT_FEATURES=true PGRX_ALL_FEATURES=false
export PGRX_BUILD_PROFILE=dev PGRX_NO_SCHEMA=false
# initdb refuses root: the servers run as postgres, their data outside /root.
export CARGO_PGRX_TEST_RUNAS=postgres CARGO_PGRX_TEST_PGDATA=/var/tmp/pgrx-test
# Show the integration tests' measured figures (sessions, events, errors) in the log.
export RUST_TEST_NOCAPTURE=1
echo "[test-extension] PostgreSQL $PG_MAJOR ($("$PG_CONFIG" --version)): ${targets[*]:-every target}"
cargo test --no-fail-fast --no-default-features --features "$features" "${selection[@]}"
