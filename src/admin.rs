//! The admin socket (a Unix socket, mode 0600, that answers every connection with the status
//! as one JSON document) and the optional Prometheus metrics endpoint.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::watch;

use crate::proxy::ProxyContext;
use crate::status::Status;

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

fn current_status(ctx: &ProxyContext) -> Status {
    let config = ctx.config.borrow().clone();
    let view = ctx.cluster.borrow().clone();
    Status::collect(&config, &view, ctx)
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

/// Serves status documents until `stop` turns true.
pub async fn serve_admin(
    listener: UnixListener,
    ctx: Arc<ProxyContext>,
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
        let status = current_status(&ctx);
        tokio::spawn(async move {
            if let Ok(mut json) = serde_json::to_vec(&status) {
                json.push(b'\n');
                let _ = stream.write_all(&json).await;
            }
        });
    }
}

/// Reads the status from a running pgcast.
pub async fn fetch_status(path: &Path) -> Result<Status, AdminError> {
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| AdminError::Connect {
            path: path.display().to_string(),
            source,
        })?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    Ok(serde_json::from_slice(&buf)?)
}

/// Serves Prometheus text format on `GET /metrics` (any path answers the same).
pub async fn serve_metrics(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
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
        let body = render_metrics(&current_status(&ctx));
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
    let _ = writeln!(m, "# TYPE pgcast_errors_total counter");
    for (class, n) in &s.errors_by_sqlstate_class {
        let _ = writeln!(m, "pgcast_errors_total{{sqlstate_class=\"{class}\"}} {n}");
    }
    let _ = writeln!(m, "# TYPE pgcast_cancel_requests_total counter");
    let c = &s.cancel_requests;
    for (outcome, n) in [
        ("local", c.local),
        ("forwarded", c.forwarded),
        ("forward_failed", c.forward_failed),
        ("unknown", c.unknown),
        ("duplicate", c.duplicate),
    ] {
        let _ = writeln!(
            m,
            "pgcast_cancel_requests_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    m
}
