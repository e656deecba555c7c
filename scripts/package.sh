#!/usr/bin/env bash
# Builds the Debian packages of biomero_tracking (release build), one per PostgreSQL major,
# laid out like Debian's and PGDG's PostgreSQL packages:
#   /usr/lib/postgresql/<major>/lib/biomero_tracking.so
#   /usr/share/postgresql/<major>/extension/biomero_tracking.control
#   /usr/share/postgresql/<major>/extension/biomero_tracking--<version>.sql   (install script)
#   /usr/share/postgresql/<major>/extension/biomero_tracking--A--B.sql        (update scripts)
#   /usr/share/doc/postgresql-<major>-biomero-tracking/{copyright,changelog.gz}
# depending on postgresql-<major> (and the C libraries the library links), named
# postgresql-<major>-biomero-tracking_<version>-<revision>_<arch>.deb.
#   bash scripts/package.sh [MAJOR...]     default: every tested major (scripts/pg.sh)
# Environment: PACKAGE_DIR output directory (default target/packages), PACKAGE_REVISION (1),
# PACKAGE_MAINTAINER (the Maintainer field).
# The library of a major is built against that major's installation (scripts/setup.sh):
# Debian's PostgreSQL 15, the wheels' 16.2 and 18.6; within a major the ABI does not change
# between minor versions. The install scripts of earlier releases (sql/archive) are not
# shipped: an existing database is updated with ALTER EXTENSION biomero_tracking UPDATE.
set -euo pipefail
cd "$(dirname "$0")/.."
# What is missing first (Rust, cargo-pgrx, the PostgreSQL majors): quick when present.
bash scripts/setup.sh >&2
root=$PWD
source scripts/pg.sh
export PATH="$HOME/.cargo/bin:$PATH"

read -r -a majors <<<"$(pg_majors "$@")"
version=$EXTENSION_VERSION
revision=$PACKAGE_REVISION
arch=$(dpkg --print-architecture)
maintainer=${PACKAGE_MAINTAINER:-biomero_tracking maintainers <maintainers@biomero-tracking.invalid>}
out=${PACKAGE_DIR:-target/packages}
mkdir -p "$out"
out=$(readlink -f "$out")

say() { printf '[package] %s\n' "$*"; }

# The PGXN metadata says the same version and tested majors.
python3 - "$version" "${TESTED_PG_MAJORS[@]}" <<'EOF'
import json, sys
version, majors = sys.argv[1], sorted(sys.argv[2:], key=int)
meta = json.load(open("META.json"))
found = {
    "version": meta["version"],
    "provides.biomero_tracking.version": meta["provides"]["biomero_tracking"]["version"],
}
for key, value in found.items():
    if value != version:
        sys.exit(f"META.json: {key} is {value}, Cargo.toml says {version}")
if meta["x_postgresql_tested"] != majors:
    sys.exit(f"META.json: x_postgresql_tested is {meta['x_postgresql_tested']}, tested: {majors}")
EOF

for major in "${majors[@]}"; do
    pg_config=$(pg_config_of "$major")
    name=$(package_name "$major")
    deb="$out/$(basename "$(package_file "$major")")"
    work=$(mktemp -d /var/tmp/biomero-package.XXXXXX)
    started=$SECONDS

    say "PostgreSQL $major: release build (cargo pgrx package, $("$pg_config" --version))"
    cargo pgrx package --no-default-features --features "pg$major" --pg-config "$pg_config" \
        --out-dir "$work/build" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }

    # cargo pgrx package lays the files out at that installation's own paths (those of the
    # wheels are not Debian's): move them to Debian's layout.
    tree="$work/root"
    lib="$tree/usr/lib/postgresql/$major/lib"
    extension="$tree/usr/share/postgresql/$major/extension"
    doc="$tree/usr/share/doc/$name"
    install -d "$lib" "$extension" "$doc" "$tree/DEBIAN"
    built_lib="$work/build$("$pg_config" --pkglibdir)"
    built_extension="$work/build$("$pg_config" --sharedir)/extension"
    install -m 644 "$built_lib/biomero_tracking.so" "$lib/"
    install -m 644 "$built_extension"/biomero_tracking.control \
        "$built_extension"/biomero_tracking--*.sql "$extension/"
    test -f "$extension/biomero_tracking--$version.sql"
    for update in sql/biomero_tracking--*--*.sql; do
        cmp "$update" "$extension/$(basename "$update")"
    done
    # Nothing the build produced is left behind.
    built=$(find "$work/build" -type f | wc -l)
    placed=$(find "$lib" "$extension" -type f | wc -l)
    if [ "$built" != "$placed" ]; then
        find "$work/build" -type f >&2
        echo "package.sh: the build made $built files, $placed placed" >&2
        exit 1
    fi

    install -m 644 packaging/debian/copyright "$doc/copyright"
    gzip -9n <CHANGELOG.md >"$doc/changelog.gz"
    chmod 644 "$doc/changelog.gz"

    # The C libraries the library links (libc, libgcc), as Debian's packages name them.
    mkdir -p "$work/shlibs/debian"
    printf 'Source: biomero-tracking\n\nPackage: %s\nArchitecture: any\n' "$name" \
        >"$work/shlibs/debian/control"
    shlibs=$(cd "$work/shlibs" && dpkg-shlibdeps -O -e "$lib/biomero_tracking.so" 2>/dev/null \
        | sed -n 's/^shlibs:Depends=//p')
    test -n "$shlibs"
    size=$(du -sk --exclude=DEBIAN "$tree" | cut -f1)
    sed -e "s/@MAJOR@/$major/g" -e "s/@VERSION@/$version-$revision/" -e "s/@ARCH@/$arch/" \
        -e "s/@MAINTAINER@/$maintainer/" -e "s/@INSTALLED_SIZE@/$size/" \
        -e "s/@SHLIBS@/$shlibs/" packaging/debian/control.in >"$tree/DEBIAN/control"
    (cd "$tree" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$tree/DEBIAN/md5sums"
    find "$tree" -type d -exec chmod 755 {} +

    dpkg-deb --root-owner-group --build "$tree" "$deb" >/dev/null
    say "PostgreSQL $major: $(basename "$deb") ($(du -k "$deb" | cut -f1) kB, $((SECONDS - started)) s)"
    dpkg-deb --field "$deb" Package Version Depends | sed 's/^/    /'
    rm -rf "$work"
done
# The Docker image's build context (packaging/Dockerfile): the packages and the SQL it runs
# when it creates a database.
install -m 644 packaging/create-extension.sql "$out/"
say "packages in ${out#"$root"/}"
