//! Client-side helpers shared by the integration tests: a tokio-postgres connection whose
//! driver runs on its own task, and the value a simple query returned.

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

pub async fn connect(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
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
