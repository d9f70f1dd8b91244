//! How late the routing thread's timers fire. BFD gives a packet 300 ms before the router
//! declares this balancer dead; a thread that is not scheduled in time after its timer fires
//! (a busy host, no real-time priority) makes a healthy balancer flap. This monitor wakes every
//! [`PERIOD`] on the routing runtime and records how much later than asked it ran, so
//! `pgcast status` and the metrics can say when that is happening and how the thread is
//! scheduled.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How often the monitor asks to be woken.
pub const PERIOD: Duration = Duration::from_millis(50);
/// Lateness above this is counted: a third of BFD's usual 300 ms detection time.
pub const LATE: Duration = Duration::from_millis(100);
/// The window of the reported maximum.
const WINDOW: Duration = Duration::from_secs(60);

/// What `pgcast status` shows about the routing thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TimerLag {
    /// "SCHED_RR priority 10", or "normal (SCHED_OTHER)".
    pub scheduling: String,
    /// Largest lateness of a timer in about the last minute, in milliseconds.
    pub max_ms_last_minute: f64,
    /// Timers more than [`LATE`] late since the start.
    pub late_total: u64,
}

/// The maximum over a sliding window, kept as the maxima of the current and the previous
/// window-length bucket (so it covers between one and two windows; no per-sample storage).
#[derive(Debug, Clone)]
pub struct LagWindow {
    started: Instant,
    current: Duration,
    previous: Duration,
    late_total: u64,
}

impl LagWindow {
    pub fn new(now: Instant) -> Self {
        LagWindow {
            started: now,
            current: Duration::ZERO,
            previous: Duration::ZERO,
            late_total: 0,
        }
    }

    /// Records a timer that fired `lateness` late, at `now`.
    pub fn record(&mut self, now: Instant, lateness: Duration) {
        if now.saturating_duration_since(self.started) >= WINDOW {
            let whole_windows =
                now.saturating_duration_since(self.started).as_secs() / WINDOW.as_secs();
            // More than one window without a sample: the previous bucket is stale too.
            self.previous = if whole_windows == 1 {
                self.current
            } else {
                Duration::ZERO
            };
            self.current = Duration::ZERO;
            self.started += WINDOW * whole_windows as u32;
        }
        self.current = self.current.max(lateness);
        if lateness > LATE {
            self.late_total += 1;
        }
    }

    pub fn max(&self) -> Duration {
        self.current.max(self.previous)
    }

    pub fn late_total(&self) -> u64 {
        self.late_total
    }
}

/// How the calling thread is scheduled.
pub fn current_thread_scheduling() -> String {
    use nix::libc;
    let crate::sys::ThreadScheduling { policy, priority } = crate::sys::current_thread_scheduling();
    match policy {
        libc::SCHED_RR => format!("SCHED_RR priority {priority}"),
        libc::SCHED_FIFO => format!("SCHED_FIFO priority {priority}"),
        _ => "normal (SCHED_OTHER)".to_string(),
    }
}

/// Starts the monitor on the current runtime (the routing one); its findings on the channel.
/// The scheduling is read on the runtime's thread (not the caller's), at once and then every
/// minute (the daemon may change it).
pub fn spawn() -> watch::Receiver<TimerLag> {
    let (tx, rx) = watch::channel(TimerLag {
        scheduling: "not read yet".to_string(),
        ..TimerLag::default()
    });
    tokio::spawn(async move {
        let mut window = LagWindow::new(Instant::now());
        let mut scheduling = current_thread_scheduling();
        let mut scheduling_read = Instant::now();
        tx.send_modify(|lag| lag.scheduling.clone_from(&scheduling));
        loop {
            let asked = Instant::now();
            tokio::time::sleep(PERIOD).await;
            let now = Instant::now();
            window.record(
                now,
                now.saturating_duration_since(asked).saturating_sub(PERIOD),
            );
            if now.saturating_duration_since(scheduling_read) >= WINDOW {
                scheduling = current_thread_scheduling();
                scheduling_read = now;
            }
            let lag = TimerLag {
                scheduling: scheduling.clone(),
                max_ms_last_minute: window.max().as_secs_f64() * 1000.0,
                late_total: window.late_total(),
            };
            if tx.send(lag).is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maximum_covers_the_last_window_and_late_timers_are_counted() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = LagWindow::new(t0);
        w.record(t0 + ms(10), ms(3));
        w.record(t0 + ms(20), ms(150));
        w.record(t0 + ms(30), ms(1));
        assert_eq!(w.max(), ms(150));
        assert_eq!(w.late_total(), 1);
        // Next window: the previous maximum still counts.
        w.record(t0 + WINDOW + ms(5), ms(2));
        assert_eq!(w.max(), ms(150));
        // Two windows later it has aged out.
        w.record(t0 + WINDOW * 2 + ms(5), ms(4));
        assert_eq!(w.max(), ms(4));
        // A long silence (no samples for several windows) forgets everything before it.
        w.record(t0 + WINDOW * 5 + ms(1), ms(120));
        assert_eq!(w.max(), ms(120));
        w.record(t0 + WINDOW * 7 + ms(1), ms(1));
        assert_eq!(w.max(), ms(1));
        assert_eq!(w.late_total(), 2);
    }

    #[test]
    fn a_plain_thread_reports_normal_scheduling() {
        let s = std::thread::spawn(current_thread_scheduling)
            .join()
            .expect("thread");
        assert_eq!(s, "normal (SCHED_OTHER)");
    }
}
