#!/usr/bin/env bash
# Runs the Python client's whole test suite (clients/python/tests) against a throwaway
# PostgreSQL cluster with biomero_tracking, and stops the cluster whatever happens.
#   scripts/test-python.sh [PYTEST ARGS...]
# Needs the venv clients/python/.venv that scripts/setup.sh creates, and the extension
# installed into the system PostgreSQL (scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

venv=clients/python/.venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import biomero_tracking, pytest' 2>/dev/null; then
    echo "test-python: $venv is missing or incomplete: run scripts/setup.sh first" >&2
    exit 2
fi

dir=/var/tmp/biomero-python-tests-$$
trap 'bash "$root/scripts/cluster.sh" stop "$dir"' EXIT
url=$(bash "$root/scripts/cluster.sh" start "$dir")
echo "[test-python] cluster at $url"

# sql/adopt.sql is loaded here only while the installed extension does not define it.
defined=$(psql "$url" -qAtc \
    "SELECT to_regprocedure('biomero.import_eventsourcing(text,regclass,regclass,text)') IS NOT NULL")
if [ "$defined" != t ]; then
    echo "[test-python] loading sql/adopt.sql (the installed extension lacks it)"
    psql "$url" -q -v ON_ERROR_STOP=1 -f sql/adopt.sql
fi

cd clients/python
# -s shows each scenario's figures as it runs; they are repeated in the closing summary.
BIOMERO_TEST_URL="$url" PYTHONDONTWRITEBYTECODE=1 \
    .venv/bin/python -m pytest -p no:cacheprovider -v -s -rs tests "$@"
