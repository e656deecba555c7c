#!/usr/bin/env bash
# Runs the snippets of README.md, so that none can rot: the ```sh blocks line by line (but
# for the lines whose own test is elsewhere: this test suite, and building and installing a
# Debian package, which scripts/test-package.sh does; and the docker lines, counted and named:
# no Docker engine runs on the test machines), then the ```sql blocks in order with
# psql, stopping at the first error, in a new database of a throwaway cluster with the
# extension installed and preloaded.
#   scripts/test-readme.sh
# PG_MAJOR (default 15) selects the PostgreSQL major (scripts/pg.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/pg.sh
bin=$("$PG_CONFIG" --bindir)

blocks() { # language -> the lines of every fenced block in that language, in order
    awk -v language="$1" '
        /^```/ { if (inside) { inside = 0; next } if ($0 == "```" language) { inside = 1; next } }
        inside { print }' README.md
}

docker_lines=0
while IFS= read -r line; do
    command=${line%%#*}
    command=${command%"${command##*[![:space:]]}"}
    case "$command" in
    "" | "bash scripts/test.sh" | "bash scripts/package.sh "* | "dpkg -i "*) continue ;;
    "docker "*) docker_lines=$((docker_lines + 1)) && continue ;;
    esac
    echo "[test-readme] $command"
    bash -c "$command" >/dev/null
done < <(blocks sh)
echo "[test-readme] not run: $docker_lines docker lines (no Docker engine here)"

dir=/var/tmp/biomero-readme-$$
trap 'bash "$root/scripts/cluster.sh" stop "$dir"' EXIT
bash scripts/cluster.sh start "$dir" >/dev/null
port=$(cat "$dir/port")
psql() { sudo -u postgres "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" "$@"; }
psql -d postgres -c "CREATE DATABASE readme"
sql=$(blocks sql)
echo "[test-readme] the SQL blocks: $(grep -c ';' <<<"$sql") statements"
psql -d readme <<<"$sql" >/dev/null
echo "[test-readme] every snippet ran"
