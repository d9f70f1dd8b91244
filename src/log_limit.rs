//! Rate limits for log lines that an outsider can trigger once per packet or per connection
//! (a CancelRequest with a random key, a failed accept): at most one line per interval per
//! call site, which says how many it stood for, so a flood costs a few lines, not one each.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The interval of most call sites: a flood costs a line per 10 s per site.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// A `tracing` event at `$level`, logged at most once per [`INTERVAL`] from this call site (a
/// `static` [`LogLimit`] of its own), with `more_since_last_line` = the events it stood for:
/// `log_limited!(warn, %peer, "login failed: {detail}")`.
#[macro_export]
macro_rules! log_limited {
    ($level:ident, $($arg:tt)+) => {{
        static LIMIT: $crate::log_limit::LogLimit =
            $crate::log_limit::LogLimit::new($crate::log_limit::INTERVAL);
        if let Some(more) = LIMIT.admit() {
            tracing::$level!(more_since_last_line = more, $($arg)+);
        }
    }};
}

/// One call site's limit. `const`, for a `static` beside the log line.
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    state: Mutex<Window>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Window {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl Window {
    /// Pure: whether an event at `now` is logged, and how many events were suppressed since
    /// the last logged one (including none).
    fn admit(&mut self, now: Instant, interval: Duration) -> Option<u64> {
        let due = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= interval);
        if due {
            let suppressed = self.suppressed;
            *self = Window {
                last_logged: Some(now),
                suppressed: 0,
            };
            Some(suppressed)
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl LogLimit {
    pub const fn new(interval: Duration) -> Self {
        LogLimit {
            interval,
            state: Mutex::new(Window {
                last_logged: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when this event may be logged, `n` events having been dropped since the last
    /// line; `None` when it is to be dropped.
    pub fn admit(&self) -> Option<u64> {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        w.admit(Instant::now(), self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs(10);
        let mut w = Window::default();
        assert_eq!(w.admit(t0, s), Some(0), "the first is logged");
        for i in 1..=999 {
            assert_eq!(w.admit(t0 + Duration::from_millis(i), s), None);
        }
        assert_eq!(
            w.admit(t0 + s, s),
            Some(999),
            "the next line counts the dropped"
        );
        assert_eq!(w.admit(t0 + s + Duration::from_secs(1), s), None);
        assert_eq!(w.admit(t0 + s * 3, s), Some(1));
    }
}
