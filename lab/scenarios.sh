# shellcheck shell=bash
# lab/scenarios.sh — the lab's failure scenarios. Each `scenario_NAME` runs against a lab that
# is up with all three balancers in the router's ECMP set, prints its part of the report
# (also appended to $LAB_REPORT, default STATE/report.txt), checks outcomes (never timings:
# those are reported) and returns non-zero when a check failed. Each leaves the lab as it found it (three balancers
# announced), except `failover`, which leaves pg2 as the primary and pg1 stopped.
# Sourced by lab/scenario after lab/lib.sh; run one with `lab/scenario NAME`.

# shellcheck disable=SC2034 # used by lab/demo and lab/scenario
SCENARIOS=(spread split backends drain crash freeze cancel restart sessions failover)

SC_FAILED=0

# Where the report goes (besides stdout); lab/demo keeps one report across several labs.
LAB_REPORT=${LAB_REPORT:-$LAB_STATE/report.txt}

sc_say() { printf '%s\n' "$*" | tee -a "$LAB_REPORT"; }
sc_title() {
  SC_FAILED=0
  sc_say ""
  sc_say "== $*"
}
sc_note() { sc_say "   $*"; }
# sc_check DESCRIPTION CMD... — run a check; its outcome goes into the report.
sc_check() {
  local what=$1
  shift
  if "$@"; then
    sc_say "   ok      $what"
  else
    sc_say "   FAILED  $what"
    SC_FAILED=1
  fi
}
sc_result() { return "$SC_FAILED"; }

# sc_tmp NAME — a scratch directory for one scenario under STATE.
sc_tmp() {
  local d=$LAB_STATE/scenario-$1
  rm -rf "$d"
  mkdir -p "$d"
  printf '%s\n' "$d"
}

# sc_connect_many N SQL — N sequential psql sessions from c1 through the anycast address, one
# line of output (or "FAILED") each.
sc_connect_many() {
  # shellcheck disable=SC2016 # the inner script expands its own arguments
  lab_in_client bash -c 'for ((i = 0; i < $1; i++)); do
      "$0" -X -A -t -q -c "$2" 2>/dev/null || echo FAILED
    done' "$NL_PG_BIN/psql" "$1" "$2"
}

# sc_count VALUE <<<LINES — how many lines equal VALUE.
sc_count() { grep -c -x -F -- "$1" || true; }
sc_eq() { [[ $1 == "$2" ]]; }
sc_gt() { (($1 > $2)); }

# sc_check_route WHAT SINCE TIMEOUT N... — waits until the router's anycast next hops are
# exactly balancers N...; checks "WHAT (<ms> ms SINCE)", or "WHAT (has: <next hops>)" after
# TIMEOUT seconds.
sc_check_route() {
  local what=$1 since=$2 timeout=$3 ms
  shift 3
  if ms=$(lab_wait_gateways "$timeout" "$@"); then
    sc_check "$what (${ms} ms $since)" true
  else
    sc_check "$what (has: $(lab_gateways))" false
  fi
}

# sc_restore_b1 — make sure b1 runs and is back in the ECMP set (after drain/crash/restart).
sc_restore_b1() {
  if ! lab_pgcast_running 1; then
    lab_pgcast_start 1
  fi
  lab_wait_gateways 30 1 2 3 >/dev/null || {
    sc_note "b1 did not return to the ECMP set (router has: $(lab_gateways))"
    SC_FAILED=1
  }
  sc_rebalance
}

# sc_rebalance — between scenarios: give a balancer that rejoined its share of the resilient
# group now (a real router hands it only buckets idle for the idle timer, 60 s here).
sc_rebalance() { if lab_resilient_active; then lab_rebalance; fi; }

# ---------------------------------------------------------------------------------------------

scenario_spread() {
  sc_title "1. Spread: 300 client connections from c1 to $ANYCAST:5432"
  local out n b per ok
  out=$(sc_connect_many 300 "SELECT inet_client_addr()")
  ok=$(grep -c -v -x FAILED <<<"$out" || true)
  sc_check "300 of 300 connections answered ($ok)" sc_eq "$ok" 300
  for n in "${BALANCERS[@]}"; do
    b=$(b_addr "$n")
    # The backend sees the balancer as its client: inet_client_addr() names it.
    per=$(sc_count "$b" <<<"$out")
    sc_check "b$n ($b) served $per connections" sc_gt "$per" 0
  done
  sc_result
}

scenario_split() {
  sc_title "2. Split: writes through the anycast address land on pg1, reads on pg2/pg3"
  local writes reads n w r
  lab_pg_sql 1 "CREATE TABLE IF NOT EXISTS lab_split (id bigserial PRIMARY KEY, server inet);
                ALTER TABLE lab_split OWNER TO $DB_USER" >/dev/null
  writes=$(sc_connect_many 20 "INSERT INTO lab_split (server) VALUES (inet_server_addr()) RETURNING server")
  reads=$(sc_connect_many 30 "SELECT inet_server_addr()")
  w=$(sc_count "$(pg_addr 1)" <<<"$writes")
  sc_check "20 of 20 INSERTs ran on pg1 ($w)" sc_eq "$w" 20
  r=0
  for n in 2 3; do
    sc_note "reads on pg$n: $(sc_count "$(pg_addr "$n")" <<<"$reads")"
    r=$((r + $(sc_count "$(pg_addr "$n")" <<<"$reads")))
  done
  sc_check "30 of 30 SELECTs ran on a replica ($r)" sc_eq "$r" 30
  sc_result
}

scenario_backends() {
  sc_title "3. b3 loses its backends (routes to pg1..pg3 cut): it withdraws, then returns"
  local out ok
  lab_cut_backends 3 add
  sc_check_route "router dropped b3" "after the cut" 20 1 2
  sc_note "b3 says: $(lab_pgcast_status 3 | grep -m1 "$ANYCAST/32" | sed 's/^ *//')"
  out=$(sc_connect_many 30 "SELECT 1")
  ok=$(sc_count 1 <<<"$out")
  sc_check "30 of 30 new connections succeed meanwhile ($ok)" sc_eq "$ok" 30
  lab_cut_backends 3 del
  sc_check_route "b3 back in the ECMP set" "after the repair" 30 1 2 3
  sc_rebalance
  sc_result
}

scenario_drain() {
  sc_title "4. Planned drains during pgbench -C (a new connection per transaction): \`pgcast drain\` on b2, then SIGTERM to b1"
  local d ms rc failed processed t0 out
  d=$(sc_tmp drain)
  lab_in_client pgbench -i -s 1 -q >"$d/init.log" 2>&1 ||
    sc_check "pgbench -i through the anycast address" false
  # One thread per client: a pgbench thread blocks in connect() for all its clients, and a
  # paused balancer makes a connect wait for the SYN retransmission (~1 s).
  lab_in_client pgbench -C -n -c 4 -j 4 -T 8 >"$d/pgbench.log" 2>&1 &
  local bench=$!
  sleep 2
  # Maintenance without a stop: b2 leaves the ECMP set and stays up.
  t0=$(lab_now_ms)
  if out=$(lab_pgcast_ctl 2 drain); then
    sc_note "pgcast drain on b2 took $(($(lab_now_ms) - t0)) ms: $out"
  else
    sc_check "pgcast drain on b2 ($out)" false
  fi
  sc_check_route "router dropped b2" "after pgcast drain returned" 10 1 3
  sleep 1
  lab_pgcast_signal 1 TERM
  if ms=$(lab_wait_gateways 10 3); then
    sc_note "router dropped b1 ${ms} ms after SIGTERM"
  else
    sc_check "router dropped b1 after SIGTERM (has: $(lab_gateways))" false
  fi
  rc=0
  wait "$bench" || rc=$?
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$d/pgbench.log")
  processed=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$d/pgbench.log")
  sc_check "pgbench exit code 0 (was $rc)" sc_eq "$rc" 0
  sc_check "failed transactions: ${failed:-?} of ${processed:-?}" sc_eq "${failed:-x}" 0
  grep -m3 -i -E 'error|abort' "$d/pgbench.log" | sed 's/^/   pgbench: /' | tee -a "$LAB_REPORT" || true
  lab_pgcast_wait_exit 1 40 || sc_check "b1 exited after its drain" false
  sc_check "b2 still runs, drained" lab_pgcast_running 2
  sc_note "b2 says: $(lab_pgcast_status 2 | grep -m1 "$ANYCAST/32" | sed 's/^ *//')"
  # Undrain after the load: without resilient hashing a joining next hop moves live flows.
  out=$(lab_pgcast_ctl 2 undrain) || sc_check "pgcast undrain on b2 ($out)" false
  sc_check_route "b2 back in the ECMP set" "after pgcast undrain" 20 2 3
  sc_restore_b1
  sc_result
}

scenario_crash() {
  sc_title "5. Crash: kill -9 of pgcast on b1"
  local d t0 out ok fails last
  d=$(sc_tmp crash)
  touch "$d/run"
  # A client that keeps opening connections (timestamped outcome per attempt).
  # shellcheck disable=SC2016 # the inner script expands its own arguments
  lab_in_client bash -c 'while [[ -e $1/run ]]; do
      if "$0" -X -A -t -q -c "SELECT 1" >/dev/null 2>&1; then r=ok; else r=fail; fi
      t=${EPOCHREALTIME/./}; echo "$((t / 1000)) $r"
    done >"$1/attempts"' "$NL_PG_BIN/psql" "$d" &
  local client=$!
  sleep 1
  t0=$(lab_now_ms)
  lab_pgcast_signal 1 KILL
  local why="OSPF dead interval 3 s"
  ((LAB_BFD == 0)) || why="BFD 100 ms x 3"
  [[ $LAB_ROUTING == ospf ]] || why="BGP: the kernel closed the TCP session"
  sc_check_route "router dropped b1" "after kill -9; $why" 15 2 3
  sleep 1
  rm -f "$d/run"
  wait "$client" || true
  fails=$(awk -v t0="$t0" '$1 >= t0 && $2 == "fail"' "$d/attempts" | wc -l)
  last=$(awk -v t0="$t0" '$1 >= t0 && $2 == "fail" { l = $1 - t0 } END { print l + 0 }' "$d/attempts")
  sc_note "client attempts after the kill: $(awk -v t0="$t0" '$1 >= t0' "$d/attempts" | wc -l), refused: $fails, last refusal at +${last} ms"
  out=$(sc_connect_many 30 "SELECT 1")
  ok=$(sc_count 1 <<<"$out")
  sc_check "30 of 30 new connections succeed on b2/b3 ($ok)" sc_eq "$ok" 30
  sc_restore_b1
  sc_result
}

# A hung balancer (VM frozen, process stopped) cannot withdraw anything: the router must notice
# by itself. With BFD (LAB_BFD=1) it does within 3 x 100 ms; without, the OSPF dead interval or
# the BGP hold time (3 s here) does.
scenario_freeze() {
  sc_title "10. Freeze: kill -STOP of pgcast on b1 (a hung VM)"
  local t0 out ok why
  why="BFD 100 ms x 3"
  ((LAB_BFD)) || why="no BFD: $LAB_ROUTING timers, 3 s"
  if ((LAB_BFD)) && ! nl_wait 20 lab_bfd_up 1; then
    sc_check "r1's BFD session with b1 is up before the freeze" false
  fi
  t0=$(lab_now_ms)
  lab_pgcast_signal 1 STOP
  sc_check_route "router dropped the frozen b1" "after SIGSTOP; $why" 15 2 3
  out=$(sc_connect_many 30 "SELECT 1")
  ok=$(sc_count 1 <<<"$out")
  sc_check "30 of 30 new connections succeed on b2/b3 ($ok)" sc_eq "$ok" 30
  lab_pgcast_signal 1 CONT
  sc_check_route "b1 back in the ECMP set" "after SIGCONT" 30 1 2 3
  sc_note "b1 was frozen for $(($(lab_now_ms) - t0)) ms in all"
  sc_rebalance
  sc_result
}

# sc_cancel_count N OUTCOME — bN's count of CancelRequests with that outcome (pgcast status).
sc_cancel_count() { lab_pgcast_status "$1" --json | jq -r ".cancel_requests.$2 // 0"; }

# One query cancelled by psql (SIGINT → CancelRequest on a new connection, hashed by the
# router independently of the session's connection).
scenario_cancel() {
  sc_title "7. Cancel across balancers: psql's CancelRequest reaches whichever balancer the router picks"
  local d i pid tries=12 cancelled=0 forwarded_before=0 forwarded_after=0 n
  d=$(sc_tmp cancel)
  for n in "${BALANCERS[@]}"; do
    forwarded_before=$((forwarded_before + $(sc_cancel_count "$n" forwarded)))
  done
  for ((i = 1; i <= tries; i++)); do
    lab_exec_in_client "$NL_PG_BIN/psql" -X -A -t -c "SELECT inet_client_addr()" \
      -c "SELECT pg_sleep(30)" >"$d/out$i" 2>&1 &
    pid=$!
    nl_wait 5 grep -q '^198\.' "$d/out$i" || true
    sleep 0.3
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" || true
    grep -q 'canceling statement due to user request' "$d/out$i" && cancelled=$((cancelled + 1))
  done
  for n in "${BALANCERS[@]}"; do
    forwarded_after=$((forwarded_after + $(sc_cancel_count "$n" forwarded)))
  done
  sc_check "$cancelled of $tries queries cancelled" sc_eq "$cancelled" "$tries"
  sc_check "$((forwarded_after - forwarded_before)) cancels reached another balancer and were forwarded" \
    sc_gt $((forwarded_after - forwarded_before)) 0
  sc_result
}

scenario_restart() {
  sc_title "8. Restart of b1: back in the ECMP set, no flap"
  local t0 ms samples=0 bad=0 g want
  lab_pgcast_signal 1 TERM
  lab_wait_gateways 10 2 3 >/dev/null || sc_check "b1 withdrawn on SIGTERM" false
  lab_pgcast_wait_exit 1 40 || sc_check "b1 exited" false
  t0=$(lab_now_ms)
  lab_pgcast_start 1
  if lab_wait_gateways 30 1 2 3 >/dev/null; then
    ms=$(($(lab_now_ms) - t0))
    sc_check "b1 back in the ECMP set ${ms} ms after its start" true
  else
    sc_check "b1 back in the ECMP set (has: $(lab_gateways))" false
  fi
  want=$(lab_expect_gateways 1 2 3)
  # Ten seconds of watching the route every ~50 ms: any sample without all three is a flap.
  local end=$(($(lab_now_ms) + 10000))
  while (($(lab_now_ms) < end)); do
    g=$(lab_gateways)
    samples=$((samples + 1))
    [[ $g == "$want" ]] || bad=$((bad + 1))
    sleep 0.05
  done
  sc_check "no flap: $bad of $samples samples over 10 s lacked a balancer" sc_eq "$bad" 0
  sc_rebalance
  sc_result
}

# sc_sessions_open DIR N — N long-lived psql sessions from c1, each fed through a FIFO;
# SC_FDS[i] is the write end of session i.
sc_sessions_open() {
  local d=$1 n=$2 i fd
  SC_FDS=()
  for ((i = 0; i < n; i++)); do
    mkfifo "$d/in$i"
    # 60 logins at once on a 2-core host (cold pools, debug build) can take longer than
    # the lab's 3 s connect timeout; this scenario is about sessions that are already open.
    lab_exec_in_client env PGCONNECT_TIMEOUT=20 "$NL_PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 \
      <"$d/in$i" >"$d/out$i" 2>&1 &
    printf '%s\n' "$!" >"$d/pid$i"
    exec {fd}>"$d/in$i"
    SC_FDS[i]=$fd
  done
}

# sc_sessions_probe DIR TAG [WAIT_MS] — ask every session for TAG; prints the indexes that
# answered. Waits until each session has answered or its psql has exited (a reset session),
# at most WAIT_MS (default 25 s): a fixed 1.5 s wait counted sessions still logging in as lost.
sc_sessions_probe() {
  local d=$1 tag=$2 wait_ms=${3:-25000} i pending end
  for i in "${!SC_FDS[@]}"; do
    local fd=${SC_FDS[i]}
    { printf "SELECT '%s', inet_client_addr();\n" "$tag" >&"$fd"; } 2>/dev/null || true
  done
  end=$(($(lab_now_ms) + wait_ms))
  while (($(lab_now_ms) < end)); do
    pending=0
    for i in "${!SC_FDS[@]}"; do
      grep -q "^$tag|" "$d/out$i" || sc_process_gone "$(cat "$d/pid$i")" || pending=$((pending + 1))
    done
    ((pending == 0)) && break
    sleep 0.1
  done
  for i in "${!SC_FDS[@]}"; do
    grep -q "^$tag|" "$d/out$i" && printf '%s\n' "$i"
  done
}

# sc_sessions_errors DIR TAG — what the sessions that did not answer TAG printed (counted).
sc_sessions_errors() {
  local d=$1 tag=$2 i
  for i in "${!SC_FDS[@]}"; do
    grep -q "^$tag|" "$d/out$i" || tail -n 1 "$d/out$i"
  done | sort | uniq -c | sort -rn | head -n 3
}

sc_sessions_close() {
  local d=$1 i
  for i in "${!SC_FDS[@]}"; do
    local fd=${SC_FDS[i]}
    exec {fd}>&-
    kill "$(cat "$d/pid$i")" 2>/dev/null || true
  done
  SC_FDS=()
}

# sc_flow_map — the router's choice for 300 synthetic client flows (c1, source ports
# 40000..40299, to the anycast address), one next hop per line (`ip route get`).
sc_flow_map() {
  local p
  for ((p = 40000; p < 40300; p++)); do
    ip -n "$(lab_ns r1)" route get "$ANYCAST" from "$CLIENT_ADDR" iif eth1 ipproto tcp \
      sport "$p" dport 5432 | grep -o 'via [0-9.]*' | cut -d' ' -f2
  done
}

# sc_flows_moved BEFORE AFTER [SKIP_NEXT_HOP] — flows whose next hop changed (ignoring flows
# that were on SKIP_NEXT_HOP before).
sc_flows_moved() { paste -d' ' "$1" "$2" | awk -v skip="${3:-}" '$1 != skip && $1 != $2' | wc -l; }

# sc_sessions_round DIR — open 60 sessions, let b1 leave (SIGTERM) and rejoin; sets
# SC_OTHERS (sessions on b2/b3), SC_LOST_LEAVE and SC_LOST_JOIN (of those, reset when b1 left,
# and when it rejoined).
sc_sessions_round() {
  local d=$1 n=60 i alive0 alive1 alive2 b
  SC_OTHERS=0 SC_LOST_LEAVE=0 SC_LOST_JOIN=0
  local -a others=()
  sc_sessions_open "$d" "$n"
  alive0=$(sc_sessions_probe "$d" p0)
  if (($(wc -w <<<"$alive0") < n)); then
    sc_note "  $((n - $(wc -w <<<"$alive0"))) of $n sessions did not answer before b1 left:"
    sc_note "$(sc_sessions_errors "$d" p0)"
  fi
  for i in $alive0; do
    b=$(sed -n 's/^p0|//p' "$d/out$i")
    [[ $b == "$(b_addr 1)" ]] || others+=("$i")
  done
  SC_OTHERS=${#others[@]}
  sc_flow_map >"$d/flows0"
  lab_pgcast_signal 1 TERM
  lab_wait_gateways 15 2 3 >/dev/null || sc_check "b1 withdrawn" false
  sc_flow_map >"$d/flows1"
  SC_FLOWS_LEAVE=$(sc_flows_moved "$d/flows0" "$d/flows1" "$(b_addr 1)")
  SC_FLOWS_OTHERS=$(grep -c -v -x -F "$(b_addr 1)" "$d/flows0" || true)
  alive1=" $(sc_sessions_probe "$d" p1 | paste -sd' ' -) "
  for i in "${others[@]}"; do [[ $alive1 == *" $i "* ]] || SC_LOST_LEAVE=$((SC_LOST_LEAVE + 1)); done
  # b1's drain would wait for its sessions, which the router no longer sends it: stop it.
  lab_pgcast_wait_exit 1 3 || lab_pgcast_signal 1 KILL || true
  lab_pgcast_wait_exit 1 5 || true
  lab_pgcast_start 1
  lab_wait_gateways 30 1 2 3 >/dev/null || sc_check "b1 rejoined" false
  sc_flow_map >"$d/flows2"
  SC_FLOWS_JOIN=$(sc_flows_moved "$d/flows1" "$d/flows2")
  alive2=" $(sc_sessions_probe "$d" p2 | paste -sd' ' -) "
  for i in "${others[@]}"; do
    [[ $alive1 == *" $i "* && $alive2 != *" $i "* ]] && SC_LOST_JOIN=$((SC_LOST_JOIN + 1))
  done
  sc_sessions_close "$d"
}

scenario_sessions() {
  sc_title "9. Established sessions on b2/b3 while b1 leaves and rejoins (60 psql sessions)"
  sc_note "(a moved flow is a reset session; with hash-threshold ECMP how many move depends on where"
  sc_note " the leaver sits in the router's nexthop group; the resilient group moves none of them"
  sc_note " and gives a rejoining balancer only buckets idle for 60 s)"
  local mode d
  # A SIGPIPE from a session that died must not end the scenario.
  trap '' PIPE
  for mode in hash resilient; do
    d=$(sc_tmp "sessions-$mode")
    if [[ $mode == resilient ]]; then lab_resilient on; else lab_resilient off; fi
    sc_sessions_round "$d"
    sc_note "router ECMP $mode: of $SC_OTHERS sessions on b2/b3, reset when b1 left: $SC_LOST_LEAVE, when it rejoined: $SC_LOST_JOIN"
    sc_note "  300 synthetic flows: b1 left: $SC_FLOWS_LEAVE of the $SC_FLOWS_OTHERS on b2/b3 moved; b1 rejoined: $SC_FLOWS_JOIN of 300 moved"
    sc_check "sessions on b2/b3 were open before b1 left ($mode)" sc_gt "$SC_OTHERS" 0
  done
  sc_check "with resilient ECMP no session on b2/b3 was reset" sc_eq "$SC_LOST_LEAVE/$SC_LOST_JOIN" 0/0
  trap - PIPE
  if [[ $LAB_ECMP == resilient ]]; then lab_resilient on; else lab_resilient off; fi
  sc_rebalance
  sc_result
}

sc_process_gone() { [[ ! -d /proc/$1 ]]; }

# sc_primary_is N BACKEND — does bN's pgcast status show BACKEND as its primary, up?
# (`pgcast status` exits 1 while degraded, so its output is read before grep, not piped.)
sc_primary_is() {
  local out
  out=$(lab_pgcast_status "$1") || true
  grep -q -E "^ *$2 .* primary +up" <<<"$out"
}

# sc_acked_after FILE T0 COUNT — has FILE ("ID MS" lines) at least COUNT acks after T0 (ms)?
sc_acked_after() {
  [[ -s $1 ]] && (($(awk -v t="$2" '$2 > t' "$1" | wc -l) >= $3))
}

scenario_failover() {
  sc_title "6. Primary failure: pg1 stops, pg2 is promoted, the balancers follow"
  local d t0 pid st via_anycast direct outage missing acked n
  d=$(sc_tmp failover)
  touch "$d/run"
  # The ledger client: one INSERT per connection; a line per acknowledged id.
  # shellcheck disable=SC2016 # the inner script expands its own arguments
  lab_in_client bash -c 'i=0; while [[ -e $1/run ]]; do i=$((i + 1))
      if "$0" -X -A -t -q -c "INSERT INTO lab_ledger (id) VALUES ($i)" >/dev/null 2>>"$1/errors"; then
        t=${EPOCHREALTIME/./}; echo "$i $((t / 1000))" >>"$1/acked"
      else
        t=${EPOCHREALTIME/./}; echo "$i $((t / 1000))" >>"$1/failed"
      fi
    done' "$NL_PG_BIN/psql" "$d" &
  local writer=$!
  sleep 2
  read -r pid st <<<"$(lab_pg_postmaster 1)"
  t0=$(lab_now_ms)
  # Immediate shutdown: as abrupt as a crash for the clients, but leaves no orphans behind.
  nl_alive "$pid" "$st" && kill -QUIT "$pid"
  nl_wait 10 sc_process_gone "$pid" || sc_check "pg1 stopped" false
  sc_note "pg1 stopped; the lab (as failover manager) promotes pg2 and points pg3 at it"
  lab_pg_sql 2 "SELECT pg_promote(true, 30)" >/dev/null || sc_check "pg2 promoted" false
  lab_pg_sql 2 "SELECT pg_create_physical_replication_slot('pg3')" >/dev/null || true
  lab_pg_sql 3 "ALTER SYSTEM SET primary_conninfo = 'host=$(pg_addr 2) port=5432 user=replicator application_name=pg3'" >/dev/null
  lab_pg_sql 3 "SELECT pg_reload_conf()" >/dev/null
  # Every balancer must see pg2 as the primary, with no configuration edit.
  for n in "${BALANCERS[@]}"; do
    sc_check "b$n follows: pg2 is its primary" nl_wait 20 sc_primary_is "$n" pg2
  done
  # Keep writing until a few writes made it through the new primary.
  nl_wait 20 sc_acked_after "$d/acked" "$t0" 5 || sc_check "writes succeed after the failover" false
  rm -f "$d/run"
  wait "$writer" || true
  acked=$(wc -l <"$d/acked")
  outage=$(awk -v t0="$t0" '$2 <= t0 { before = $2 } $2 > t0 && !after { after = $2 } END { print after - before }' "$d/acked")
  sc_note "ledger: $acked INSERTs acknowledged, $(wc -l <"$d/failed" 2>/dev/null || echo 0) failed; write outage seen by the client: ${outage} ms"
  cut -d' ' -f1 "$d/acked" | paste -sd, - >"$d/acked.csv"
  missing=$(lab_pg_sql 2 "SELECT count(*) FROM unnest('{$(cat "$d/acked.csv")}'::bigint[]) a(id) WHERE NOT EXISTS (SELECT 1 FROM lab_ledger l WHERE l.id = a.id)")
  sc_check "every acknowledged INSERT is on the new primary (missing: $missing)" sc_eq "$missing" 0
  via_anycast=$(lab_client_sql "SELECT count(*) FROM lab_ledger" 2>/dev/null || echo "?")
  direct=$(lab_pg_sql 2 "SELECT count(*) FROM lab_ledger")
  sc_note "ledger rows read through the anycast address: $via_anycast (on pg2 directly: $direct)"
  sc_result
}
