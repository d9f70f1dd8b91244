//! Scripted sessions with IPv6 prefixes: the IPv6 unicast capability is offered when the
//! session has an IPv6 next hop (RFC 4760 §8), IPv6 routes go only to a peer that offered it
//! too, each family gets its End-of-RIB (RFC 4724 §2), and ROUTE-REFRESH works for both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use super::super::adj_rib_out::ExportedRoute;
use super::super::collision::ConnectionOrigin;
use super::super::fsm::{Action, Input, Session, SessionInfo};
use super::super::message::{Message, Open};
use super::super::session_config::SessionConfig;
use super::super::update::{Prefix, Update};
use super::fsm::{config, establish, ipv6_only_open, peer_open, receive};

const ANYCAST_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const ANYCAST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
const NEXT_HOP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x94);

fn dual_stack_config() -> SessionConfig {
    SessionConfig {
        next_hop_ipv6: Some(NEXT_HOP_V6),
        ..config(65001, 65000)
    }
}

fn announce(prefixes: &[IpAddr]) -> Input {
    Input::SetAnnouncements(
        prefixes
            .iter()
            .map(|&p| ExportedRoute::new(Prefix::host(p)))
            .collect(),
    )
}

fn dual_stack_peer() -> Open {
    let mut open = peer_open(65000, 90);
    open.capabilities.mp_ipv6_unicast = true;
    open
}

/// (IPv4 NLRI, IPv4 withdrawn, MP_REACH, MP_UNREACH, End-of-RIB) of an UPDATE; the last is
/// "" or the family whose End-of-RIB it is: IPv4's has no attribute, IPv6's one (RFC 4724 §2).
type Counts = (u32, u32, u32, u32, &'static str);

fn counts(update: &Update) -> Counts {
    let s = update.summary();
    let end_of_rib = match (s.end_of_rib, s.path_attributes) {
        (false, _) => "",
        (true, 0) => "ipv4 end-of-rib",
        (true, _) => "ipv6 end-of-rib",
    };
    (
        s.announced_prefixes,
        s.withdrawn_prefixes,
        s.mp_reach_prefixes,
        s.mp_unreach_prefixes,
        end_of_rib,
    )
}

/// The SessionUp reports and the UPDATEs (as [`Counts`]) among `actions`.
fn split(actions: &[Action]) -> (Vec<&SessionInfo>, Vec<Counts>) {
    let mut up = Vec::new();
    let mut updates = Vec::new();
    for action in actions {
        match action {
            Action::SessionUp(info) => up.push(info),
            Action::Send(Message::Update(u)) => updates.push(counts(u)),
            _ => {}
        }
    }
    (up, updates)
}

#[test]
fn an_ipv6_next_hop_offers_ipv6_unicast_in_the_open() {
    let t0 = Instant::now();
    for (cfg, offered) in [(config(65001, 65000), false), (dual_stack_config(), true)] {
        let mut session = Session::new(cfg).expect("valid config");
        session.step(t0, Input::ManualStart);
        let actions = session.step(
            t0,
            Input::TcpConnected {
                origin: ConnectionOrigin::Local,
            },
        );
        let [Action::Send(Message::Open(open))] = actions.as_slice() else {
            panic!("expected our OPEN, got {actions:?}");
        };
        assert!(open.capabilities.mp_ipv4_unicast);
        assert_eq!(open.capabilities.mp_ipv6_unicast, offered);
    }
}

#[test]
fn a_dual_stack_peer_gets_both_families_each_with_its_end_of_rib() {
    let t0 = Instant::now();
    let mut session = Session::new(dual_stack_config()).expect("valid config");
    session.step(t0, announce(&[ANYCAST_V4.into(), ANYCAST_V6.into()]));
    let actions = establish(&mut session, t0, dual_stack_peer());
    let (up, updates) = split(&actions);
    assert!(up[0].ipv4_unicast && up[0].ipv6_unicast, "{up:?}");
    assert_eq!(
        updates,
        [
            (1, 0, 0, 0, ""), // 198.51.100.7/32
            (0, 0, 1, 0, ""), // 2001:db8:2::1/128 in MP_REACH_NLRI
            (0, 0, 0, 0, "ipv4 end-of-rib"),
            (0, 0, 0, 0, "ipv6 end-of-rib"),
        ]
    );
    let mut sent: Vec<String> = session
        .sent_prefixes()
        .iter()
        .map(|p| p.to_string())
        .collect();
    sent.sort();
    assert_eq!(sent, ["198.51.100.7/32", "2001:db8:2::1/128"]);

    // Withdrawing the IPv6 prefix alone: one MP_UNREACH_NLRI.
    let (_, updates) = split(&session.step(t0, announce(&[ANYCAST_V4.into()])));
    assert_eq!(updates, [(0, 0, 0, 1, "")]);

    // ROUTE-REFRESH for IPv6 unicast: everything is sent again.
    session.step(t0, announce(&[ANYCAST_V4.into(), ANYCAST_V6.into()]));
    let refresh = Message::RouteRefresh { afi: 2, safi: 1 };
    let (_, updates) = split(&receive(&mut session, t0, refresh));
    assert_eq!(updates, [(1, 0, 0, 0, ""), (0, 0, 1, 0, "")]);
}

#[test]
fn ipv6_prefixes_are_not_sent_to_a_peer_that_did_not_offer_ipv6() {
    let t0 = Instant::now();
    let mut session = Session::new(dual_stack_config()).expect("valid config");
    session.step(t0, announce(&[ANYCAST_V4.into(), ANYCAST_V6.into()]));
    let actions = establish(&mut session, t0, peer_open(65000, 90));
    let (up, updates) = split(&actions);
    assert!(up[0].ipv4_unicast && !up[0].ipv6_unicast, "{up:?}");
    assert_eq!(updates, [(1, 0, 0, 0, ""), (0, 0, 0, 0, "ipv4 end-of-rib")]);
}

#[test]
fn an_ipv6_only_peer_gets_the_ipv6_prefixes_only() {
    let t0 = Instant::now();
    let mut session = Session::new(dual_stack_config()).expect("valid config");
    session.step(t0, announce(&[ANYCAST_V4.into(), ANYCAST_V6.into()]));
    let actions = establish(&mut session, t0, ipv6_only_open(65000));
    let (up, updates) = split(&actions);
    assert!(!up[0].ipv4_unicast && up[0].ipv6_unicast, "{up:?}");
    assert_eq!(updates, [(0, 0, 1, 0, ""), (0, 0, 0, 0, "ipv6 end-of-rib")]);
}
