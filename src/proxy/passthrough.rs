//! The relay of a session that has nothing left to decide: a session-pool client of a
//! `primary` or `replica` listener whose connection is open. Every statement goes to that one
//! connection for the rest of the session, so nothing needs classifying, grouping or routing. Bytes go
//! on as they arrive, in both directions, walked by their message headers only
//! (`frames.rs`); the few messages pgcast must act on are looked at whole: Terminate from the
//! client; ReadyForQuery, ErrorResponse, NotificationResponse and CopyInResponse from the
//! server. This is the work PgBouncer does per message in session mode (issue 16).

use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes};

use super::frames::{Frames, Next};
use super::message::{self, Message};
use super::router::Target;
use super::session::{Session, CLIENT_READ_CHUNK, CLIENT_READ_MIN};
use super::slot::Slot;
use super::stream::{Reader, Writer};
use super::{tls, ProxyError};
use crate::config::{ListenerRole, PoolMode};

/// Room a read from the server needs before it is worth a system call, and what a read
/// reserves when there is less.
const SERVER_READ_MIN: usize = 4 * 1024;
const SERVER_READ_CHUNK: usize = 16 * 1024;

/// The relay's own state.
struct Relay {
    /// The session's one connection: the primary's on a `primary` listener, a replica's on a
    /// `replica` one.
    target: Target,
    from_client: Frames,
    /// ReadyForQuery messages the client is owed: one per Query, FunctionCall and Sync sent.
    owed: u64,
    /// The client sent Terminate with replies still owed: it went on to the server, which
    /// answers what came before it and then closes.
    terminating: bool,
}

/// Whether the client's bytes ended the session.
#[derive(Debug, PartialEq, Eq)]
enum Goodbye {
    Not,
    /// Terminate with nothing owed: the session ends here (and its connection may be pooled).
    Now,
}

impl Session {
    /// The connection to relay to, when the session is at a point from which relaying bytes
    /// is all that is left: session pooling on a `primary` or `replica` listener, its
    /// connection open and idle, nothing parked, deferred or held for a retry, nothing owed to
    /// the client.
    pub(super) fn pass_through_target(&self) -> Option<Target> {
        if self.config.pool.mode == PoolMode::Transaction {
            return None;
        }
        let target = match self.listener.role {
            ListenerRole::Primary => Target::Primary,
            ListenerRole::Replica => Target::Replica,
            ListenerRole::Auto => return None,
        };
        let ready = self.waiting.is_none()
            && self.retry.is_none()
            && self.deferred_begin.is_none()
            && !self.discard_until_sync
            && self.client_out.is_empty()
            && !self.slots.is_open(target.other())
            && self.slots.get(target).is_some_and(|s| {
                // A replica listener's read-only stand-in on the primary keeps routing: its
                // units are checked for writes.
                s.idle() && !s.copy_in && s.to_close.is_empty() && !s.read_only_fallback
            });
        ready.then_some(target)
    }

    /// Relays until the client leaves (`Ok`) or the connection is lost (`Err`); the caller's
    /// `finish` then pools or closes the connection as after any session.
    pub(super) async fn pass_through(
        &mut self,
        target: Target,
        rd: &mut Reader,
        wr: &mut Writer,
    ) -> Result<(), ProxyError> {
        tracing::debug!(connection = ?target, "session relays bytes from now on");
        let mut relay = Relay {
            target,
            from_client: Frames::default(),
            owed: 0,
            terminating: false,
        };
        loop {
            let slot = self.slots.open_mut(target)?;
            // Biased: no random draw per wake-up; the server's side first, so replies drain
            // before more work is taken on.
            tokio::select! {
                biased;
                n = read_server(slot) => match n {
                    // After the client's Terminate the server's goodbye is its EOF.
                    Ok(0) | Err(_) if relay.terminating => {
                        self.slots.take(target);
                        return Ok(());
                    }
                    Ok(0) | Err(_) => return self.on_slot_lost(target),
                    Ok(_) => self.server_to_client(&mut relay, wr).await?,
                },
                n = read_client(rd, &mut self.client_buf), if !relay.terminating =>
                {
                    if n? == 0 {
                        return Ok(());
                    }
                    if self.client_to_server(&mut relay).await? == Goodbye::Now {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Sends the client's bytes on up to a Terminate, counting the replies they are owed.
    ///
    /// Terminate with nothing owed ends the session here, so its connection can be pooled.
    /// With replies owed, Terminate goes on to the server: like PostgreSQL directly, the
    /// client gets every reply and then the end (the count may also be too high, never too
    /// low: a backend in COPY FROM STDIN ignores Sync). In COPY FROM STDIN the connection is
    /// closed instead: the server would take Terminate for bad copy data and wait on.
    async fn client_to_server(&mut self, relay: &mut Relay) -> Result<Goodbye, ProxyError> {
        let max = self.config.limits.max_message_bytes;
        let mut units = 0u64;
        // Terminate is the only message looked at whole: the walk stops there or at the end.
        let next = relay.from_client.next(
            &self.client_buf,
            max,
            |tag| tag == b'X',
            |tag| units += u64::from(matches!(tag, b'Q' | b'S' | b'F')),
        );
        let (upto, terminate) = match next {
            Ok(Next::More { relay: n }) => (n, None),
            Ok(Next::Whole { at, end }) => (at, Some(end)),
            Err(bad) => {
                self.protocol_violation(&bad.error.to_string());
                return Err(ProxyError::ClientProtocol(bad.error));
            }
        };
        let slot = self.slots.open_mut(relay.target)?;
        let owed_after = relay.owed + units;
        let upto = match terminate {
            Some(_) if slot.copy_in => return Ok(Goodbye::Now),
            Some(_) if owed_after == 0 => {
                self.client_terminated = true;
                return Ok(Goodbye::Now);
            }
            Some(end) => {
                relay.terminating = true;
                end
            }
            None => upto,
        };
        if upto > 0 {
            slot.send(&self.client_buf[..upto]).await?;
        }
        if relay.terminating {
            self.client_buf.clear();
        } else {
            self.client_buf.advance(upto);
        }
        if units > 0 {
            if relay.owed == 0 {
                slot.mark_busy(true);
            }
            relay.owed += units;
            slot.conn
                .counters
                .queries
                .fetch_add(units, Ordering::Relaxed);
            self.count_routed(relay.target, units);
        }
        Ok(Goodbye::Not)
    }

    /// Sends the server's bytes on to the client, acting on the messages that change the
    /// session's state on the way.
    async fn server_to_client(
        &mut self,
        relay: &mut Relay,
        wr: &mut Writer,
    ) -> Result<(), ProxyError> {
        let mut upto = 0;
        loop {
            let slot = self.slots.open_mut(relay.target)?;
            // The slot's own walker: the routed path before left it at a message boundary.
            let buf = &slot.conn.reader.buf[upto..];
            let max = slot.conn.reader.max_message();
            let next = slot.frames.next(
                buf,
                max,
                |tag| matches!(tag, b'Z' | b'E' | b'A' | b'G'),
                |_| {},
            );
            match next {
                Ok(Next::More { relay: n }) => {
                    upto += n;
                    break;
                }
                Ok(Next::Whole { at, end }) => {
                    self.on_server_message(relay, upto + at..upto + end);
                    upto += end;
                }
                Err(bad) => return Err(ProxyError::BackendProtocol(bad.error)),
            }
        }
        let slot = self.slots.open_mut(relay.target)?;
        if upto > 0 {
            tls::send(wr, &slot.conn.reader.buf[..upto]).await?;
            slot.conn.reader.buf.advance(upto);
        }
        Ok(())
    }

    /// One of the messages the relay looks at, at `range` of the server's read buffer.
    fn on_server_message(&mut self, relay: &mut Relay, range: std::ops::Range<usize>) {
        let Some(slot) = self.slots.get_mut(relay.target) else {
            return;
        };
        let m = &slot.conn.reader.buf[range.clone()];
        match m[0] {
            b'Z' => {
                slot.tx_status = m.get(5).copied().unwrap_or(b'I');
                slot.copy_in = false;
                relay.owed = relay.owed.saturating_sub(1);
                if relay.owed == 0 {
                    slot.mark_busy(false);
                }
            }
            b'G' => slot.copy_in = true,
            b'E' => {
                let error = message::decode_error_fields(&m[5..]);
                slot.saw_error = true;
                self.note_relayed_error(&error);
            }
            _ => self.notification_as_told(relay.target, range),
        }
    }

    /// A NotificationResponse names the notifying backend's PID: rewritten in place to the
    /// PID the client knows (same length), as `as_told` does on the routed path.
    fn notification_as_told(&mut self, target: Target, range: std::ops::Range<usize>) {
        let Some(slot) = self.slots.get(target) else {
            return;
        };
        let m = Message {
            tag: b'A',
            raw: Bytes::copy_from_slice(&slot.conn.reader.buf[range.clone()]),
        };
        let told = self.as_told(target, m);
        if let Some(slot) = self.slots.get_mut(target) {
            if told.raw.len() == range.len() {
                slot.conn.reader.buf[range].copy_from_slice(&told.raw);
            }
        }
    }
}

/// Reads the client's next bytes. Unlike the routed path's `Reader::read_into`, the buffer is
/// kept while the client is idle: the session holds a server connection (and its buffer) for
/// as long anyway, and one readiness wait per read is cheaper than two.
async fn read_client(rd: &mut Reader, buf: &mut bytes::BytesMut) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    if buf.capacity() - buf.len() < CLIENT_READ_MIN {
        buf.reserve(CLIENT_READ_CHUNK);
    }
    rd.read_buf(buf).await
}

/// Reads the server's next bytes into its buffer, first making room when little is left (the
/// buffer is empty after every relayed read, so this reuses its whole allocation).
async fn read_server(slot: &mut Slot) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let reader = &mut slot.conn.reader;
    if reader.buf.capacity() - reader.buf.len() < SERVER_READ_MIN {
        reader.buf.reserve(SERVER_READ_CHUNK);
    }
    reader.rd.read_buf(&mut reader.buf).await
}
