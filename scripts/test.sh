#!/usr/bin/env bash
# Runs every test (what CI runs): formatting and lints, then per tested PostgreSQL major
# (scripts/pg.sh) against real servers of that major:
#   16, 15  the extension's unit and integration tests (scripts/test-extension.sh; the
#           randomized checker's short run among them), the regression tests
#           (scripts/test-regress.sh), the isolation tests (scripts/test-isolation.sh) and the
#           Python client's suite (scripts/test-python.sh)
#   18      the unit tests and the ordering, race, concurrent-mode, fault, update and checker
#           tests, the regression tests and the isolation tests
# then the README's snippets, its demo included (scripts/test-readme.sh), and the Debian
# package of every tested major, built (scripts/package.sh), installed and tested as an
# operator would (scripts/test-package.sh). Ends with what ran per major, the result and the
# time.
#   bash scripts/test.sh
#   PG_MAJORS="16 18" bash scripts/test.sh    only these majors
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh
export PATH="$HOME/.cargo/bin:$PATH"

read -r -a majors <<<"${PG_MAJORS:-${TESTED_PG_MAJORS[*]}}"
for major in "${majors[@]}"; do
    pg_check_major "$major"
done

logs=$(mktemp -d /var/tmp/biomero-test-logs.XXXXXX)
summary=()
passed_total=0
failed_total=0

# Counts of the runners' closing lines in a step's log: cargo test's "test result: ok. N
# passed; M failed", pytest's "N passed", pg_regress's "All N tests passed".
count_tests() {
    python3 - "$1" <<'EOF'
import re, sys
text = open(sys.argv[1], errors="replace").read()
passed = failed = 0
for p, f in re.findall(r"^test result: \w+\. (\d+) passed; (\d+) failed", text, re.M):
    passed += int(p); failed += int(f)
for line in re.findall(r"^=+ (.*) in [\d.]+s", text, re.M):
    passed += sum(int(n) for n in re.findall(r"(\d+) passed", line))
    failed += sum(int(n) for n in re.findall(r"(\d+) (?:failed|error)", line))
for n in re.findall(r"All (\d+) tests passed", text):
    passed += int(n)
for n in re.findall(r"(\d+) of \d+ tests failed", text):
    failed += int(n)
print(passed, failed)
EOF
}

print_summary() {
    echo
    echo "[test] summary (PostgreSQL major, step, result, tests passed/failed, seconds)"
    printf '%s\n' "${summary[@]}"
    echo "total: $passed_total passed, $failed_total failed"
}
trap print_summary EXIT

# step MAJOR NAME COMMAND...: runs the command, keeps its output for the counts, records the
# result and time; the first failure ends the run.
step() {
    local major=$1 name=$2
    shift 2
    local log="$logs/$major-${name// /-}.log" started=$SECONDS rc=0
    echo "[test] PostgreSQL $major: $name"
    "$@" 2>&1 | tee "$log" || rc=$?
    local counts passed failed
    counts=$(count_tests "$log")
    read -r passed failed <<<"$counts"
    passed_total=$((passed_total + passed))
    failed_total=$((failed_total + failed))
    local result=passed
    if ((rc != 0)); then
        result="FAILED (exit $rc)"
        failed_total=$((failed_total + (failed == 0)))
    fi
    summary+=("$(printf '  %-4s %-38s %-17s %5s/%-3s %5d s' "$major" "$name" "$result" \
        "$passed" "$failed" $((SECONDS - started)))")
    return "$rc"
}

step all setup bash scripts/setup.sh
# Formatting and lints: clippy for every tested major (code behind a major's cfg is linted
# only with its feature), ruff on the benchmark scripts, shellcheck on the scripts.
lints() {
    set -e
    cargo fmt --check
    cargo fmt --check --manifest-path demo/Cargo.toml
    for major in "${TESTED_PG_MAJORS[@]}"; do
        cargo clippy --quiet --all-targets --no-default-features --features "pg$major pg_test" \
            -- -D warnings
    done
    clients/python/.venv/bin/ruff check bench
    clients/python/.venv/bin/ruff format --check bench
    shellcheck -x -P scripts scripts/*.sh .ci/run
}
step all "rustfmt, clippy, ruff, shellcheck" lints

for major in "${majors[@]}"; do
    if [ "$major" = 18 ]; then
        step "$major" "extension: core tests" env PG_MAJOR="$major" \
            bash scripts/test-extension.sh core
    else
        step "$major" "extension: all tests" env PG_MAJOR="$major" \
            bash scripts/test-extension.sh
    fi
    step "$major" "regression tests" env PG_MAJOR="$major" bash scripts/test-regress.sh
    step "$major" "isolation tests" env PG_MAJOR="$major" bash scripts/test-isolation.sh
    # BIOMERO's own unit tests (two runs of its ~390 tests, a database each) run on 16, the
    # major BIOMERO deploys; the other majors run the rest of the Python suite.
    if [ "$major" = 16 ]; then
        step "$major" "Python client" env PG_MAJOR="$major" bash scripts/test-python.sh
    elif [ "$major" != 18 ]; then
        step "$major" "Python client" env PG_MAJOR="$major" bash scripts/test-python.sh \
            --deselect tests/test_biomero_suite.py
    fi
done

step all "README snippets and demo" bash scripts/test-readme.sh

for major in "${majors[@]}"; do
    step "$major" "Debian package: build, install, test" bash scripts/test-package.sh "$major"
done
