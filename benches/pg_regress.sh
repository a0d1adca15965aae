#!/usr/bin/env bash
# benches/pg_regress.sh: PostgreSQL's own regression suite (src/test/regress,
# parallel_schedule, 217 tests in PostgreSQL 15) run directly and through pgveil.
#
# This is a compatibility benchmark, not a test. It:
#   1. finds the PostgreSQL server binaries (like benches/pgbench.sh), pg_regress
#      (Debian: postgresql-client-15 ships it under lib/pgxs/src/test/regress/) and
#      the suite's source tree ($PG_SRC, or fetched once with apt into a cache dir);
#   2. builds regress.so, autoinc.so and refint.so with PGXS from that tree;
#   3. starts a throwaway PostgreSQL on a free loopback port (initdb --no-locale,
#      UTF8, trust auth on 127.0.0.1, fsync=off, log_connections=on);
#   4. runs the suite (installcheck mode, one way after the other) in these ways:
#        direct          straight to PostgreSQL
#        passthrough     through pgveil without a policy
#        policy          through pgveil enforcing a policy whose only table,
#                        public.customers, does not exist in the regression database
#        policy-tables   the same, with public.customers created (empty) in the
#                        regression database before the run (pg_regress --use-existing,
#                        the database made as pg_regress makes it)
#        direct-tables   (not run by default) the control for policy-tables: the same
#                        database and table, straight to PostgreSQL
#   5. for each way records tests passed / total, whether every results/*.out file is
#      byte-identical to the direct run's, wall time, backend connections opened
#      (exact: "connection authorized" lines of the server log, log_connections=on;
#      pgveil's catalog login is counted apart), and pgveil's metrics at the end
#      (pgveil_catalog_reads_total, pgveil_catalog_connections_total,
#      pgveil_denied_queries_total; a binary that lacks one shows "-");
#   6. prints a table, the failing tests and the start of regression.diffs for every
#      way that loses tests, the most frequent ERROR lines of those diffs, and writes
#      all of it as markdown to bench-results/pg_regress-<timestamp>.md, with each
#      failing way's full diffs beside it (bench-results/ is git-ignored).
#
# Everything runs on 127.0.0.1 and is torn down on exit or Ctrl-C.
# Run as root or as a user allowed to run PostgreSQL: when root, the server and
# pg_regress (whose tests make the server read and write files in the suite's
# directories) run as user "postgres".
#
# Prerequisites (Debian/Ubuntu; versions of the PostgreSQL that runs the suite):
#   apt-get install -y postgresql-15 postgresql-client-15   # server, psql, pg_regress, PGXS
#   apt-get install -y make gcc dpkg-dev python3            # build regress.so; apt-get source
# and either PG_SRC=<unpacked postgresql-15 source tree> or network access to the
# Debian archive: without PG_SRC the script fetches, once, into $PG_REGRESS_CACHE
# (default ~/.cache/pgveil):
#   - the source package, `apt-get source postgresql-15=<installed version>`, with a
#     private apt configuration (the system's sources turned into deb-src; nothing
#     under /etc/apt is changed, no root needed);
#   - the server headers, unless postgresql-server-dev-15 is installed: its .deb is
#     fetched with `apt-get download` and unpacked there (its clang/llvm dependencies
#     are not needed: regress.so is built without bitcode).
#
# Usage:
#   PGVEIL_BIN=target/release/pgveil benches/pg_regress.sh
#
# Environment (all optional):
#   PGVEIL_BIN=path     pgveil binary to test (default: cargo build --release -p pgveil)
#   PG_SRC=dir          unpacked PostgreSQL source tree (its src/test/regress is used;
#                       the regress directory itself is accepted too)
#   PG_REGRESS_CACHE=dir  where the fetched source and headers are kept (~/.cache/pgveil)
#   WAYS="direct passthrough policy policy-tables"   ways to run, in this order
#   MAX_CONNECTIONS=0   pg_regress --max-connections (0: unlimited; 1 runs the schedule's
#                       tests one at a time, as `make installcheck` does; PostgreSQL 15
#                       has no serial_schedule)
#   REGRESS_TIMEOUT=900 seconds one run of the suite may take before it is killed
#   PGVEIL_EXTRA_ARGS   extra arguments for `pgveil serve`, e.g. "--worker-threads 2"
#   PGVEIL_PG_BINDIR    directory of initdb/pg_ctl/postgres
#   DIFF_LINES=60       lines of regression.diffs printed per failing way
#   KEEP_WORK=1         keep the temporary directory (results, logs) for inspection
set -euo pipefail
export LC_ALL=C

read -r -a WAYS <<<"${WAYS:-direct passthrough policy policy-tables}"
MAX_CONNECTIONS=${MAX_CONNECTIONS:-0}
REGRESS_TIMEOUT=${REGRESS_TIMEOUT:-900}
PGVEIL_EXTRA_ARGS=${PGVEIL_EXTRA_ARGS:-}
DIFF_LINES=${DIFF_LINES:-60}
KEEP_WORK=${KEEP_WORK:-0}
CACHE=${PG_REGRESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pgveil}

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
DBUSER=postgres
CATALOG_USER=pgveil_catalog   # pgveil's catalog login: LOGIN only, like docs/operations.md says
REGRESS_DB=regression

log() { printf '[pg_regress.sh] %s\n' "$*" >&2; }
die() { printf '[pg_regress.sh] error: %s\n' "$*" >&2; exit 1; }

for w in "${WAYS[@]}"; do
    case $w in
        direct | passthrough | policy | policy-tables | direct-tables) ;;
        *) die "unknown way '$w' in WAYS (known: direct passthrough policy policy-tables direct-tables)" ;;
    esac
done
[[ $MAX_CONNECTIONS =~ ^[0-9]+$ ]] || die "MAX_CONNECTIONS must be a number"
[[ $REGRESS_TIMEOUT =~ ^[0-9]+$ ]] || die "REGRESS_TIMEOUT must be a number of seconds"
has_way() { [[ " ${WAYS[*]} " == *" $1 "* ]]; }
needs_pgveil() { has_way passthrough || has_way policy || has_way policy-tables; }

# ---------------------------------------------------------------- binaries --

# has_server_bins, find_pg_bindir
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pg_bindir.sh"
PG_BINDIR=$(find_pg_bindir) || die "PostgreSQL server binaries not found (looked in \$PGVEIL_PG_BINDIR, PATH, pg_config --bindir, /usr/lib/postgresql/*/bin); install with: apt-get update && apt-get install -y postgresql-15"
PSQL=$PG_BINDIR/psql
PG_CONFIG=$PG_BINDIR/pg_config
[[ -x $PSQL ]] || die "psql not found in $PG_BINDIR; install with: apt-get install -y postgresql-client-15"
[[ -x $PG_CONFIG ]] || die "pg_config not found in $PG_BINDIR; install with: apt-get install -y postgresql-client-15"
# "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)" -> 15.18
PG_VERSION=$("$PG_BINDIR/postgres" --version | sed -E 's/^[^0-9]*([0-9]+(\.[0-9]+)?).*/\1/')
PG_MAJOR=${PG_VERSION%%.*}
PGXS_MK=$("$PG_CONFIG" --pgxs)
PG_REGRESS=$(dirname "$PGXS_MK")/../test/regress/pg_regress
[[ -x $PG_REGRESS ]] || die "pg_regress not found at $PG_REGRESS; install with: apt-get install -y postgresql-client-$PG_MAJOR"
PG_REGRESS=$(readlink -f "$PG_REGRESS")
command -v make >/dev/null 2>&1 || die "make not found; install with: apt-get install -y make"
command -v gcc >/dev/null 2>&1 || die "gcc not found; install with: apt-get install -y gcc"
command -v python3 >/dev/null 2>&1 || die "python3 not found (free ports, metrics); install with: apt-get install -y python3"
command -v timeout >/dev/null 2>&1 || die "timeout (coreutils) not found"

# PostgreSQL refuses to run as root: run it, and pg_regress, as "postgres".
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run the server as"
    RUN_USER=postgres
    if command -v setpriv >/dev/null 2>&1; then
        AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    else
        AS_PG=(runuser -u postgres --)
    fi
else
    RUN_USER=$(id -un)
    AS_PG=()
fi
as_pg() { (cd "$WORK" && exec "${AS_PG[@]}" "$@"); }

if needs_pgveil; then
    if [[ -n ${PGVEIL_BIN:-} ]]; then
        [[ -x $PGVEIL_BIN ]] || die "PGVEIL_BIN=$PGVEIL_BIN is not executable"
    else
        log "building pgveil (cargo build --release -p pgveil)"
        (cd "$REPO" && cargo build --release -p pgveil)
        PGVEIL_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/pgveil
    fi
    PGVEIL_BIN=$(readlink -f "$PGVEIL_BIN")
    PGVEIL_VERSION=$("$PGVEIL_BIN" --version 2>/dev/null | head -1 | awk '{print $2}')
fi

# ------------------------------------------------- the suite's source tree --

# A private apt configuration: the system's sources, as both deb and deb-src, with
# lists and caches of its own under $CACHE/apt. Nothing under /etc/apt changes.
APTDIR=$CACHE/apt
apt_private() {
    timeout 600 apt-get -q -o Dir::Etc::SourceList="$APTDIR/empty.list" -o Dir::Etc::SourceParts="$APTDIR/sources.list.d" \
        -o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache="$APTDIR/cache" "$@"
}
apt_private_update() {
    # Lists younger than a day are reused.
    [[ -n $(find "$APTDIR/updated" -mtime -1 2>/dev/null) ]] && return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: set PG_SRC to an unpacked PostgreSQL $PG_MAJOR source tree"
    mkdir -p "$APTDIR/sources.list.d" "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
    : >"$APTDIR/empty.list"
    rm -f "$APTDIR"/sources.list.d/*
    local f n=0
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        n=$((n + 1))
        sed -n -e 's/^[[:space:]]*deb\(-src\)\?[[:space:]]\+\(.*\)$/deb \2\ndeb-src \2/p' "$f" \
            | sort -u >"$APTDIR/sources.list.d/$n.list"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        n=$((n + 1))
        sed -e 's/^Types:.*/Types: deb deb-src/' "$f" >"$APTDIR/sources.list.d/$n.sources"
    done
    (( n > 0 )) || die "no apt sources under /etc/apt: set PG_SRC to an unpacked PostgreSQL $PG_MAJOR source tree"
    log "apt: reading the package and source indexes into $APTDIR (private lists; /etc/apt is not changed)"
    # A third-party repository without sources makes update fail; what matters is
    # whether the package is found afterwards.
    apt_private update >"$APTDIR/update.log" 2>&1 \
        || log "apt update reported errors (see $APTDIR/update.log); carrying on"
    touch "$APTDIR/updated"
}
# The Debian version of the installed server package, e.g. 15.18-0+deb12u1.
DEB_VERSION=$(dpkg-query -W -f='${Version}' "postgresql-$PG_MAJOR" 2>/dev/null || true)

# Fetch and unpack the source package once; prints the tree's path.
fetch_source() {
    local dir=$CACHE/postgresql-$PG_MAJOR tree want=""
    tree=$(ls -d "$dir"/postgresql-"$PG_MAJOR"-"$PG_VERSION" 2>/dev/null | head -1 || true)
    if [[ -n $tree && -f $tree/src/test/regress/parallel_schedule ]]; then echo "$tree"; return 0; fi
    command -v dpkg-source >/dev/null 2>&1 || die "dpkg-source not found (apt-get source needs it); install with: apt-get install -y dpkg-dev, or set PG_SRC"
    log "PG_SRC is not set: fetching the PostgreSQL $PG_VERSION source package with apt into $dir (once)"
    apt_private_update
    mkdir -p "$dir"
    [[ -n $DEB_VERSION ]] && want="=$DEB_VERSION"
    if ! (cd "$dir" && apt_private source "postgresql-$PG_MAJOR$want" >"$dir/apt-source.log" 2>&1); then
        [[ -n $want ]] && log "the source of postgresql-$PG_MAJOR$want is not in the archive; trying the newest $PG_MAJOR.x"
        (cd "$dir" && apt_private source "postgresql-$PG_MAJOR" >"$dir/apt-source.log" 2>&1) || {
            tail -5 "$dir/apt-source.log" >&2
            die "apt-get source postgresql-$PG_MAJOR failed (log: $dir/apt-source.log); set PG_SRC to an unpacked PostgreSQL $PG_MAJOR source tree"
        }
    fi
    tree=$(ls -d "$dir"/postgresql-"$PG_MAJOR"-*/ 2>/dev/null | sort -V | tail -1)
    [[ -n $tree && -f $tree/src/test/regress/parallel_schedule ]] || die "apt-get source gave no usable tree in $dir"
    echo "${tree%/}"
}

if [[ -n ${PG_SRC:-} ]]; then
    [[ -d $PG_SRC ]] || die "PG_SRC=$PG_SRC is not a directory"
    SRC_TREE=$(cd "$PG_SRC" && pwd)
else
    SRC_TREE=$(fetch_source)
fi
if [[ -f $SRC_TREE/src/test/regress/parallel_schedule ]]; then
    REGRESS_SRC=$SRC_TREE/src/test/regress
    SPI_SRC=$SRC_TREE/contrib/spi
elif [[ -f $SRC_TREE/parallel_schedule && -f $SRC_TREE/regress.c ]]; then
    REGRESS_SRC=$SRC_TREE
    SPI_SRC=$SRC_TREE/../../../contrib/spi
else
    die "$SRC_TREE has no src/test/regress/parallel_schedule: not a PostgreSQL source tree"
fi
[[ -f $SPI_SRC/autoinc.c && -f $SPI_SRC/refint.c ]] || die "contrib/spi/{autoinc,refint}.c not found next to $REGRESS_SRC"
SRC_VERSION=$(sed -n "s/^PACKAGE_VERSION='\(.*\)'$/\1/p" "$REGRESS_SRC/../../../configure" 2>/dev/null || true)
if [[ -n $SRC_VERSION && ${SRC_VERSION%%.*} != "$PG_MAJOR" ]]; then
    die "the source tree is PostgreSQL $SRC_VERSION but the server is $PG_VERSION: the suite must match the major version"
fi
[[ -z $SRC_VERSION || $SRC_VERSION == "$PG_VERSION" ]] \
    || log "warning: source tree $SRC_VERSION, server $PG_VERSION (same major; expected outputs rarely differ)"

# Server headers for PGXS: installed (postgresql-server-dev-N), or the .deb unpacked.
HEADERS_CPPFLAGS=""
if [[ ! -f $("$PG_CONFIG" --includedir-server)/postgres.h ]]; then
    hdr=$CACHE/server-dev-$PG_MAJOR-${DEB_VERSION:-unknown}
    if [[ ! -f $hdr/usr/include/postgresql/$PG_MAJOR/server/postgres.h ]]; then
        command -v dpkg-deb >/dev/null 2>&1 || die "server headers missing; install with: apt-get install -y postgresql-server-dev-$PG_MAJOR"
        log "server headers not installed: fetching postgresql-server-dev-$PG_MAJOR${DEB_VERSION:+=$DEB_VERSION} with apt-get download into $hdr (once)"
        apt_private_update
        mkdir -p "$hdr/deb"
        (cd "$hdr/deb" && { apt_private download "postgresql-server-dev-$PG_MAJOR${DEB_VERSION:+=$DEB_VERSION}" \
            || apt_private download "postgresql-server-dev-$PG_MAJOR"; } >"$hdr/apt-download.log" 2>&1) \
            || die "apt-get download postgresql-server-dev-$PG_MAJOR failed (log: $hdr/apt-download.log); install it with: apt-get install -y postgresql-server-dev-$PG_MAJOR"
        dpkg-deb -x "$(ls "$hdr"/deb/*.deb | head -1)" "$hdr"
        [[ -f $hdr/usr/include/postgresql/$PG_MAJOR/server/postgres.h ]] || die "postgresql-server-dev-$PG_MAJOR has no server headers?"
    fi
    HEADERS_CPPFLAGS="-I$hdr/usr/include/postgresql/$PG_MAJOR/server"
    [[ -d $hdr/usr/include/postgresql/internal ]] && HEADERS_CPPFLAGS+=" -I$hdr/usr/include/postgresql/internal"
fi

# ------------------------------------------------------------ temp + cleanup --

WORK=$(mktemp -d /tmp/pgveil-regress.XXXXXX)
chmod 755 "$WORK"
PGDATA=$WORK/data
PGVEIL_PID=""
PG_STARTED=0

pgveil_stop() {
    [[ -n $PGVEIL_PID ]] || return 0
    kill "$PGVEIL_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PGVEIL_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PGVEIL_PID" 2>/dev/null || true
    wait "$PGVEIL_PID" 2>/dev/null || true
    PGVEIL_PID=""
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    pgveil_stop
    if [[ $PG_STARTED -eq 1 ]]; then
        as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" stop -m immediate >/dev/null 2>&1
    fi
    if [[ $KEEP_WORK == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r PGPORT PGVEIL_PORT METRICS_PORT < <(free_ports 3)

wait_port() {
    local port=$1 what=$2
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    die "$what did not start listening on port $port"
}

# ------------------------------------------------------------ the suite --

# A copy of the suite the server's user can read and write (the tests COPY from
# $abs_srcdir/data and to $abs_builddir/results), and the three modules built with PGXS.
SUITE=$WORK/suite
LIBDIR=$WORK/lib
mkdir -p "$SUITE" "$LIBDIR"
cp -r "$REGRESS_SRC/sql" "$REGRESS_SRC/expected" "$REGRESS_SRC/data" \
    "$REGRESS_SRC/parallel_schedule" "$REGRESS_SRC/resultmap" "$SUITE/"
cp "$REGRESS_SRC/regress.c" "$SPI_SRC/autoinc.c" "$SPI_SRC/refint.c" "$LIBDIR/"
cat >"$LIBDIR/Makefile" <<EOF
MODULES = regress autoinc refint
PG_CONFIG = $PG_CONFIG
PGXS := \$(shell \$(PG_CONFIG) --pgxs)
include \$(PGXS)
EOF
log "building regress.so, autoinc.so, refint.so with PGXS (${HEADERS_CPPFLAGS:-installed server headers})"
# -DREFINT_VERBOSE as in contrib/spi/Makefile: refint's NOTICEs are in the triggers
# test's expected output. with_llvm=no: no bitcode, so clang is not needed.
make -C "$LIBDIR" with_llvm=no PG_CPPFLAGS="$HEADERS_CPPFLAGS -DREFINT_VERBOSE" >"$WORK/build.log" 2>&1 \
    || { tail -20 "$WORK/build.log" >&2; die "building the suite's modules failed (log above)"; }
TOTAL_TESTS=$(grep '^test:' "$SUITE/parallel_schedule" | sed 's/^test://' | wc -w)
[[ $RUN_USER == "$(id -un)" ]] || chown -R "$RUN_USER" "$WORK"

# ---------------------------------------------------------------- postgres --

log "PostgreSQL $PG_VERSION binaries: $PG_BINDIR; suite: $REGRESS_SRC ($TOTAL_TESTS tests)"
as_pg "$PG_BINDIR/initdb" -D "$PGDATA" -U "$DBUSER" -A trust -E UTF8 --no-locale --no-sync >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
cat >>"$PGDATA/postgresql.conf" <<EOF
# pgveil pg_regress benchmark settings
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
logging_collector = off
log_connections = on
EOF
cat >"$PGDATA/pg_hba.conf" <<EOF
local all all trust
host  all all 127.0.0.1/32 trust
EOF
PGLOG=$WORK/postgres.log
as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 start >/dev/null \
    || { tail -20 "$PGLOG" >&2; die "PostgreSQL failed to start"; }
PG_STARTED=1
log "PostgreSQL $PG_VERSION on port $PGPORT"
psql_direct() { PGOPTIONS="-c client_min_messages=warning" "$PSQL" -h 127.0.0.1 -p "$PGPORT" -U "$DBUSER" -X -q -v ON_ERROR_STOP=1 "$@"; }
# pgveil's catalog login (a role the suite never touches; made before every way so
# that all ways see the same roles).
psql_direct -d postgres -c "create role $CATALOG_USER login" >/dev/null

# ------------------------------------------------------------------ pgveil --

if has_way policy || has_way policy-tables; then
    cat >"$WORK/policy.yaml" <<'EOF'
version: 1
levels: [core, important, general]
roles:
  support: [support_app]
tables:
  public.customers:
    name:    { level: important, kind: cn_name }
    phone:   { level: important, kind: cn_mobile,  encrypt: deterministic }
    id_card: { level: core,      kind: cn_id_card, encrypt: deterministic }
rules:
  - { roles: [support], level: important, action: mask }
  - { roles: [support], level: core,      action: mask }
defaults: { core: deny, important: mask, general: allow }
EOF
    "$PGVEIL_BIN" policy check "$WORK/policy.yaml" >"$WORK/policy-check.log" 2>&1 \
        || { cat "$WORK/policy-check.log" >&2; die "pgveil policy check failed"; }
    "$PGVEIL_BIN" keys generate --out "$WORK/pgveil.keys" >/dev/null
fi

# Start pgveil on $PGVEIL_PORT with the extra arguments $1, metrics on $METRICS_PORT.
pgveil_start() {
    # shellcheck disable=SC2086  # extra arguments are split into words on purpose
    "$PGVEIL_BIN" serve \
        --listen "127.0.0.1:$PGVEIL_PORT" \
        --upstream-host 127.0.0.1 --upstream-port "$PGPORT" \
        --upstream-tls-mode disable \
        --metrics-listen "127.0.0.1:$METRICS_PORT" \
        $PGVEIL_EXTRA_ARGS $1 \
        >>"$WORK/pgveil-$2.log" 2>&1 &
    PGVEIL_PID=$!
    wait_port "$PGVEIL_PORT" pgveil
}
# Sum of a metric over all its label sets, from the scraped text $1; "-" when absent.
metric_sum() {
    awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $NF; n++} END {if (n) printf "%d", s; else print "-"}' "$1"
}
scrape_metrics() {
    python3 - "$METRICS_PORT" >"$1" 2>/dev/null <<'EOF' || : >"$1"
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode())
EOF
}

# --------------------------------------------------------------------- runs --

others_busy() { pgrep -x rustc >/dev/null 2>&1 || pgrep -x cargo >/dev/null 2>&1; }
BUSY_DURING=0
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A PASSED=() FAILED_N=() WALL=() CONNS=() CAT_CONNS=() IDENT=() CAT_READS=() CAT_METRIC_CONNS=() DENIED=() RC=()
REGRESS_OPTS=(--bindir="$PG_BINDIR" --dlpath="$LIBDIR" --inputdir="$SUITE" --schedule="$SUITE/parallel_schedule"
              --max-concurrent-tests=20 --max-connections="$MAX_CONNECTIONS" --host=127.0.0.1 --user="$DBUSER")

# The database as pg_regress makes it (pg_regress.c, create_database()), for --use-existing.
make_regression_db() {
    psql_direct -d postgres -c "drop database if exists $REGRESS_DB" -c "create database $REGRESS_DB template=template0" >/dev/null
    psql_direct -d postgres >/dev/null <<EOF
ALTER DATABASE "$REGRESS_DB" SET lc_messages TO 'C';
ALTER DATABASE "$REGRESS_DB" SET lc_monetary TO 'C';
ALTER DATABASE "$REGRESS_DB" SET lc_numeric TO 'C';
ALTER DATABASE "$REGRESS_DB" SET lc_time TO 'C';
ALTER DATABASE "$REGRESS_DB" SET bytea_output TO 'hex';
ALTER DATABASE "$REGRESS_DB" SET timezone_abbreviations TO 'Default';
EOF
    psql_direct -d "$REGRESS_DB" -c "create table public.customers (id int primary key, name text, phone text, id_card text, city text)" >/dev/null
}

run_way() {
    local way=$1
    local port=$PGPORT out=$WORK/out-$way extra=() log_from rc=0 t0 t1
    mkdir -p "$out"
    [[ $RUN_USER == "$(id -un)" ]] || chown "$RUN_USER" "$out"
    # A fresh database each time: pg_regress drops and creates it itself, except
    # for policy-tables, which brings its own.
    psql_direct -d postgres -c "drop database if exists $REGRESS_DB" >/dev/null
    if [[ $way == *-tables ]]; then
        make_regression_db
        extra=(--use-existing)
    fi
    case $way in
        passthrough) pgveil_start "" "$way" ;;
        policy | policy-tables)
            pgveil_start "--policy $WORK/policy.yaml --keyring $WORK/pgveil.keys --catalog-user $CATALOG_USER" "$way" ;;
    esac
    [[ $way == direct* ]] || port=$PGVEIL_PORT
    log "way $way: running the suite$([[ $way == direct* ]] && echo " directly" || echo " through pgveil $PGVEIL_VERSION") (port $port)"
    others_busy && BUSY_DURING=1
    log_from=$(stat -c %s "$PGLOG")
    t0=$(date +%s.%N)
    as_pg timeout "$REGRESS_TIMEOUT" "$PG_REGRESS" "${REGRESS_OPTS[@]}" --port="$port" --outputdir="$out" "${extra[@]}" \
        >"$WORK/regress-$way.log" 2>&1 || rc=$?
    t1=$(date +%s.%N)
    others_busy && BUSY_DURING=1
    RC[$way]=$rc
    WALL[$way]=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
    (( rc == 124 )) && log "way $way: pg_regress killed after ${REGRESS_TIMEOUT}s"
    if [[ $way != direct* ]]; then
        scrape_metrics "$WORK/metrics-$way.txt"
        CAT_READS[$way]=$(metric_sum "$WORK/metrics-$way.txt" pgveil_catalog_reads_total)
        CAT_METRIC_CONNS[$way]=$(metric_sum "$WORK/metrics-$way.txt" pgveil_catalog_connections_total)
        DENIED[$way]=$(metric_sum "$WORK/metrics-$way.txt" pgveil_denied_queries_total)
        pgveil_stop
    else
        CAT_READS[$way]="-"; CAT_METRIC_CONNS[$way]="-"; DENIED[$way]="-"
    fi
    # Backend connections: every "connection authorized" line logged during the run.
    tail -c +"$((log_from + 1))" "$PGLOG" >"$WORK/postgres-$way.log"
    CONNS[$way]=$(grep -c 'connection authorized:' "$WORK/postgres-$way.log" || true)
    CAT_CONNS[$way]=$(grep -c "connection authorized: user=$CATALOG_USER " "$WORK/postgres-$way.log" || true)
    # Per-test lines: "test NAME ... ok", "     NAME ... FAILED", "... failed (ignored)".
    grep -E '^(test |     )[^ ]+ +\.\.\. ' "$WORK/regress-$way.log" \
        | sed -E 's/^(test |     )([^ ]+) +\.\.\. +([a-zA-Z]+).*/\2 \3/' >"$WORK/tests-$way.txt" || true
    PASSED[$way]=$(awk '$2 == "ok" {n++} END {print n + 0}' "$WORK/tests-$way.txt")
    awk '$2 != "ok" {print $1}' "$WORK/tests-$way.txt" >"$WORK/failed-$way.txt"
    FAILED_N[$way]=$(wc -l <"$WORK/failed-$way.txt")
    if [[ $way != direct ]] && has_way direct; then
        diff -rq "$WORK/out-direct/results" "$out/results" 2>/dev/null \
            | sed -E -e 's/^Files .*\/results\/([^ ]+) and .* differ$/\1/' \
                     -e 's/^Only in .*\/out-([a-z-]+)\/results: (.*)$/\2 (only in \1)/' >"$WORK/differ-$way.txt" || true
        if [[ -s $WORK/differ-$way.txt ]]; then
            IDENT[$way]="no: $(wc -l <"$WORK/differ-$way.txt") files differ"
        else
            IDENT[$way]="yes"
        fi
    else
        IDENT[$way]="-"
    fi
    log "way $way: ${PASSED[$way]}/$TOTAL_TESTS passed in ${WALL[$way]}s (pg_regress exit $rc), ${CONNS[$way]} backend connections"
}

if has_way direct && [[ ${WAYS[0]} != direct ]]; then
    die "direct must be the first way in WAYS (the others are compared with it)"
fi
for w in "${WAYS[@]}"; do run_way "$w"; done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------ report --

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR=$REPO/bench-results
mkdir -p "$OUT_DIR"
OUT=$OUT_DIR/pg_regress-$STAMP.md
CMD="PGVEIL_BIN=$([[ -n ${PGVEIL_BIN:-} ]] && echo "$PGVEIL_BIN" || echo "-") WAYS=\"${WAYS[*]}\" MAX_CONNECTIONS=$MAX_CONNECTIONS${PGVEIL_EXTRA_ARGS:+ PGVEIL_EXTRA_ARGS=\"$PGVEIL_EXTRA_ARGS\"} benches/pg_regress.sh"
describe() {
    case $1 in
        direct) echo "direct" ;;
        passthrough) echo "pgveil, no policy" ;;
        policy) echo "pgveil, policy (table absent)" ;;
        policy-tables) echo "pgveil, policy (table present)" ;;
        direct-tables) echo "direct (table present)" ;;
    esac
}
# The most frequent error lines the failing ways got instead of the expected output.
top_errors() {
    { grep -E '^\+(ERROR|FATAL|psql:|server closed|connection to server)' "$1" || true; } \
        | sed -E -e 's/^\+//' -e 's/[0-9]{3,}/N/g' | sort | uniq -c | sort -rn | awk -v n="${2:-10}" 'NR <= n'
}

{
    echo "# pg_regress: PostgreSQL's regression suite directly and through pgveil"
    echo
    echo "- Command: \`$CMD\`"
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- Machine: $(nproc) CPUs, Linux $(uname -r); rustc/cargo seen during runs: $([[ $BUSY_DURING -eq 1 ]] && echo yes || echo no); load average before $LOAD_BEFORE, after $LOAD_AFTER"
    echo "- PostgreSQL $PG_VERSION (initdb --no-locale -E UTF8, fsync=off, max_connections=100, log_connections=on); suite: $REGRESS_SRC${SRC_VERSION:+ ($SRC_VERSION)}, parallel_schedule ($TOTAL_TESTS tests), pg_regress --max-concurrent-tests=20 --max-connections=$MAX_CONNECTIONS, installcheck mode over TCP"
    needs_pgveil && echo "- pgveil $PGVEIL_VERSION ($PGVEIL_BIN), upstream over TCP${PGVEIL_EXTRA_ARGS:+, extra arguments: $PGVEIL_EXTRA_ARGS}; policy: one table, public.customers (3 classified columns, 2 encrypted); catalog login $CATALOG_USER (LOGIN only)"
    echo
    echo "| way | passed | identical to direct | wall s | backend connections (of which catalog) | catalog reads / connections (metrics) | denied (metrics) |"
    echo "|---|---:|---|---:|---:|---:|---:|"
    for w in "${WAYS[@]}"; do
        passed="${PASSED[$w]}/$TOTAL_TESTS"
        (( RC[$w] == 0 || RC[$w] == 1 )) || passed="$passed (pg_regress exit ${RC[$w]})"
        echo "| $(describe "$w") | $passed | ${IDENT[$w]} | ${WALL[$w]} | ${CONNS[$w]} (${CAT_CONNS[$w]}) | ${CAT_READS[$w]} / ${CAT_METRIC_CONNS[$w]} | ${DENIED[$w]} |"
    done
    echo
    echo "Passed: tests pg_regress reported \`ok\`. Identical: every results/*.out file byte-for-byte equal to the direct run's."
    echo "Backend connections: \"connection authorized\" lines in the server log during the run (pg_regress's own psql sessions, every test's, and pgveil's catalog connections, counted in brackets)."
    echo "Catalog reads / connections and denied: pgveil_catalog_reads_total, pgveil_catalog_connections_total and pgveil_denied_queries_total summed over labels at the end of the run (\"-\": not exported by this binary, or no pgveil)."
    echo
    for w in "${WAYS[@]}"; do
        [[ ${FAILED_N[$w]} -gt 0 || -s $WORK/differ-$w.txt || ${RC[$w]} -gt 1 ]] || continue
        echo "## $(describe "$w"): what differs"
        echo
        if [[ ${FAILED_N[$w]} -gt 0 ]]; then
            echo "Failed (${FAILED_N[$w]}): $(tr '\n' ' ' <"$WORK/failed-$w.txt")"
            echo
        fi
        if [[ -s $WORK/differ-$w.txt ]]; then
            echo "Results that differ from direct: $(tr '\n' ' ' <"$WORK/differ-$w.txt")"
            echo
        fi
        if (( RC[$w] > 1 )); then
            echo "pg_regress exited with ${RC[$w]}; the end of its output:"
            echo
            echo '```'
            tail -15 "$WORK/regress-$w.log"
            echo '```'
            echo
        fi
        if [[ -s $WORK/out-$w/regression.diffs ]]; then
            cp "$WORK/out-$w/regression.diffs" "$OUT_DIR/pg_regress-$STAMP-$w.diffs"
            echo "Most frequent error lines in regression.diffs (count, numbers of 3+ digits as N):"
            echo
            echo '```'
            top_errors "$WORK/out-$w/regression.diffs" 15
            echo '```'
            echo
            echo "The first $DIFF_LINES lines of regression.diffs (all of it: pg_regress-$STAMP-$w.diffs):"
            echo
            echo '```diff'
            head -"$DIFF_LINES" "$WORK/out-$w/regression.diffs"
            echo '```'
            echo
        fi
        if [[ -s $WORK/pgveil-$w.log ]] && grep -qE 'WARN|ERROR' "$WORK/pgveil-$w.log"; then
            echo "pgveil's log, most frequent WARN/ERROR lines (timestamps and numbers stripped):"
            echo
            echo '```'
            { grep -E 'WARN|ERROR' "$WORK/pgveil-$w.log" || true; } | sed -E -e 's/^[^ ]*[0-9]{4}-[0-9]{2}-[0-9]{2}T[^ ]* *//' \
                -e 's/[0-9]{3,}/N/g' | cut -c1-300 | sort | uniq -c | sort -rn | awk 'NR <= 10'
            echo '```'
            echo
        fi
    done
} >"$OUT"

# The table, failing tests and the start of the diffs on stderr too.
{
    echo
    printf '%-32s %-10s %-26s %8s %16s %14s %8s\n' way passed "identical to direct" "wall s" "backend conns" "cat rd/conn" denied
    for w in "${WAYS[@]}"; do
        printf '%-32s %-10s %-26s %8s %16s %14s %8s\n' "$(describe "$w")" "${PASSED[$w]}/$TOTAL_TESTS" "${IDENT[$w]}" \
            "${WALL[$w]}" "${CONNS[$w]} (${CAT_CONNS[$w]} cat)" "${CAT_READS[$w]}/${CAT_METRIC_CONNS[$w]}" "${DENIED[$w]}"
    done
    for w in "${WAYS[@]}"; do
        [[ ${FAILED_N[$w]} -gt 0 || ${RC[$w]} -gt 1 ]] || continue
        echo
        echo "== $(describe "$w"): ${FAILED_N[$w]} failed: $(tr '\n' ' ' <"$WORK/failed-$w.txt")"
        (( RC[$w] > 1 )) && { echo "-- pg_regress exited with ${RC[$w]}:"; tail -10 "$WORK/regress-$w.log"; }
        if [[ -s $WORK/out-$w/regression.diffs ]]; then
            echo "-- most frequent error lines:"
            top_errors "$WORK/out-$w/regression.diffs" 10
            echo "-- regression.diffs, first $DIFF_LINES lines:"
            head -"$DIFF_LINES" "$WORK/out-$w/regression.diffs"
        fi
    done
    echo
} >&2
log "wrote $OUT"
