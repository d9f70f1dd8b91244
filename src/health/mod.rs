//! Backend health: one checker per backend on a long-lived connection, aggregated into a
//! [`ClusterView`] published on a `tokio::sync::watch` channel. The proxy reads it to pick
//! backends; the routing speakers read each listener's verdict to announce or withdraw. The
//! self-check probes pgcast's own listeners, so a balancer that cannot take a client withdraws
//! even when the database is fine.

pub mod checker;
pub mod cluster;
pub mod hysteresis;
pub mod self_check;

pub use checker::{connect, spawn, Health};
pub use cluster::{BackendView, ClusterState, ClusterView, ListenerVerdict, Probe, Role};
pub use self_check::ProbeSources;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("connect: {}", describe(.0))]
    Connect(tokio_postgres::Error),
    #[error("query: {}", describe(.0))]
    Query(tokio_postgres::Error),
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("unparsable LSN {0:?}")]
    BadLsn(String),
    #[error("connect to {addr}: {source}")]
    SelfConnect {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr}: {source}")]
    SelfIo {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0} closed the connection without answering the SSLRequest")]
    SelfClosed(std::net::SocketAddr),
    #[error("{addr} refused the probe with {sqlstate}: {message}")]
    SelfRefused {
        addr: std::net::SocketAddr,
        sqlstate: String,
        message: String,
    },
    #[error("{addr} answered the SSLRequest with {byte:#04x}, not 'S' or 'N'")]
    SelfAnswer {
        addr: std::net::SocketAddr,
        byte: u8,
    },
}

/// A PostgreSQL error with what the server said ("53300: sorry, too many clients already"),
/// not only its kind ("db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            // tokio-postgres names the step ("error performing TLS handshake"); the cause
            // (e.g. "invalid peer certificate: UnknownIssuer") is in the source chain.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}
