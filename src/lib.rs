//! pgcast: a SQL-aware PostgreSQL proxy, health checker of the cluster behind it, and (with the
//! routing issues) an anycast speaker that announces the proxy's address while it can serve.
//!
//! The binary (`src/main.rs`) wires these together; tests and benches use the library.
//!
//! `unsafe` code is allowed only in `sys`, the operating-system boundary.

#![deny(unsafe_code)]

pub mod admin;
pub mod anycast;
pub mod backend_tls;
pub mod config;
pub mod daemon;
pub mod fault;
pub mod file_mode;
pub mod fuzz_entry;
pub mod health;
pub mod log_limit;
pub mod pem;
pub mod proxy;
pub mod scram_verifier;
pub mod status;
#[allow(unsafe_code)]
mod sys;
