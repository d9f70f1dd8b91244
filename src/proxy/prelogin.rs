//! The pre-login budget: how many connections may sit in start-up and authentication at once,
//! in total and per source address, apart from the logged-in clients
//! (`limits.max_client_connections`, taken only once a client proved its password).
//!
//! Why apart: a connection costs nothing to open and, until its start-up timeout, holds
//! whatever it was given at accept. When the logged-in slot was taken at accept, 1,000 idle
//! sockets from one address held every slot for 10 s: every real login got 53300 and the
//! listener self-check failed with them, so the anycast prefix was withdrawn (issue 14). Here a
//! stranger holds a pre-login place at most, one address holds at most
//! `limits.max_prelogin_per_source` of them, and the self-check does not take one at all
//! (`health::self_check::ProbeSources`).
//!
//! [`PreLoginBudget`] is the pure decision; [`PreLoginGate`] shares it between the listeners
//! and gives each admitted connection a [`PreLoginPermit`] that gives its place back on drop.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The limits, read from `[limits]` at each accept (a reload applies to the next connection;
/// connections already admitted keep their place until they log in or time out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreLoginLimits {
    pub max_total: usize,
    pub max_per_source: usize,
}

/// What the budget decides for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// `max_total` connections are in start-up already.
    TotalFull,
    /// This source holds `max_per_source` of them already.
    SourceFull,
}

/// Whom a per-source limit counts together. IPv4: the address. IPv6: the /64, since one host
/// usually owns a whole /64 and could otherwise take a new address per connection. An
/// IPv4-mapped IPv6 address (a dual-stack listener) counts as its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => SourceKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    let net = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                    SourceKey(IpAddr::V6(net))
                }
            },
        }
    }
}

/// Connections in start-up, in total and per source. Pure: no clock, no I/O.
#[derive(Debug, Default)]
pub struct PreLoginBudget {
    total: usize,
    per_source: HashMap<SourceKey, usize>,
}

impl PreLoginBudget {
    /// Decides on a new connection from `source`; an admitted one is counted until
    /// [`release`](Self::release). The total is checked first: when both are full the answer
    /// is `TotalFull`, so the counters say the budget is too small rather than blaming a source.
    pub fn admit(&mut self, source: SourceKey, limits: PreLoginLimits) -> Admission {
        if self.total >= limits.max_total {
            return Admission::TotalFull;
        }
        let held = self.per_source.entry(source).or_insert(0);
        if *held >= limits.max_per_source {
            return Admission::SourceFull;
        }
        *held += 1;
        self.total += 1;
        Admission::Admitted
    }

    /// Gives back the place of an admitted connection from `source`.
    pub fn release(&mut self, source: SourceKey) {
        if let Some(held) = self.per_source.get_mut(&source) {
            *held -= 1;
            // Sources with nothing in flight are forgotten: the map is bounded by the budget,
            // not by how many addresses ever connected.
            if *held == 0 {
                self.per_source.remove(&source);
            }
            self.total -= 1;
        }
    }

    /// Connections in start-up now.
    pub fn in_flight(&self) -> usize {
        self.total
    }

    /// Sources with a connection in start-up now.
    pub fn sources(&self) -> usize {
        self.per_source.len()
    }
}

/// The budget shared by every listener.
#[derive(Debug, Default)]
pub struct PreLoginGate {
    budget: Mutex<PreLoginBudget>,
}

impl PreLoginGate {
    pub fn new() -> Arc<Self> {
        Arc::new(PreLoginGate::default())
    }

    /// Admits a connection from `ip`, or says why not.
    pub fn try_enter(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: PreLoginLimits,
    ) -> Result<PreLoginPermit, Admission> {
        let source = SourceKey::of(ip);
        let mut budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        match budget.admit(source, limits) {
            Admission::Admitted => Ok(PreLoginPermit {
                gate: Arc::clone(self),
                source,
            }),
            refused => Err(refused),
        }
    }

    /// Connections in start-up now.
    pub fn in_flight(&self) -> usize {
        self.budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_flight()
    }
}

/// One connection's place in the budget, given back when dropped (logged in, refused, timed
/// out or gone: whichever way the start-up ends).
#[derive(Debug)]
pub struct PreLoginPermit {
    gate: Arc<PreLoginGate>,
    source: SourceKey,
}

impl Drop for PreLoginPermit {
    fn drop(&mut self) {
        self.gate
            .budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(s: &str) -> SourceKey {
        SourceKey::of(ip(s))
    }

    #[test]
    fn admit_table() {
        use Admission::*;
        let limits = PreLoginLimits {
            max_total: 4,
            max_per_source: 2,
        };
        let mut b = PreLoginBudget::default();
        // (source, expected, in flight after)
        let steps = [
            ("10.0.0.1", Admitted, 1),
            ("10.0.0.1", Admitted, 2),
            ("10.0.0.1", SourceFull, 2),
            ("10.0.0.2", Admitted, 3),
            ("10.0.0.3", Admitted, 4),
            // Full in total: says so even for a source under its own limit...
            ("10.0.0.4", TotalFull, 4),
            // ...and for one over it.
            ("10.0.0.1", TotalFull, 4),
        ];
        for (i, (source, expected, after)) in steps.into_iter().enumerate() {
            assert_eq!(b.admit(key(source), limits), expected, "step {i}: {source}");
            assert_eq!(b.in_flight(), after, "step {i}");
        }
        b.release(key("10.0.0.2"));
        assert_eq!(b.admit(key("10.0.0.4"), limits), Admitted);
        assert_eq!(b.admit(key("10.0.0.1"), limits), TotalFull);
        b.release(key("10.0.0.1"));
        assert_eq!(b.admit(key("10.0.0.1"), limits), Admitted);
    }

    #[test]
    fn released_sources_are_forgotten_and_unknown_releases_change_nothing() {
        let limits = PreLoginLimits {
            max_total: 10,
            max_per_source: 10,
        };
        let mut b = PreLoginBudget::default();
        assert_eq!(b.admit(key("10.0.0.1"), limits), Admission::Admitted);
        assert_eq!(b.admit(key("10.0.0.2"), limits), Admission::Admitted);
        assert_eq!(b.sources(), 2);
        b.release(key("10.0.0.1"));
        assert_eq!((b.in_flight(), b.sources()), (1, 1));
        b.release(key("10.0.0.9"));
        b.release(key("10.0.0.1"));
        assert_eq!((b.in_flight(), b.sources()), (1, 1));
    }

    #[test]
    fn a_lowered_limit_refuses_new_connections_and_keeps_admitted_ones() {
        let mut b = PreLoginBudget::default();
        let wide = PreLoginLimits {
            max_total: 10,
            max_per_source: 5,
        };
        for _ in 0..5 {
            assert_eq!(b.admit(key("10.0.0.1"), wide), Admission::Admitted);
        }
        let narrow = PreLoginLimits {
            max_total: 3,
            max_per_source: 1,
        };
        assert_eq!(b.admit(key("10.0.0.2"), narrow), Admission::TotalFull);
        assert_eq!(b.in_flight(), 5);
        for _ in 0..3 {
            b.release(key("10.0.0.1"));
        }
        assert_eq!(b.admit(key("10.0.0.2"), narrow), Admission::Admitted);
        assert_eq!(b.admit(key("10.0.0.2"), narrow), Admission::TotalFull);
    }

    #[test]
    fn ipv6_sources_count_by_slash_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
    }

    #[test]
    fn permits_give_their_place_back_when_dropped() {
        let gate = PreLoginGate::new();
        let limits = PreLoginLimits {
            max_total: 2,
            max_per_source: 1,
        };
        let a = gate.try_enter(ip("10.0.0.1"), limits).expect("first");
        assert_eq!(
            gate.try_enter(ip("10.0.0.1"), limits).unwrap_err(),
            Admission::SourceFull
        );
        let b = gate
            .try_enter(ip("10.0.0.2"), limits)
            .expect("other source");
        assert_eq!(
            gate.try_enter(ip("10.0.0.3"), limits).unwrap_err(),
            Admission::TotalFull
        );
        drop(a);
        assert_eq!(gate.in_flight(), 1);
        let _c = gate.try_enter(ip("10.0.0.1"), limits).expect("after drop");
        drop(b);
        assert_eq!(gate.in_flight(), 1);
    }
}
