#!/usr/bin/env bash
# Tests the Debian packages (scripts/package.sh) installed as an operator installs them, one
# PostgreSQL major after the other:
#   15      dpkg -i into the system PostgreSQL (removed again with dpkg --purge at the end);
#   16, 18  the package's files copied into that major's installation (scripts/pg.sh) at its
#           pg_config paths, which are not Debian's.
# Then, on a cluster started with shared_preload_libraries=biomero_tracking (scripts/cluster.sh,
# as the Docker image and the compose snippet start theirs): the package's contents and
# fields, CREATE EXTENSION, packaging/create-extension.sql (what the image runs in a new
# database), the update from 0.1.0 (its install script from sql/archive is put beside the
# package's files for the test and removed after), and the follower race and backup tests of
# tests/package.rs against the packaged library.
#   bash scripts/test-package.sh [MAJOR...]    default: every tested major
# Builds each package first (scripts/package.sh, into PACKAGE_DIR, default target/packages).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/pg.sh
export PATH="$HOME/.cargo/bin:$PATH"

read -r -a majors <<<"$(pg_majors "$@")"
version=$EXTENSION_VERSION
revision=$PACKAGE_REVISION

say() { printf '[test-package] %s\n' "$*"; }
fail() {
    echo "test-package: $*" >&2
    exit 1
}

cleanup_steps=()
cleanup() {
    local i
    for ((i = ${#cleanup_steps[@]} - 1; i >= 0; i--)); do
        eval "${cleanup_steps[i]}" || true
    done
    cleanup_steps=()
}
trap cleanup EXIT

for major in "${majors[@]}"; do
    pg_check_major "$major"
    name=$(package_name "$major")
    deb=$(package_file "$major")
    started=$SECONDS
    bash scripts/package.sh "$major"
    pg_config=$(pg_config_of "$major")
    say "PostgreSQL $major: $(basename "$deb")"

    # The fields and the files: Debian's layout, nothing else.
    depends=$(dpkg-deb --field "$deb" Depends)
    case "$depends" in
    "postgresql-$major, "*) ;;
    *) fail "$deb: Depends is '$depends', not postgresql-$major first" ;;
    esac
    [ "$(dpkg-deb --field "$deb" Package)" = "$name" ] || fail "$deb: wrong Package field"
    [ "$(dpkg-deb --field "$deb" Version)" = "$version-$revision" ] || fail "$deb: wrong Version"
    files=$(dpkg-deb --contents "$deb" | awk '$1 !~ /^d/ {print $6}' | sort)
    expected=$(
        {
            echo "./usr/lib/postgresql/$major/lib/biomero_tracking.so"
            echo "./usr/share/postgresql/$major/extension/biomero_tracking.control"
            echo "./usr/share/postgresql/$major/extension/biomero_tracking--$version.sql"
            for update in sql/biomero_tracking--*--*.sql; do
                echo "./usr/share/postgresql/$major/extension/$(basename "$update")"
            done
            echo "./usr/share/doc/$name/changelog.gz"
            echo "./usr/share/doc/$name/copyright"
        } | sort
    )
    [ "$files" = "$expected" ] || fail "$deb holds
$files
instead of
$expected"
    if [ "$major" = 16 ]; then
        # The Docker image installs this very file.
        grep -qx "ARG PACKAGE=$(basename "$deb")" packaging/Dockerfile \
            || fail "packaging/Dockerfile does not name $(basename "$deb")"
    fi

    # Install, after removing what earlier test builds left there.
    libdir=$("$pg_config" --pkglibdir)
    extension_dir="$("$pg_config" --sharedir)/extension"
    rm -f "$libdir/biomero_tracking.so" "$extension_dir"/biomero_tracking*
    unpacked=$(mktemp -d /var/tmp/biomero-package-files.XXXXXX)
    cleanup_steps+=("rm -rf $unpacked")
    dpkg-deb -x "$deb" "$unpacked"
    if [ "$major" = 15 ]; then
        [ "$pg_config" = /usr/lib/postgresql/15/bin/pg_config ] || fail "15 is not Debian's"
        dpkg -i "$deb" >/dev/null
        cleanup_steps+=("dpkg --purge $name >/dev/null")
        dpkg-query -W -f='${Status}\n' "$name" | grep -qx "install ok installed"
        dpkg --verify "$name" || fail "dpkg --verify $name"
    else
        install -m 644 "$unpacked/usr/lib/postgresql/$major/lib/biomero_tracking.so" "$libdir/"
        install -m 644 "$unpacked/usr/share/postgresql/$major/extension/"* "$extension_dir/"
        cleanup_steps+=("rm -f $libdir/biomero_tracking.so $extension_dir/biomero_tracking*")
    fi
    # The server's directories hold exactly the package's files.
    cmp "$unpacked/usr/lib/postgresql/$major/lib/biomero_tracking.so" "$libdir/biomero_tracking.so"
    installed=$(cd "$extension_dir" && ls biomero_tracking*)
    [ "$installed" = "$(ls "$unpacked/usr/share/postgresql/$major/extension")" ] \
        || fail "$extension_dir holds $installed"
    for file in $installed; do
        cmp "$unpacked/usr/share/postgresql/$major/extension/$file" "$extension_dir/$file"
    done
    cp sql/archive/biomero_tracking--0.1.0.sql "$extension_dir/"
    cleanup_steps+=("rm -f $extension_dir/biomero_tracking--0.1.0.sql")

    # A cluster as the image runs it, the extension created (cluster.sh) and the image's SQL.
    cluster=$(mktemp -d /var/tmp/biomero-package-cluster.XXXXXX)
    cleanup_steps+=("PG_MAJOR=$major bash $root/scripts/cluster.sh stop $cluster")
    url=$(PG_MAJOR=$major bash scripts/cluster.sh start "$cluster")
    port=$(cat "$cluster/port")
    psql() {
        sudo -u postgres -- "$(dirname "$pg_config")/psql" -X -qAt -v ON_ERROR_STOP=1 \
            -h 127.0.0.1 -p "$port" "$@"
    }
    psql -d postgres -c "CREATE DATABASE image"
    psql -d image -f "$root/packaging/create-extension.sql"
    [ "$(psql -d image -c "SELECT extversion FROM pg_extension WHERE extname = 'biomero_tracking'")" \
        = "$version" ] || fail "packaging/create-extension.sql did not create the extension"
    say "PostgreSQL $major: cluster at $url ($(psql -d biomero -c 'SELECT version()' | cut -d' ' -f1-2))"

    BIOMERO_PACKAGE_URL=$url cargo test --no-default-features --features "pg$major pg_test" \
        --test package -- --ignored --test-threads 1 --nocapture

    cleanup
    if [ "$major" = 15 ] && dpkg-query -W "$name" >/dev/null 2>&1; then
        fail "$name is still installed after dpkg --purge"
    fi
    say "PostgreSQL $major: package passed ($((SECONDS - started)) s)"
done
