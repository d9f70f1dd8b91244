# shellcheck shell=bash
# lab/lib.sh — the anycast PostgreSQL lab: names, state, topology, pgcast control, router and
# client views. Sourced by lab/up, lab/down, lab/status, lab/demo and lab/scenario; building
# blocks (namespaces, FRR, PostgreSQL, teardown) come from lab/netns/lib.sh.
#
# Environment (all optional):
#   LAB_NAME     namespace prefix: "" for the lab (namespaces sw, r1, b1 ...); the tests use a
#                unique one (namespaces t42-sw, t42-r1 ...) so they never touch a running lab
#   LAB_STATE    state directory (default /run/pgcast-lab, or /run/pgcast-lab-NAME)
#   LAB_ROUTING  ospf (default) or bgp
#   LAB_BFD      1 (default): BFD 100 ms x 3 between r1 and each balancer; 0: none
#   LAB_ECMP     resilient (default: the router forwards through a resilient nexthop group,
#                see lab/resilient-ecmp) or hash (FRR's own hash-threshold group)
#   PGCAST_BIN   the pgcast binary (default: target/release/pgcast, built by lab/up)

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$LAB_DIR")
# shellcheck source-path=SCRIPTDIR source=netns/lib.sh
source "$LAB_DIR/netns/lib.sh"

LAB_NAME=${LAB_NAME:-}
[[ -z $LAB_NAME || $LAB_NAME =~ ^[a-z0-9]{1,12}$ ]] || nl_die "LAB_NAME: 1-12 of [a-z0-9]"
LAB_STATE=${LAB_STATE:-/run/pgcast-lab${LAB_NAME:+-$LAB_NAME}}
LAB_ROUTING=${LAB_ROUTING:-ospf}
LAB_BFD=${LAB_BFD:-1}
LAB_ECMP=${LAB_ECMP:-resilient}
PGCAST_BIN=${PGCAST_BIN:-$REPO_DIR/target/release/pgcast}

# The lab's interface: addresses, names and credentials that stay stable (README, docs).
readonly NET=198.18.1
readonly ROUTER_ADDR=$NET.90
readonly ANYCAST=198.18.2.0
readonly CLIENT_ADDR=198.18.3.10 ROUTER_CLIENT_ADDR=198.18.3.1
readonly DB_USER=app DB_PASSWORD=app-secret DB_NAME=app
readonly BALANCERS=(1 2 3) PG_HOSTS=(1 2 3)
readonly SYNC_STANDBY=pg2

# lab_ns NAME — the namespace of lab host NAME (sw, r1, c1, b1..b3, pg1..pg3).
lab_ns() { printf '%s%s\n' "${LAB_NAME:+$LAB_NAME-}" "$1"; }
b_addr() { printf '%s.%s\n' "$NET" $((93 + $1)); }
pg_addr() { printf '%s.%s\n' "$NET" $((100 + $1)); }

# Milliseconds since the epoch, without a fork (bash 5 $EPOCHREALTIME).
lab_now_ms() {
  local t=${EPOCHREALTIME/./}
  printf '%s\n' $((t / 1000))
}

lab_is_up() { [[ -f $LAB_STATE/lab.env ]]; }

# lab_load — after `up`: read the values the lab was built with (so status, scenarios and
# down see the same binary and routing protocol).
lab_load() {
  lab_is_up || nl_die "no lab in $LAB_STATE (run lab/up first)"
  # shellcheck disable=SC1091 # written by lab_build
  source "$LAB_STATE/lab.env"
  nl_init "$LAB_STATE"
}

# ---------------------------------------------------------------------------------------------
# Configuration files

# lab_router_conf — r1's frr.conf. OSPF: on the balancer LAN (eth0), DR with priority 100,
# fast SPF. BGP: AS 65000, one eBGP neighbour per balancer (AS 65001), keepalive 1 s / hold 3 s,
# reconnect every second, ECMP over all of them. The client link (eth1) is just a connected
# network.
lab_router_conf() {
  local n
  cat <<EOF
frr defaults traditional
hostname r1
log stdout informational
log timestamp precision 3
!
EOF
  if ((LAB_BFD)); then
    printf 'bfd\n profile pgcast\n  receive-interval 100\n  transmit-interval 100\n'
    printf '  detect-multiplier 3\n !\n!\n'
  fi
  if [[ $LAB_ROUTING == bgp ]]; then
    cat <<EOF
debug bgp neighbor-events
!
router bgp 65000
 bgp router-id $ROUTER_ADDR
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
EOF
    for n in "${BALANCERS[@]}"; do
      printf ' neighbor %s remote-as 65001\n' "$(b_addr "$n")"
      printf ' neighbor %s timers 1 3\n' "$(b_addr "$n")"
      printf ' neighbor %s timers connect 1\n' "$(b_addr "$n")"
      ((LAB_BFD == 0)) || printf ' neighbor %s bfd\n neighbor %s bfd profile pgcast\n' "$(b_addr "$n")" "$(b_addr "$n")"
    done
    printf ' address-family ipv4 unicast\n  maximum-paths 16\n exit-address-family\n!\n'
    return
  fi
  cat <<EOF
interface eth0
 ip ospf area 0
 ip ospf hello-interval 1
 ip ospf dead-interval 3
 ip ospf priority 100
$( ((LAB_BFD == 0)) || printf ' ip ospf bfd\n ip ospf bfd profile pgcast' )
!
router ospf
 ospf router-id $ROUTER_ADDR
 log-adjacency-changes detail
 timers throttle spf 0 50 1000
 maximum-paths 16
!
EOF
}

# lab_routing_conf N — balancer bN's routing section of pgcast.toml.
lab_routing_conf() {
  if [[ $LAB_ROUTING == bgp ]]; then
    cat <<EOF
[bgp]
local_as = 65001
router_id = "$(b_addr "$1")"
connect_retry_ms = 1000

[[bgp.neighbors]]
address = "$ROUTER_ADDR"
remote_as = 65000
hold_time = 3
EOF
    ((LAB_BFD == 0)) || printf 'bfd = true\n'
    lab_bfd_conf
    return
  fi
  cat <<EOF
[ospf]
router_id = "$(b_addr "$1")"
area = "0.0.0.0"

[[ospf.interfaces]]
name = "eth0"
network = "broadcast"
hello_interval = 1
dead_interval = 3
EOF
  ((LAB_BFD == 0)) || printf 'bfd = true\n'
  lab_bfd_conf
}

# lab_bfd_conf — pgcast's BFD timers, matching r1's profile.
lab_bfd_conf() {
  ((LAB_BFD)) || return 0
  printf '\n[bfd]\ndesired_min_tx_ms = 100\nrequired_min_rx_ms = 100\ndetect_multiplier = 3\n'
}

# lab_pgcast_conf N — balancer bN's pgcast.toml.
lab_pgcast_conf() {
  local n=$1 p m
  cat <<EOF
# Written by lab/lib.sh for balancer b$n. The anycast service: host=$ANYCAST port=5432.
[node]
id = $n
name = "b$n"

[admin]
socket = "$LAB_STATE/b$n/admin.sock"

[health]
interval_ms = 200
timeout_ms = 1000
rise = 2
fall = 2
user = "$DB_USER"
password = "$DB_PASSWORD"
database = "$DB_NAME"

[tls]
cert = "$LAB_STATE/tls/server.crt"
key = "$LAB_STATE/tls/server.key"

[[listeners]]
name = "anycast"
address = "0.0.0.0:5432"
role = "auto"
tls = "allow"
EOF
  for p in "${PG_HOSTS[@]}"; do
    printf '\n[[backends]]\nname = "pg%s"\nhost = "%s"\nport = 5432\n' "$p" "$(pg_addr "$p")"
  done
  cat <<EOF

[[users]]
name = "$DB_USER"
password = "$DB_PASSWORD"
EOF
  # The other balancers: a CancelRequest that the router hashes to us for a session they
  # hold is forwarded to them (their unicast address, same listener).
  for m in "${BALANCERS[@]}"; do
    ((m == n)) && continue
    printf '\n[[peers]]\nid = %s\naddress = "%s:5432"\n' "$m" "$(b_addr "$m")"
  done
  printf '\n'
  lab_routing_conf "$n"
  cat <<EOF

[[prefix]]
address = "$ANYCAST/32"
require = "read"
EOF
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL: a primary with a replication role and two streaming replicas

# lab_save_spawned_pid FILE — "PID STARTTIME" of the process nl_spawn started last.
lab_save_spawned_pid() { tail -n 1 "$LAB_STATE/pids" | cut -d' ' -f1,2 >"$1"; }

# lab_pg_enable_replication — on pg1: role replicator (trusted from the lab LAN, for
# pg_basebackup and streaming).
lab_pg_enable_replication() {
  local dir=$LAB_STATE/pg1
  printf 'host replication replicator %s.0/24 trust\n' "$NET" >>"$dir/data/pg_hba.conf"
  lab_pg_sql 1 "CREATE ROLE replicator LOGIN REPLICATION" >/dev/null
  lab_pg_sql 1 "SELECT pg_reload_conf()" >/dev/null
}

# lab_pg_replica N [PRIMARY] — pgN as a streaming replica of pgPRIMARY (default 1):
# pg_basebackup over the LAN (slot pgN, application_name pgN), its own address, socket dir and
# cluster name.
lab_pg_replica() {
  local n=$1 primary=${2:-1} ns dir
  ns=$(lab_ns "pg$n")
  dir=$LAB_STATE/pg$n
  install -d -o postgres -g postgres -m 700 "$dir" "$dir/sock"
  (cd "$dir" && nl_run ip netns exec "$ns" "${NL_AS_POSTGRES[@]}" "$NL_PG_BIN/pg_basebackup" \
    -D "$dir/data" -d "host=$(pg_addr "$primary") port=5432 user=replicator application_name=pg$n" \
    -R -X stream -C -S "pg$n" -c fast --no-sync)
  cat >>"$dir/data/postgresql.conf" <<EOF

# ---- lab/lib.sh: replica pg$n ----
listen_addresses = '$(pg_addr "$n")'
unix_socket_directories = '$dir/sock'
cluster_name = '$ns'
EOF
  # The primary's synchronous_standby_names came along in postgresql.auto.conf: a replica
  # promoted later must not wait for a standby that does not exist.
  printf "synchronous_standby_names = ''\n" >>"$dir/data/postgresql.auto.conf"
  touch "$dir/postgres.log"
  chown postgres:postgres "$dir/postgres.log" "$dir/data/postgresql.conf" \
    "$dir/data/postgresql.auto.conf"
  (cd "$dir" && NL_SPAWN_SIGNAL=INT nl_spawn "$ns-postgres" "$ns" "$dir/postgres.log" \
    "${NL_AS_POSTGRES[@]}" "$NL_PG_BIN/postgres" -D "$dir/data")
  lab_save_spawned_pid "$dir/pid"
  nl_wait 30 "$NL_PG_BIN/pg_isready" -q -h "$dir/sock" -p 5432 ||
    {
      tail -n 20 "$dir/postgres.log" >&2
      nl_die "replica pg$n did not start"
    }
}

# lab_pg_sql N SQL — SQL as superuser on pgN over its Unix socket (database app).
lab_pg_sql() {
  "$NL_PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h "$LAB_STATE/pg$1/sock" -p 5432 \
    -U postgres -d "$DB_NAME" -c "$2"
}

lab_pg_has_sync_standby() {
  [[ $(lab_pg_sql 1 "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") == 1 ]]
}

# lab_pg_postmaster N — "PID STARTTIME" of pgN's postmaster.
lab_pg_postmaster() { cat "$LAB_STATE/pg$1/pid"; }

# ---------------------------------------------------------------------------------------------
# Failover steps: the lab plays the failover manager (scenario_failover, tests/soak.rs). With
# synchronous_standby_names naming one standby (synchronous_commit on), a commit is
# acknowledged only once that standby has flushed it: promoting *that* standby loses no
# acknowledged write.

# lab_pg_stop N — immediate shutdown of pgN (as abrupt as a crash for its clients, but it
# leaves no orphans); waits until its postmaster is gone.
lab_pg_stop() {
  local pid st
  read -r pid st <<<"$(lab_pg_postmaster "$1")"
  if nl_alive "$pid" "$st"; then kill -QUIT "$pid"; fi
  nl_wait 10 lab_gone "$pid" "$st"
}
# lab_gone PID STARTTIME — has that process exited?
lab_gone() { ! nl_alive "$1" "$2"; }

# lab_pg_promote N — promote the standby pgN; waits (30 s at most) until it accepts writes.
lab_pg_promote() { [[ $(lab_pg_sql "$1" "SELECT pg_promote(true, 30)") == t ]]; }

# lab_pg_follow N PRIMARY — point the standby pgN at pgPRIMARY (slot pgN there). It follows
# the new timeline unless it already replayed WAL the new primary never had (then rebuild it).
lab_pg_follow() {
  lab_pg_sql "$2" "SELECT pg_create_physical_replication_slot('pg$1') WHERE NOT EXISTS
    (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pg$1')" >/dev/null
  lab_pg_sql "$1" "ALTER SYSTEM SET primary_conninfo = 'host=$(pg_addr "$2") port=5432 user=replicator application_name=pg$1'" >/dev/null
  lab_pg_sql "$1" "ALTER SYSTEM SET primary_slot_name = 'pg$1'" >/dev/null
  lab_pg_sql "$1" "SELECT pg_reload_conf()" >/dev/null
}

# lab_pg_replication PRIMARY N — pgN's state on pgPRIMARY ("streaming async", "streaming
# sync", ...; empty when it is not connected).
lab_pg_replication() {
  lab_pg_sql "$1" "SELECT state || ' ' || sync_state FROM pg_stat_replication WHERE application_name = 'pg$2'"
}
lab_pg_streaming() { [[ $(lab_pg_replication "$1" "$2") == streaming* ]]; }
lab_pg_in_sync() { [[ $(lab_pg_replication "$1" "$2") == "streaming sync" ]]; }

# lab_pg_set_sync PRIMARY N — pgN becomes pgPRIMARY's synchronous standby; waits (20 s at most)
# until it is in sync.
lab_pg_set_sync() {
  lab_pg_sql "$1" "ALTER SYSTEM SET synchronous_standby_names = 'pg$2'" >/dev/null
  lab_pg_sql "$1" "SELECT pg_reload_conf()" >/dev/null
  nl_wait 20 lab_pg_in_sync "$1" "$2"
}

# lab_pg_rebuild N PRIMARY — throw the stopped pgN away and make it a new replica of pgPRIMARY
# (an old primary cannot simply follow: it may hold WAL the new primary never had).
lab_pg_rebuild() {
  lab_pg_sql "$2" "SELECT pg_drop_replication_slot('pg$1') FROM pg_replication_slots
    WHERE slot_name = 'pg$1'" >/dev/null
  rm -rf "${LAB_STATE:?}/pg$1/data"
  lab_pg_replica "$1" "$2"
}

# ---------------------------------------------------------------------------------------------
# pgcast on the balancers

# lab_pgcast_start N — start pgcast in bN (PID recorded for teardown and in STATE/bN/pid) and
# wait until its admin socket answers.
lab_pgcast_start() {
  local n=$1 ns
  ns=$(lab_ns "b$n")
  printf '==== lab: pgcast start %s ====\n' "$(date +%T.%3N)" >>"$LAB_STATE/b$n/pgcast.log"
  PGCAST_LOG=${LAB_PGCAST_LOG:-info} NO_COLOR=1 nl_spawn "b$n-pgcast" "$ns" \
    "$LAB_STATE/b$n/pgcast.log" "$PGCAST_BIN" run -c "$LAB_STATE/b$n/pgcast.toml"
  lab_save_spawned_pid "$LAB_STATE/b$n/pid"
  nl_wait 20 "$PGCAST_BIN" status --admin "$LAB_STATE/b$n/admin.sock" --json || {
    lab_pgcast_running "$n" || {
      tail -n 20 "$LAB_STATE/b$n/pgcast.log" >&2
      nl_die "pgcast in b$n exited"
    }
  }
}

# lab_pgcast_pid N — pgcast's PID in bN if it runs (empty otherwise).
lab_pgcast_pid() {
  local pid st
  [[ -f $LAB_STATE/b$1/pid ]] || return 0
  read -r pid st <"$LAB_STATE/b$1/pid"
  if nl_alive "$pid" "$st"; then printf '%s\n' "$pid"; fi
}

lab_pgcast_running() { [[ -n $(lab_pgcast_pid "$1") ]]; }

# lab_pgcast_signal N SIG — send SIG to pgcast in bN.
lab_pgcast_signal() {
  local pid
  pid=$(lab_pgcast_pid "$1")
  [[ -n $pid ]] || nl_die "pgcast in b$1 is not running"
  kill "-$2" "$pid"
}

# lab_pgcast_wait_exit N SECONDS — wait until pgcast in bN has exited.
lab_pgcast_wait_exit() { nl_wait "$2" lab_pgcast_stopped "$1"; }
lab_pgcast_stopped() { ! lab_pgcast_running "$1"; }

# lab_pgcast_status N [--json] — `pgcast status` of bN.
lab_pgcast_status() { "$PGCAST_BIN" status --admin "$LAB_STATE/b$1/admin.sock" "${@:2}"; }
# lab_pgcast_ctl N drain|undrain — `pgcast drain`/`undrain` of bN (prints its reply).
lab_pgcast_ctl() { "$PGCAST_BIN" "$2" --admin "$LAB_STATE/b$1/admin.sock"; }

# lab_cut_backends N add|del — cut (or restore) bN's paths to the PostgreSQL hosts.
lab_cut_backends() {
  local p
  for p in "${PG_HOSTS[@]}"; do
    ip -n "$(lab_ns "b$1")" route "$2" blackhole "$(pg_addr "$p")/32"
  done
}

# lab_router_restart DAEMON — restart r1's FRR DAEMON (ospfd, bgpd) as a service restart
# would: SIGTERM (SIGKILL after 5 s), then start it again from r1's configuration. zebra drops
# the daemon's routes when it leaves. Returns when the new one answers vtysh.
lab_router_restart() {
  local d=$1 r1 pid st
  r1=$(lab_ns r1)
  read -r pid st _ < <(grep " $r1-$d\$" "$LAB_STATE/pids" | tail -n 1)
  if nl_alive "$pid" "$st"; then
    kill -TERM "$pid"
    nl_wait 5 lab_gone "$pid" "$st" || kill -KILL "$pid"
    nl_wait 5 lab_gone "$pid" "$st" || nl_die "$d in $r1 does not exit"
  fi
  rm -f "/var/run/frr/$r1/$d.vty"
  nl_spawn "$r1-$d" "$r1" "$LAB_STATE/$r1-$d.log" "$NL_FRR_DIR/$d" -N "$r1" -P 0 \
    -f "/etc/frr/$r1/frr.conf"
  nl_wait 10 test -S "/var/run/frr/$r1/$d.vty" || nl_die "$d in $r1 did not come back"
  nl_wait 10 vtysh -N "$r1" -c 'show version' || nl_die "vtysh -N $r1 does not answer"
}

# ---------------------------------------------------------------------------------------------
# The router's view

# The policy rule that makes r1 forward the anycast address through lab/resilient-ecmp's table.
readonly RESILIENT_RULE_PREF=100 RESILIENT_TABLE=100

# lab_resilient_active — does r1 forward the anycast address through the resilient group?
lab_resilient_active() {
  [[ -n $(ip -n "$(lab_ns r1)" rule show pref "$RESILIENT_RULE_PREF" 2>/dev/null) ]]
}

# lab_resilient on|off — switch r1's forwarding between the resilient group and FRR's group.
lab_resilient() {
  local r1
  r1=$(lab_ns r1)
  if [[ $1 == on ]]; then
    lab_resilient_active ||
      ip -n "$r1" rule add pref "$RESILIENT_RULE_PREF" to "$ANYCAST/32" lookup "$RESILIENT_TABLE"
  else
    ip -n "$r1" rule del pref "$RESILIENT_RULE_PREF" 2>/dev/null || true
  fi
}

# lab_rebalance — rebuild the resilient group from scratch, so that a balancer that rejoined
# gets its share of buckets now rather than after the idle timer. Only between scenarios: it
# moves flows, exactly what the resilient group exists to avoid.
lab_rebalance() {
  local pid st before
  read -r pid st _ < <(grep ' r1-resilient-ecmp$' "$LAB_STATE/pids" | tail -n 1)
  nl_alive "$pid" "$st" || nl_die "lab/resilient-ecmp is not running"
  before=$(grep -c ' rebuilt$' "$LAB_STATE/r1-resilient-ecmp.log" || true)
  kill -USR1 "$pid"
  nl_wait 5 lab_rebuilt_since "$before" || nl_log "resilient group not rebuilt"
}

# lab_rebuilt_since N — has lab/resilient-ecmp logged more than N rebuilds?
lab_rebuilt_since() { (($(grep -c ' rebuilt$' "$LAB_STATE/r1-resilient-ecmp.log") > $1)); }

# lab_gateways — the next hops r1 forwards the anycast /32 to (the resilient group's when it is
# active, FRR's route otherwise), sorted, space-separated (empty when there is no route).
lab_gateways() {
  local table=main
  lab_resilient_active && table=$RESILIENT_TABLE
  ip -n "$(lab_ns r1)" route show "$ANYCAST/32" table "$table" 2>/dev/null |
    grep -o 'via [0-9.]*' | awk '{ print $2 }' | sort | paste -sd' ' -
}

# lab_expect_gateways BALANCER_NUMBERS... — the gateway list those balancers would give.
lab_expect_gateways() {
  local n
  for n in "$@"; do b_addr "$n"; done | sort | paste -sd' ' -
}

# lab_wait_gateways SECONDS BALANCER_NUMBERS... — poll the router's kernel route (every
# ~10 ms) until its next hops are exactly those balancers; prints the milliseconds it took.
lab_wait_gateways() {
  local timeout_ms=$(($1 * 1000)) want start now
  shift
  want=$(lab_expect_gateways "$@")
  start=$(lab_now_ms)
  while :; do
    now=$(lab_now_ms)
    [[ "$(lab_gateways)" == "$want" ]] && {
      printf '%s\n' $((now - start))
      return 0
    }
    ((now - start < timeout_ms)) || return 1
    sleep 0.01
  done
}

# lab_bfd_up N... — r1's BFD sessions with these balancers are all up.
lab_bfd_up() {
  local n peers
  peers=$(vtysh -N "$(lab_ns r1)" -c 'show bfd peers json' 2>/dev/null |
    jq -r '.[] | select(.status == "up") | .peer') || return 1
  for n in "$@"; do
    grep -q -x -F "$(b_addr "$n")" <<<"$peers" || return 1
  done
}

# lab_nexthop_group_type — the kernel nexthop group behind the anycast route: "resilient",
# "hash-threshold" (the kernel's default multipath group) or "none".
lab_nexthop_group_type() {
  local id
  id=$(ip -n "$(lab_ns r1)" route show "$ANYCAST/32" | grep -o 'nhid [0-9]*' | awk '{ print $2 }')
  if [[ -z $id ]]; then
    echo none
  elif lab_resilient_active; then
    echo "resilient (lab/resilient-ecmp)"
  elif ip -n "$(lab_ns r1)" nexthop show id "$id" | grep -q resilient; then
    echo resilient
  else
    echo hash-threshold
  fi
}

# ---------------------------------------------------------------------------------------------
# The client c1

# The PG* variables that point libpq at the anycast service, over TLS checked against the lab
# CA: the certificate every balancer serves names the anycast address (lab_tls_certs).
LAB_CLIENT_ENV=(PGHOST="$ANYCAST" PGPORT=5432 PGUSER="$DB_USER" PGPASSWORD="$DB_PASSWORD"
  PGDATABASE="$DB_NAME" PGCONNECT_TIMEOUT=3 PGSSLMODE=verify-full
  PGSSLROOTCERT="$LAB_STATE/tls/ca.crt")

# lab_tls_certs — a lab CA and the one certificate all balancers serve: its subjectAltName is
# the anycast address (what clients connect to, whichever balancer the router picks) and the
# balancers' own addresses.
lab_tls_certs() {
  local d=$LAB_STATE/tls n san="IP:$ANYCAST"
  for n in "${BALANCERS[@]}"; do san+=",IP:$(b_addr "$n")"; done
  mkdir -p "$d"
  (
    cd "$d" || exit 1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout ca.key -out ca.crt -days 30 -subj "/CN=pgcast lab CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout server.key -out server.csr -subj "/CN=$ANYCAST" 2>/dev/null
    printf 'subjectAltName=%s\n' "$san" >san.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out server.crt -days 30 -extfile san.ext 2>/dev/null
    chmod 600 server.key ca.key
  )
}

# lab_in_client CMD... — run CMD in c1 with PG* variables pointing at the anycast service.
lab_in_client() { env "${LAB_CLIENT_ENV[@]}" ip netns exec "$(lab_ns c1)" "$@"; }

# lab_exec_in_client CMD... — like lab_in_client, but execs: run it as `lab_exec_in_client
# ... &` and $! is the command's own PID (env and ip netns exec exec too), e.g. to signal psql.
lab_exec_in_client() { exec env "${LAB_CLIENT_ENV[@]}" ip netns exec "$(lab_ns c1)" "$@"; }

# lab_client_sql SQL — one psql session from c1 through the anycast address.
lab_client_sql() { lab_in_client "$NL_PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -c "$1"; }

# ---------------------------------------------------------------------------------------------
# Build and teardown

# lab_build — create the whole lab in LAB_STATE and start pgcast on the balancers; waits until
# the router routes the anycast address to all three. A failure tears everything down.
lab_build() {
  [[ $LAB_ECMP == resilient || $LAB_ECMP == hash ]] || nl_die "LAB_ECMP: resilient or hash"
  [[ $LAB_ROUTING == ospf || $LAB_ROUTING == bgp ]] ||
    nl_die "LAB_ROUTING: ospf or bgp, not '$LAB_ROUTING'"
  [[ -x $PGCAST_BIN ]] || nl_die "no pgcast binary at $PGCAST_BIN"
  ! lab_is_up || nl_die "a lab is already up in $LAB_STATE: run lab/down first"
  [[ ! -s $LAB_STATE/namespaces ]] || nl_die "$LAB_STATE holds a half-built lab: run lab/down"
  nl_init "$LAB_STATE"
  lab_tls_certs
  local n r1 c1 sw
  # Until the lab is complete, any exit (failed command, nl_die, signal) tears it down.
  # shellcheck disable=SC2064 # expand now: the trap must tear down this state dir
  trap "nl_log 'setup failed: tearing down'; nl_teardown '$LAB_STATE'" EXIT

  sw=$(lab_ns sw) r1=$(lab_ns r1) c1=$(lab_ns c1)
  nl_log "namespaces: $sw $r1 $c1 $(lab_ns b1)..b3 $(lab_ns pg1)..pg3"
  nl_switch "$sw"
  nl_router "$r1"
  nl_attach "$r1" eth0 "$sw" r1 "$ROUTER_ADDR/24"
  nl_ns_add "$c1"
  nl_p2p "$r1" eth1 "$ROUTER_CLIENT_ADDR/24" "$c1" eth0 "$CLIENT_ADDR/24"
  ip -n "$c1" route add default via "$ROUTER_CLIENT_ADDR"
  for n in "${PG_HOSTS[@]}"; do
    nl_host "$(lab_ns "pg$n")" "$sw" "pg$n" "$(pg_addr "$n")/24"
    ip -n "$(lab_ns "pg$n")" route add default via "$ROUTER_ADDR"
  done
  for n in "${BALANCERS[@]}"; do
    nl_host "$(lab_ns "b$n")" "$sw" "b$n" "$(b_addr "$n")/24" "$ANYCAST/32"
    ip -n "$(lab_ns "b$n")" route add default via "$ROUTER_ADDR"
    mkdir -p "$LAB_STATE/b$n"
    lab_pgcast_conf "$n" >"$LAB_STATE/b$n/pgcast.toml"
    # It holds passwords: pgcast refuses such a file when others may read it.
    chmod 600 "$LAB_STATE/b$n/pgcast.toml"
  done
  {
    printf 'LAB_NAME=%q\nLAB_ROUTING=%q\nLAB_BFD=%q\nLAB_ECMP=%q\nPGCAST_BIN=%q\n' \
      "$LAB_NAME" "$LAB_ROUTING" "$LAB_BFD" "$LAB_ECMP" "$PGCAST_BIN"
  } >"$LAB_STATE/lab.env.tmp"

  local daemons=(zebra ospfd)
  [[ $LAB_ROUTING == ospf ]] || daemons=(zebra bgpd)
  ((LAB_BFD == 0)) || daemons+=(bfdd)
  nl_log "router r1: FRR ${daemons[*]}"
  lab_router_conf >"$LAB_STATE/r1-frr.conf"
  nl_frr_start "$r1" "$LAB_STATE/r1-frr.conf" "${daemons[@]}"
  nl_spawn r1-resilient-ecmp "$r1" "$LAB_STATE/r1-resilient-ecmp.log" \
    "$LAB_DIR/resilient-ecmp" "$ANYCAST"
  nl_wait 5 lab_resilient_active || nl_die "lab/resilient-ecmp did not start"
  [[ $LAB_ECMP == resilient ]] || lab_resilient off

  nl_log "PostgreSQL: pg1 primary, pg2 (synchronous) and pg3 streaming replicas"
  nl_pg_primary "$(lab_ns pg1)" "$LAB_STATE/pg1" "$(pg_addr 1)" "$DB_USER" "$DB_PASSWORD" "$DB_NAME"
  lab_save_spawned_pid "$LAB_STATE/pg1/pid"
  lab_pg_enable_replication
  lab_pg_replica 2
  lab_pg_replica 3
  lab_pg_sql 1 "ALTER SYSTEM SET synchronous_standby_names = '$SYNC_STANDBY'" >/dev/null
  lab_pg_sql 1 "SELECT pg_reload_conf()" >/dev/null
  nl_wait 20 lab_pg_has_sync_standby || nl_die "pg1 has no synchronous standby"
  lab_pg_sql 1 "CREATE TABLE IF NOT EXISTS lab_ledger (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now()); ALTER TABLE lab_ledger OWNER TO $DB_USER" >/dev/null

  nl_log "balancers b1..b3: pgcast ($PGCAST_BIN)"
  for n in "${BALANCERS[@]}"; do
    lab_pgcast_start "$n"
  done
  mv "$LAB_STATE/lab.env.tmp" "$LAB_STATE/lab.env"
  local ms
  ms=$(lab_wait_gateways 60 "${BALANCERS[@]}") ||
    nl_die "the router has no anycast route via all three balancers (has: $(lab_gateways))"
  nl_log "router r1 routes $ANYCAST/32 via $(lab_gateways) (${ms} ms after the last start)"
  if ((LAB_BFD)); then
    # BFD comes up after the routing session (1 s slow start): until then a frozen balancer
    # would only be noticed by the protocol's own timers.
    nl_wait 20 lab_bfd_up "${BALANCERS[@]}" || nl_die "r1's BFD sessions did not come up"
    nl_log "r1's BFD sessions with b1..b3 are up"
  fi
  trap - EXIT
}

# lab_teardown — stop and remove everything lab_build created (also after a failed build).
lab_teardown() { nl_teardown "$LAB_STATE"; }
