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

pub mod io;

#[cfg(test)]
mod tests;
