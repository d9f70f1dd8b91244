//! The chaos loop: a seeded schedule of faults, applied one at a time; each is repaired and the
//! lab recovers (r1 routes to all three balancers again, every client succeeded since the
//! repair) before the pause that precedes the next. One fault at a time keeps at least two
//! balancers able to serve.
//!
//! The schedule is a function of the seed alone: rounds of the six kinds in a seeded order,
//! each step with a seeded balancer, hold time and pause, so a seed replays the same faults in
//! the same order (their timing still depends on how fast the lab recovers).

use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::clients::{Clients, Role};
use super::lab_scripts::Lab;
use super::netlab::lossy;
use super::watch::{pid_line, process_alive, Cause, Marks, RouteReader};

/// xorshift64* (Vigna): small, seedable, the same sequence on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // A zero state would stay zero.
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15).max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Kill9,
    Freeze,
    Sigterm,
    CutBackends,
    RouterRestart,
    Failover,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Kill9,
        Kind::Freeze,
        Kind::Sigterm,
        Kind::CutBackends,
        Kind::RouterRestart,
        Kind::Failover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill9 => "kill -9 + restart",
            Kind::Freeze => "SIGSTOP/SIGCONT",
            Kind::Sigterm => "SIGTERM + restart",
            Kind::CutBackends => "backends cut/restored",
            Kind::RouterRestart => "router daemon restart",
            Kind::Failover => "primary failover",
        }
    }

    /// Whether the step breaks one balancer (the others act on the router or the database).
    pub fn on_balancer(self) -> bool {
        !matches!(self, Kind::RouterRestart | Kind::Failover)
    }
}

/// One step of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub kind: Kind,
    /// 1..=3 (used by the balancer faults).
    pub balancer: usize,
    /// How long the fault lasts before its repair.
    pub hold: Duration,
    /// Calm after the recovery, before the next step.
    pub pause: Duration,
}

/// The endless seeded schedule.
pub struct Schedule {
    rng: Rng,
    round: Vec<Kind>,
}

impl Schedule {
    pub fn new(seed: u64) -> Schedule {
        Schedule {
            rng: Rng::new(seed),
            round: Vec::new(),
        }
    }
}

impl Iterator for Schedule {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if self.round.is_empty() {
            // Fisher-Yates: every kind once per round, in a seeded order.
            self.round = Kind::ALL.to_vec();
            for i in (1..self.round.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                self.round.swap(i, j);
            }
        }
        let kind = self.round.pop().expect("refilled above");
        Some(Step {
            kind,
            balancer: 1 + self.rng.below(3) as usize,
            hold: Duration::from_millis(2000 + self.rng.below(3000)),
            pause: Duration::from_millis(500 + self.rng.below(1500)),
        })
    }
}

/// What happened to one step.
#[derive(Clone, Debug)]
pub struct Event {
    pub step: Step,
    pub start: Instant,
    /// When the fault was repaired (process restarted, link restored, primary replaced).
    pub repaired: Instant,
    /// When the lab had recovered (all three routed, every client succeeded since the repair).
    pub recovered: Option<Instant>,
    pub note: String,
}

/// Which PostgreSQL host (1..=3) has which part.
#[derive(Clone, Copy, Debug)]
pub struct Cluster {
    pub primary: usize,
    pub sync: usize,
    pub other: usize,
}

pub struct Chaos<'a> {
    lab: &'a Lab,
    marks: Arc<Marks>,
    route: RouteReader,
    clients: &'a Clients,
    t0: Instant,
    pub cluster: Cluster,
    pub events: Vec<Event>,
    /// Everything that went wrong in the loop itself (a repair or recovery that failed).
    pub problems: Vec<String>,
    /// One line per ledger check made after a failover.
    pub ledger_checks: Vec<String>,
    /// SIGTERMs after which pgcast still ran 10 s later and was killed.
    pub forced_exits: u32,
}

/// How long the lab gets to recover from one fault.
const RECOVERY: Duration = Duration::from_secs(30);

impl<'a> Chaos<'a> {
    pub fn new(lab: &'a Lab, marks: Arc<Marks>, route: RouteReader, clients: &'a Clients) -> Self {
        Chaos {
            lab,
            marks,
            route,
            clients,
            t0: Instant::now(),
            cluster: Cluster {
                primary: 1,
                sync: 2,
                other: 3,
            },
            events: Vec::new(),
            problems: Vec::new(),
            ledger_checks: Vec::new(),
            forced_exits: 0,
        }
    }

    fn at(&self, t: Instant) -> f64 {
        (t - self.t0).as_secs_f64()
    }

    /// Runs steps of `schedule` until `deadline` (the step under way is finished).
    pub fn run(&mut self, schedule: Schedule, deadline: Instant) {
        self.t0 = Instant::now();
        for step in schedule {
            if Instant::now() >= deadline {
                break;
            }
            let start = Instant::now();
            let note = self.apply(&step);
            let repaired = Instant::now();
            let recovered = self.recover(repaired);
            if recovered.is_none() {
                self.problems.push(format!(
                    "+{:.1}s {} b{}: no recovery within {RECOVERY:?} (router has {:?})",
                    self.at(start),
                    step.kind.name(),
                    step.balancer,
                    self.route.balancers()
                ));
            }
            let who = if step.kind.on_balancer() {
                format!(" b{} for {:.1} s", step.balancer, step.hold.as_secs_f64())
            } else {
                String::new()
            };
            eprintln!(
                "soak +{:.1}s {}{who}: repaired +{:.1}s, recovered {}{}",
                self.at(start),
                step.kind.name(),
                self.at(repaired),
                recovered.map_or("never".into(), |r| format!("+{:.1}s", self.at(r))),
                if note.is_empty() {
                    String::new()
                } else {
                    format!(" ({note})")
                }
            );
            if step.kind == Kind::Failover && recovered.is_some() {
                self.ledger_check("after the failover");
            }
            let pause = step.pause;
            self.events.push(Event {
                step,
                start,
                repaired,
                recovered,
                note,
            });
            std::thread::sleep(pause);
        }
    }

    /// Applies and repairs one fault; returns a note for the report.
    fn apply(&mut self, step: &Step) -> String {
        let b = step.balancer;
        match step.kind {
            Kind::Kill9 => {
                self.mark(b, Cause::Killed);
                self.signal(b, "KILL");
                std::thread::sleep(step.hold);
                self.restart(b);
                String::new()
            }
            Kind::Freeze => {
                self.mark(b, Cause::Frozen);
                self.signal(b, "STOP");
                std::thread::sleep(step.hold);
                self.signal(b, "CONT");
                self.marks.clear(b);
                String::new()
            }
            Kind::Sigterm => {
                let start = self.mark(b, Cause::Draining);
                self.signal(b, "TERM");
                // The drain waits up to 30 s for sessions whose packets the router already
                // sends elsewhere: after 10 s they are abandoned (as lab scenario 9 does).
                let exited = self.wait_for(Duration::from_secs(10), |c| !c.alive(b));
                let note = match exited {
                    Some(d) => format!("exited {:.1} s after SIGTERM", d.as_secs_f64()),
                    None => {
                        self.forced_exits += 1;
                        self.signal(b, "KILL");
                        "still draining after 10 s: killed".to_string()
                    }
                };
                std::thread::sleep(step.hold.saturating_sub(start.elapsed()));
                self.restart(b);
                note
            }
            Kind::CutBackends => {
                self.mark(b, Cause::BackendsCut);
                self.lib_ok("lab_cut_backends", &[&b.to_string(), "add"]);
                std::thread::sleep(step.hold);
                self.lib_ok("lab_cut_backends", &[&b.to_string(), "del"]);
                self.marks.clear(b);
                String::new()
            }
            Kind::RouterRestart => {
                let daemon = if self.lab.routing == "bgp" {
                    "bgpd"
                } else {
                    "ospfd"
                };
                self.lib_ok("lab_router_restart", &[daemon]);
                format!("r1 {daemon}")
            }
            Kind::Failover => self.failover(),
        }
    }

    /// The primary stops (immediate shutdown); its synchronous standby is promoted; the
    /// other standby follows the new primary and becomes its synchronous standby; the old
    /// primary is rebuilt as a standby of the new one.
    fn failover(&mut self) -> String {
        let Cluster {
            primary: p,
            sync: s,
            other: o,
        } = self.cluster;
        let (ps, ss, os) = (p.to_string(), s.to_string(), o.to_string());
        let mut note = format!("pg{p} stopped, pg{s} promoted");
        if !self.lib("lab_pg_in_sync", &[&ps, &ss]).status.success() {
            self.problems.push(format!(
                "before a failover pg{s} was not pg{p}'s synchronous standby"
            ));
        }
        self.lib_ok("lab_pg_stop", &[&ps]);
        self.lib_ok("lab_pg_promote", &[&ss]);
        self.lib_ok("lab_pg_follow", &[&os, &ss]);
        let follows = self
            .lib("nl_wait", &["10", "lab_pg_streaming", &ss, &os])
            .status
            .success();
        if !follows {
            // It had replayed WAL of the old primary that the new one never received.
            note += &format!(", pg{o} could not follow: rebuilt");
            self.lib_ok("lab_pg_stop", &[&os]);
            self.lib_ok("lab_pg_rebuild", &[&os, &ss]);
        }
        self.lib_ok("lab_pg_set_sync", &[&ss, &os]);
        self.lib_ok("lab_pg_rebuild", &[&ps, &ss]);
        self.cluster = Cluster {
            primary: s,
            sync: o,
            other: p,
        };
        note + &format!(", pg{o} its synchronous standby, pg{p} rebuilt")
    }

    /// Waits until r1 routes to all three balancers and every client succeeded after
    /// `repaired`; returns when.
    fn recover(&self, repaired: Instant) -> Option<Instant> {
        self.wait_for(RECOVERY, |c| {
            c.route.balancers().len() == 3
                && c.clients.with(|s| {
                    Role::ALL
                        .iter()
                        .all(|r| s.last_ok(*r).is_some_and(|t| t > repaired))
                })
        })
        .map(|_| Instant::now())
    }

    /// Polls `pred` every 20 ms; how long it took, or `None` after `timeout`.
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&Self) -> bool) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if pred(self) {
                return Some(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid_file(&self, b: usize) -> std::path::PathBuf {
        self.lab.state.join(format!("b{b}/pid"))
    }

    fn alive(&self, b: usize) -> bool {
        process_alive(&pid_line(&self.pid_file(b)))
    }

    /// Marks balancer `b`'s current pgcast impaired from now on.
    fn mark(&self, b: usize, cause: Cause) -> Instant {
        let now = Instant::now();
        self.marks.set(b, cause, now, pid_line(&self.pid_file(b)));
        now
    }

    fn signal(&mut self, b: usize, sig: &str) {
        let text = std::fs::read_to_string(self.pid_file(b)).unwrap_or_default();
        let pid = text.split_whitespace().next().unwrap_or("");
        let ok = self.alive(b)
            && std::process::Command::new("kill")
                .args([&format!("-{sig}"), pid])
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            self.problems.push(format!(
                "kill -{sig} b{b}: its pgcast ({pid:?}) is not running"
            ));
        }
    }

    /// Starts b's pgcast again (after it exited or was killed). The mark was about the old
    /// process and no longer applies once the new one runs (the checker sees the PID file
    /// change): the new one announces the prefix only once its own health and listener
    /// self-check pass, which can be before lab_pgcast_start returns.
    fn restart(&mut self, b: usize) {
        if self
            .wait_for(Duration::from_secs(5), |c| !c.alive(b))
            .is_none()
        {
            self.problems
                .push(format!("b{b}'s pgcast still runs 5 s after it was stopped"));
        }
        self.lib_ok("lab_pgcast_start", &[&b.to_string()]);
        self.marks.clear(b);
    }

    fn lib(&self, func: &str, args: &[&str]) -> Output {
        self.lab.lib(func, args)
    }

    /// Runs a lab/lib.sh function; a failure is a problem of the soak.
    fn lib_ok(&mut self, func: &str, args: &[&str]) {
        let out = self.lib(func, args);
        if !out.status.success() {
            self.problems.push(format!(
                "{func} {}: {}{}",
                args.join(" "),
                lossy(&out.stdout),
                lossy(&out.stderr)
            ));
        }
    }

    /// Checks that every write acknowledged so far is on the current primary (with its
    /// value); returns (acknowledged, missing, wrong values, rows on the primary).
    pub fn ledger_check(&mut self, when: &str) -> (usize, usize, usize, usize) {
        let acked: Vec<i64> = self
            .clients
            .with(|s| s.acked.iter().map(|(id, _)| *id).collect());
        let p = self.cluster.primary;
        let out = self.lib(
            "lab_pg_sql",
            &[&p.to_string(), "SELECT id, value FROM soak_ledger"],
        );
        let rows: std::collections::HashMap<i64, i64> = lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('|'))
            .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .collect();
        let missing = acked.iter().filter(|id| !rows.contains_key(id)).count();
        let wrong = acked
            .iter()
            .filter(|id| {
                rows.get(id)
                    .is_some_and(|v| *v != super::clients::ledger_value(**id))
            })
            .count();
        let line = format!(
            "{when}: {} acknowledged, {missing} missing and {wrong} wrong on pg{p} ({} rows){}",
            acked.len(),
            rows.len(),
            if out.status.success() {
                ""
            } else {
                " — the query FAILED"
            }
        );
        eprintln!("soak ledger {line}");
        if !out.status.success() {
            self.problems
                .push(format!("ledger query on pg{p}: {}", lossy(&out.stderr)));
        }
        self.ledger_checks.push(line);
        (acked.len(), missing, wrong, rows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_schedule_and_every_round_has_every_kind() {
        let a: Vec<Step> = Schedule::new(7).take(18).collect();
        let b: Vec<Step> = Schedule::new(7).take(18).collect();
        assert_eq!(a, b);
        let c: Vec<Step> = Schedule::new(8).take(18).collect();
        assert_ne!(a, c);
        for round in a.chunks(6) {
            let mut kinds: Vec<Kind> = round.iter().map(|s| s.kind).collect();
            kinds.sort();
            assert_eq!(kinds, Kind::ALL);
        }
        assert!(a.iter().all(|s| (1..=3).contains(&s.balancer)));
    }
}
