//! The soak's report: what was applied, what the clients, the ledger and the routing checker
//! saw, and the verdict of each check (the same text for the test's output and `lab/soak`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use super::chaos::{Event, Kind};
use super::clients::{Role, Seen, Wait};
use super::watch::{Budgets, Cause, Findings};

/// Everything the report is made of.
pub struct Soak<'a> {
    pub header: String,
    pub t0: Instant,
    pub events: &'a [Event],
    pub problems: &'a [String],
    pub forced_exits: u32,
    pub ledger_checks: &'a [String],
    /// (acknowledged, missing, wrong values, rows) on the final primary.
    pub ledger: (usize, usize, usize, usize),
    pub final_primary: usize,
    pub seen: &'a Seen,
    pub findings: &'a Findings,
    pub budgets: &'a Budgets,
    pub max_wait_allowed: Duration,
    pub wait_bound_why: &'a str,
    /// (balancer, lines of its log that contain "panicked").
    pub panics: Vec<(usize, Vec<String>)>,
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// The `p`-th percentile (nearest rank) of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Soak<'_> {
    fn at(&self, t: Instant) -> String {
        format!(
            "+{:.1}s",
            t.saturating_duration_since(self.t0).as_secs_f64()
        )
    }

    pub fn max_wait(&self) -> Option<&Wait> {
        self.seen.waits.iter().max_by_key(|w| w.duration())
    }

    pub fn violations(&self) -> usize {
        self.findings
            .stretches
            .iter()
            .filter(|s| s.violation)
            .count()
    }

    /// Stretches of routing to a balancer killed or frozen (each lasts until detection).
    fn detections(&self) -> usize {
        let f = self.findings;
        f.stretches
            .iter()
            .filter(|s| matches!(s.cause, Cause::Killed | Cause::Frozen))
            .count()
    }

    fn killed_or_frozen(&self) -> bool {
        self.findings
            .impairments
            .iter()
            .any(|i| matches!(i.1, Cause::Killed | Cause::Frozen))
    }

    pub fn panic_count(&self) -> usize {
        self.panics.iter().map(|(_, l)| l.len()).sum()
    }

    /// The kind of the last fault that began before a wait ended (the one it waited out; a
    /// wait begins at the client's previous success, which may precede the fault), if any.
    fn event_of(&self, w: &Wait) -> Option<Kind> {
        self.events
            .iter()
            .rev()
            .find(|e| e.start < w.end)
            .map(|e| e.step.kind)
    }

    /// The verdicts: (check, held).
    pub fn checks(&self) -> Vec<(String, bool)> {
        let (acked, missing, wrong, _) = self.ledger;
        let max_wait = self.max_wait().map_or(Duration::ZERO, Wait::duration);
        vec![
            (
                format!("chaos events applied: {} (at least one)", self.events.len()),
                !self.events.is_empty(),
            ),
            (
                format!("every fault was repaired and recovered from ({} problems)", self.problems.len()),
                self.problems.is_empty(),
            ),
            (
                format!(
                    "every acknowledged write is on the final primary pg{}: {acked} acknowledged, {missing} missing, {wrong} with a wrong value",
                    self.final_primary
                ),
                acked > 0 && missing == 0 && wrong == 0,
            ),
            (
                format!(
                    "r1 never routed to a balancer that could not serve for longer than its budget: {} violations",
                    self.violations()
                ),
                self.violations() == 0,
            ),
            (
                format!(
                    "the checker saw r1 route to a balancer just killed or frozen ({} times), \
                     as it must until detection: it is looking",
                    self.detections()
                ),
                self.detections() > 0 || !self.killed_or_frozen(),
            ),
            (
                format!(
                    "the checker sampled every {} at most: longest gap {}",
                    ms(Duration::from_secs(1)),
                    ms(self.findings.max_sample_gap)
                ),
                self.findings.max_sample_gap <= Duration::from_secs(1),
            ),
            (
                format!(
                    "no client waited longer than {} for a working connection: longest {}",
                    ms(self.max_wait_allowed),
                    ms(max_wait)
                ),
                max_wait <= self.max_wait_allowed,
            ),
            (
                format!(
                    "no pgcast panicked ({}) or exited by itself ({})",
                    self.panic_count(),
                    self.findings.unexpected_exits.len()
                ),
                self.panic_count() == 0 && self.findings.unexpected_exits.is_empty(),
            ),
        ]
    }

    pub fn render(&self) -> String {
        let mut r = String::new();
        let _ = writeln!(r, "{}", self.header);
        self.events_section(&mut r);
        self.ledger_section(&mut r);
        self.routing_section(&mut r);
        self.clients_section(&mut r);
        let _ = writeln!(r, "\nchecks:");
        for (what, held) in self.checks() {
            let _ = writeln!(r, "  {} {what}", if held { "ok    " } else { "FAILED" });
        }
        for p in self.problems {
            let _ = writeln!(r, "  problem: {p}");
        }
        for (b, lines) in &self.panics {
            for l in lines.iter().take(5) {
                let _ = writeln!(r, "  b{b} panicked: {l}");
            }
        }
        for (b, t) in &self.findings.unexpected_exits {
            let _ = writeln!(r, "  b{b}'s pgcast exited by itself at {}", self.at(*t));
        }
        r
    }

    fn events_section(&self, r: &mut String) {
        let mut per_kind: BTreeMap<Kind, usize> = BTreeMap::new();
        for e in self.events {
            *per_kind.entry(e.step.kind).or_default() += 1;
        }
        let counts: Vec<String> = per_kind
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        let recoveries: Vec<Duration> = self
            .events
            .iter()
            .filter_map(|e| e.recovered.map(|t| t - e.repaired))
            .collect();
        let _ = writeln!(
            r,
            "\nchaos: {} events: {}; recovery after the repair: max {}; SIGTERMs still draining after 10 s (then killed): {}",
            self.events.len(),
            counts.join(", "),
            ms(recoveries.iter().max().copied().unwrap_or_default()),
            self.forced_exits
        );
        for e in self.events {
            let who = if e.step.kind.on_balancer() {
                format!(
                    " b{} for {:.1} s",
                    e.step.balancer,
                    e.step.hold.as_secs_f64()
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                r,
                "  {} {}{who}: repaired {}, recovered {}{}",
                self.at(e.start),
                e.step.kind.name(),
                self.at(e.repaired),
                e.recovered.map_or("never".into(), |t| self.at(t)),
                if e.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.note)
                }
            );
        }
    }

    fn ledger_section(&self, r: &mut String) {
        let (acked, missing, wrong, rows) = self.ledger;
        let _ = writeln!(
            r,
            "\nledger: {} INSERTs attempted, {acked} acknowledged; on the final primary pg{}: {rows} rows, {missing} acknowledged missing, {wrong} wrong values ({} rows committed without an acknowledgement reaching the client)",
            self.seen.attempted,
            self.final_primary,
            rows.saturating_sub(acked - missing)
        );
        let _ = writeln!(
            r,
            "  guarantee checked: synchronous replication (synchronous_commit on, one named synchronous standby), failover only to that standby: no acknowledged write may be lost"
        );
        for l in self.ledger_checks {
            let _ = writeln!(r, "  {l}");
        }
    }

    fn routing_section(&self, r: &mut String) {
        let f = self.findings;
        let _ = writeln!(
            r,
            "\nrouting: {} samples of r1's forwarding route (every 50 ms; longest gap {})",
            f.samples,
            ms(f.max_sample_gap)
        );
        for line in &self.budgets.derivation {
            let _ = writeln!(r, "  budget {line}");
        }
        for cause in Cause::ALL {
            let n = f.impairments.iter().filter(|i| i.1 == cause).count();
            let stretches: Vec<Duration> = f
                .stretches
                .iter()
                .filter(|s| s.cause == cause)
                .map(|s| s.duration)
                .collect();
            let seen = f
                .stretches
                .iter()
                .filter(|s| s.cause == cause)
                .map(|s| s.seen)
                .max()
                .unwrap_or_default();
            if n == 0 && stretches.is_empty() {
                continue;
            }
            let v = f
                .stretches
                .iter()
                .filter(|s| s.cause == cause && s.violation)
                .count();
            let list: Vec<String> = stretches
                .iter()
                .map(|d| d.as_millis().to_string())
                .collect();
            let _ = writeln!(
                r,
                "  {cause:?}: {n} impairments; routed to while impaired {} times, longest {} (seen routed at most {} after it began; budget {}); violations {v}; each (ms): {}",
                stretches.len(),
                ms(stretches.iter().max().copied().unwrap_or_default()),
                ms(seen),
                ms(self.budgets.of(cause)),
                list.join(" ")
            );
        }
        for s in f.stretches.iter().filter(|s| s.violation) {
            let _ = writeln!(
                r,
                "  VIOLATION: b{} {:?} still routed {} after {} (gone {} after)",
                s.balancer,
                s.cause,
                ms(s.seen),
                self.at(s.start),
                ms(s.duration)
            );
        }
    }

    fn clients_section(&self, r: &mut String) {
        let s = self.seen;
        let _ = writeln!(
            r,
            "\nclients (c1, through the anycast address; operation timeout 3 s): wait = end of one success to end of the next"
        );
        for role in Role::ALL {
            let st = &s.stats[role as usize];
            let longest = s
                .waits
                .iter()
                .filter(|w| w.role == role)
                .map(Wait::duration)
                .max()
                .unwrap_or_default();
            let _ = writeln!(
                r,
                "  {}: {} ok, {} failed, longest wait {}",
                role.name(),
                st.ok,
                st.failed,
                ms(longest)
            );
        }
        let mut reconnects: Vec<Duration> = s
            .waits
            .iter()
            .filter(|w| w.failed_ops > 0)
            .map(Wait::duration)
            .collect();
        reconnects.sort();
        let _ = writeln!(
            r,
            "  reconnect waits (with failed operations): {}, p50 {}, p99 {}, max {}",
            reconnects.len(),
            ms(percentile(&reconnects, 50.0)),
            ms(percentile(&reconnects, 99.0)),
            ms(reconnects.last().copied().unwrap_or_default())
        );
        let _ = writeln!(r, "  client wait bound: {}", self.wait_bound_why);
        let mut per_kind: BTreeMap<Option<Kind>, &Wait> = BTreeMap::new();
        for w in &s.waits {
            let e = per_kind.entry(self.event_of(w)).or_insert(w);
            if w.duration() > e.duration() {
                *e = w;
            }
        }
        for (k, w) in per_kind {
            let _ = writeln!(
                r,
                "  longest wait during {}: {} ({} from {}, {} failed operations: {})",
                k.map_or("no event", Kind::name),
                ms(w.duration()),
                w.role.name(),
                self.at(w.start),
                w.failed_ops,
                w.last_error
            );
        }
        if let Some(w) = self.max_wait() {
            let _ = writeln!(
                r,
                "  longest wait: {} from {} ({} failed operations; last error: {})",
                w.role.name(),
                self.at(w.start),
                w.failed_ops,
                w.last_error
            );
        }
        let served: Vec<String> = s
            .served_by
            .iter()
            .map(|(a, n)| format!("{a} {n}"))
            .collect();
        let _ = writeln!(
            r,
            "  connector sessions per balancer: {}",
            served.join(", ")
        );
    }
}
