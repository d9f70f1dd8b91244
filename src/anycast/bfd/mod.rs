//! BFD, Bidirectional Forwarding Detection (RFC 5880) over single-hop IPv4 (RFC 5881), so
//! the upstream router drops a frozen or dead balancer within a few hundred milliseconds
//! instead of waiting for the BGP hold time or the OSPF dead interval.
//!
//! Three layers, as for the other speakers: `packet` (pure codec), `fsm` (one session,
//! pure `step(now, input) -> Vec<Action>`) with `sessions` (the set of sessions, owners and
//! demultiplexing, also pure), and `io` (the actor owning the sockets and timers).
//! `status` is what the admin API and the owners read.

pub mod fsm;
pub mod io;
pub mod packet;
pub mod sessions;
pub mod status;

pub use fsm::BfdTimers;
pub use io::{spawn, spawn_with_ports, BfdHandle, BfdIoError, BfdPorts, BFD_CONTROL_PORT};
pub use sessions::BfdPeer;
pub use status::{BfdSessionStatus, BfdStatus};

#[cfg(test)]
mod tests;
