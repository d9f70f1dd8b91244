//! The BGP listener with strangers: a connection from an address that is not a neighbour, or
//! for a neighbour with no room, is closed at once and counted by reason (the log line that
//! says so is limited, `crate::log_limit`).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::super::io::accept_loop;
use super::super::status::{BgpRefusedCounters, BgpRefusedCounts};

/// Connects to `addr` and waits for the listener to close the connection (5 s at most).
async fn closed_at_once(addr: std::net::SocketAddr) -> bool {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn strangers_and_a_busy_neighbor_are_closed_and_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let refused = Arc::new(BgpRefusedCounters::default());
    // Only 198.51.100.1 is a neighbour: every connection from 127.0.0.1 is a stranger's.
    let (tx, _rx) = mpsc::channel(1);
    let routes = vec![(Ipv4Addr::new(198, 51, 100, 1), tx)];
    let task = tokio::spawn(accept_loop(listener, routes, Arc::clone(&refused)));
    for _ in 0..50 {
        assert!(
            closed_at_once(addr).await,
            "a stranger's connection stays open"
        );
    }
    assert_eq!(
        refused.snapshot(),
        BgpRefusedCounts {
            not_a_neighbor: 50,
            ..BgpRefusedCounts::default()
        }
    );
    task.abort();

    // A neighbour whose actor has no room (its queue of one is full): closed, counted busy.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel(1);
    let routes = vec![(Ipv4Addr::LOCALHOST, tx)];
    let refused = Arc::new(BgpRefusedCounters::default());
    let task = tokio::spawn(accept_loop(listener, routes, Arc::clone(&refused)));
    let _first = TcpStream::connect(addr).await.expect("first");
    // The first connection goes to the neighbour's queue and fills it.
    tokio::time::timeout(Duration::from_secs(5), async {
        while rx.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the first connection reaches the neighbour");
    for _ in 0..3 {
        assert!(closed_at_once(addr).await, "no room, closed");
    }
    assert_eq!(refused.snapshot().neighbor_busy, 3);
    task.abort();
}
