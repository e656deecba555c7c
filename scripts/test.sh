#!/usr/bin/env bash
# Runs every test: formatting and lints, the extension's unit tests (#[pg_test]) and its
# integration tests against a real server, then the Python client's suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/setup.sh

echo "[test] cargo fmt --check, cargo clippy"
cargo fmt --check
cargo fmt --check --manifest-path demo/Cargo.toml
cargo clippy --quiet --all-targets --features pg_test -- -D warnings

echo "[test] extension: unit and integration tests (real PostgreSQL, run as the postgres user)"
export CARGO_PGRX_TEST_RUNAS=postgres CARGO_PGRX_TEST_PGDATA=/var/tmp/pgrx-test
# Show the integration tests' measured figures (sessions, events, errors) in the log.
RUST_TEST_NOCAPTURE=1 cargo pgrx test pg15

if [ -f scripts/test-python.sh ]; then
    echo "[test] Python client"
    bash scripts/test-python.sh
fi
