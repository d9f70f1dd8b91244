//! Embedded OSPFv2 speaker (RFC 2328): codec (checksum, lsa, packet, auth) and the sans-IO
//! state machines (instance, interface, neighbor, lsdb, flood, origin).
pub mod auth;
pub mod checksum;
pub mod lsa;
pub mod packet;

pub mod flood;
pub mod instance;
pub mod interface;
pub mod lsdb;
pub mod neighbor;
pub mod origin;
pub mod status;

#[cfg(test)]
mod codec_proptests;
#[cfg(test)]
mod codec_tests;
#[cfg(test)]
mod frr_fixture_tests;
#[cfg(test)]
mod fsm_tests;
#[cfg(test)]
mod fsm_tests2;
pub mod io;
