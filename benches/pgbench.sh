#!/usr/bin/env bash
# benches/pgbench.sh: pass-through benchmark of pgveil against direct
# PostgreSQL and pgbouncer (session mode), plus pgveil's memory use.
#
# This is a benchmark, not a test. It:
#   1. finds the PostgreSQL server binaries (like the test harness does),
#      pgbench, psql and pgbouncer;
#   2. starts a throwaway PostgreSQL on a free loopback port (fsync=off, trust
#      auth on 127.0.0.1) and initialises pgbench data (scale $SCALE);
#   3. starts pgbouncer in session mode, the release pgveil and null-relay (a
#      byte copier: the floor for any relay) in front of it, each on its own
#      free port; pgbouncer and pgveil twice, once reaching PostgreSQL over
#      loopback TCP and once over its Unix-domain socket;
#   4. for each workload (-S simple, -S prepared, TPC-B-like simple) runs
#      $ROUNDS rounds; each round runs every target once, in an order that
#      rotates from round to round, so slow drift on a shared machine hits all
#      targets alike; reports the median TPS and latency per target;
#   5. measures pgveil's RSS with 1,000 idle client connections, and its peak
#      RSS while a 1,000,000-row result streams through it;
#   6. prints a table and writes it as markdown to
#      bench-results/pgbench-<timestamp>.md (git-ignored).
#
# Everything runs on 127.0.0.1 and is torn down on exit or Ctrl-C.
# It must run as root or as a user allowed to run PostgreSQL: when root, the
# server and pgbouncer (which refuse to run as root) run as user "postgres".
#
# Environment (all optional):
#   SCALE=10          pgbench scale factor
#   CLIENTS=8         pgbench -c
#   THREADS=2         pgbench -j
#   DURATION=20       seconds per pgbench run
#   ROUNDS=3          rounds per workload (median is taken over rounds)
#   WARMUP=5          seconds of untimed direct warm-up before each workload (0: none)
#   IDLE_CONNS=1000   idle connections for the memory measurement (0: skip memory part)
#   BIG_ROWS=1000000  rows of the large-result memory measurement (0: skip)
#   PGVEIL_BIN=path   use this pgveil binary instead of building target/release/pgveil
#   PGVEIL_EXTRA_ARGS extra arguments for `pgveil serve`, e.g. "--worker-threads 1"
#   NULL_RELAY_BIN=path  use this null-relay binary instead of building it
#   PGVEIL_BASE_BIN=path  a second pgveil binary (e.g. built from the previous commit),
#                     measured as target pgveil-base (pass-through, over TCP) and as
#                     pgveil-policy-base (enforcing the policy, wherever pgveil-policy runs)
#   TARGETS="direct pgbouncer pgveil null-relay haproxy pgbouncer-unix pgveil-unix pgveil-policy"
#                     targets to measure (direct must come first); pgveil-policy
#                     is pgveil enforcing a policy on a table pgbench -S never
#                     touches (the fast path), over TCP; haproxy is HAProxy in
#                     TCP mode (apt-get install -y haproxy)
#   WORKLOADS="select-simple select-prepared tpcb-simple read-transform"
#                     read-transform: 10 customer rows with 3 protected columns
#                     (2 decrypt + mask, 1 mask) as a support login through
#                     pgveil-policy, against the same query on a plaintext copy
#                     through pgveil without a policy (and direct)
#                     pgveil-mask (read-transform only) is pgveil with a policy that
#                     masks the same 3 columns of the plaintext copy: the transform
#                     without decryption, so that the report splits enforcement's
#                     cost into bookkeeping and masks (pgveil-mask / pgveil) and
#                     decryption of the wider envelopes (pgveil-policy / pgveil-mask)
#   READ_ROWS=10      rows each read-transform transaction reads (1..10000)
#   PLAN_CACHE_MODE=force_generic_plan
#                     plan_cache_mode of the support login that runs read-transform
#                     (empty: the server's default, auto). The encrypted table's rows
#                     are wider, and under auto PostgreSQL keeps custom-planning its
#                     prepared read while the plaintext copy gets the generic plan:
#                     ~0.6x with no proxy at all (docs/benchmarks.md). One mode for
#                     both tables measures pgveil, not the planner.
#   AUDIT_SYSLOG=udp://127.0.0.1:PORT  target pgveil-audit also sends each record to
#                     this syslog address (audit.syslog, CEF): the forwarder's cost
#   AUDIT_ANOMALY=1   target pgveil-audit's policy also has a rows limit with then: deny
#                     on level important, never reached (max_rows 10^9 per 1h): the
#                     cost of counting every row as it leaves
#   PGVEIL_PG_BINDIR  directory of initdb/pg_ctl/postgres
#   WAIT_IDLE=1       before measuring, wait until no rustc/cargo ran for 30 s
#                     (up to WAIT_IDLE_MAX=600 s); 0 disables
set -euo pipefail
export LC_ALL=C

SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-5}
IDLE_CONNS=${IDLE_CONNS:-1000}
BIG_ROWS=${BIG_ROWS:-1000000}
WAIT_IDLE=${WAIT_IDLE:-1}
WAIT_IDLE_MAX=${WAIT_IDLE_MAX:-600}
WORKLOADS=${WORKLOADS:-"select-simple select-prepared tpcb-simple read-transform write-insert copy-in"}
COPY_ROWS=${COPY_ROWS:-1000000}
PLAN_CACHE_MODE=${PLAN_CACHE_MODE-force_generic_plan}
READ_ROWS=${READ_ROWS:-10}
[[ $READ_ROWS =~ ^[0-9]+$ ]] && (( READ_ROWS >= 1 && READ_ROWS <= 10000 )) || { echo "READ_ROWS must be 1..10000" >&2; exit 1; }
PGVEIL_EXTRA_ARGS=${PGVEIL_EXTRA_ARGS:-}
PGVEIL_EXTRA_ARGS_GIVEN=$PGVEIL_EXTRA_ARGS   # as given, for the report
# Which targets to measure. direct, pgbouncer and pgveil reach PostgreSQL over
# loopback TCP; the *-unix variants reach it over its Unix-domain socket (the
# co-located deployment); null-relay (benches/null_relay.rs) only copies bytes,
# the floor for any relaying proxy. Clients always connect over TCP.
read -r -a TARGETS <<<"${TARGETS:-direct pgbouncer pgveil null-relay haproxy pgbouncer-unix pgveil-unix pgveil-policy}"
has_target() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }
[[ ${TARGETS[0]:-} == direct ]] || { echo "TARGETS must start with direct (ratios are to direct)" >&2; exit 1; }
for t in "${TARGETS[@]}"; do
    case $t in
        direct | pgbouncer | pgveil | null-relay | haproxy | pgbouncer-unix | pgveil-unix | pgveil-policy) ;;
        pgveil-audit) has_target pgveil-policy || { echo "target pgveil-audit needs pgveil-policy" >&2; exit 1; } ;;
        pgveil-mask) has_target pgveil-policy || { echo "target pgveil-mask needs pgveil-policy" >&2; exit 1; } ;;
        pgveil-base) [[ -x ${PGVEIL_BASE_BIN:-} ]] || { echo "target pgveil-base needs PGVEIL_BASE_BIN" >&2; exit 1; } ;;
        pgveil-policy-base) [[ -x ${PGVEIL_BASE_BIN:-} ]] && has_target pgveil-policy || { echo "target pgveil-policy-base needs PGVEIL_BASE_BIN and pgveil-policy" >&2; exit 1; } ;;
        *) echo "unknown target $t in TARGETS" >&2; exit 1 ;;
    esac
done

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
DB=bench
DBUSER=postgres

log() { printf '[pgbench.sh] %s\n' "$*" >&2; }
die() { printf '[pgbench.sh] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- binaries --

# has_server_bins, find_pg_bindir
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/pg_bindir.sh"

PG_BINDIR=$(find_pg_bindir) || {
    echo "PostgreSQL server binaries not found (looked in \$PGVEIL_PG_BINDIR, PATH, pg_config --bindir, /usr/lib/postgresql/*/bin)." >&2
    echo "install with: apt-get update && apt-get install -y postgresql" >&2
    exit 1
}
# Client tools: prefer the ones next to the server, fall back to PATH.
PGBENCH=$PG_BINDIR/pgbench; [[ -x $PGBENCH ]] || PGBENCH=$(command -v pgbench || true)
PSQL=$PG_BINDIR/psql;       [[ -x $PSQL ]] || PSQL=$(command -v psql || true)
[[ " $WORKLOADS " != *" read-transform "* ]] || has_target pgveil-policy || die "the read-transform workload needs the pgveil-policy target"
[[ " $WORKLOADS " != *" write-insert "* && " $WORKLOADS " != *" copy-in "* ]] || has_target pgveil-policy || die "the write-insert and copy-in workloads need the pgveil-policy target"
[[ -n $PGBENCH ]] || die "pgbench not found; install with: apt-get update && apt-get install -y postgresql-contrib"
[[ -n $PSQL ]] || die "psql not found; install with: apt-get update && apt-get install -y postgresql-client"
PGBOUNCER=$(command -v pgbouncer || true)
[[ -z $PGBOUNCER && -x /usr/sbin/pgbouncer ]] && PGBOUNCER=/usr/sbin/pgbouncer
if [[ -z $PGBOUNCER ]]; then
    echo "pgbouncer not found; install with: apt-get update && apt-get install -y pgbouncer" >&2
    exit 1
fi
HAPROXY=$(command -v haproxy || true)
[[ -z $HAPROXY && -x /usr/sbin/haproxy ]] && HAPROXY=/usr/sbin/haproxy
if has_target haproxy && [[ -z $HAPROXY ]]; then
    echo "haproxy not found; install with: apt-get update && apt-get install -y haproxy (or leave it out of TARGETS)" >&2
    exit 1
fi
command -v python3 >/dev/null 2>&1 || die "python3 not found (needed to open idle connections)"

# PostgreSQL and pgbouncer refuse to run as root: run them as "postgres".
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user to run the server as"
    RUN_USER=postgres
    # setpriv execs the command directly (so a background job's $! is the
    # server's own pid); runuser is the fallback.
    if command -v setpriv >/dev/null 2>&1; then
        AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    else
        AS_PG=(runuser -u postgres --)
    fi
else
    RUN_USER=$(id -un)
    AS_PG=()
fi
# Run a command as $RUN_USER from the work dir (the postgres user may not be
# able to read the caller's current directory).
as_pg() { (cd "$WORK" && exec "${AS_PG[@]}" "$@"); }

# ------------------------------------------------------------------- pgveil --

if [[ -n ${PGVEIL_BIN:-} ]]; then
    [[ -x $PGVEIL_BIN ]] || die "PGVEIL_BIN=$PGVEIL_BIN is not executable"
else
    log "building pgveil (cargo build --release -p pgveil)"
    (cd "$REPO" && cargo build --release -p pgveil)
    PGVEIL_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/pgveil
fi
if has_target pgveil-policy; then
    log "building seal-table (cargo build --release -p pgveil-benches --bin seal-table)"
    (cd "$REPO" && cargo build --release -p pgveil-benches --bin seal-table)
    SEAL_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/seal-table
fi
if has_target null-relay; then
    if [[ -n ${NULL_RELAY_BIN:-} ]]; then
        [[ -x $NULL_RELAY_BIN ]] || die "NULL_RELAY_BIN=$NULL_RELAY_BIN is not executable"
    else
        log "building null-relay (cargo build --release -p pgveil-benches --bin null-relay)"
        (cd "$REPO" && cargo build --release -p pgveil-benches --bin null-relay)
        NULL_RELAY_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/null-relay
    fi
fi

# ------------------------------------------------------------ temp + cleanup --

WORK=$(mktemp -d /tmp/pgveil-bench.XXXXXX)
chown "$RUN_USER" "$WORK" 2>/dev/null || true
chmod 755 "$WORK"
PGDATA=$WORK/data
PGVEIL_PID=""
PGVEIL_UNIX_PID=""
PGVEIL_POLICY_PID=""
PGVEIL_AUDIT_PID=""
PGVEIL_MASK_PID=""
PGVEIL_BASE_PID=""
PGVEIL_POLICY_BASE_PID=""
HAPROXY_PID=""
NULL_RELAY_PID=""
BOUNCER_PID=""
declare -A TARGET_PID=()   # proxy target -> pid, for its CPU time per transaction
IDLE_PID=""
PG_STARTED=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    for pid in $IDLE_PID $PGVEIL_PID $PGVEIL_UNIX_PID $PGVEIL_POLICY_PID $PGVEIL_AUDIT_PID $PGVEIL_MASK_PID $PGVEIL_BASE_PID $PGVEIL_POLICY_BASE_PID $NULL_RELAY_PID $HAPROXY_PID $BOUNCER_PID; do
        kill "$pid" 2>/dev/null
    done
    for pid in $IDLE_PID $PGVEIL_PID $PGVEIL_UNIX_PID $PGVEIL_POLICY_PID $PGVEIL_AUDIT_PID $PGVEIL_MASK_PID $BOUNCER_PID; do
        # Give each up to 5 s to exit, then kill it.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [[ $PG_STARTED -eq 1 ]]; then
        as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" stop -m immediate >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free loopback ports: bind to port 0 and read back what the kernel chose.
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
read -r PGPORT BOUNCER_PORT PGVEIL_PORT BOUNCER_UNIX_PORT PGVEIL_UNIX_PORT NULL_RELAY_PORT PGVEIL_POLICY_PORT HAPROXY_PORT PGVEIL_BASE_PORT PGVEIL_AUDIT_PORT PGVEIL_MASK_PORT PGVEIL_POLICY_BASE_PORT < <(free_ports 12)

# Wait until something accepts TCP connections on 127.0.0.1:$1.
wait_port() {
    local port=$1 what=$2
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    die "$what did not start listening on port $port"
}

# ---------------------------------------------------------------- postgres --

log "PostgreSQL binaries: $PG_BINDIR"
as_pg "$PG_BINDIR/initdb" -D "$PGDATA" -U "$DBUSER" -A trust -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
cat >>"$PGDATA/postgresql.conf" <<EOF
# pgveil benchmark settings
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
max_connections = 200
logging_collector = off
EOF
# Trust on loopback only (initdb -A trust already sets this; be explicit).
cat >"$PGDATA/pg_hba.conf" <<EOF
local all all trust
host  all all 127.0.0.1/32 trust
EOF

# Start (or restart) PostgreSQL with a given max_connections.
pg_start() {
    as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" -w -t 60 \
        -o "-c max_connections=$1" start >/dev/null \
        || { tail -20 "$WORK/postgres.log" >&2; die "PostgreSQL failed to start"; }
    PG_STARTED=1
}
pg_stop() {
    as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -w -m fast stop >/dev/null
    PG_STARTED=0
}
pg_start 200
PG_VERSION=$("$PSQL" -h 127.0.0.1 -p "$PGPORT" -U "$DBUSER" -d postgres -XAtqc 'show server_version')
log "PostgreSQL $PG_VERSION on port $PGPORT"

"$PSQL" -h 127.0.0.1 -p "$PGPORT" -U "$DBUSER" -d postgres -Xqc "create database $DB" >/dev/null
log "pgbench -i -s $SCALE"
"$PGBENCH" -h 127.0.0.1 -p "$PGPORT" -U "$DBUSER" -i -s "$SCALE" -q "$DB" >"$WORK/pgbench-init.log" 2>&1 \
    || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }

# ------------------------------------------------- protected data (policy) --

# A customers table (10,000 rows) that pgveil-policy protects, sealed with a
# fresh keyring, and a plaintext copy (customers_plain) that no policy names.
if has_target pgveil-policy; then
    "$PSQL" -h 127.0.0.1 -p "$PGPORT" -U "$DBUSER" -d "$DB" -Xq -v ON_ERROR_STOP=1 >/dev/null <<'EOF'
create role support_app login;
create table customers (id int primary key, name text, phone text, id_card text, city text);
insert into customers
  select i, '王' || chr(19968 + i % 2000) || chr(20000 + i % 3000),
         '138' || lpad(i::text, 8, '0'),
         '110101' || (19500101 + i % 500000)::text || lpad((i % 10000)::text, 4, '0'),
         'city ' || (i % 50)
  from generate_series(1, 10000) i;
create table customers_plain as select * from customers;
alter table customers_plain add primary key (id);
grant select on all tables in schema public to support_app;
-- Write workloads: inserts and COPY into 3 encrypted columns, and a plaintext twin.
create table customers_w (id bigint generated always as identity primary key,
                          phone text, id_card text, address text);
create table customers_w_plain (like customers_w including all);
EOF
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
  public.customers_w:
    phone:   { level: important, kind: cn_mobile,  encrypt: deterministic }
    id_card: { level: core,      kind: cn_id_card, encrypt: deterministic }
    address: { level: important, kind: address,    encrypt: randomized }
rules:
  - { roles: [support], level: important, action: mask }
  - { roles: [support], level: core,      action: mask }
defaults: { core: deny, important: mask, general: allow }
EOF
    # pgveil-mask: the same masks on the plaintext copy, nothing to decrypt.
    sed -e 's/public.customers:/public.customers_plain:/' -e '/public.customers_w:/,/address:/d' \
        -e 's/, *encrypt: [a-z]*//' "$WORK/policy.yaml" >"$WORK/policy-mask.yaml"
    "$PGVEIL_BIN" keys generate --out "$WORK/pgveil.keys" >/dev/null
    "$SEAL_BIN" "host=127.0.0.1 port=$PGPORT user=$DBUSER dbname=$DB" "$WORK/policy.yaml" "$WORK/pgveil.keys" >&2 \
        || die "sealing the customers table failed"
    # Sealing rewrote every row in place: vacuum now, so autovacuum does not start
    # in the middle of a measurement, and give both tables fresh statistics.
    plan_sql=""
    [[ -z $PLAN_CACHE_MODE ]] || plan_sql="alter role support_app set plan_cache_mode = '$PLAN_CACHE_MODE';"
    "$PSQL" -h 127.0.0.1 -p "$PGPORT" -U "$DBUSER" -d "$DB" -Xq -v ON_ERROR_STOP=1 >/dev/null \
        -c "vacuum analyze customers" -c "vacuum analyze customers_plain" ${plan_sql:+-c "$plan_sql"} \
        || die "vacuum after sealing failed"
    # The same 10-row read for every target: the protected table through
    # pgveil-policy, its plaintext copy everywhere else.
    for t in "${TARGETS[@]}"; do
        table=customers_plain
        [[ $t == pgveil-policy || $t == pgveil-audit || $t == pgveil-policy-base ]] && table=customers
        printf '\\set lo random(1, %d)\nSELECT id, name, phone, id_card FROM %s WHERE id BETWEEN :lo AND :lo + %d;\n' \
            $((10001 - READ_ROWS)) "$table" $((READ_ROWS - 1)) >"$WORK/read-$t.sql"
        # One INSERT of 3 values that pgveil-policy encrypts (plaintext elsewhere).
        wtable=customers_w_plain
        [[ $t == pgveil-policy || $t == pgveil-audit || $t == pgveil-policy-base ]] && wtable=customers_w
        printf '\\set p random(13800000000, 13899999999)\n\\set c random(110101190001010000, 110101209912319999)\n\\set a random(1, 999999999)\nINSERT INTO %s (phone, id_card, address) VALUES (:p, :c, :a);\n' "$wtable" >"$WORK/write-$t.sql"
    done
    if [[ " $WORKLOADS " == *" copy-in "* ]]; then
        awk -v n="$COPY_ROWS" 'BEGIN {for (i = 1; i <= n; i++) printf "138%08d,110101%012d,\"Road %d, Block %d\"\n", i, i, i, i % 97}' >"$WORK/copy.csv"
    fi
fi

# --------------------------------------------------------------- pgbouncer --

# Session mode; one server connection per client, so the pool never queues.
POOL_SIZE=$((CLIENTS + 10))
cat >"$WORK/userlist.txt" <<EOF
"$DBUSER" ""
EOF
chown "$RUN_USER" "$WORK/userlist.txt" 2>/dev/null || true
# Start a pgbouncer: $1 name, $2 listen port, $3 upstream host (127.0.0.1, or
# the socket directory for the Unix-domain socket). Appends to BOUNCER_PID.
bouncer_start() {
    local name=$1 port=$2 host=$3
    cat >"$WORK/$name.ini" <<EOF
[databases]
* = host=$host port=$PGPORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = session
default_pool_size = $POOL_SIZE
max_client_conn = 200
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
logfile = $WORK/$name.log
log_connections = 0
log_disconnections = 0
EOF
    chown "$RUN_USER" "$WORK/$name.ini" 2>/dev/null || true
    # Not via as_pg: the subshell must exec straight into pgbouncer so that $!
    # is pgbouncer's pid (pgbouncer writes its own log file as $RUN_USER).
    (cd "$WORK" && exec "${AS_PG[@]}" "$PGBOUNCER" "$WORK/$name.ini") >"$WORK/$name.out" 2>&1 &
    BOUNCER_PID="$BOUNCER_PID $!"
    TARGET_PID[$name]=$!
    wait_port "$port" "$name"
}
PGBOUNCER_VERSION=$("$PGBOUNCER" --version 2>/dev/null | head -1 | awk '{print $2}')
if has_target pgbouncer; then
    bouncer_start pgbouncer "$BOUNCER_PORT" 127.0.0.1
    log "pgbouncer $PGBOUNCER_VERSION on port $BOUNCER_PORT (session mode, pool $POOL_SIZE, upstream over TCP)"
fi
if has_target pgbouncer-unix; then
    bouncer_start pgbouncer-unix "$BOUNCER_UNIX_PORT" "$WORK"
    log "pgbouncer $PGBOUNCER_VERSION on port $BOUNCER_UNIX_PORT (session mode, pool $POOL_SIZE, upstream over the Unix socket)"
fi

# ------------------------------------------------------------------ pgveil --

# Start pgveil on port $1 (default $PGVEIL_PORT) with upstream host $2
# (default 127.0.0.1; a directory means PostgreSQL's Unix-domain socket there);
# sets PGVEIL_PID. $PGVEIL_EXTRA_ARGS is split into words on purpose.
pgveil_start() {
    local port=${1:-$PGVEIL_PORT} host=${2:-127.0.0.1}
    "$PGVEIL_BIN" serve \
        --listen "127.0.0.1:$port" \
        --upstream-host "$host" --upstream-port "$PGPORT" \
        --upstream-tls-mode disable \
        --metrics-listen off \
        --max-client-connections 2000 \
        $PGVEIL_EXTRA_ARGS \
        >>"$WORK/pgveil.log" 2>&1 &
    PGVEIL_PID=$!
    wait_port "$port" pgveil
}
pgveil_stop() {
    kill "$PGVEIL_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$PGVEIL_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PGVEIL_PID" 2>/dev/null || true
    wait "$PGVEIL_PID" 2>/dev/null || true
    PGVEIL_PID=""
}
# Read a field (VmRSS, VmHWM) of /proc/PID/status, in kB.
proc_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
mb() { awk -v kb="$1" 'BEGIN {printf "%.1f", kb / 1024}'; }

PGVEIL_VERSION=$("$PGVEIL_BIN" --version 2>/dev/null | head -1 | awk '{print $2}')
PGVEIL_UNIX_PID=""
if has_target pgveil-unix; then
    pgveil_start "$PGVEIL_UNIX_PORT" "$WORK"
    PGVEIL_UNIX_PID=$PGVEIL_PID
    TARGET_PID[pgveil-unix]=$PGVEIL_PID
    log "pgveil $PGVEIL_VERSION on port $PGVEIL_UNIX_PORT (upstream over the Unix socket)"
fi
pgveil_start
TARGET_PID[pgveil]=$PGVEIL_PID
log "pgveil $PGVEIL_VERSION on port $PGVEIL_PORT (upstream over TCP)"
# Start one more pgveil for target $1 on port $2 with the extra arguments $3 (binary
# $PGVEIL_BIN unless $4 names another); records its pid for the target and prints it.
start_extra() {
    local keep=$PGVEIL_PID keep_bin=$PGVEIL_BIN
    PGVEIL_BIN=${4:-$PGVEIL_BIN} PGVEIL_EXTRA_ARGS="$PGVEIL_EXTRA_ARGS $3" pgveil_start "$2"
    TARGET_PID[$1]=$PGVEIL_PID
    EXTRA_PID=$PGVEIL_PID
    PGVEIL_PID=$keep PGVEIL_BIN=$keep_bin
}
POLICY_ARGS="--policy $WORK/policy.yaml --keyring $WORK/pgveil.keys --catalog-user $DBUSER"
if has_target pgveil-policy; then
    start_extra pgveil-policy "$PGVEIL_POLICY_PORT" "$POLICY_ARGS"
    PGVEIL_POLICY_PID=$EXTRA_PID
    log "pgveil $PGVEIL_VERSION on port $PGVEIL_POLICY_PORT enforcing a policy (upstream over TCP)"
fi
if has_target pgveil-audit; then
    # The same policy, plus the audit log (fsync at most once a second, the default).
    printf 'audit:\n  file: %s/audit/audit.jsonl\n  fsync: interval\n' "$WORK" >"$WORK/audit.yaml"
    if [[ -n ${AUDIT_SYSLOG:-} ]]; then
        printf '  syslog: { address: "%s", format: cef }\n' "$AUDIT_SYSLOG" >>"$WORK/audit.yaml"
    fi
    mkdir -p "$WORK/audit"
    AUDIT_POLICY_ARGS=$POLICY_ARGS
    if [[ ${AUDIT_ANOMALY:-0} == 1 ]]; then
        cp "$WORK/policy.yaml" "$WORK/policy-anomaly.yaml"
        printf 'anomaly:\n  - { name: bench_watch, level: important, max_rows: 1000000000, per: 1h, then: deny }\n' \
            >>"$WORK/policy-anomaly.yaml"
        AUDIT_POLICY_ARGS=${POLICY_ARGS/policy.yaml/policy-anomaly.yaml}
    fi
    start_extra pgveil-audit "$PGVEIL_AUDIT_PORT" "--config $WORK/audit.yaml $AUDIT_POLICY_ARGS"
    PGVEIL_AUDIT_PID=$EXTRA_PID
    log "pgveil $PGVEIL_VERSION on port $PGVEIL_AUDIT_PORT enforcing a policy with the audit log on"
fi
if has_target pgveil-mask; then
    start_extra pgveil-mask "$PGVEIL_MASK_PORT" "${POLICY_ARGS/policy.yaml/policy-mask.yaml}"
    PGVEIL_MASK_PID=$EXTRA_PID
    log "pgveil $PGVEIL_VERSION on port $PGVEIL_MASK_PORT masking the plaintext copy (no decryption)"
fi
if has_target pgveil-policy-base; then
    start_extra pgveil-policy-base "$PGVEIL_POLICY_BASE_PORT" "$POLICY_ARGS" "$PGVEIL_BASE_BIN"
    PGVEIL_POLICY_BASE_PID=$EXTRA_PID
    log "pgveil-base ($PGVEIL_BASE_BIN) on port $PGVEIL_POLICY_BASE_PORT enforcing the policy"
fi
if has_target pgveil-base; then
    start_extra pgveil-base "$PGVEIL_BASE_PORT" "" "$PGVEIL_BASE_BIN"
    PGVEIL_BASE_PID=$EXTRA_PID
    log "pgveil-base ($PGVEIL_BASE_BIN) on port $PGVEIL_BASE_PORT (upstream over TCP)"
fi
if has_target haproxy; then
    cat >"$WORK/haproxy.cfg" <<EOF
global
    maxconn 4000
    nbthread 1
defaults
    mode tcp
    timeout connect 10s
    timeout client 1h
    timeout server 1h
frontend pg
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend pg
backend pg
    server pg1 127.0.0.1:$PGPORT
EOF
    "$HAPROXY" -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    TARGET_PID[haproxy]=$HAPROXY_PID
    wait_port "$HAPROXY_PORT" haproxy
    log "HAProxy $("$HAPROXY" -v | head -1 | awk '{print $3}') on port $HAPROXY_PORT (TCP mode, one thread)"
fi
if has_target null-relay; then
    "$NULL_RELAY_BIN" "127.0.0.1:$NULL_RELAY_PORT" "127.0.0.1:$PGPORT" >>"$WORK/null-relay.log" 2>&1 &
    NULL_RELAY_PID=$!
    TARGET_PID[null-relay]=$NULL_RELAY_PID
    wait_port "$NULL_RELAY_PORT" null-relay
    log "null-relay on port $NULL_RELAY_PORT (copies bytes only, upstream over TCP)"
fi

# ------------------------------------------------------- wait for quiet CPU --

# On a shared 2-core machine a concurrent compile skews everything; wait for
# 30 s without rustc/cargo (up to WAIT_IDLE_MAX s), and record what happened.
others_busy() { pgrep -x rustc >/dev/null 2>&1 || pgrep -x cargo >/dev/null 2>&1; }
MACHINE_NOTE="not checked (WAIT_IDLE=0)"
if [[ $WAIT_IDLE -eq 1 ]]; then
    log "waiting for 30 s without rustc/cargo (at most ${WAIT_IDLE_MAX}s)"
    quiet=0 waited=0
    while (( quiet < 30 && waited < WAIT_IDLE_MAX )); do
        if others_busy; then quiet=0; else quiet=$((quiet + 1)); fi
        sleep 1; waited=$((waited + 1))
    done
    if (( quiet >= 30 )); then
        MACHINE_NOTE="idle before the run (no rustc/cargo for 30 s; waited ${waited}s)"
    else
        MACHINE_NOTE="NOT idle: rustc/cargo still running after ${WAIT_IDLE_MAX}s"
    fi
    log "$MACHINE_NOTE"
fi
BUSY_DURING=0   # set to 1 if rustc/cargo is seen between runs
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- pgbench --

declare -A TARGET_PORT=([direct]=$PGPORT [pgbouncer]=$BOUNCER_PORT [pgveil]=$PGVEIL_PORT
                        [pgbouncer-unix]=$BOUNCER_UNIX_PORT [pgveil-unix]=$PGVEIL_UNIX_PORT
                        [null-relay]=$NULL_RELAY_PORT [pgveil-policy]=$PGVEIL_POLICY_PORT
                        [haproxy]=$HAPROXY_PORT [pgveil-base]=$PGVEIL_BASE_PORT
                        [pgveil-audit]=$PGVEIL_AUDIT_PORT [pgveil-mask]=$PGVEIL_MASK_PORT
                        [pgveil-policy-base]=$PGVEIL_POLICY_BASE_PORT)

# pgbench arguments for each workload. -S runs need no vacuum (-n); the
# TPC-B-like runs keep pgbench's default pre-run vacuum/truncate of history so
# every run starts from the same state.
workload_args() {
    case $1 in
        select-simple)   echo "-S -M simple -n" ;;
        select-prepared) echo "-S -M prepared -n" ;;
        tpcb-simple)     echo "-M simple" ;;
        read-transform)  echo "-M prepared -n -U support_app -f $WORK/read-$2.sql" ;;
        write-insert)    echo "-M prepared -n -f $WORK/write-$2.sql" ;;
        copy-in)         echo "copy" ;;
        *) die "unknown workload $1" ;;
    esac
}
# The targets a workload runs on: read-transform compares pgveil-policy with
# pgveil (no policy) and direct, both on the plaintext copy.
workload_targets() {
    local t
    for t in "${TARGETS[@]}"; do
        if [[ $1 == read-transform || $1 == write-insert ]]; then
            [[ $t == direct || $t == pgveil || $t == pgveil-policy || $t == pgveil-audit \
                || $t == pgveil-policy-base || ($t == pgveil-mask && $1 == read-transform) ]] || continue
        elif [[ $t == pgveil-mask ]]; then
            continue
        fi
        if [[ $1 == copy-in ]]; then
            [[ $t == pgveil || $t == pgveil-policy ]] || continue
        fi
        echo "$t"
    done
}
workload_label() {
    case $1 in
        select-simple)   echo "-S -M simple" ;;
        select-prepared) echo "-S -M prepared" ;;
        tpcb-simple)     echo "TPC-B-like -M simple" ;;
        read-transform)  echo "$READ_ROWS rows x 3 protected, -M prepared" ;;
        write-insert)    echo "INSERT 3 encrypted, -M prepared" ;;
        copy-in)         echo "COPY FROM ${COPY_ROWS} rows x 3 encrypted (rows/s)" ;;
    esac
}

# One COPY FROM STDIN (psql \copy, CSV) of $COPY_ROWS rows through target $1
# (port $2) into an emptied table; prints "rows_per_s seconds idle - proxy_us".
run_copy() {
    local target=$1 port=$2 table=customers_w_plain pid=${TARGET_PID[$1]:-} t0="" t1 start end
    [[ $target == pgveil-policy || $target == pgveil-policy-base ]] && table=customers_w
    "$PSQL" -h 127.0.0.1 -p "$PGPORT" -U "$DBUSER" -d "$DB" -Xq -c "truncate $table" >/dev/null
    [[ -n $pid ]] && t0=$(cpu_ticks "$pid")
    start=$(date +%s.%N)
    "$PSQL" -h 127.0.0.1 -p "$port" -U "$DBUSER" -d "$DB" -Xq -v ON_ERROR_STOP=1 \
        -c "\\copy $table (phone, id_card, address) from '$WORK/copy.csv' with (format csv)" >/dev/null \
        || die "COPY through $target failed"
    end=$(date +%s.%N)
    local proxy_us="-"
    if [[ -n $t0 ]]; then
        t1=$(cpu_ticks "$pid")
        proxy_us=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$COPY_ROWS" 'BEGIN {printf "%.2f", d / hz * 1e6 / n}')
    fi
    awk -v s="$start" -v e="$end" -v n="$COPY_ROWS" -v p="$proxy_us" 'BEGIN {printf "%.0f %.3f - - %s\n", n / (e - s), (e - s) * 1000, p}'
}

# lines: workload target round tps latency_ms idle_pct cs_per_tx proxy_us_per_tx
RAW=$WORK/raw.txt
: >"$RAW"
CLK_TCK=$(getconf CLK_TCK)

# CPU ticks (user + system) a process has used so far; fields 14 and 15 of
# /proc/PID/stat, counted after the ")" that ends the command name.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# Run pgbench once against target $1 (port $2) for $3 seconds; prints
# "tps latency_ms idle_pct cs_per_tx proxy_us_per_tx". While it runs, vmstat
# samples the whole machine's idle time and context switches, and the proxy's
# own CPU time is read from /proc ("-" for direct).
run_pgbench() {
    local target=$1 port=$2 seconds=$3; shift 3
    local out pid=${TARGET_PID[$target]:-} t0="" t1 vm
    [[ -n $pid ]] && t0=$(cpu_ticks "$pid")
    vmstat 1 "$seconds" >"$WORK/vmstat.txt" &
    vm=$!
    # shellcheck disable=SC2068 # word splitting of the workload args is intended
    out=$("$PGBENCH" -h 127.0.0.1 -p "$port" -U "$DBUSER" -c "$CLIENTS" -j "$THREADS" -T "$seconds" $@ "$DB" 2>&1) \
        || { echo "$out" >&2; die "pgbench failed on port $port"; }
    wait "$vm" 2>/dev/null || true
    local tps lat txs idle cs proxy_us="-"
    tps=$(awk '/^tps = / {print $3; exit}' <<<"$out")
    lat=$(awk '/^latency average = / {print $4; exit}' <<<"$out")
    txs=$(awk -F': *' '/^number of transactions actually processed/ {print $2; exit}' <<<"$out" | awk -F/ '{print $1}')
    [[ -n $tps && -n $lat && -n $txs ]] || { echo "$out" >&2; die "could not parse pgbench output"; }
    # vmstat: two header lines, then the since-boot line, then 1 s samples.
    read -r idle cs < <(awk 'NR > 3 {id += $15; cs += $12; n++} END {if (n) printf "%.0f %.0f\n", id / n, cs / n; else print "- -"}' "$WORK/vmstat.txt")
    cs=$(awk -v cs="$cs" -v tps="$tps" 'BEGIN {if (cs == "-") print "-"; else printf "%.2f", cs / tps}')
    if [[ -n $t0 ]]; then
        t1=$(cpu_ticks "$pid")
        proxy_us=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v n="$txs" 'BEGIN {printf "%.1f", d / hz * 1e6 / n}')
    fi
    echo "$tps $lat $idle $cs $proxy_us"
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

for w in $WORKLOADS; do
    mapfile -t WT < <(workload_targets "$w")
    if (( WARMUP > 0 )) && [[ $w != copy-in ]]; then
        log "$w: warm-up ${WARMUP}s (direct, not recorded)"
        run_pgbench direct "$PGPORT" "$WARMUP" "$(workload_args "$w" direct)" >/dev/null
    fi
    for ((r = 0; r < ROUNDS; r++)); do
        # Rotate the order: round 0 direct,pgbouncer,pgveil; round 1
        # pgbouncer,pgveil,direct; round 2 pgveil,direct,pgbouncer; ...
        for ((i = 0; i < ${#WT[@]}; i++)); do
            t=${WT[$(((i + r) % ${#WT[@]}))]}
            others_busy && BUSY_DURING=1
            if [[ $w == copy-in ]]; then
                res=$(run_copy "$t" "${TARGET_PORT[$t]}")
            else
                res=$(run_pgbench "$t" "${TARGET_PORT[$t]}" "$DURATION" "$(workload_args "$w" "$t")")
            fi
            read -r tps lat idle cs proxy_us <<<"$res"
            log "$w round $((r + 1))/$ROUNDS $t: tps=$tps latency=${lat}ms idle=${idle}% cs/tx=$cs proxy_cpu=${proxy_us}us/tx"
            echo "$w $t $((r + 1)) $tps $lat $idle $cs $proxy_us" >>"$RAW"
        done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------ memory --

IDLE_RSS_BEFORE="" IDLE_RSS_WITH="" BIG_HWM_BEFORE="" BIG_HWM_AFTER="" BIG_SECONDS=""
if (( IDLE_CONNS > 0 || BIG_ROWS > 0 )); then
    # Fresh processes so the pgbench runs do not colour the figures; PostgreSQL
    # needs room for the idle connections (its own memory cost is not measured).
    pgveil_stop
    if [[ -n $PGVEIL_UNIX_PID ]]; then PGVEIL_PID=$PGVEIL_UNIX_PID; pgveil_stop; PGVEIL_UNIX_PID=""; fi
    if [[ -n $PGVEIL_POLICY_PID ]]; then PGVEIL_PID=$PGVEIL_POLICY_PID; pgveil_stop; PGVEIL_POLICY_PID=""; fi
    if [[ -n $PGVEIL_AUDIT_PID ]]; then PGVEIL_PID=$PGVEIL_AUDIT_PID; pgveil_stop; PGVEIL_AUDIT_PID=""; fi
    if [[ -n $PGVEIL_MASK_PID ]]; then PGVEIL_PID=$PGVEIL_MASK_PID; pgveil_stop; PGVEIL_MASK_PID=""; fi
    if [[ -n $NULL_RELAY_PID ]]; then kill "$NULL_RELAY_PID" 2>/dev/null || true; wait "$NULL_RELAY_PID" 2>/dev/null || true; NULL_RELAY_PID=""; fi
    if [[ -n $PGVEIL_BASE_PID ]]; then kill "$PGVEIL_BASE_PID" 2>/dev/null || true; wait "$PGVEIL_BASE_PID" 2>/dev/null || true; PGVEIL_BASE_PID=""; fi
    if [[ -n $PGVEIL_POLICY_BASE_PID ]]; then PGVEIL_PID=$PGVEIL_POLICY_BASE_PID; pgveil_stop; PGVEIL_POLICY_BASE_PID=""; fi
    if [[ -n $HAPROXY_PID ]]; then kill "$HAPROXY_PID" 2>/dev/null || true; wait "$HAPROXY_PID" 2>/dev/null || true; HAPROXY_PID=""; fi
    for pid in $BOUNCER_PID; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    BOUNCER_PID=""
    pg_stop
    pg_start $((IDLE_CONNS + 110))
fi

# With the pgveil-policy target, memory is measured with the policy loaded.
MEM_NOTE="no policy"
if has_target pgveil-policy; then
    PGVEIL_EXTRA_ARGS="$PGVEIL_EXTRA_ARGS --policy $WORK/policy.yaml --keyring $WORK/pgveil.keys --catalog-user $DBUSER"
    MEM_NOTE="policy loaded"
fi
if (( IDLE_CONNS > 0 )); then
    pgveil_start
    sleep 1
    IDLE_RSS_BEFORE=$(proc_kb "$PGVEIL_PID" VmRSS)
    log "memory: opening $IDLE_CONNS idle connections through pgveil (RSS now $(mb "$IDLE_RSS_BEFORE") MB)"
    python3 "$SCRIPT_DIR/idle_conns.py" --port "$PGVEIL_PORT" --user "$DBUSER" --database "$DB" \
        -n "$IDLE_CONNS" --hold 600 --ready-file "$WORK/idle.ready" >"$WORK/idle.log" 2>&1 &
    IDLE_PID=$!
    for _ in $(seq 1200); do
        [[ -s $WORK/idle.ready ]] && break
        kill -0 "$IDLE_PID" 2>/dev/null || { cat "$WORK/idle.log" >&2; die "idle_conns.py failed"; }
        sleep 0.1
    done
    [[ -s $WORK/idle.ready ]] || die "idle connections not ready after 120 s"
    sleep 2   # let the sessions settle
    IDLE_RSS_WITH=$(proc_kb "$PGVEIL_PID" VmRSS)
    IDLE_HWM=$(proc_kb "$PGVEIL_PID" VmHWM)
    log "memory: pgveil RSS with $IDLE_CONNS idle connections: $(mb "$IDLE_RSS_WITH") MB (peak $(mb "$IDLE_HWM") MB)"
    kill "$IDLE_PID" 2>/dev/null || true; wait "$IDLE_PID" 2>/dev/null || true; IDLE_PID=""
    pgveil_stop
fi

if (( BIG_ROWS > 0 )); then
    pgveil_start
    sleep 1
    BIG_HWM_BEFORE=$(proc_kb "$PGVEIL_PID" VmHWM)
    log "memory: $BIG_ROWS-row result through pgveil (peak RSS so far $(mb "$BIG_HWM_BEFORE") MB)"
    t0=$(date +%s.%N)
    # psql itself holds the whole result; only pgveil's memory is measured.
    # Count the rows (-At prints one line per row) to be sure they all came.
    got=$("$PSQL" -h 127.0.0.1 -p "$PGVEIL_PORT" -U "$DBUSER" -d "$DB" -XAtq \
        -c "select g, repeat('x',20) from generate_series(1,$BIG_ROWS) g" | wc -l)
    t1=$(date +%s.%N)
    [[ $got -eq $BIG_ROWS ]] || die "large result: expected $BIG_ROWS rows, got $got"
    BIG_SECONDS=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
    BIG_HWM_AFTER=$(proc_kb "$PGVEIL_PID" VmHWM)
    log "memory: pgveil peak RSS after the $BIG_ROWS-row result: $(mb "$BIG_HWM_AFTER") MB (${BIG_SECONDS}s)"
    pgveil_stop
fi

# ------------------------------------------------------------------ report --

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT_DIR=$REPO/bench-results
mkdir -p "$OUT_DIR"
OUT=$OUT_DIR/pgbench-$STAMP.md

# One row per workload and target: median TPS, median latency, ratio to direct.
TABLE=$WORK/table.txt
: >"$TABLE"
for w in $WORKLOADS; do
    direct_tps=$(median $(awk -v w="$w" '$1 == w && $2 == "direct" {print $4}' "$RAW"))
    for t in $(workload_targets "$w"); do
        tps=$(median $(awk -v w="$w" -v t="$t" '$1 == w && $2 == t {print $4}' "$RAW"))
        lat=$(median $(awk -v w="$w" -v t="$t" '$1 == w && $2 == t {print $5}' "$RAW"))
        runs=$(awk -v w="$w" -v t="$t" '$1 == w && $2 == t {printf "%s%.0f", (n++ ? ", " : ""), $4}' "$RAW")
        ratio=$(awk -v a="$tps" -v b="$direct_tps" 'BEGIN {if (b + 0 > 0) printf "%.2f", a / b; else print "-"}')
        idle=$(median $(awk -v w="$w" -v t="$t" '$1 == w && $2 == t {print $6}' "$RAW"))
        cs=$(median $(awk -v w="$w" -v t="$t" '$1 == w && $2 == t {print $7}' "$RAW"))
        proxy_us="-"
        [[ $t == direct ]] || proxy_us=$(median $(awk -v w="$w" -v t="$t" '$1 == w && $2 == t {print $8}' "$RAW"))
        printf '%s\t%s\t%.0f\t%.3f\t%s\t%s\t%s\t%s\t%s\n' "$(workload_label "$w")" "$t" "$tps" "$lat" "$ratio" "$idle" "$cs" "$proxy_us" "$runs" >>"$TABLE"
    done
done

MACHINE="$(nproc) CPUs, Linux $(uname -r)"
CMD="benches/pgbench.sh (SCALE=$SCALE CLIENTS=$CLIENTS THREADS=$THREADS DURATION=$DURATION ROUNDS=$ROUNDS WARMUP=$WARMUP${PGVEIL_EXTRA_ARGS_GIVEN:+ PGVEIL_EXTRA_ARGS=\"$PGVEIL_EXTRA_ARGS_GIVEN\"}${AUDIT_SYSLOG:+ AUDIT_SYSLOG=$AUDIT_SYSLOG})"

{
    echo
    printf '%-22s %-14s %12s %14s %10s %7s %7s %14s\n' workload target "median TPS" "latency (ms)" "vs direct" "idle %" "cs/tx" "proxy µs/tx"
    printf '%-22s %-14s %12s %14s %10s %7s %7s %14s\n' ---------------------- -------------- ------------ -------------- ---------- ------- ------- --------------
    while IFS=$'\t' read -r w t tps lat ratio idle cs proxy_us _; do
        printf '%-22s %-14s %12s %14s %9sx %7s %7s %14s\n' "$w" "$t" "$tps" "$lat" "$ratio" "$idle" "$cs" "$proxy_us"
    done <"$TABLE"
    echo
    if [[ -n $IDLE_RSS_WITH ]]; then
        echo "pgveil RSS: $(mb "$IDLE_RSS_BEFORE") MB idle, $(mb "$IDLE_RSS_WITH") MB with $IDLE_CONNS idle client connections (target < 100 MB)"
    fi
    if [[ -n $BIG_HWM_AFTER ]]; then
        echo "pgveil peak RSS: $(mb "$BIG_HWM_BEFORE") MB before, $(mb "$BIG_HWM_AFTER") MB after a $BIG_ROWS-row result via psql (${BIG_SECONDS}s; target < 64 MB)"
    fi
    echo "machine: $MACHINE; PostgreSQL $PG_VERSION; pgbouncer $PGBOUNCER_VERSION; $MACHINE_NOTE; rustc/cargo seen during runs: $([[ $BUSY_DURING -eq 1 ]] && echo yes || echo no); load avg before $LOAD_BEFORE, after $LOAD_AFTER"
} >&2

{
    echo "# pgbench: pgveil pass-through vs direct PostgreSQL vs pgbouncer"
    echo
    echo "- Command: \`$CMD\`"
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- Machine: $MACHINE"
    echo "- PostgreSQL $PG_VERSION (fsync=off, synchronous_commit=off, shared_buffers=256MB, max_connections=200), pgbouncer $PGBOUNCER_VERSION (session mode, pool $POOL_SIZE), pgveil $PGVEIL_VERSION (release build)"
    echo "- pgbench -c $CLIENTS -j $THREADS -T $DURATION, scale $SCALE, pgbench always over TCP on 127.0.0.1 (the -unix targets reach PostgreSQL over its Unix-domain socket); $ROUNDS rounds per workload (round-robin, targets in rotating order); medians over rounds"
    echo "- Machine state: $MACHINE_NOTE; rustc/cargo seen during runs: $([[ $BUSY_DURING -eq 1 ]] && echo yes || echo no); load average before $LOAD_BEFORE, after $LOAD_AFTER"
    [[ " $WORKLOADS " != *" read-transform "* ]] || echo "- read-transform: both tables vacuumed and analysed after sealing; the support login's plan_cache_mode: ${PLAN_CACHE_MODE:-server default (auto)}"
    echo
    echo "| workload | target | median TPS | avg latency (ms) | ratio to direct | CPU idle % | context switches / tx | proxy CPU µs / tx | TPS per round |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
    while IFS=$'\t' read -r w t tps lat ratio idle cs proxy_us runs; do
        echo "| $w | $t | $tps | $lat | ${ratio}× | $idle | $cs | $proxy_us | $runs |"
    done <"$TABLE"
    echo
    if has_target pgveil-policy; then
        echo "**Enforcement cost** (pgveil-policy TPS / pgveil TPS, same run; targets: ≥ 0.95× for statements that touch no protected data, ≥ 0.85× for read-transform):"
        echo
        for w in $WORKLOADS; do
            a=$(median $(awk -v w="$w" '$1 == w && $2 == "pgveil-policy" {print $4}' "$RAW"))
            b=$(median $(awk -v w="$w" '$1 == w && $2 == "pgveil" {print $4}' "$RAW"))
            [[ -n $a && -n $b ]] && echo "- $(workload_label "$w"): $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a / b}')×"
        done
        echo
    fi
    if has_target pgveil-mask && [[ " $WORKLOADS " == *" read-transform "* ]]; then
        a=$(median $(awk '$1 == "read-transform" && $2 == "pgveil-mask" {print $4}' "$RAW"))
        b=$(median $(awk '$1 == "read-transform" && $2 == "pgveil" {print $4}' "$RAW"))
        c=$(median $(awk '$1 == "read-transform" && $2 == "pgveil-policy" {print $4}' "$RAW"))
        echo "**Read-transform, split** (same run): the masks and bookkeeping alone, on the plaintext copy (pgveil-mask / pgveil): $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a / b}')×; decryption of the envelopes on top (pgveil-policy / pgveil-mask): $(awk -v a="$c" -v b="$a" 'BEGIN {printf "%.2f", a / b}')×."
        echo
    fi
    if has_target pgveil-audit; then
        echo "**Audit cost** (pgveil-audit TPS / pgveil-policy TPS, same run; target ≥ 0.9× for read-transform):"
        echo
        for w in $WORKLOADS; do
            a=$(median $(awk -v w="$w" '$1 == w && $2 == "pgveil-audit" {print $4}' "$RAW"))
            b=$(median $(awk -v w="$w" '$1 == w && $2 == "pgveil-policy" {print $4}' "$RAW"))
            [[ -n $a && -n $b ]] && echo "- $(workload_label "$w"): $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.2f", a / b}')×"
        done
        [[ -f $WORK/audit/audit.jsonl ]] && echo && echo "Audit records written during the run: $(cat "$WORK"/audit/*.jsonl* 2>/dev/null | wc -l)"
        echo
    fi
    echo "CPU idle % and context switches per transaction are machine-wide (vmstat, 1 s samples during each run); proxy CPU is the proxy process's user + system time from /proc divided by the transactions of the run. All three are medians over rounds."
    echo
    if [[ -n $IDLE_RSS_WITH || -n $BIG_HWM_AFTER ]]; then
        echo "## pgveil memory"
        echo
        echo "| measurement | value | target |"
        echo "|---|---:|---|"
        if [[ -n $IDLE_RSS_WITH ]]; then
            echo "| RSS, no connections | $(mb "$IDLE_RSS_BEFORE") MB | |"
            echo "| RSS, $IDLE_CONNS idle client connections ($MEM_NOTE) | $(mb "$IDLE_RSS_WITH") MB | < 100 MB |"
            echo "| per idle connection | $(awk -v a="$IDLE_RSS_BEFORE" -v b="$IDLE_RSS_WITH" -v n="$IDLE_CONNS" 'BEGIN {printf "%.1f", (b - a) / n}') kB | |"
        fi
        if [[ -n $BIG_HWM_AFTER ]]; then
            echo "| peak RSS (VmHWM) before the large result | $(mb "$BIG_HWM_BEFORE") MB | |"
            echo "| peak RSS (VmHWM) after a $BIG_ROWS-row result ($BIG_SECONDS s via psql, $MEM_NOTE) | $(mb "$BIG_HWM_AFTER") MB | < 64 MB |"
        fi
        echo
    fi
} >"$OUT"
log "wrote $OUT"
