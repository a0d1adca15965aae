# benches/pg_bindir.sh: sourced by the bench scripts. Finds the PostgreSQL server binaries
# in the same order as testkit/src/bins.rs: $PGVEIL_PG_BINDIR, PATH (resolving Debian's
# pg_wrapper symlinks), `pg_config --bindir`, /usr/lib/postgresql/*/bin (newest first). A
# directory counts when it holds initdb, pg_ctl and postgres.
has_server_bins() { [[ -x $1/initdb && -x $1/pg_ctl && -x $1/postgres ]]; }
find_pg_bindir() {
    local d
    if [[ -n ${PGVEIL_PG_BINDIR:-} ]] && has_server_bins "$PGVEIL_PG_BINDIR"; then
        echo "$PGVEIL_PG_BINDIR"; return 0
    fi
    if command -v initdb >/dev/null 2>&1; then
        d=$(dirname "$(readlink -f "$(command -v initdb)")")
        if has_server_bins "$d"; then echo "$d"; return 0; fi
    fi
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
        if [[ -n $d ]] && has_server_bins "$d"; then echo "$d"; return 0; fi
    fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -V -r); do
        if has_server_bins "$d"; then echo "$d"; return 0; fi
    done
    return 1
}
