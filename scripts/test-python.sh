#!/usr/bin/env bash
# Runs the Python client's quality gates (ruff, mypy --strict) and its whole test suite
# (clients/python/tests, BIOMERO 2.8.3's own code included) against a throwaway PostgreSQL
# cluster with biomero_tracking, and stops the cluster whatever happens.
#   scripts/test-python.sh [PYTEST ARGS...]
# PG_MAJOR (default 15) selects the PostgreSQL major of the cluster (scripts/pg.sh). Needs the
# venv clients/python/.venv that scripts/setup.sh creates, and the extension installed into
# that major's installation (scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

venv=clients/python/.venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import biomero_tracking, pytest' 2>/dev/null \
    || [ ! -x "$venv/bin/ruff" ] || [ ! -x "$venv/bin/mypy" ]; then
    echo "test-python: $venv is missing or incomplete: run scripts/setup.sh first" >&2
    exit 2
fi

echo "[test-python] ruff check, ruff format --check, mypy --strict"
(
    cd clients/python
    .venv/bin/ruff check src tests
    .venv/bin/ruff format --check src tests
    .venv/bin/mypy --strict src
)

dir=/var/tmp/biomero-python-tests-$$
trap 'bash "$root/scripts/cluster.sh" stop "$dir"' EXIT
url=$(bash "$root/scripts/cluster.sh" start "$dir")
echo "[test-python] PostgreSQL ${PG_MAJOR:-15} cluster at $url"

cd clients/python
# -s shows each scenario's figures as it runs; they are repeated in the closing summary.
BIOMERO_TEST_URL="$url" PYTHONDONTWRITEBYTECODE=1 \
    .venv/bin/python -m pytest -p no:cacheprovider -v -s -rs tests "$@"
