//! The process ID a client is told when its session has no server connection yet.
//!
//! With `[pool] connect = "on_demand"` (and always in transaction mode) a client logs in
//! before any server process exists for it, yet PostgreSQL's start-up must give it a
//! BackendKeyData. pgcast then issues a number of its own, chosen above every PID Linux can
//! hand out (`PID_MAX_LIMIT`, 2^22 on 64-bit kernels), so it never names somebody else's
//! server process: `pg_terminate_backend()` of it is a harmless "not a PostgreSQL backend
//! process" warning, never a kill of another client's connection.
//!
//! Notifications carry the notifying server process's PID. So that a client can still tell
//! its own notifications from others' (and whom they came from), a session-mode session's
//! server processes are recorded here under the PID its client was told, and each
//! NotificationResponse is rewritten to the notifier's issued PID. Transaction mode records
//! nothing: its connections change hands at every transaction, and a map update per
//! transaction would cost every client for what few use.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bytes::{BufMut, BytesMut};

use super::message::Message;

/// Linux's largest possible PID (`PID_MAX_LIMIT` on 64-bit) is 2^22; ours start above it.
pub const FIRST_ISSUED_PID: i32 = (1 << 22) + 1;

/// A PID for a session without a server process, from a random number.
pub fn issue_pid(random: u32) -> i32 {
    let span = (i32::MAX - FIRST_ISSUED_PID) as u32;
    FIRST_ISSUED_PID + (random % span) as i32
}

/// A server process: its server's address and its PID there.
type ServerProcess = (String, u16, i32);

/// Server processes held by sessions whose clients were told an issued PID.
#[derive(Debug, Default)]
pub struct PidAliases {
    map: Mutex<HashMap<ServerProcess, i32>>,
}

impl PidAliases {
    pub fn insert(&self, host: &str, port: u16, pid: i32, told: i32) {
        self.lock().insert((host.to_string(), port, pid), told);
    }

    pub fn remove(&self, host: &str, port: u16, pid: i32) {
        self.lock().remove(&(host.to_string(), port, pid));
    }

    /// The PID the client holding that server process was told, if it was an issued one.
    pub fn told(&self, host: &str, port: u16, pid: i32) -> Option<i32> {
        self.lock().get(&(host.to_string(), port, pid)).copied()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServerProcess, i32>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The notifying PID of a NotificationResponse ('A': Int32 pid, channel, payload).
pub fn notification_pid(m: &Message) -> Option<i32> {
    let b = m.body().get(..4)?;
    Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The same NotificationResponse with another notifying PID.
pub fn with_notification_pid(m: &Message, pid: i32) -> Message {
    let mut raw = BytesMut::with_capacity(m.raw.len());
    raw.extend_from_slice(&m.raw[..5.min(m.raw.len())]);
    raw.put_i32(pid);
    raw.extend_from_slice(m.raw.get(9..).unwrap_or(&[]));
    Message {
        tag: m.tag,
        raw: raw.freeze(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn issued_pids_are_above_every_linux_pid_and_positive() {
        for r in [0, 1, 12345, u32::MAX / 2, u32::MAX - 1, u32::MAX] {
            let pid = issue_pid(r);
            assert!(pid > 1 << 22, "{pid}");
            assert!(pid > 0 && pid < i32::MAX, "{pid}");
        }
        assert_ne!(issue_pid(1), issue_pid(2));
    }

    fn notification(pid: i32) -> Message {
        let mut body = BytesMut::new();
        body.put_i32(pid);
        body.extend_from_slice(b"chan\0payload\0");
        let mut raw = BytesMut::new();
        raw.put_u8(b'A');
        raw.put_i32(body.len() as i32 + 4);
        raw.extend_from_slice(&body);
        Message {
            tag: b'A',
            raw: raw.freeze(),
        }
    }

    #[test]
    fn a_notification_gets_another_pid_and_keeps_the_rest() {
        let m = notification(4242);
        assert_eq!(notification_pid(&m), Some(4242));
        let n = with_notification_pid(&m, 5_000_000);
        assert_eq!(notification_pid(&n), Some(5_000_000));
        assert_eq!(n.raw.len(), m.raw.len());
        assert_eq!(&n.raw[..5], &m.raw[..5]);
        assert_eq!(&n.raw[9..], &m.raw[9..]);
        let short = Message {
            tag: b'A',
            raw: Bytes::from_static(b"A\0\0\0\x05"),
        };
        assert_eq!(notification_pid(&short), None);
    }

    #[test]
    fn aliases_map_server_processes_to_told_pids() {
        let a = PidAliases::default();
        a.insert("10.0.0.1", 5432, 77, 5_000_001);
        assert_eq!(a.told("10.0.0.1", 5432, 77), Some(5_000_001));
        assert_eq!(a.told("10.0.0.2", 5432, 77), None);
        a.remove("10.0.0.1", 5432, 77);
        assert!(a.is_empty());
    }
}
