//! Unit tests of the OSPF speaker, one file per concern: `codec` (byte-exact vectors and
//! authentication), `proptests` (round trips, decoding never panics), `fixtures` (packets
//! captured from FRR), `fsm_adjacency` and `fsm_flooding` (scripted inputs to the state
//! machines). Paths are relative (`super::super`) so the folder moves with the module.
//!
//! Below: the shared harness of the state-machine tests. The peer plays an FRR ospfd: on
//! broadcast the DR of the segment (priority 1, address 192.0.2.1), we are a priority-0 DROther.
//! Every packet we emit is also encoded and decoded with the real codec, so the tests check
//! that what the FSM produces is valid on the wire.

mod codec;
mod fixtures;
mod fsm_adjacency;
mod fsm_flooding;
mod proptests;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::auth::{decode_packet, encode_packet, AuthConfig, AuthKey, Received};
use super::instance::{
    Action, Announcement, Input, Instance, InstanceConfig, InterfaceConfig, NetworkType,
};
use super::interface::IfState;
use super::lsa::{
    ls_type, Lsa, LsaBody, LsaHeader, LsaKey, NetworkLsa, Options, RouterLink, RouterLsa,
    INITIAL_SEQ,
};
use super::neighbor::NbrState;
use super::packet::{DbDescription, Hello, Packet, PacketBody, ALL_SPF_ROUTERS};

const ME: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);
const MY_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HIGH_PEER: Ipv4Addr = Ipv4Addr::new(9, 9, 9, 9);
const LOW_PEER: Ipv4Addr = Ipv4Addr::new(0, 0, 0, 9);
const AREA: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const IFX: u32 = 2;
const HOST_MASK: Ipv4Addr = Ipv4Addr::BROADCAST;
const SUBNET_MASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);

fn iface(nt: NetworkType) -> InterfaceConfig {
    InterfaceConfig {
        name: "eth0".into(),
        ifindex: IFX,
        address: MY_ADDR,
        prefix_len: 24,
        network_type: nt,
        hello_interval: 10,
        dead_interval: 40,
        retransmit_interval: 5,
        transmit_delay: 1,
        cost: 10,
        priority: 0,
        mtu: 1500,
        mtu_ignore: false,
        auth: AuthConfig {
            send: AuthKey::Null,
            accept: vec![AuthKey::Null],
        },
    }
}

fn config(nt: NetworkType) -> InstanceConfig {
    InstanceConfig {
        router_id: ME,
        area_id: AREA,
        interfaces: vec![iface(nt)],
        lsdb_max_lsas: 100,
        min_ls_interval: Duration::from_secs(1),
        external: None,
    }
}

fn vip(cost: u16) -> Announcement {
    Announcement {
        prefix: VIP,
        prefix_len: 32,
        cost,
    }
}

fn rkey(rid: Ipv4Addr) -> LsaKey {
    LsaKey {
        ls_type: ls_type::ROUTER,
        ls_id: rid,
        adv_router: rid,
    }
}

fn link(id: Ipv4Addr, data: Ipv4Addr, t: u8, metric: u16) -> RouterLink {
    RouterLink {
        link_id: id,
        link_data: data,
        link_type: t,
        metric,
    }
}

/// The peer's Router-LSA: a transit link on the segment.
fn peer_router_lsa(rid: Ipv4Addr, seq: i32) -> Lsa {
    let body = LsaBody::Router(RouterLsa {
        flags: 0,
        links: vec![link(PEER_ADDR, PEER_ADDR, RouterLink::TRANSIT, 10)],
    });
    Lsa::originate(5, Options(Options::E), rkey(rid), seq, body)
}

fn peer_network_lsa(rid: Ipv4Addr) -> Lsa {
    let key = LsaKey {
        ls_type: ls_type::NETWORK,
        ls_id: PEER_ADDR,
        adv_router: rid,
    };
    let body = LsaBody::Network(NetworkLsa {
        mask: SUBNET_MASK,
        attached: vec![rid, ME],
    });
    Lsa::originate(5, Options(Options::E), key, INITIAL_SEQ + 3, body)
}

/// Encode with the real codec and decode again: what we emit must survive the wire.
fn roundtrip(packet: &Packet) {
    let mut buf = BytesMut::new();
    encode_packet(packet, &AuthKey::Null, 0, &mut buf);
    let auth = AuthConfig {
        send: AuthKey::Null,
        accept: vec![AuthKey::Null],
    };
    let back = decode_packet(&buf, &auth).map(|r| r.packet);
    assert_eq!(
        back.as_ref(),
        Ok(packet),
        "packet does not round-trip through the codec"
    );
}

fn sends(acts: &[Action]) -> Vec<(Ipv4Addr, PacketBody)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Send {
                ifindex,
                dst,
                packet,
            } => {
                assert_eq!(*ifindex, IFX);
                assert_eq!(packet.router_id, ME);
                assert_eq!(packet.area_id, AREA);
                roundtrip(packet);
                Some((*dst, packet.body.clone()))
            }
            Action::ShutdownComplete => None,
        })
        .collect()
}

fn hellos(acts: &[Action]) -> Vec<(Ipv4Addr, Hello)> {
    sends(acts)
        .into_iter()
        .filter_map(|(d, b)| match b {
            PacketBody::Hello(h) => Some((d, h)),
            _ => None,
        })
        .collect()
}

fn dds(acts: &[Action]) -> Vec<(Ipv4Addr, DbDescription)> {
    sends(acts)
        .into_iter()
        .filter_map(|(d, b)| match b {
            PacketBody::DbDescription(x) => Some((d, x)),
            _ => None,
        })
        .collect()
}

fn lsrs(acts: &[Action]) -> Vec<(Ipv4Addr, Vec<LsaKey>)> {
    sends(acts)
        .into_iter()
        .filter_map(|(d, b)| match b {
            PacketBody::LsRequest(x) => Some((d, x)),
            _ => None,
        })
        .collect()
}

fn lsus(acts: &[Action]) -> Vec<(Ipv4Addr, Vec<Lsa>)> {
    sends(acts)
        .into_iter()
        .filter_map(|(d, b)| match b {
            PacketBody::LsUpdate(x) => Some((d, x)),
            _ => None,
        })
        .collect()
}

fn acks(acts: &[Action]) -> Vec<(Ipv4Addr, Vec<LsaHeader>)> {
    sends(acts)
        .into_iter()
        .filter_map(|(d, b)| match b {
            PacketBody::LsAck(x) => Some((d, x)),
            _ => None,
        })
        .collect()
}

fn router_links(lsa: &Lsa) -> (u8, Vec<RouterLink>) {
    match &lsa.body {
        LsaBody::Router(r) => (r.flags, r.links.clone()),
        other => panic!("not a router LSA: {other:?}"),
    }
}

/// Test harness: an instance, a clock, and the peer's identity.
struct H {
    pub inst: Instance,
    pub now: Instant,
    pub peer: Ipv4Addr,
    pub peer_addr: Ipv4Addr,
    pub p2p: bool,
}

impl H {
    pub fn new(cfg: InstanceConfig, peer: Ipv4Addr) -> H {
        let now = Instant::now();
        let p2p = cfg
            .interfaces
            .first()
            .is_some_and(|i| i.network_type == NetworkType::PointToPoint);
        H {
            inst: Instance::new(cfg, now),
            now,
            peer,
            peer_addr: PEER_ADDR,
            p2p,
        }
    }

    pub fn step(&mut self, input: Input) -> Vec<Action> {
        let timer = matches!(input, Input::Timer);
        let acts = self.inst.step(self.now, input);
        if timer {
            // After a timer step nothing may be overdue, or the actor would spin.
            let next = self.inst.next_deadline();
            assert!(
                next.is_none_or(|t| t > self.now),
                "deadline not in the future: {next:?}"
            );
        }
        acts
    }

    pub fn advance(&mut self, d: Duration) -> Vec<Action> {
        self.now += d;
        self.step(Input::Timer)
    }

    /// Advance by `d`, waking at every deadline on the way (as the actor would).
    pub fn run_for(&mut self, d: Duration) -> Vec<Action> {
        let end = self.now + d;
        let mut out = Vec::new();
        while let Some(t) = self.inst.next_deadline().filter(|t| *t <= end) {
            self.now = self.now.max(t);
            out.extend(self.step(Input::Timer));
        }
        self.now = end;
        out.extend(self.step(Input::Timer));
        out
    }

    pub fn recv_seq(&mut self, dst: Ipv4Addr, body: PacketBody, seq: Option<u32>) -> Vec<Action> {
        let packet = Packet {
            router_id: self.peer,
            area_id: AREA,
            body,
        };
        let received = Received {
            packet,
            crypto_seq: seq,
            key_id: seq.map(|_| 1),
        };
        self.step(Input::Packet {
            ifindex: IFX,
            src: self.peer_addr,
            dst,
            received,
        })
    }

    pub fn recv(&mut self, dst: Ipv4Addr, body: PacketBody) -> Vec<Action> {
        self.recv_seq(dst, body, None)
    }

    pub fn peer_hello(&self, sees_us: bool) -> Hello {
        let (dr, mask) = if self.p2p {
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
        } else {
            (self.peer_addr, SUBNET_MASK)
        };
        Hello {
            network_mask: mask,
            hello_interval: 10,
            options: Options(Options::E | Options::O),
            priority: 1,
            dead_interval: 40,
            dr,
            bdr: Ipv4Addr::UNSPECIFIED,
            neighbors: if sees_us { vec![ME] } else { vec![] },
        }
    }

    pub fn hello(&mut self, sees_us: bool) -> Vec<Action> {
        let h = self.peer_hello(sees_us);
        self.recv(ALL_SPF_ROUTERS, PacketBody::Hello(h))
    }

    pub fn dd(
        &mut self,
        init: bool,
        more: bool,
        master: bool,
        seq: u32,
        hdrs: Vec<LsaHeader>,
    ) -> Vec<Action> {
        let dd = DbDescription {
            mtu: 1500,
            options: Options(Options::E | Options::O),
            init,
            more,
            master,
            seq,
            headers: hdrs,
        };
        self.recv(MY_ADDR, PacketBody::DbDescription(dd))
    }

    pub fn nbr_state(&self) -> Option<NbrState> {
        let st = self.inst.status(self.now);
        st.interfaces.first()?.neighbors.first().map(|n| n.state)
    }

    pub fn if_state(&self) -> IfState {
        self.inst.status(self.now).interfaces[0].state
    }

    pub fn dropped(&self, reason: &str) -> u64 {
        self.inst
            .status(self.now)
            .dropped
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    /// Our Router-LSA as currently in the LSDB.
    pub fn our_router_lsa(&self) -> Lsa {
        match self.inst.lsdb.get(&rkey(ME)) {
            Some(e) => e.lsa.clone(),
            None => panic!("no router LSA of ours"),
        }
    }

    /// Drive the adjacency to Full with a minimal exchange (the peer has only its Router-LSA).
    /// Returns the actions of the step that reached Full.
    pub fn establish(&mut self) -> Vec<Action> {
        self.step(Input::Timer);
        self.hello(false);
        self.advance(Duration::from_secs(10));
        // Stay clear of MinLSInterval after anything originated at the 10 s wake-up.
        self.now += Duration::from_secs(2);
        let acts = self.hello(true);
        let ours = dds(&acts);
        assert_eq!(ours.len(), 1, "ExStart must send one DD: {acts:?}");
        let our_seq = ours[0].1.seq;
        let theirs = peer_router_lsa(self.peer, INITIAL_SEQ + 7);
        if self.peer > ME {
            self.dd(true, true, true, 1000, vec![]);
            self.dd(false, false, true, 1001, vec![theirs.header]);
        } else {
            self.dd(false, true, false, our_seq, vec![theirs.header]);
            self.dd(false, false, false, our_seq.wrapping_add(1), vec![]);
        }
        assert_eq!(self.nbr_state(), Some(NbrState::Loading));
        let acts = self.recv(MY_ADDR, PacketBody::LsUpdate(vec![theirs]));
        assert_eq!(self.nbr_state(), Some(NbrState::Full));
        acts
    }
}
