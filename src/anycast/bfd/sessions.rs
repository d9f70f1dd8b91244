//! The set of sessions, without sockets: which peers the owners (BGP, OSPF) want, one
//! session per peer address shared by every owner, discriminator allocation and the
//! demultiplexing of received packets (RFC 5880 §6.3 and §6.8.6).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::fsm::{splitmix64, Action, BfdTimers, Input, Session};
use super::packet::{ControlPacket, State};

/// One peer an owner wants watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdPeer {
    pub peer: Ipv4Addr,
    /// Source address of our packets; learned from the routing table when None.
    pub local: Option<Ipv4Addr>,
    /// Send through this interface (SO_BINDTODEVICE) when set.
    pub interface: Option<String>,
    /// Who wants it, e.g. "bgp 198.18.1.90" or "ospf eth0".
    pub owner: String,
}

/// A session and what the actor reports about it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub peer: Ipv4Addr,
    pub local: Ipv4Addr,
    pub interface: Option<String>,
    pub owners: BTreeSet<String>,
    pub session: Session,
    pub packets_in: u64,
    pub packets_out: u64,
    pub dropped: BTreeMap<String, u64>,
    /// Packets the kernel refused to send.
    pub send_errors: u64,
    /// Wall-clock time the session last came Up, set by the actor (the FSM has no clock).
    pub up_since: Option<SystemTime>,
}

impl Entry {
    pub fn count_drop(&mut self, reason: &str) {
        *self.dropped.entry(reason.to_string()).or_default() += 1;
    }
}

/// What [`Sessions::set_owner`] leaves to the caller.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Peers wanted by someone that have no session yet: resolve the local address, open a
    /// socket, then [`Sessions::insert`].
    pub create: Vec<BfdPeer>,
    /// Sessions nobody wants any more: [`Sessions::remove`] them.
    pub remove: Vec<Ipv4Addr>,
}

/// Where a received packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demux {
    Session(Ipv4Addr),
    Drop(&'static str),
}

#[derive(Debug)]
pub struct Sessions {
    timers: BfdTimers,
    entries: BTreeMap<Ipv4Addr, Entry>,
    by_discr: HashMap<u32, Ipv4Addr>,
    desired: BTreeMap<String, Vec<BfdPeer>>,
    rng: u64,
    /// Held down: new sessions start in AdminDown too.
    admin_down: bool,
}

impl Sessions {
    /// `seed` drives discriminator allocation and each session's jitter.
    pub fn new(timers: BfdTimers, seed: u64) -> Sessions {
        Sessions {
            timers,
            entries: BTreeMap::new(),
            by_discr: HashMap::new(),
            desired: BTreeMap::new(),
            rng: seed,
            admin_down: false,
        }
    }

    /// Replaces what `owner` wants and says which sessions to create and remove. Owners of
    /// existing sessions are updated here; the first owner's local address and interface
    /// win when owners disagree.
    pub fn set_owner(&mut self, owner: &str, peers: Vec<BfdPeer>) -> Plan {
        if peers.is_empty() {
            self.desired.remove(owner);
        } else {
            self.desired.insert(owner.to_string(), peers);
        }
        let mut wanted: BTreeMap<Ipv4Addr, (BfdPeer, BTreeSet<String>)> = BTreeMap::new();
        for (o, list) in &self.desired {
            for p in list {
                wanted
                    .entry(p.peer)
                    .or_insert_with(|| (p.clone(), BTreeSet::new()))
                    .1
                    .insert(o.clone());
            }
        }
        let mut plan = Plan::default();
        for (addr, e) in self.entries.iter_mut() {
            match wanted.get(addr) {
                Some((_, owners)) => e.owners = owners.clone(),
                None => plan.remove.push(*addr),
            }
        }
        for (addr, (p, _)) in wanted {
            if !self.entries.contains_key(&addr) {
                plan.create.push(p);
            }
        }
        plan
    }

    /// Adds a session planned by [`Sessions::set_owner`]; returns its first actions.
    pub fn insert(&mut self, p: &BfdPeer, local: Ipv4Addr, now: Instant) -> Vec<Action> {
        let discr = self.fresh_discriminator();
        let seed = self.next_random();
        let Ok(mut session) = Session::new(discr, self.timers, seed, now) else {
            // The timers were validated when the actor started and the discriminator is
            // nonzero, so this is unreachable; refusing beats panicking.
            return Vec::new();
        };
        let mut actions = Vec::new();
        if self.admin_down {
            actions.extend(session.step(now, Input::AdminDown));
        }
        let owners = self
            .desired
            .iter()
            .filter(|(_, l)| l.iter().any(|x| x.peer == p.peer))
            .map(|(o, _)| o.clone())
            .collect();
        self.by_discr.insert(discr, p.peer);
        self.entries.insert(
            p.peer,
            Entry {
                peer: p.peer,
                local,
                interface: p.interface.clone(),
                owners,
                session,
                packets_in: 0,
                packets_out: 0,
                dropped: BTreeMap::new(),
                send_errors: 0,
                up_since: None,
            },
        );
        actions
    }

    /// Takes a session away, returning the AdminDown packet (diag 7) to send first so the
    /// peer stops at once instead of after its detection time.
    pub fn remove(&mut self, peer: Ipv4Addr, now: Instant) -> Vec<Action> {
        let Some(mut e) = self.entries.remove(&peer) else {
            return Vec::new();
        };
        self.by_discr.remove(&e.session.local_discr());
        e.session.step(now, Input::AdminDown)
    }

    /// Routes a decoded packet from `src` (RFC 5880 §6.8.6 and §6.3): by Your
    /// Discriminator when nonzero, else by source address, and only for Down or AdminDown
    /// packets, since every other state has learned our discriminator.
    pub fn demux(&self, p: &ControlPacket, src: Ipv4Addr) -> Demux {
        if p.your_discr != 0 {
            return match self.by_discr.get(&p.your_discr) {
                Some(peer) => Demux::Session(*peer),
                None => Demux::Drop("unknown_discriminator"),
            };
        }
        if !matches!(p.state, State::Down | State::AdminDown) {
            return Demux::Drop("zero_your_discriminator");
        }
        if self.entries.contains_key(&src) {
            Demux::Session(src)
        } else {
            Demux::Drop("unknown_peer")
        }
    }

    /// Every session to AdminDown (`true`) or back to Down (`false`); new sessions follow.
    pub fn set_admin_down(&mut self, down: bool, now: Instant) -> Vec<(Ipv4Addr, Vec<Action>)> {
        self.admin_down = down;
        let input = if down {
            Input::AdminDown
        } else {
            Input::Enable
        };
        self.entries
            .iter_mut()
            .map(|(a, e)| (*a, e.session.step(now, input.clone())))
            .collect()
    }

    /// New timers for every session and for sessions created later.
    pub fn set_timers(&mut self, timers: BfdTimers, now: Instant) -> Vec<(Ipv4Addr, Vec<Action>)> {
        if timers.validate().is_err() {
            return Vec::new();
        }
        self.timers = timers;
        self.entries
            .iter_mut()
            .map(|(a, e)| (*a, e.session.step(now, Input::SetTimers(timers))))
            .collect()
    }

    pub fn get_mut(&mut self, peer: Ipv4Addr) -> Option<&mut Entry> {
        self.entries.get_mut(&peer)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.entries.values_mut()
    }

    pub fn admin_down(&self) -> bool {
        self.admin_down
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| e.session.next_deadline())
            .min()
    }

    /// Nonzero and unique among our sessions (RFC 5880 §6.8.1).
    fn fresh_discriminator(&mut self) -> u32 {
        loop {
            let d = (self.next_random() >> 32) as u32;
            if d != 0 && !self.by_discr.contains_key(&d) {
                return d;
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        splitmix64(&mut self.rng)
    }
}
