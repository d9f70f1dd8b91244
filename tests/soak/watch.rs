//! The routing checker: every 50 ms, the next hops r1 forwards the anycast address to, against
//! what each balancer can do at that moment. The chaos loop marks a balancer impaired just
//! before it breaks it and clears the mark once it repaired it (a mark also ends when the
//! marked pgcast process is replaced by a restart); on top of that the checker looks at each
//! pgcast process itself (`/proc`), so a pgcast that exits on its own is caught.
//!
//! For every stretch in which r1 routed to an impaired balancer, the checker records how long
//! it lasted; a sample that still saw it routed later than the cause's budget ([`Budgets`])
//! after the stretch began is a violation.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// Why a balancer cannot serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// `kill -9` of its pgcast, until the restart.
    Killed,
    /// `kill -STOP`, until `kill -CONT`.
    Frozen,
    /// SIGTERM: its listeners drop new connections from the signal on.
    Draining,
    /// Routes to every PostgreSQL host blackholed, until restored.
    BackendsCut,
    /// Its pgcast exited although nobody stopped it (seen in /proc).
    Exited,
}

impl Cause {
    pub const ALL: [Cause; 5] = [
        Cause::Killed,
        Cause::Frozen,
        Cause::Draining,
        Cause::BackendsCut,
        Cause::Exited,
    ];
}

/// The longest r1 may route to a balancer that cannot serve, per cause: detection (the
/// protocol's or pgcast's own) plus the router's processing and the checker's sampling.
#[derive(Clone, Debug)]
pub struct Budgets {
    pub killed: Duration,
    pub frozen: Duration,
    pub draining: Duration,
    pub backends_cut: Duration,
    /// How each was derived, for the report.
    pub derivation: Vec<String>,
}

impl Budgets {
    /// From the lab's configuration (lab/lib.sh): BFD 100 ms x 3, OSPF dead interval / BGP
    /// hold time 3 s, health interval 200 ms, timeout 1 s, fall 2, `[drain] quiesce_ms` 2 s.
    pub fn for_lab(routing: &str, bfd: bool) -> Budgets {
        let ms = Duration::from_millis;
        let ospf = routing == "ospf";
        // The router: OSPF SPF throttle 0/50/1000 ms (the hold grows to 1 s under repeated
        // changes), BGP's 50 ms work queue; then zebra, lab/resilient-ecmp's copy of the
        // route, and one 50 ms sampling period (plus the sample's own ~50 ms).
        let router = if ospf { ms(1000) } else { ms(50) } + ms(150);
        let dead = if bfd { ms(300) } else { ms(3000) };
        // Health: fall (2) consecutive failed probes, each up to interval + timeout.
        let health = 2 * (ms(200) + ms(1000));
        // A withdrawal pgcast decides (health, drain) waits out OSPF's MinLSInterval (1 s)
        // after the previous origination.
        let origination = if ospf { ms(1000) } else { ms(0) };
        let quiesce = ms(2000);
        let detect = if bfd {
            "BFD 100 ms x 3"
        } else if ospf {
            "OSPF dead interval 3 s"
        } else {
            "BGP hold time 3 s"
        };
        let router_why = if ospf {
            "router: SPF hold up to 1000 ms + 150 ms (zebra, resilient copy, reading the route)"
        } else {
            "router: bgpd 50 ms + 150 ms (zebra, resilient copy, reading the route)"
        };
        Budgets {
            killed: dead + router,
            frozen: dead + router,
            draining: quiesce + origination + router,
            backends_cut: health + origination + router,
            derivation: vec![
                format!(
                    "kill -9, frozen, exited: {} + {router_why} = {:?}",
                    detect,
                    dead + router
                ),
                format!(
                    "backends cut: health 2 x (200 ms interval + 1 s timeout){} + router = {:?}",
                    if ospf { " + MinLSInterval 1 s" } else { "" },
                    health + origination + router
                ),
                format!(
                    "SIGTERM: [drain] quiesce_ms 2 s{} + router = {:?}",
                    if ospf { " + MinLSInterval 1 s" } else { "" },
                    quiesce + origination + router
                ),
            ],
        }
    }

    pub fn of(&self, cause: Cause) -> Duration {
        match cause {
            Cause::Killed | Cause::Exited => self.killed,
            Cause::Frozen => self.frozen,
            Cause::Draining => self.draining,
            Cause::BackendsCut => self.backends_cut,
        }
    }
}

/// A stretch in which r1 routed to a balancer that could not serve.
#[derive(Clone, Debug)]
pub struct Stretch {
    pub balancer: usize,
    pub cause: Cause,
    pub start: Instant,
    /// Until the first sample that no longer saw it routed (an upper bound).
    pub duration: Duration,
    /// Until the last sample that saw it routed (a lower bound).
    pub seen: Duration,
    /// `seen` exceeds the cause's budget.
    pub violation: bool,
}

/// The checker's findings.
#[derive(Default, Debug)]
pub struct Findings {
    pub samples: u64,
    /// The longest time between two samples (the checker's own resolution).
    pub max_sample_gap: Duration,
    pub stretches: Vec<Stretch>,
    /// Impairments seen, per cause (whether or not the router routed to them meanwhile).
    pub impairments: Vec<(usize, Cause, Instant)>,
    /// (balancer, when) a pgcast was seen gone without the chaos loop having stopped it.
    pub unexpected_exits: Vec<(usize, Instant)>,
}

/// An impairment: since when, why, and which pgcast process it is about (the "PID STARTTIME"
/// of the balancer's PID file then): a restarted pgcast is a new process, not impaired.
type Mark = (Instant, Cause, String);

/// Impairment marks, set by the chaos loop.
#[derive(Default)]
pub struct Marks {
    marks: Mutex<[Option<Mark>; 3]>,
}

impl Marks {
    /// Balancer `b` (1..=3) cannot serve from `since` on, because of `cause`, until cleared
    /// or until its pgcast is another process than `process`.
    pub fn set(&self, b: usize, cause: Cause, since: Instant, process: String) {
        self.lock()[b - 1] = Some((since, cause, process));
    }

    pub fn clear(&self, b: usize) {
        self.lock()[b - 1] = None;
    }

    pub fn get(&self, b: usize) -> Option<Mark> {
        self.lock()[b - 1].clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Option<Mark>; 3]> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads r1's forwarding state for the anycast address.
pub struct RouteReader {
    pub router_ns: String,
    /// The table r1 forwards the anycast address with (lab/resilient-ecmp's, or main).
    pub table: String,
}

impl RouteReader {
    /// The balancers (1..=3) r1 forwards the anycast address to now.
    pub fn balancers(&self) -> BTreeSet<usize> {
        let out = Command::new("ip")
            .args(["-n", &self.router_ns, "route", "show", "198.18.2.0/32"])
            .args(["table", &self.table])
            .output();
        let text = match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(_) => return BTreeSet::new(),
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].strip_prefix("198.18.1."))
            .filter_map(|last| last.parse::<usize>().ok())
            .filter(|last| (94..=96).contains(last))
            .map(|last| last - 93)
            .collect()
    }
}

/// The "PID STARTTIME" line of a lab PID file (empty if there is none).
pub fn pid_line(pid_file: &Path) -> String {
    fs::read_to_string(pid_file)
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// Is the process of a "PID STARTTIME" line alive and not a zombie?
pub fn process_alive(pid_line: &str) -> bool {
    let mut it = pid_line.split_whitespace();
    let (Some(pid), Some(start)) = (it.next(), it.next()) else {
        return false;
    };
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return false;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields.first() != Some(&"Z") && fields.get(19) == Some(&start)
}

/// One balancer's open stretch: since when r1 routes to it while it cannot serve.
#[derive(Default)]
struct Track {
    mark: Option<(Instant, Cause)>,
    routed_from: Option<Instant>,
    /// The last sample that saw it routed while impaired.
    last_routed: Option<Instant>,
    exited_since: Option<Instant>,
    /// The last non-empty "PID STARTTIME" of its PID file.
    process: String,
}

pub struct Checker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Findings>>,
}

impl Checker {
    /// Starts sampling. `pid_files[b-1]` is balancer b's pgcast PID file (lab/lib.sh).
    pub fn start(
        route: RouteReader,
        marks: Arc<Marks>,
        pid_files: [PathBuf; 3],
        budgets: Budgets,
    ) -> Checker {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("soak-checker".into())
            .spawn(move || sample(route, &marks, &pid_files, &budgets, &st))
            .expect("spawn the checker");
        Checker {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> Findings {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("stopped once")
            .join()
            .expect("checker thread panicked")
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sample(
    route: RouteReader,
    marks: &Marks,
    pid_files: &[PathBuf; 3],
    budgets: &Budgets,
    stop: &AtomicBool,
) -> Findings {
    let mut f = Findings::default();
    let mut tracks: [Track; 3] = Default::default();
    let mut last: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let routed = route.balancers();
        let now = Instant::now();
        if let Some(prev) = last {
            f.max_sample_gap = f.max_sample_gap.max(now - prev);
        }
        last = Some(now);
        f.samples += 1;
        for b in 1..=3 {
            let t = &mut tracks[b - 1];
            // lab/lib.sh rewrites the PID file on a restart (truncate, then write): an empty
            // read is that moment, not a vanished process.
            let read = pid_line(&pid_files[b - 1]);
            if !read.is_empty() {
                t.process = read;
            }
            let process = t.process.clone();
            let mut mark = marks
                .get(b)
                .filter(|m| m.2 == process)
                .map(|(since, cause, _)| (since, cause));
            // A pgcast gone without a mark exited by itself: impaired from the first sample
            // that saw it gone, until the chaos loop marks or restarts it.
            if mark.is_none() && !process_alive(&process) {
                let since = *t.exited_since.get_or_insert_with(|| {
                    f.unexpected_exits.push((b, now));
                    now
                });
                mark = Some((since, Cause::Exited));
            } else if mark.is_none() {
                t.exited_since = None;
            }
            observe(&mut f, b, t, now, routed.contains(&b), mark, budgets);
        }
        std::thread::sleep(SAMPLE_EVERY.saturating_sub(now.elapsed()));
    }
    let now = Instant::now();
    for b in 1..=3 {
        close(&mut f, b, &mut tracks[b - 1], now, budgets);
    }
    f
}

/// One sample of balancer `b`: whether r1 routes to it, and its impairment (if any).
fn observe(
    f: &mut Findings,
    b: usize,
    t: &mut Track,
    now: Instant,
    routed: bool,
    mark: Option<(Instant, Cause)>,
    budgets: &Budgets,
) {
    if mark != t.mark {
        close(f, b, t, now, budgets);
        if let Some((since, cause)) = mark {
            f.impairments.push((b, cause, since));
            // Routed at the first sample: routed since the impairment began.
            t.routed_from = routed.then_some(since);
        }
        t.mark = mark;
    } else if t.mark.is_some() {
        match (routed, t.routed_from) {
            (true, None) => t.routed_from = Some(now),
            (false, Some(_)) => close(f, b, t, now, budgets),
            _ => {}
        }
    }
    if routed && t.mark.is_some() {
        t.last_routed = Some(now);
    }
}

/// Ends balancer `b`'s open stretch (if any) at `now`.
fn close(f: &mut Findings, b: usize, t: &mut Track, now: Instant, budgets: &Budgets) {
    let last_routed = t.last_routed.take();
    if let (Some(start), Some((_, cause))) = (t.routed_from.take(), t.mark) {
        let seen = last_routed.map_or(Duration::ZERO, |l| l.saturating_duration_since(start));
        f.stretches.push(Stretch {
            balancer: b,
            cause,
            start,
            duration: now - start,
            seen,
            // Only what a sample saw: on a loaded host one sample can come a few hundred ms
            // after the previous one, and the route may have changed anywhere in between.
            violation: seen > budgets.of(cause),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample of balancer 1: ms after t0, routed, impaired (since ms, cause).
    type Sample = (u64, bool, Option<(u64, Cause)>);

    fn run(samples: &[Sample]) -> Findings {
        let budgets = Budgets::for_lab("ospf", true);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut f = Findings::default();
        let mut t = Track::default();
        for &(ms, routed, mark) in samples {
            let mark = mark.map(|(since, c)| (at(since), c));
            observe(&mut f, 1, &mut t, at(ms), routed, mark, &budgets);
        }
        f
    }

    #[test]
    fn routing_to_an_impaired_balancer_beyond_its_budget_is_a_violation() {
        let k = Some((1000, Cause::Killed));
        // Killed at 1000 ms while routed; the route drops it at 1300 ms: within 1450 ms.
        let f = run(&[
            (950, true, None),
            (1000, true, k),
            (1300, false, k),
            (1350, false, None),
        ]);
        assert_eq!(f.stretches.len(), 1);
        assert_eq!(f.stretches[0].duration, Duration::from_millis(300));
        assert!(!f.stretches[0].violation);
        // Seen routed 1.6 s after the kill: a violation, counted from the kill.
        let f = run(&[(1000, true, k), (2600, true, k), (2650, false, k)]);
        assert_eq!(f.stretches.len(), 1);
        assert_eq!(f.stretches[0].seen, Duration::from_millis(1600));
        assert!(f.stretches[0].violation, "{:?}", f.stretches);
        // Seen routed 1 s after, gone 2 s after: the route may have changed any time in
        // between (a slow sample), so no violation is claimed.
        let f = run(&[(1000, true, k), (2000, true, k), (3000, false, k)]);
        assert_eq!(f.stretches[0].duration, Duration::from_millis(2000));
        assert!(!f.stretches[0].violation, "{:?}", f.stretches);
        // Dropped, then routed again while still dead: a second stretch from that sample on.
        let f = run(&[
            (1000, true, k),
            (1300, false, k),
            (5000, true, k),
            (6800, true, k),
            (7000, true, None),
        ]);
        assert_eq!(f.stretches.len(), 2);
        assert_eq!(f.stretches[1].duration, Duration::from_millis(2000));
        assert_eq!(f.stretches[1].seen, Duration::from_millis(1800));
        assert!(f.stretches[1].violation);
        // Never routed while impaired: nothing to report.
        let f = run(&[(1000, false, k), (2000, false, None)]);
        assert!(f.stretches.is_empty());
        assert_eq!(f.impairments.len(), 1);
    }
}
