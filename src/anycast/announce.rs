//! Which prefixes to announce, and why: the pure link between the health verdicts and the
//! routing protocols. Every speaker (OSPF and BGP) announces exactly what this decides.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::config::{PrefixConfig, Requirement, WhenUnhealthy};
use crate::health::ClusterView;

/// The decision for one prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixVerdict {
    pub prefix: IpAddr,
    pub prefix_len: u8,
    pub announce: bool,
    /// Metric to announce with (the configured cost, or the last-resort cost).
    pub cost: u16,
    /// Human-readable: which rule decided, on which listener's verdict.
    pub reason: String,
}

/// Whether this balancer has been taken out of the anycast set on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Drain {
    /// Announce as health allows.
    #[default]
    Serving,
    /// `pgcast drain`: withdrawn, still serving what reaches it, until `pgcast undrain`.
    Operator,
    /// SIGTERM: withdrawn on the way out.
    Shutdown,
}

/// The reason shown for every prefix while an operator's drain holds.
pub const OPERATOR_DRAIN_REASON: &str = "drained by `pgcast drain` (`pgcast undrain` ends it)";

/// Decides every prefix from the current health view. A drain (SIGTERM, or an operator's
/// `pgcast drain`) withdraws everything regardless of health.
pub fn evaluate(prefixes: &[PrefixConfig], view: &ClusterView, drain: Drain) -> Vec<PrefixVerdict> {
    prefixes
        .iter()
        .map(|p| {
            let (announce, cost, reason) = decide(p, view, drain);
            PrefixVerdict {
                prefix: p.address,
                prefix_len: p.prefix_len,
                announce,
                cost,
                reason,
            }
        })
        .collect()
}

fn decide(p: &PrefixConfig, view: &ClusterView, drain: Drain) -> (bool, u16, String) {
    match drain {
        Drain::Serving => {}
        Drain::Operator => return (false, p.cost, OPERATOR_DRAIN_REASON.into()),
        Drain::Shutdown => {
            return (
                false,
                p.cost,
                "draining: withdrawn before the listeners close".into(),
            )
        }
    }
    let need = match p.require {
        Requirement::Read => "read",
        Requirement::Write => "write",
        Requirement::ReadWrite => "read and write",
    };
    let mut failures = Vec::new();
    // Whether a listener that answers failed only for want of backends: the database is
    // broken for everyone, which is what a last-resort announcement is for. A listener that
    // does not answer means this balancer is broken, and no cost makes it useful.
    let mut any_accepting = false;
    for l in &view.listeners {
        if !p.listeners.is_empty() && !p.listeners.contains(&l.name) {
            continue;
        }
        if !l.accepting {
            failures.push(format!("listener {}: {}", l.name, l.full_reason()));
            continue;
        }
        any_accepting = true;
        let ok = match p.require {
            Requirement::Read => l.can_read,
            Requirement::Write => l.can_write,
            Requirement::ReadWrite => l.can_read && l.can_write,
        };
        if ok {
            return (true, p.cost, format!("listener {} can {need}", l.name));
        }
        failures.push(format!("listener {} cannot {need}: {}", l.name, l.reason));
    }
    let why = if failures.is_empty() {
        "no listener verdict yet".to_string()
    } else {
        failures.join("; ")
    };
    match p.when_unhealthy {
        WhenUnhealthy::LastResort if any_accepting => (
            true,
            p.last_resort_cost,
            format!("last resort (cost {}): {why}", p.last_resort_cost),
        ),
        WhenUnhealthy::LastResort | WhenUnhealthy::Withdraw => (false, p.cost, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerRole;
    use crate::health::ListenerVerdict;

    fn view(verdicts: &[(&str, bool, bool)]) -> ClusterView {
        ClusterView {
            listeners: verdicts
                .iter()
                .map(|(name, r, w)| ListenerVerdict {
                    name: name.to_string(),
                    role: ListenerRole::Auto,
                    can_read: *r,
                    can_write: *w,
                    reason: format!("r={r} w={w}"),
                    accepting: true,
                    accept_error: None,
                })
                .collect(),
            ..ClusterView::default()
        }
    }

    fn prefix(listeners: &[&str], require: Requirement, when: WhenUnhealthy) -> PrefixConfig {
        PrefixConfig {
            address: std::net::Ipv4Addr::new(198, 18, 2, 0).into(),
            prefix_len: 32,
            listeners: listeners.iter().map(|s| s.to_string()).collect(),
            require,
            cost: 10,
            when_unhealthy: when,
            last_resort_cost: 65535,
        }
    }

    #[test]
    fn requirement_is_met_by_any_named_listener() {
        let p = prefix(&["ro", "rw"], Requirement::Read, WhenUnhealthy::Withdraw);
        let v = evaluate(
            std::slice::from_ref(&p),
            &view(&[("ro", false, false), ("rw", true, false)]),
            Drain::Serving,
        );
        assert!(v[0].announce);
        assert_eq!(v[0].cost, 10);
        assert_eq!(v[0].reason, "listener rw can read");
        // A listener the prefix does not stand for does not count.
        let v = evaluate(&[p], &view(&[("other", true, true)]), Drain::Serving);
        assert!(!v[0].announce);
        assert_eq!(v[0].reason, "no listener verdict yet");
    }

    #[test]
    fn write_and_read_write_requirements() {
        let w = prefix(&[], Requirement::Write, WhenUnhealthy::Withdraw);
        let rw = prefix(&[], Requirement::ReadWrite, WhenUnhealthy::Withdraw);
        let only_reads = view(&[("auto", true, false)]);
        assert!(!evaluate(std::slice::from_ref(&w), &only_reads, Drain::Serving)[0].announce);
        assert!(!evaluate(std::slice::from_ref(&rw), &only_reads, Drain::Serving)[0].announce);
        let both = view(&[("auto", true, true)]);
        assert!(evaluate(&[w], &both, Drain::Serving)[0].announce);
        let v = evaluate(&[rw], &both, Drain::Serving);
        assert!(v[0].announce);
        assert_eq!(v[0].reason, "listener auto can read and write");
    }

    #[test]
    fn unhealthy_withdraws_or_stays_as_last_resort() {
        let down = view(&[("auto", false, false)]);
        let v = evaluate(
            &[prefix(&[], Requirement::Read, WhenUnhealthy::Withdraw)],
            &down,
            Drain::Serving,
        );
        assert!(!v[0].announce);
        assert_eq!(v[0].reason, "listener auto cannot read: r=false w=false");
        let v = evaluate(
            &[prefix(&[], Requirement::Read, WhenUnhealthy::LastResort)],
            &down,
            Drain::Serving,
        );
        assert!(v[0].announce);
        assert_eq!(v[0].cost, 65535);
        assert!(
            v[0].reason.starts_with("last resort (cost 65535)"),
            "{}",
            v[0].reason
        );
    }

    #[test]
    fn a_listener_that_does_not_answer_withdraws_even_last_resort_prefixes() {
        let mut broken = view(&[("auto", true, true), ("ro", true, false)]);
        for l in &mut broken.listeners {
            l.accepting = false;
            l.accept_error = Some("connect: Too many open files (os error 24)".into());
        }
        for when in [WhenUnhealthy::Withdraw, WhenUnhealthy::LastResort] {
            let v = evaluate(
                &[prefix(&[], Requirement::Read, when)],
                &broken,
                Drain::Serving,
            );
            assert!(!v[0].announce, "{when:?}");
            assert_eq!(
                v[0].reason,
                "listener auto: not accepting connections: connect: Too many open files \
                 (os error 24); listener ro: not accepting connections: connect: Too many \
                 open files (os error 24)"
            );
        }
        // One listener that answers is enough, as with the backends' verdicts.
        broken.listeners[1].accepting = true;
        let v = evaluate(
            &[prefix(&[], Requirement::Read, WhenUnhealthy::Withdraw)],
            &broken,
            Drain::Serving,
        );
        assert!(v[0].announce);
        assert_eq!(v[0].reason, "listener ro can read");
        // The answering listener lacks what the prefix needs: the database's fault, so a
        // last-resort prefix stays.
        let v = evaluate(
            &[prefix(&[], Requirement::Write, WhenUnhealthy::LastResort)],
            &broken,
            Drain::Serving,
        );
        assert!(v[0].announce);
        assert_eq!(v[0].cost, 65535);
    }

    #[test]
    fn draining_withdraws_even_last_resort_prefixes() {
        let healthy = view(&[("auto", true, true)]);
        for when in [WhenUnhealthy::Withdraw, WhenUnhealthy::LastResort] {
            let p = [prefix(&[], Requirement::Read, when)];
            let v = evaluate(&p, &healthy, Drain::Shutdown);
            assert!(!v[0].announce);
            assert!(v[0].reason.starts_with("draining"));
            let v = evaluate(&p, &healthy, Drain::Operator);
            assert!(!v[0].announce);
            assert_eq!(v[0].reason, OPERATOR_DRAIN_REASON);
            assert!(evaluate(&p, &healthy, Drain::Serving)[0].announce);
        }
    }
}
