//! Client-side helpers shared by the integration tests: a tokio-postgres connection whose
//! driver runs on its own task, and the value a simple query returned.

use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification, SimpleQueryMessage};

pub async fn connect(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A connection whose notifications arrive on the returned channel.
pub async fn connect_listening(
    conninfo: &str,
) -> Result<(Client, UnboundedReceiver<Notification>), tokio_postgres::Error> {
    let (client, mut conn) = tokio_postgres::connect(conninfo, NoTls).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send(n);
            }
        }
    });
    Ok((client, rx))
}

/// The next notification, within 10 s.
pub async fn next_notification(rx: &mut UnboundedReceiver<Notification>) -> Notification {
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("a notification within 10 s")
        .expect("the connection is open")
}

/// Runs `sql` (a long statement) on `client`, cancels it after 500 ms with the client's cancel
/// token (a CancelRequest to the host and port the client connected to) and returns the
/// SQLSTATE the statement failed with, within 10 s.
pub async fn cancelled(client: Client, sql: &'static str) -> String {
    let token = client.cancel_token();
    let q = tokio::spawn(async move { client.simple_query(sql).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    token
        .cancel_query(NoTls)
        .await
        .expect("cancel request sent");
    let r = tokio::time::timeout(std::time::Duration::from_secs(10), q)
        .await
        .expect("cancelled in time")
        .expect("the query task");
    sqlstate(&r.expect_err("the query was cancelled"))
}

/// The SQLSTATE of a failed connection or statement (or why there is none).
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

/// First column of the last row the (possibly multi-statement) simple query returned.
pub async fn simple_value(c: &Client, sql: &str) -> String {
    let msgs = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .next_back()
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// A finished command's stdout and stderr, one after the other, for assertions and messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs pgbench against 127.0.0.1:`port` as the MD5 test user on the test database; its
/// output, after asserting it succeeded.
pub fn pgbench(port: u16, args: &[&str]) -> String {
    use super::pg_cluster::{DATABASE, MD5_PASSWORD, MD5_USER};
    let out = std::process::Command::new("pgbench")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", MD5_USER])
        .args(args)
        .arg(DATABASE)
        .env("PGPASSWORD", MD5_PASSWORD)
        .output()
        .expect("run pgbench");
    let text = output_text(&out);
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

/// Connects to 127.0.0.1:`port`, sends `bytes`, and reads until the server closes (10 s at most).
pub async fn raw_exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

/// Sends `first`, waits for one byte of answer, sends `second`, reads to the end.
pub async fn raw_conversation(port: u16, first: &[u8], second: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(first).await.unwrap();
    let mut out = vec![0u8; 1];
    s.read_exact(&mut out).await.unwrap();
    s.write_all(second).await.unwrap();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}
