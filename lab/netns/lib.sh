# shellcheck shell=bash
# lab/netns/lib.sh — building blocks for network-namespace labs: namespaces, a bridge "switch",
# hosts, routers, point-to-point links, FRR, PostgreSQL 15, and a teardown that removes exactly
# what was recorded.  Sourced by lab/netns/ospf-topology, the future lab/up and the tests.
#
# Every function works inside one state directory, set once with `nl_init STATE_DIR`:
#   STATE_DIR/namespaces   one namespace name per line (recorded *before* it is created)
#   STATE_DIR/pids         "PID STARTTIME SIGNAL NAME" per process we started
#   STATE_DIR/dirs         directories outside STATE_DIR to remove (FRR run/config dirs)
#   STATE_DIR/setup.log    what the setup did (commands' output lands here on failure)
# `nl_teardown STATE_DIR` undoes all of it and also works after a half-failed setup.
#
# Names: the caller passes namespace names (e.g. "${PREFIX}-r1"); interface names are short
# (eth0, lo, p0, b1 ...) and every veth is created directly inside its namespaces, so nothing
# is ever named after the prefix in the root namespace and IFNAMSIZ (16) is never an issue.
#
# Requires root, iproute2, FRR (/usr/lib/frr) and PostgreSQL 15 (/usr/lib/postgresql/15/bin).

NL_FRR_DIR=${NL_FRR_DIR:-/usr/lib/frr}
NL_PG_BIN=${NL_PG_BIN:-/usr/lib/postgresql/15/bin}
NL_STATE=""

nl_log() { printf '%s netlab: %s\n' "$(date +%T.%3N)" "$*" >&2; }
nl_die() {
  nl_log "error: $*"
  exit 1
}

# nl_init STATE_DIR — create (or reuse) the state directory and its record files.
nl_init() {
  [[ $1 == /* ]] || nl_die "state dir must be an absolute path: $1"
  NL_STATE=$1
  mkdir -p "$NL_STATE"
  chmod 755 "$NL_STATE"
  touch "$NL_STATE/namespaces" "$NL_STATE/pids" "$NL_STATE/dirs"
}

nl_need_state() { [[ -n $NL_STATE && -d $NL_STATE ]] || nl_die "nl_init was not called"; }

# nl_run CMD... — run a command, its output into setup.log; on failure show the tail and fail.
nl_run() {
  nl_need_state
  if ! "$@" >>"$NL_STATE/setup.log" 2>&1; then
    nl_log "failed: $*"
    tail -n 20 "$NL_STATE/setup.log" >&2
    return 1
  fi
}

# nl_wait SECONDS CMD... — retry CMD every 0.1 s until it succeeds; fails after SECONDS.
nl_wait() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# nl_starttime PID — start time of a process (field 22 of /proc/PID/stat), empty if gone or
# a zombie: orphans are reaped by PID 1, which here takes about 2 s, and a killed process must
# count as gone at once (a scenario restarts it right away).
nl_starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  # shellcheck disable=SC2086 # split the fields on purpose
  set -- $stat
  [[ $1 == Z ]] || printf '%s\n' "${20}"
}

# nl_record_pid PID SIGNAL NAME — remember a process so teardown stops it with SIGNAL.
nl_record_pid() {
  nl_need_state
  local st
  st=$(nl_starttime "$1")
  [[ -n $st ]] || nl_die "process $3 ($1) exited at once"
  printf '%s %s %s %s\n' "$1" "$st" "$2" "$3" >>"$NL_STATE/pids"
}

# nl_alive PID STARTTIME — is this exact process (not a reused PID) still there?
nl_alive() { [[ -n $2 && "$(nl_starttime "$1")" == "$2" ]]; }

# nl_ns_add NS — create a namespace with lo up (recorded first, so teardown finds it).
nl_ns_add() {
  nl_need_state
  [[ ! -e /var/run/netns/$1 ]] || nl_die "namespace $1 already exists"
  printf '%s\n' "$1" >>"$NL_STATE/namespaces"
  ip netns add "$1"
  ip -n "$1" link set lo up
}

# nl_switch NS [BRIDGE] — a namespace holding a bridge (default br0); snooping off so
# link-local multicast (OSPF 224.0.0.5/6) is always flooded.
nl_switch() {
  local ns=$1 br=${2:-br0}
  nl_ns_add "$ns"
  ip -n "$ns" link add "$br" type bridge mcast_snooping 0
  ip -n "$ns" link set "$br" up
}

# nl_attach NS IFNAME SWITCH_NS PORT ADDR/LEN [BRIDGE] — veth from NS (IFNAME) to a port of
# the bridge in SWITCH_NS, with an address on the NS side.
nl_attach() {
  local ns=$1 ifname=$2 sw=$3 port=$4 addr=$5 br=${6:-br0}
  ip link add "$ifname" netns "$ns" type veth peer name "$port" netns "$sw"
  ip -n "$sw" link set "$port" master "$br"
  ip -n "$sw" link set "$port" up
  ip -n "$ns" addr add "$addr" dev "$ifname"
  ip -n "$ns" link set "$ifname" up
}

# nl_lo_addr NS ADDR — an extra address (e.g. the anycast /32) on lo.
nl_lo_addr() { ip -n "$1" addr add "$2" dev lo; }

# nl_host NS SWITCH_NS PORT ADDR/LEN [LO_ADDR] — a host namespace on the bridge (eth0),
# optionally with an extra /32 on lo.
nl_host() {
  local ns=$1 sw=$2 port=$3 addr=$4 lo=${5:-}
  nl_ns_add "$ns"
  nl_attach "$ns" eth0 "$sw" "$port" "$addr"
  [[ -z $lo ]] || nl_lo_addr "$ns" "$lo"
}

# nl_router NS — a namespace that forwards, with per-flow (L4) ECMP hashing.
nl_router() {
  nl_ns_add "$1"
  ip netns exec "$1" sysctl -q -w net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
}

# nl_p2p NS_A IF_A ADDR_A NS_B IF_B ADDR_B — a point-to-point veth, e.g. 198.18.5.1/30.
nl_p2p() {
  ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
  ip -n "$1" addr add "$3" dev "$2"
  ip -n "$4" addr add "$6" dev "$5"
  ip -n "$1" link set "$2" up
  ip -n "$4" link set "$5" up
}

# nl_spawn NAME NS LOGFILE CMD... — start CMD inside NS in its own session, stdio to LOGFILE,
# and record its PID (ip netns exec and setsid exec, so $! is CMD's own PID). Teardown stops
# it with SIGTERM, or with $NL_SPAWN_SIGNAL if set (e.g. INT).
nl_spawn() {
  nl_need_state
  local name=$1 ns=$2 log=$3
  shift 3
  setsid ip netns exec "$ns" "$@" </dev/null >>"$log" 2>&1 &
  nl_record_pid "$!" "${NL_SPAWN_SIGNAL:-TERM}" "$name"
  # Not a job of this shell: no "Killed" line when a scenario kills it on purpose.
  disown "$!"
}

# ---------------------------------------------------------------------------------------------
# FRR

nl_frr_dirs() {
  local ns=$1 d
  for d in "/var/run/frr/$ns" "/etc/frr/$ns"; do
    printf '%s\n' "$d" >>"$NL_STATE/dirs"
    install -d -o frr -g frr -m 755 "$d"
  done
  install -o frr -g frr -m 644 /dev/null "/etc/frr/$ns/vtysh.conf"
}

# nl_frr_start NS CONF_FILE [DAEMON...] — run FRR daemons (default: zebra ospfd) in NS with
# pathspace NS, config copied to /etc/frr/NS/frr.conf, logs (stdout) to STATE/NS-DAEMON.log.
# Waits until `vtysh -N NS` answers for every daemon.
nl_frr_start() {
  nl_need_state
  local ns=$1 conf=$2 d
  shift 2
  local daemons=("$@")
  ((${#daemons[@]})) || daemons=(zebra ospfd)
  nl_frr_dirs "$ns"
  install -o frr -g frr -m 640 "$conf" "/etc/frr/$ns/frr.conf"
  for d in "${daemons[@]}"; do
    # bfdd under SCHED_RR: a real router has CPUs of its own, this one shares the host's with
    # the load the lab puts on the balancers, and a late bfdd declares healthy balancers dead.
    local rt=()
    [[ $d != bfdd ]] || rt=(chrt -r 10)
    nl_spawn "$ns-$d" "$ns" "$NL_STATE/$ns-$d.log" \
      "${rt[@]}" "$NL_FRR_DIR/$d" -N "$ns" -P 0 -f "/etc/frr/$ns/frr.conf"
    if [[ $d == zebra ]]; then
      nl_wait 10 test -S "/var/run/frr/$ns/zserv.api" ||
        nl_die "zebra in $ns did not come up (see $NL_STATE/$ns-zebra.log)"
    fi
  done
  for d in "${daemons[@]}"; do
    nl_wait 10 test -S "/var/run/frr/$ns/$d.vty" ||
      nl_die "$d in $ns did not come up (see $NL_STATE/$ns-$d.log)"
  done
  nl_wait 10 vtysh -N "$ns" -c 'show version' || nl_die "vtysh -N $ns does not answer"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL 15

# Runs as postgres by exec (no fork), so a spawned PID is the program's own.
NL_AS_POSTGRES=(setpriv --reuid=postgres --regid=postgres --init-groups env LC_ALL=C)

# nl_pg_primary NS DIR ADDR USER PASSWORD DB — initdb in DIR/data, listen on ADDR:5432 inside
# NS, socket in DIR/sock, superuser postgres (trust on the socket), USER/PASSWORD (SCRAM from
# 198.18.0.0/16) owning database DB. Waits until it accepts connections.
nl_pg_primary() {
  nl_need_state
  local ns=$1 dir=$2 addr=$3 user=$4 password=$5 db=$6 w
  for w in "$user" "$password" "$db"; do
    [[ $w =~ ^[A-Za-z0-9_-]+$ ]] || nl_die "PostgreSQL names/passwords: [A-Za-z0-9_-] only: $w"
  done
  install -d -o postgres -g postgres -m 700 "$dir" "$dir/sock"
  # Inside NS: should the setup be killed, teardown finds initdb there.
  (cd "$dir" && nl_run ip netns exec "$ns" "${NL_AS_POSTGRES[@]}" "$NL_PG_BIN/initdb" \
    -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync --no-instructions)
  cat >"$dir/data/pg_hba.conf" <<EOF
# written by lab/netns/lib.sh
local all all trust
host  all all 127.0.0.1/32   trust
host  all all 198.18.0.0/16  scram-sha-256
EOF
  cat >>"$dir/data/postgresql.conf" <<EOF

# ---- lab/netns/lib.sh ----
listen_addresses = '$addr'
port = 5432
unix_socket_directories = '$dir/sock'
cluster_name = '$ns'
max_connections = 100
shared_buffers = 16MB
fsync = off
full_page_writes = off
password_encryption = 'scram-sha-256'
logging_collector = off
EOF
  chown postgres:postgres "$dir/data/pg_hba.conf" "$dir/data/postgresql.conf"
  touch "$dir/postgres.log"
  chown postgres:postgres "$dir/postgres.log"
  # Teardown: SIGINT = fast shutdown.
  (cd "$dir" && NL_SPAWN_SIGNAL=INT nl_spawn "$ns-postgres" "$ns" "$dir/postgres.log" \
    "${NL_AS_POSTGRES[@]}" "$NL_PG_BIN/postgres" -D "$dir/data")
  nl_wait 30 "$NL_PG_BIN/pg_isready" -q -h "$dir/sock" -p 5432 ||
    {
      tail -n 20 "$dir/postgres.log" >&2
      nl_die "PostgreSQL in $ns did not start"
    }
  nl_run "$NL_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/sock" -p 5432 -U postgres \
    -d postgres -c "CREATE ROLE \"$user\" LOGIN PASSWORD '$password'" \
    -c "CREATE DATABASE \"$db\" OWNER \"$user\""
}

# nl_psql NS HOST USER PASSWORD DB SQL — run SQL over TCP from inside NS; prints the result.
nl_psql() {
  PGPASSWORD=$4 PGCONNECT_TIMEOUT=5 ip netns exec "$1" "$NL_PG_BIN/psql" -X -A -t \
    -v ON_ERROR_STOP=1 -h "$2" -U "$3" -d "$5" -c "$6"
}

# ---------------------------------------------------------------------------------------------
# Teardown

# nl_teardown STATE_DIR — stop every recorded process (its signal, then SIGKILL after 5 s),
# plus the FRR daemons named by the pid files of recorded namespaces; kill whatever still runs
# inside a recorded namespace; delete the namespaces and recorded dirs; remove STATE_DIR.
# Idempotent; never fails on a missing piece.
nl_teardown() {
  local state=$1 pid st sig name ns f d left
  [[ -d $state ]] || return 0
  local -a pids=() starts=()
  if [[ -f $state/pids ]]; then
    while read -r pid st sig name; do
      [[ $pid =~ ^[0-9]+$ ]] || continue
      if nl_alive "$pid" "$st"; then
        kill "-${sig:-TERM}" "$pid" 2>/dev/null || true
        pids+=("$pid")
        starts+=("$st")
      fi
    done <"$state/pids"
  fi
  if [[ -f $state/namespaces ]]; then
    while read -r ns; do
      [[ -n $ns && -d /var/run/frr/$ns ]] || continue
      for f in "/var/run/frr/$ns"/*.pid; do
        [[ -f $f ]] || continue
        pid=$(head -n 1 "$f" 2>/dev/null) || continue
        [[ $pid =~ ^[0-9]+$ ]] || continue
        # Only an FRR daemon started with this pathspace (-N NS).
        if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "-N $ns "; then
          kill -TERM "$pid" 2>/dev/null || true
          pids+=("$pid")
          starts+=("$(nl_starttime "$pid")")
        fi
      done
    done <"$state/namespaces"
  fi
  local deadline=$((SECONDS + 5)) i
  while :; do
    left=0
    for i in "${!pids[@]}"; do
      nl_alive "${pids[$i]}" "${starts[$i]}" && left=$((left + 1))
    done
    ((left == 0 || SECONDS >= deadline)) && break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if nl_alive "${pids[$i]}" "${starts[$i]}"; then
      nl_log "teardown: SIGKILL ${pids[$i]}"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
  done
  if [[ -f $state/namespaces ]]; then
    while read -r ns; do
      [[ -n $ns && -e /var/run/netns/$ns ]] || continue
      # Anything still inside one of *our* namespaces (e.g. a PostgreSQL backend whose
      # postmaster was SIGKILLed) is ours: kill it by PID, then delete the namespace.
      for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null || true
      done
      ip netns del "$ns" 2>/dev/null || nl_log "teardown: cannot delete namespace $ns"
    done <"$state/namespaces"
  fi
  if [[ -f $state/dirs ]]; then
    while read -r d; do
      case $d in
      /var/run/frr/?* | /etc/frr/?*) rm -rf -- "$d" ;;
      *) [[ -z $d ]] || nl_log "teardown: not removing unexpected dir $d" ;;
      esac
    done <"$state/dirs"
  fi
  # ospfd writes this outside its -N pathspace.
  rm -f /var/run/frr/ospfd-gr.json
  rm -rf -- "$state"
}
