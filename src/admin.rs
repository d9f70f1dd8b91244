//! The admin socket (a Unix socket, mode 0600) and the optional Prometheus metrics endpoint.
//!
//! Protocol: the client writes one request line, `status`, `drain` or `undrain`, and reads one
//! JSON document until the server closes: the status for `status`, a [`CommandReply`] for the
//! others. A client that writes nothing (and so waits, e.g. `socat - UNIX-CONNECT:…`) gets the
//! status after [`REQUEST_WAIT`], as with earlier versions, which answered every connection
//! with it.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::status::{Status, StatusSources};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot connect to admin socket {path}: {source} (is pgcast running?)")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("admin socket i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("admin socket returned an unreadable status: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("another process is serving {0}")]
    InUse(String),
}

/// How long the server waits for a request line before it answers with the status.
pub const REQUEST_WAIT: Duration = Duration::from_millis(500);

/// The longest request line accepted.
const MAX_REQUEST: u64 = 64;

/// What a client asks the admin socket for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCommand {
    Status,
    Control(Control),
}

/// The commands that change the daemon's state; the daemon carries them out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Withdraw the anycast prefixes and stay up (maintenance).
    Drain,
    /// Announce them again after a drain.
    Undrain,
}

impl AdminCommand {
    /// The request line's word.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminCommand::Status => "status",
            AdminCommand::Control(Control::Drain) => "drain",
            AdminCommand::Control(Control::Undrain) => "undrain",
        }
    }

    /// Parses a request line; an empty one (the client only closed its side) is `status`.
    pub fn parse(line: &str) -> Result<AdminCommand, String> {
        match line.trim() {
            "" | "status" => Ok(AdminCommand::Status),
            "drain" => Ok(AdminCommand::Control(Control::Drain)),
            "undrain" => Ok(AdminCommand::Control(Control::Undrain)),
            other => Err(format!(
                "unknown admin command {other:?}: expected status, drain or undrain"
            )),
        }
    }
}

/// The answer to `drain` and `undrain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    /// False when the command could not do what it says (e.g. nothing to drain).
    pub ok: bool,
    /// What happened, for people.
    pub message: String,
}

/// A command the daemon carries out (it owns the listeners and the routing).
pub struct AdminRequest {
    pub command: Control,
    pub reply: oneshot::Sender<CommandReply>,
}

/// Binds the admin socket (replacing a stale one) with mode 0600.
pub async fn bind_admin(path: &Path) -> Result<UnixListener, AdminError> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(AdminError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until `stop` turns true; commands go to the daemon through `commands`.
pub async fn serve_admin(
    listener: UnixListener,
    sources: Arc<StatusSources>,
    commands: mpsc::Sender<AdminRequest>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        tokio::spawn(serve_one(stream, Arc::clone(&sources), commands.clone()));
    }
}

async fn serve_one(
    stream: UnixStream,
    sources: Arc<StatusSources>,
    commands: mpsc::Sender<AdminRequest>,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST);
    // Timeout, EOF or an unreadable line all leave `line` as it is: partial or empty.
    let _ = tokio::time::timeout(REQUEST_WAIT, reader.read_line(&mut line)).await;
    let json = match AdminCommand::parse(&line) {
        Ok(AdminCommand::Status) => serde_json::to_vec(&sources.current()),
        Ok(AdminCommand::Control(command)) => {
            let (reply, answer) = oneshot::channel();
            let sent = commands.send(AdminRequest { command, reply }).await;
            let reply = match (sent, answer.await) {
                (Ok(()), Ok(reply)) => reply,
                _ => CommandReply {
                    ok: false,
                    message: "pgcast is shutting down".into(),
                },
            };
            serde_json::to_vec(&reply)
        }
        Err(message) => serde_json::to_vec(&CommandReply { ok: false, message }),
    };
    if let Ok(mut json) = json {
        json.push(b'\n');
        let _ = write.write_all(&json).await;
    }
}

async fn request(path: &Path, command: AdminCommand) -> Result<Vec<u8>, AdminError> {
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| AdminError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    stream
        .write_all(format!("{}\n", command.as_str()).as_bytes())
        .await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    Ok(buf)
}

/// Reads the status from a running pgcast.
pub async fn fetch_status(path: &Path) -> Result<Status, AdminError> {
    Ok(serde_json::from_slice(
        &request(path, AdminCommand::Status).await?,
    )?)
}

/// Asks a running pgcast to drain or undrain; returns when it has done so.
pub async fn send_command(path: &Path, command: AdminCommand) -> Result<CommandReply, AdminError> {
    Ok(serde_json::from_slice(&request(path, command).await?)?)
}

/// Serves Prometheus text format on `GET /metrics` (any path answers the same).
pub async fn serve_metrics(
    listener: TcpListener,
    sources: Arc<StatusSources>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let body = render_metrics(&sources.current());
        tokio::spawn(async move {
            // Read the request head (bounded) before answering, so clients see a clean close.
            let mut head = [0u8; 2048];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut head))
                .await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = stream.write_all(resp.as_bytes()).await;
        });
    }
}

/// Renders the status as Prometheus metrics.
pub fn render_metrics(s: &Status) -> String {
    let mut m = String::new();
    let b = |v: bool| if v { 1 } else { 0 };
    let _ = writeln!(
        m,
        "# TYPE pgcast_healthy gauge\npgcast_healthy {}",
        b(s.healthy)
    );
    // Sections the last reload could not apply: non-zero means the file and the running
    // configuration differ until a restart.
    let pending = s.reload.as_ref().map_or(0, |r| r.restart_needed.len());
    let _ = writeln!(
        m,
        "# TYPE pgcast_reload_restart_needed gauge\npgcast_reload_restart_needed {pending}"
    );
    let _ = writeln!(m, "# TYPE pgcast_backend_up gauge");
    for x in &s.backends {
        let _ = writeln!(
            m,
            "pgcast_backend_up{{backend=\"{}\",role=\"{}\"}} {}",
            x.name,
            x.role,
            b(x.up)
        );
    }
    let _ = writeln!(m, "# TYPE pgcast_backend_in_read_set gauge");
    for x in &s.backends {
        let _ = writeln!(
            m,
            "pgcast_backend_in_read_set{{backend=\"{}\"}} {}",
            x.name,
            b(x.in_read_set)
        );
    }
    let _ = writeln!(m, "# TYPE pgcast_backend_lag_bytes gauge");
    for x in &s.backends {
        if let Some(v) = x.lag_bytes {
            let _ = writeln!(m, "pgcast_backend_lag_bytes{{backend=\"{}\"}} {v}", x.name);
        }
    }
    let _ = writeln!(m, "# TYPE pgcast_backend_lag_seconds gauge");
    for x in &s.backends {
        if let Some(v) = x.lag_seconds {
            let _ = writeln!(
                m,
                "pgcast_backend_lag_seconds{{backend=\"{}\"}} {v}",
                x.name
            );
        }
    }
    let _ = writeln!(m, "# TYPE pgcast_backend_server_connections gauge");
    for x in &s.backends {
        let _ = writeln!(
            m,
            "pgcast_backend_server_connections{{backend=\"{}\"}} {}",
            x.name, x.server_connections
        );
    }
    let _ = writeln!(m, "# TYPE pgcast_backend_idle_connections gauge");
    for x in &s.backends {
        let _ = writeln!(
            m,
            "pgcast_backend_idle_connections{{backend=\"{}\"}} {}",
            x.name, x.idle_connections
        );
    }
    for (name, kind, value) in [
        (
            "pgcast_backend_clients_waiting",
            "gauge",
            (|x: &crate::status::BackendStatus| x.clients_waiting as u64)
                as fn(&crate::status::BackendStatus) -> u64,
        ),
        (
            "pgcast_backend_clients_waiting_user_database",
            "gauge",
            |x| x.clients_waiting_user_database as u64,
        ),
        ("pgcast_backend_checkout_timeouts_total", "counter", |x| {
            x.checkout_timeouts
        }),
        (
            "pgcast_backend_checkout_timeouts_user_database_total",
            "counter",
            |x| x.checkout_timeouts_user_database,
        ),
        ("pgcast_backend_user_databases_at_cap", "gauge", |x| {
            x.user_databases_at_cap.len() as u64
        }),
        ("pgcast_backend_longest_wait_ms", "gauge", |x| {
            x.longest_wait_ms
        }),
    ] {
        let _ = writeln!(m, "# TYPE {name} {kind}");
        for x in &s.backends {
            let _ = writeln!(m, "{name}{{backend=\"{}\"}} {}", x.name, value(x));
        }
    }
    let _ = writeln!(m, "# TYPE pgcast_backend_queries_total counter");
    for x in &s.backends {
        let _ = writeln!(
            m,
            "pgcast_backend_queries_total{{backend=\"{}\"}} {}",
            x.name, x.queries
        );
    }
    let _ = writeln!(m, "# TYPE pgcast_listener_clients gauge");
    for l in &s.listeners {
        let _ = writeln!(
            m,
            "pgcast_listener_clients{{listener=\"{}\",role=\"{}\"}} {}",
            l.name, l.role, l.clients
        );
    }
    let _ = writeln!(m, "# TYPE pgcast_routed_total counter");
    let _ = writeln!(
        m,
        "pgcast_routed_total{{target=\"primary\"}} {}",
        s.routed.primary
    );
    let _ = writeln!(
        m,
        "pgcast_routed_total{{target=\"replica\"}} {}",
        s.routed.replica
    );
    let _ = writeln!(m, "# TYPE pgcast_retried_on_primary_total counter");
    let _ = writeln!(
        m,
        "pgcast_retried_on_primary_total {}",
        s.routed.retried_on_primary
    );
    for (name, value) in [
        (
            "pgcast_transaction_checkins_total",
            s.routed.transaction_checkins,
        ),
        ("pgcast_pinned_sessions_total", s.routed.pinned_sessions),
    ] {
        let _ = writeln!(m, "# TYPE {name} counter\n{name} {value}");
    }
    let _ = writeln!(m, "# TYPE pgcast_errors_total counter");
    for (class, n) in &s.errors_by_sqlstate_class {
        let _ = writeln!(m, "pgcast_errors_total{{sqlstate_class=\"{class}\"}} {n}");
    }
    let c = &s.cancel_requests;
    counter_family(
        &mut m,
        "pgcast_cancel_requests_total",
        "outcome",
        [
            ("local", c.local),
            ("forwarded", c.forwarded),
            ("forward_failed", c.forward_failed),
            ("unknown", c.unknown),
            ("duplicate", c.duplicate),
        ],
    );
    let _ = writeln!(m, "# TYPE pgcast_prelogin_connections gauge");
    let _ = writeln!(m, "pgcast_prelogin_connections {}", s.prelogin_connections);
    let r = &s.refused_connections;
    counter_family(
        &mut m,
        "pgcast_connections_refused_total",
        "reason",
        [
            ("prelogin_full", r.prelogin_full),
            ("prelogin_per_source", r.prelogin_per_source),
            ("clients_full", r.clients_full),
        ],
    );
    let f = &s.startup_failures;
    counter_family(
        &mut m,
        "pgcast_client_startup_failures_total",
        "reason",
        [
            ("auth_failed", f.auth_failed),
            ("protocol", f.protocol),
            ("timeout", f.timeout),
            ("closed", f.closed),
        ],
    );
    routing_drop_metrics(&s.routing, &mut m);
    if let Some(t) = &s.routing.timer_lag {
        let _ = writeln!(m, "# TYPE pgcast_routing_timer_lateness_max_seconds gauge");
        let _ = writeln!(
            m,
            "pgcast_routing_timer_lateness_max_seconds {}",
            t.max_ms_last_minute / 1000.0
        );
        let _ = writeln!(m, "# TYPE pgcast_routing_timers_late_total counter");
        let _ = writeln!(m, "pgcast_routing_timers_late_total {}", t.late_total);
    }
    m
}

/// One counter with a label: its TYPE line and a series per (label value, count).
fn counter_family<'a>(
    m: &mut String,
    name: &str,
    label: &str,
    series: impl IntoIterator<Item = (&'a str, u64)>,
) {
    let _ = writeln!(m, "# TYPE {name} counter");
    for (value, n) in series {
        let _ = writeln!(m, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

/// What outsiders make the speakers discard, by reason (`pgcast status` shows the same per
/// session).
fn routing_drop_metrics(r: &crate::anycast::AnycastStatus, m: &mut String) {
    if let Some(o) = &r.ospf {
        let series = o.dropped.iter().map(|(k, v)| (k.as_str(), *v));
        counter_family(m, "pgcast_ospf_dropped_packets_total", "reason", series);
    }
    if let Some(b) = &r.bfd {
        // Per session and unattributed together: the reason is what an operator alerts on.
        let mut by_reason = b.dropped.clone();
        for (reason, n) in b.sessions.iter().flat_map(|x| &x.dropped) {
            *by_reason.entry(reason.clone()).or_default() += n;
        }
        let series = by_reason.iter().map(|(k, v)| (k.as_str(), *v));
        counter_family(m, "pgcast_bfd_dropped_packets_total", "reason", series);
    }
    if let Some(b) = &r.bgp {
        let c = &b.refused_connections;
        counter_family(
            m,
            "pgcast_bgp_refused_connections_total",
            "reason",
            [
                ("not_a_neighbor", c.not_a_neighbor),
                ("neighbor_busy", c.neighbor_busy),
                ("accept_failed", c.accept_failed),
            ],
        );
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;
    use crate::anycast::bfd::BfdStatus;
    use crate::anycast::AnycastStatus;

    #[test]
    fn speakers_drops_are_exported_by_reason() {
        let status = AnycastStatus {
            bfd: Some(BfdStatus {
                dropped: [("unknown_discriminator".to_string(), 5)].into(),
                ..BfdStatus::default()
            }),
            ..AnycastStatus::default()
        };
        let mut m = String::new();
        routing_drop_metrics(&status, &mut m);
        assert!(
            m.contains("pgcast_bfd_dropped_packets_total{reason=\"unknown_discriminator\"} 5"),
            "{m}"
        );
        assert!(!m.contains("ospf"), "no OSPF speaker, no OSPF series: {m}");
    }
}
