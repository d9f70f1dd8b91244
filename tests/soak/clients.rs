//! The soak's clients: a ledger writer and two readers in the lab's client namespace, all
//! through the anycast address. They run on one thread moved into the namespace (`setns`)
//! with a current-thread tokio runtime, so every socket they open is the client host's.
//!
//! * writer: one session (reconnected after any error), `INSERT (id, value)` with ids 1, 2, 3
//!   ...; an id is acknowledged when the INSERT returned without error (autocommit: committed).
//! * reader: one session, `SELECT max(id)` every 50 ms (reads go to the replicas).
//! * connector: a new connection per query, `inet_client_addr()` (the balancer, as
//!   PostgreSQL sees it) every 100 ms: new flows, hashed afresh by the router each time.
//!
//! Every operation has [`OP_TIMEOUT`] (a session on a frozen balancer would hang forever).
//! A client's *wait* is the time from the end of one successful operation to the end of the
//! next; the waits that contained failed operations are its reconnect waits.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use tokio::time::{sleep, timeout};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The anycast service of the lab (lab/README.md), libpq's 3 s connect timeout as in the lab.
const CONNINFO: &str =
    "host=198.18.2.0 port=5432 user=app password=app-secret dbname=app connect_timeout=3";
/// Connect plus query: a session stuck on a frozen balancer is given up after this.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Gaps between successes shorter than this are ordinary pacing and latency, not recorded.
const GAP_RECORDED: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Writer,
    Reader,
    Connector,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Writer, Role::Reader, Role::Connector];

    pub fn name(self) -> &'static str {
        match self {
            Role::Writer => "writer (1 session, INSERT)",
            Role::Reader => "reader (1 session, SELECT)",
            Role::Connector => "connector (new connection per SELECT)",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A stretch without success: from the end of a successful operation to the end of the next.
#[derive(Clone, Debug)]
pub struct Wait {
    pub role: Role,
    pub start: Instant,
    pub end: Instant,
    /// Operations that failed in between (0: only slow).
    pub failed_ops: u32,
    pub last_error: String,
}

impl Wait {
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }
}

#[derive(Default, Clone)]
pub struct RoleStats {
    pub ok: u64,
    pub failed: u64,
    last_ok: Option<Instant>,
    failed_since_ok: u32,
    last_error: String,
}

/// What the clients saw, read by the chaos loop (writes resumed?) and the final checks.
#[derive(Default)]
pub struct Seen {
    pub stats: [RoleStats; 3],
    pub waits: Vec<Wait>,
    /// Acknowledged ledger ids, in order, with the time of the acknowledgement.
    pub acked: Vec<(i64, Instant)>,
    /// INSERTs attempted (acknowledged or not).
    pub attempted: i64,
    /// Balancer address (as PostgreSQL saw the connector's session come in) → sessions.
    pub served_by: BTreeMap<String, u64>,
}

impl Seen {
    fn ok(&mut self, role: Role, now: Instant) {
        let s = &mut self.stats[role.index()];
        s.ok += 1;
        if let Some(prev) = s.last_ok {
            if now - prev >= GAP_RECORDED || s.failed_since_ok > 0 {
                self.waits.push(Wait {
                    role,
                    start: prev,
                    end: now,
                    failed_ops: s.failed_since_ok,
                    last_error: std::mem::take(&mut s.last_error),
                });
            }
        }
        s.last_ok = Some(now);
        s.failed_since_ok = 0;
    }

    fn failed(&mut self, role: Role, error: String) {
        let s = &mut self.stats[role.index()];
        s.failed += 1;
        s.failed_since_ok += 1;
        s.last_error = error;
    }

    /// The time of `role`'s last success.
    pub fn last_ok(&self, role: Role) -> Option<Instant> {
        self.stats[role.index()].last_ok
    }

    /// Closes the stretches still open at `now` (a client that never recovered).
    fn close_open_waits(&mut self, now: Instant) {
        for role in Role::ALL {
            let s = &mut self.stats[role.index()];
            if let (Some(prev), true) = (s.last_ok, s.failed_since_ok > 0) {
                self.waits.push(Wait {
                    role,
                    start: prev,
                    end: now,
                    failed_ops: s.failed_since_ok,
                    last_error: format!("still failing at the end: {}", s.last_error),
                });
            }
        }
    }
}

struct Shared {
    stop: AtomicBool,
    seen: Mutex<Seen>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome of one operation.
    fn outcome<T>(&self, role: Role, r: Result<Result<T, String>, tokio::time::error::Elapsed>) {
        match r {
            Ok(Ok(_)) => self.seen().ok(role, Instant::now()),
            Ok(Err(e)) => self.seen().failed(role, e),
            Err(_) => self
                .seen()
                .failed(role, format!("no answer within {OP_TIMEOUT:?}")),
        }
    }
}

pub struct Clients {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Clients {
    /// Starts the three clients in network namespace `netns`.
    pub fn start(netns: &str) -> Clients {
        let ns = File::open(format!("/var/run/netns/{netns}"))
            .unwrap_or_else(|e| panic!("open namespace {netns}: {e}"));
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            seen: Mutex::new(Seen::default()),
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("soak-clients".into())
            .spawn(move || {
                // Only this thread changes namespace; sockets belong to the namespace of the
                // thread that creates them.
                setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns into the client namespace");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("client runtime");
                rt.block_on(async {
                    tokio::join!(
                        writer(sh.clone()),
                        reader(sh.clone()),
                        connector(sh.clone())
                    );
                });
            })
            .expect("spawn the client thread");
        Clients {
            shared,
            thread: Some(thread),
        }
    }

    /// A look at what the clients saw so far.
    pub fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.shared.seen())
    }

    /// Stops the clients (each finishes its operation, [`OP_TIMEOUT`] at most) and returns
    /// what they saw.
    pub fn stop(mut self) -> Seen {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("client thread panicked");
        }
        let mut seen = std::mem::take(&mut *self.shared.seen());
        seen.close_open_waits(Instant::now());
        seen
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The value stored with ledger id `id` (checked on the final primary).
pub fn ledger_value(id: i64) -> i64 {
    id.wrapping_mul(7919) % 1_000_003
}

fn describe(e: tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.code().code(), d.message()),
        None => e.to_string(),
    }
}

async fn connect() -> Result<Client, String> {
    let (client, conn) = tokio_postgres::connect(CONNINFO, NoTls)
        .await
        .map_err(describe)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The session in `slot`, connecting first if there is none.
async fn session(slot: &mut Option<Client>) -> Result<&Client, String> {
    if slot.as_ref().is_none_or(Client::is_closed) {
        *slot = Some(connect().await?);
    }
    Ok(slot.as_ref().expect("just connected"))
}

async fn writer(sh: Arc<Shared>) {
    let mut slot = None;
    let mut id = 0i64;
    while !sh.stopping() {
        id += 1;
        sh.seen().attempted = id;
        let r = timeout(OP_TIMEOUT, async {
            let c = session(&mut slot).await?;
            c.execute(
                "INSERT INTO soak_ledger (id, value) VALUES ($1, $2)",
                &[&id, &ledger_value(id)],
            )
            .await
            .map_err(describe)
        })
        .await;
        if matches!(r, Ok(Ok(_))) {
            sh.seen().acked.push((id, Instant::now()));
        } else {
            slot = None;
        }
        let failed = !matches!(r, Ok(Ok(_)));
        sh.outcome(Role::Writer, r);
        // After a failure: a short pause, as a client library's reconnect would.
        sleep(Duration::from_millis(if failed { 100 } else { 20 })).await;
    }
}

async fn reader(sh: Arc<Shared>) {
    let mut slot = None;
    while !sh.stopping() {
        let r = timeout(OP_TIMEOUT, async {
            let c = session(&mut slot).await?;
            c.simple_query("SELECT max(id) FROM soak_ledger")
                .await
                .map_err(describe)
        })
        .await;
        if !matches!(r, Ok(Ok(_))) {
            slot = None;
        }
        sh.outcome(Role::Reader, r);
        sleep(Duration::from_millis(50)).await;
    }
}

async fn connector(sh: Arc<Shared>) {
    while !sh.stopping() {
        let r = timeout(OP_TIMEOUT, async {
            let c = connect().await?;
            let rows = c
                .simple_query("SELECT inet_client_addr()::text")
                .await
                .map_err(describe)?;
            Ok::<_, String>(rows.into_iter().find_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    r.get(0).map(|a| a.trim_end_matches("/32").to_string())
                }
                _ => None,
            }))
        })
        .await;
        if let Ok(Ok(Some(addr))) = &r {
            *sh.seen().served_by.entry(addr.clone()).or_default() += 1;
        }
        sh.outcome(Role::Connector, r);
        sleep(Duration::from_millis(100)).await;
    }
}
