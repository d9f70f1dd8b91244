# shellcheck shell=bash
# bench/lib.sh — pieces bench/pgbench and bench/tls share: logging, the temporary directory and
# the cleanup of every process started (by PID, Ctrl-C too), free ports, a PostgreSQL 15
# primary with the bench user, pgcast and PgBouncer started from generated configurations,
# probing a target, and the arithmetic of the reports. Sourced, after `set -euo pipefail`.
#
# The sourcing script sets, before calling what needs them:
#   BENCH_TAG      prefix of the log lines ("bench", "tls")
#   TIMEOUT        bound of every wait loop, in seconds
#   SCALE          pgbench scale (probe checks pgbench_branches against it)
#   PG_MAX_CONNECTIONS, POOLER_MAX_CLIENTS, PG_BACKENDS (name:port ... of pgcast's backends)
# and defines, for probe and fail_excerpt: target_port, target_pid, target_logs TARGET.
# bench_setup_tmp sets TMP, SOCK, and the arrays the cleanup reads: CLIENT_PIDS (load
# generators running in the background), POOLER_PIDS (pooler processes), PG_PIDS
# (postmasters), PG_DATA_DIRS (data directories whose postmaster.pid the cleanup also reads).

PGBIN=/usr/lib/postgresql/15/bin
PGBOUNCER=/usr/sbin/pgbouncer
BENCH_USER=bench
BENCH_PASSWORD=bench-secret
BENCH_DB=bench
CLK_TCK="$(getconf CLK_TCK)"

log() { printf '[%s %s] %s\n' "${BENCH_TAG:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }

# die MESSAGE [LOGFILE...]: print the message and the tail of every given log, exit 1.
die() {
  local msg="$1"
  shift
  printf '\n[%s] FAILED: %s\n' "${BENCH_TAG:-bench}" "$msg" >&2
  local f
  for f in "$@"; do
    if [ -f "$f" ]; then
      printf -- '----- tail of %s -----\n' "$f" >&2
      tail -n 40 "$f" >&2 || true
    fi
  done
  exit 1
}

# bench_check_deps [COMMAND...]: the Debian packages, PostgreSQL 15, PgBouncer, the user
# postgres and the given commands.
bench_check_deps() {
  local b
  log "checking dependencies"
  "$ROOT/scripts/deps"
  for b in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBOUNCER"; do
    [ -x "$b" ] || die "missing $b"
  done
  for b in pgbench psql ss setpriv runuser "$@"; do
    command -v "$b" >/dev/null || die "missing $b in PATH"
  done
  id postgres >/dev/null 2>&1 || die "no OS user postgres"
}

# bench_pgcast_bin: sets PGCAST to PGCAST_BIN, or builds pgcast (release) and uses that.
bench_pgcast_bin() {
  if [ -n "${PGCAST_BIN:-}" ]; then
    PGCAST="$PGCAST_BIN"
  else
    log "building pgcast (release)"
    (cd "$ROOT" && cargo build --release --bin pgcast) || die "cargo build failed"
    PGCAST="${CARGO_TARGET_DIR:-$ROOT/target}/release/pgcast"
  fi
  [ -x "$PGCAST" ] || die "missing $PGCAST"
}

# bench_pgbouncer_version: sets PGBOUNCER_VERSION and PGBOUNCER_PREPARED (1 when PgBouncer
# has max_prepared_statements, protocol-level prepared statements in transaction mode: 1.21+).
bench_pgbouncer_version() {
  PGBOUNCER_VERSION="$("$PGBOUNCER" --version | sed -nE '1s/^PgBouncer ([0-9]+\.[0-9]+).*/\1/p')"
  if printf '%s\n' 1.21 "$PGBOUNCER_VERSION" | sort -V -C; then
    PGBOUNCER_PREPARED=1
  else
    PGBOUNCER_PREPARED=0
  fi
}

# ---------------------------------------------------------------------------------------------
# Temporary directory and cleanup

# Stop a process by PID: SIGTERM/SIGINT, wait up to 20 s, then SIGKILL.
stop_pid() {
  local pid="$1" sig="$2" i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "pid $pid did not stop after SIG$sig, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

postmaster_pid() { # data dir -> PID of its postmaster, or nothing
  if [ -f "$1/postmaster.pid" ]; then head -n 1 "$1/postmaster.pid"; fi
}

bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  local p d pid
  for p in "${CLIENT_PIDS[@]}" "${POOLER_PIDS[@]}"; do
    stop_pid "$p" TERM
  done
  # Servers may have been started without PG_PIDS knowing yet (pg_ctl returned, script died).
  for d in "${PG_DATA_DIRS[@]}"; do
    pid="$(postmaster_pid "$d")"
    [ -n "$pid" ] && PG_PIDS+=("$pid")
  done
  for pid in "${PG_PIDS[@]}"; do
    stop_pid "$pid" INT # fast shutdown
  done
  rm -rf "$TMP"
  exit "$rc"
}

# bench_setup_tmp NAME: the temporary directory /tmp/NAME.XXXXXX (owned by postgres, who runs
# the servers and PgBouncer), its socket directory, and the cleanup on exit and on signals.
bench_setup_tmp() {
  TMP="$(mktemp -d "/tmp/$1.XXXXXX")"
  chmod 0755 "$TMP"
  chown postgres:postgres "$TMP"
  SOCK="$TMP/sock"
  mkdir -p "$SOCK"
  chown postgres:postgres "$SOCK"
  CLIENT_PIDS=()
  POOLER_PIDS=()
  PG_PIDS=()
  PG_DATA_DIRS=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

as_postgres() { (cd "$TMP" && runuser -u postgres -- "$@"); }

# ---------------------------------------------------------------------------------------------
# Ports

port_free() { ! ss -Hltn | awk '{print $4}' | grep -Eq "[:.]$1\$"; }

# free_ports N: sets PORT_BASE to the first of N consecutive free TCP ports.
free_ports() {
  local try base ok p
  for ((try = 0; try < 50; try++)); do
    # Below the ephemeral range (32768+), where outgoing connections take their ports.
    base=$((20000 + RANDOM % 12000))
    ok=1
    for ((p = base; p < base + $1; p++)); do
      port_free "$p" || ok=0
    done
    if [ "$ok" = 1 ]; then
      # shellcheck disable=SC2034 # for the caller
      PORT_BASE=$base
      return 0
    fi
  done
  die "no $1 consecutive free TCP ports found"
}

established() { # port -> connections the listener on that port has accepted
  ss -Htn state established "( sport = :$1 )" | wc -l
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

node_conf() { # port -> settings appended to postgresql.conf (later settings win)
  cat <<EOF

# --- ${BENCH_TAG:-bench} ---
port = $1
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
max_connections = $PG_MAX_CONNECTIONS
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
wal_level = replica
max_wal_senders = 5
max_replication_slots = 5
hot_standby = on
logging_collector = off
log_min_messages = warning
EOF
}

start_pg() { # data dir, log file
  as_postgres "$PGBIN/pg_ctl" start -D "$1" -l "$2" -w -t "$TIMEOUT" >/dev/null ||
    die "PostgreSQL in $1 did not start" "$2"
  local pid
  pid="$(postmaster_pid "$1")"
  [ -n "$pid" ] || die "no postmaster.pid in $1" "$2"
  PG_PIDS+=("$pid")
}

psql_admin() { # port, sql...: as superuser postgres over TCP (trust)
  local port="$1"
  shift
  psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"
}

# init_primary DIR PORT: initdb, start, and create the bench user (SCRAM password) and its
# database. Over TCP the superuser postgres logs in with trust, everyone else with SCRAM.
init_primary() {
  local dir="$1" port="$2"
  log "initdb primary (port $port)"
  PG_DATA_DIRS+=("$dir")
  as_postgres "$PGBIN/initdb" -D "$dir" -U postgres -A trust -E UTF8 --no-sync \
    >"$TMP/initdb.log" 2>&1 || die "initdb failed" "$TMP/initdb.log"
  node_conf "$port" >>"$dir/postgresql.conf"
  cat >"$dir/pg_hba.conf" <<EOF
# ${BENCH_TAG:-bench}
local all         all                   trust
local replication all                   trust
host  all         postgres 127.0.0.1/32 trust
host  replication all      127.0.0.1/32 trust
host  all         all      127.0.0.1/32 scram-sha-256
EOF
  chown postgres:postgres "$dir/postgresql.conf" "$dir/pg_hba.conf"
  start_pg "$dir" "$TMP/primary.log"
  log "creating user and database $BENCH_DB"
  psql_admin "$port" -d postgres \
    -c "CREATE ROLE $BENCH_USER LOGIN PASSWORD '$BENCH_PASSWORD'" \
    -c "CREATE DATABASE $BENCH_DB OWNER $BENCH_USER" >/dev/null ||
    die "cannot create user/database" "$TMP/primary.log"
}

pgbench_init() { # port: pgbench -i -s SCALE as the bench user, then a checkpoint
  log "pgbench -i -s $SCALE"
  PGPASSWORD="$BENCH_PASSWORD" PGSSLMODE=disable pgbench -i -q -s "$SCALE" -h 127.0.0.1 \
    -p "$1" -U "$BENCH_USER" "$BENCH_DB" >"$TMP/pgbench-init.log" 2>&1 ||
    die "pgbench -i failed" "$TMP/pgbench-init.log" "$TMP/primary.log"
  psql_admin "$1" -d "$BENCH_DB" -c "CHECKPOINT" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# pgcast and PgBouncer: configuration NAME is $TMP/pgcast-NAME.toml or $TMP/pgbouncer-NAME.ini

# pgcast_conf MODE NAME NAME:PORT:ROLE... -> a configuration (admin socket $TMP/admin-NAME.sock)
# with the listeners given and PG_BACKENDS as backends, the bench user with its password, or
# with only its SCRAM verifier when BENCH_VERIFIER holds one (PostgreSQL's rolpassword).
pgcast_conf() {
  local mode="$1" name="$2" l b lname port role
  shift 2
  cat <<EOT
[node]
id = 1

[admin]
socket = "$TMP/admin-$name.sock"

[health]
interval_ms = 500
user = "postgres"
database = "$BENCH_DB"

[limits]
max_client_connections = $POOLER_MAX_CLIENTS

[pool]
mode = "$mode"
EOT
  [ "$mode" = transaction ] && echo "max_server_connections = $TX_POOL_SIZE"
  for l in "$@"; do
    IFS=: read -r lname port role <<<"$l"
    printf '\n[[listeners]]\nname = "%s"\naddress = "127.0.0.1:%s"\nrole = "%s"\n' \
      "$lname" "$port" "$role"
  done
  for b in "${PG_BACKENDS[@]}"; do
    IFS=: read -r lname port <<<"$b"
    printf '\n[[backends]]\nname = "%s"\nhost = "127.0.0.1"\nport = %s\n' "$lname" "$port"
  done
  printf '\n[[users]]\nname = "%s"\n' "$BENCH_USER"
  if [ -n "${BENCH_VERIFIER:-}" ]; then
    printf 'password_hash = "%s"\n' "$BENCH_VERIFIER"
  else
    printf 'password = "%s"\n' "$BENCH_PASSWORD"
  fi
}

# pgcast_check NAME: makes the configuration private (it holds a password: pgcast refuses it
# when others may read it) and has pgcast check it.
pgcast_check() {
  chmod 600 "$TMP/pgcast-$1.toml"
  "$PGCAST" check-config -c "$TMP/pgcast-$1.toml" >/dev/null 2>"$TMP/pgcast-check.log" ||
    die "pgcast check-config rejected the $1 configuration" "$TMP/pgcast-check.log"
}

# start_pgcast NAME: starts pgcast with its configuration, waits until it is healthy and sets
# STARTED_PID. Its log is $TMP/pgcast-NAME.log (appended to across restarts).
start_pgcast() {
  local name="$1" deadline
  log "starting pgcast ($name)"
  "$PGCAST" run -c "$TMP/pgcast-$name.toml" >>"$TMP/pgcast-$name.log" 2>&1 &
  STARTED_PID=$!
  POOLER_PIDS+=("$STARTED_PID")
  deadline=$((SECONDS + TIMEOUT))
  until "$PGCAST" status --admin "$TMP/admin-$name.sock" >"$TMP/pgcast-status.txt" 2>&1; do
    kill -0 "$STARTED_PID" 2>/dev/null || die "pgcast ($name) exited" "$TMP/pgcast-$name.log"
    [ $SECONDS -lt $deadline ] || die "pgcast ($name) not healthy within ${TIMEOUT}s" \
      "$TMP/pgcast-status.txt" "$TMP/pgcast-$name.log"
    sleep 0.2
  done
}

# pgbouncer_conf MODE NAME PORT DEFAULT_POOL_SIZE BACKEND_PORT -> a configuration in front of
# the server on BACKEND_PORT, the bench user (SCRAM; plain password in $TMP/pgbouncer.users,
# which this writes; BENCH_VERIFIER instead when set), its log $TMP/pgbouncer-NAME.log.
pgbouncer_conf() {
  printf '"%s" "%s"\n' "$BENCH_USER" "${BENCH_VERIFIER:-$BENCH_PASSWORD}" >"$TMP/pgbouncer.users"
  chown postgres:postgres "$TMP/pgbouncer.users"
  chmod 0600 "$TMP/pgbouncer.users"
  cat <<EOT
[databases]
$BENCH_DB = host=127.0.0.1 port=$5 dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $3
unix_socket_dir = $SOCK
auth_type = scram-sha-256
auth_file = $TMP/pgbouncer.users
pool_mode = $1
max_client_conn = $POOLER_MAX_CLIENTS
default_pool_size = $4
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
logfile = $TMP/pgbouncer-$2.log
log_connections = 0
log_disconnections = 0
EOT
  if [ "$1" = transaction ] && [ "${PGBOUNCER_PREPARED:-0}" = 1 ]; then
    echo "max_prepared_statements = 100"
  fi
}

# start_pgbouncer NAME: starts PgBouncer (as postgres) with $TMP/pgbouncer-NAME.ini and sets
# STARTED_PID (probe waits until it answers).
start_pgbouncer() {
  local name="$1"
  log "starting PgBouncer ($name)"
  chown postgres:postgres "$TMP/pgbouncer-$name.ini"
  (cd "$TMP" && exec setpriv --reuid=postgres --regid=postgres --init-groups \
    "$PGBOUNCER" "$TMP/pgbouncer-$name.ini") >>"$TMP/pgbouncer-$name.out" 2>&1 &
  STARTED_PID=$!
  POOLER_PIDS+=("$STARTED_PID")
}

# ---------------------------------------------------------------------------------------------
# Targets

bench_psql() { # port, sql (as the bench user; PGSSLMODE as the caller's environment has it)
  PGPASSWORD="$BENCH_PASSWORD" PGCONNECT_TIMEOUT=5 psql -X -q -A -t -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$1" -U "$BENCH_USER" -d "$BENCH_DB" -c "$2"
}

# probe TARGET: waits until the target answers a read of pgbench_branches as the bench user;
# sets PROBED_PORT to the port of the server that answered.
probe() {
  local t="$1" port answer deadline pid branches
  port="$(target_port "$t")"
  pid="$(target_pid "$t")"
  deadline=$((SECONDS + TIMEOUT))
  # shellcheck disable=SC2046 # target_logs lists files, split on purpose
  until answer="$(bench_psql "$port" \
    "SELECT current_setting('port') || ' ' || count(*) FROM pgbench_branches" \
    2>"$TMP/probe-$t.err")"; do
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      die "the process serving $t exited" $(target_logs "$t")
    fi
    [ $SECONDS -lt $deadline ] ||
      die "target $t (port $port) does not answer within ${TIMEOUT}s" "$TMP/probe-$t.err" $(target_logs "$t")
    sleep 0.2
  done
  # shellcheck disable=SC2034 # for the caller
  read -r PROBED_PORT branches <<<"$answer"
  [ "$branches" = "$SCALE" ] || die "target $t: pgbench_branches has $branches rows, expected $SCALE"
}

first_error() { # pgbench output -> its first error line (200 characters at most), or nothing
  grep -m 1 -iE 'error|abort|fatal|could not' "$1" | cut -c 1-200 || true
}

# fail_excerpt TARGET OUT: pgbench's output and the tail of the target's own log, to stderr.
fail_excerpt() {
  local t="$1" out="$2" logs
  printf -- '----- %s -----\n' "$out"
  tail -n 30 "$out"
  read -r -a logs <<<"$(target_logs "$t")"
  if [ "$t" != direct ]; then
    printf -- '----- tail of %s -----\n' "${logs[0]}"
    tail -n 30 "${logs[0]}"
  fi
}

# ---------------------------------------------------------------------------------------------
# Measurements and arithmetic

median() { # numbers... -> median (mean of the two middle values for an even count)
  [ $# -gt 0 ] || return 0
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
    END { if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2; print m }'
}

ratio() { # a, b -> a / b to two decimals, or – when either is missing
  if [ -n "$1" ] && [ -n "$2" ]; then
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
  else
    echo "–"
  fi
}

cpu_ticks() { # pid -> user + system CPU of the whole process (all threads), in clock ticks
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
  # Fields after "pid (comm) ": state is the first, utime the 12th, stime the 13th.
  # shellcheck disable=SC2086
  set -- ${stat##*) }
  echo $((${12} + ${13}))
}

us_per() { # ticks, count -> microseconds per item, two decimals
  awk -v d="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.2f", d * 1e6 / hz / n }'
}

jobs_for() { if [ "$1" -lt 2 ]; then echo "$1"; else echo 2; fi; }

git_commit() { # the commit of the tree, marked when src/ or Cargo files are modified
  local commit
  commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")"
  if [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | head -n 1)" ]; then
    commit+=" (working tree modified)"
  fi
  echo "$commit"
}
