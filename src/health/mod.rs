//! Backend health: one checker per backend on a long-lived connection, aggregated into a
//! [`ClusterView`] published on a `tokio::sync::watch` channel. The proxy reads it to pick
//! backends; the routing speakers read each listener's verdict to announce or withdraw.

pub mod checker;
pub mod cluster;
pub mod hysteresis;

pub use checker::spawn;
pub use cluster::{BackendView, ClusterState, ClusterView, ListenerVerdict, Probe, Role};

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("connect: {0}")]
    Connect(tokio_postgres::Error),
    #[error("query: {0}")]
    Query(tokio_postgres::Error),
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("unparsable LSN {0:?}")]
    BadLsn(String),
}
