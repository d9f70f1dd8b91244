//! Runs the BFD actor with one peer and prints its status, for interop checks against a real
//! router (see tests/fixtures/bfd/README.md).
//!
//! `bfd_probe PEER [TX_MS] [MULT]` listens on UDP 3784 and prints one JSON line per status
//! change of the session. SIGUSR1 drains (AdminDown), SIGUSR2 enables again, SIGTERM or
//! Ctrl-C sends AdminDown and exits.

use std::net::Ipv4Addr;
use std::time::Duration;

use pgcast::anycast::bfd::{self, BfdPeer, BfdTimers, BFD_CONTROL_PORT};
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGCAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let peer: Ipv4Addr = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: bfd_probe PEER [TX_MS] [MULT]"))?
        .parse()?;
    let ms: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(100);
    let mult: u8 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let timers = BfdTimers {
        desired_min_tx: Duration::from_millis(ms),
        required_min_rx: Duration::from_millis(ms),
        detect_multiplier: mult,
    };
    let h = bfd::spawn(timers, BFD_CONTROL_PORT)?;
    h.set_peers(
        "probe",
        vec![BfdPeer {
            peer,
            local: None,
            interface: None,
            owner: "probe".into(),
        }],
    )
    .await;
    let mut status = h.status_receiver();
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    let (mut usr1, mut usr2) = (
        signal(SignalKind::user_defined1())?,
        signal(SignalKind::user_defined2())?,
    );
    let mut last = None;
    loop {
        tokio::select! {
            r = status.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                let s = status.borrow_and_update().clone();
                // One line per change of what an operator watches, not per packet.
                let key = s.session(peer).map(|x| (x.state, x.remote_state, x.local_diag, x.remote_diag, x.tx_interval_ms, x.detect_time_ms));
                if key != last {
                    println!("{}", serde_json::to_string(&s)?);
                    last = key;
                }
            }
            _ = usr1.recv() => h.admin_down().await,
            _ = usr2.recv() => h.enable().await,
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    h.shutdown().await;
    println!("{}", serde_json::to_string(&*status.borrow())?);
    Ok(())
}
