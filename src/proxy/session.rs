//! One client session: start-up, then a loop that reads client messages, groups them into
//! units (a simple Query, or an extended-protocol batch up to Sync), routes each unit to the
//! primary or a replica connection, and relays the replies in order.
//!
//! Ordering rule: replies must reach the client in the order it sent its messages, so a unit
//! only goes to a connection other than a busy one after that connection is idle again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::backend::LoginParams;
use super::cancel::{CancelTargets, Registration};
use super::classify::StatementClass;
use super::message::{self, Message};
use super::router::{self, SessionRouting, Target};
use super::slot::{parse_hash, PendingUnit, Reply, Slot};
use super::startup::{self, ClientStartup, StartupOutcome};
use super::{ProxyContext, ProxyError};
use crate::config::{Config, ListenerConfig, ListenerRole, ReadYourWrites};
use crate::health::ClusterView;

/// Extended-protocol messages are buffered until Sync; past this size the batch is sent early.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// A client's protocol-level prepared statement.
struct StatementInfo {
    parse: Message,
    hash: u64,
    classes: Arc<[StatementClass]>,
}

/// Client messages that are routed together.
#[derive(Default)]
struct Unit {
    messages: Vec<Message>,
    classes: Vec<StatementClass>,
    extended: bool,
    /// Ends with Sync (extended) — simple queries always end.
    ends: bool,
    /// SQL of session-level SETs in the unit, replayed elsewhere after success.
    set_sql: Vec<String>,
    bytes: usize,
}

pub struct Session {
    ctx: Arc<ProxyContext>,
    config: Arc<Config>,
    listener: Arc<ListenerConfig>,
    client: ClientStartup,
    classify: Arc<super::classify::ClassifyCache>,
    primary: Option<Slot>,
    replica: Option<Slot>,
    cancel_targets: Arc<CancelTargets>,
    statements: HashMap<String, StatementInfo>,
    batch: Unit,
    waiting: Option<Unit>,
    pinned_primary: bool,
    last_write: Option<Instant>,
    session_sets: Vec<String>,
    /// Dropping messages until Sync after a unit could not be routed.
    discard_until_sync: bool,
    client_buf: BytesMut,
    client_out: BytesMut,
}

/// Serves one accepted client connection to its end.
pub async fn serve_client(
    mut stream: TcpStream,
    listener: Arc<ListenerConfig>,
    ctx: Arc<ProxyContext>,
) -> Result<(), ProxyError> {
    let config = ctx.config.borrow().clone();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let outcome = tokio::time::timeout(
        config.limits.startup_timeout,
        startup::client_startup(&mut stream, &mut buf, &ctx, &config),
    )
    .await;
    let client = match outcome {
        Err(_) => {
            startup::fatal(
                &mut stream,
                &ctx,
                "57014",
                "canceling authentication due to timeout",
            )
            .await?;
            return Ok(());
        }
        Ok(Err(e)) => return Err(e),
        Ok(Ok(StartupOutcome::Cancelled)) => return Ok(()),
        Ok(Ok(StartupOutcome::Session(c))) => *c,
    };
    let mut session = Session {
        ctx: Arc::clone(&ctx),
        config,
        listener,
        classify: ctx.catalogs.for_database(&client.database),
        client,
        primary: None,
        replica: None,
        cancel_targets: Arc::new(CancelTargets::default()),
        statements: HashMap::new(),
        batch: Unit::default(),
        waiting: None,
        pinned_primary: false,
        last_write: None,
        session_sets: Vec::new(),
        discard_until_sync: false,
        client_buf: buf,
        client_out: BytesMut::with_capacity(16 * 1024),
    };
    let registration = match session.open_home().await {
        Ok(r) => r,
        Err(e) => {
            session.report_connect_error(&e);
            stream.write_all(&session.client_out).await?;
            return Err(e);
        }
    };
    let (rd, wr) = stream.into_split();
    let result = session.run(rd, wr).await;
    drop(registration);
    result
}

impl Session {
    fn view(&self) -> Arc<ClusterView> {
        self.ctx.cluster.borrow().clone()
    }

    fn login<'a>(&'a self, host: &'a str, port: u16) -> LoginParams<'a> {
        LoginParams {
            host,
            port,
            user: &self.client.user.name,
            password: self.client.user.backend_password(),
            params: &self.client.params,
            connect_timeout: self.config.limits.connect_timeout,
            max_message: self.config.limits.max_message_bytes,
        }
    }

    /// Opens the connection whose process ID the client sees, and greets the client.
    async fn open_home(&mut self) -> Result<Registration, ProxyError> {
        let mut home = match self.listener.role {
            ListenerRole::Replica => Target::Replica,
            ListenerRole::Primary => Target::Primary,
            // With no primary (failover in progress) an auto session can still read.
            ListenerRole::Auto if self.view().primary.is_none() => Target::Replica,
            ListenerRole::Auto => Target::Primary,
        };
        match self.ensure_slot(home).await {
            Ok(()) => {}
            // The primary just went away and health has not noticed yet: reads still work.
            Err(ProxyError::BackendUnavailable(why))
                if home == Target::Primary && self.listener.role == ListenerRole::Auto =>
            {
                tracing::info!(%why, "primary unreachable at session start; starting read-only");
                home = Target::Replica;
                self.ensure_slot(home).await?;
            }
            Err(e) => return Err(e),
        }
        let slot = match home {
            Target::Primary => self.primary.as_ref(),
            Target::Replica => self.replica.as_ref(),
        }
        .ok_or_else(|| ProxyError::BackendUnavailable("no backend".into()))?;
        let pid = slot.startup.pid;
        message::write_auth_request(&mut self.client_out, 0, &[]);
        for m in &slot.startup.parameter_status {
            self.client_out.extend_from_slice(&m.raw);
        }
        let (secret, registration) = self
            .ctx
            .cancel
            .register(pid, Arc::clone(&self.cancel_targets));
        message::write_backend_key_data(&mut self.client_out, pid, secret);
        message::write_ready_for_query(&mut self.client_out, b'I');
        Ok(registration)
    }

    fn report_connect_error(&mut self, e: &ProxyError) {
        match e {
            ProxyError::BackendError(fields, raw) => {
                self.ctx.stats.count_error(&fields.code);
                self.client_out.extend_from_slice(&raw.raw);
            }
            other => {
                self.ctx.stats.count_error("08006");
                message::write_error(
                    &mut self.client_out,
                    "FATAL",
                    "08006",
                    &format!("pgcast: {other}"),
                );
            }
        }
    }

    /// Makes sure a connection for `target` exists, opening one if needed.
    async fn ensure_slot(&mut self, target: Target) -> Result<(), ProxyError> {
        let view = self.view();
        match target {
            Target::Primary => {
                if self.primary.is_some() {
                    return Ok(());
                }
                let Some(p) = view.primary_backend() else {
                    let why = if view.split_brain.is_empty() {
                        "no primary is available".to_string()
                    } else {
                        format!(
                            "split brain: {} all claim to be primary",
                            view.split_brain.join(", ")
                        )
                    };
                    return Err(ProxyError::BackendUnavailable(why));
                };
                let counters = self.ctx.stats.backend(&p.name);
                let slot = Slot::open(
                    Target::Primary,
                    &p.name,
                    &self.login(&p.host, p.port),
                    counters,
                    Arc::clone(&self.cancel_targets),
                )
                .await?;
                self.primary = Some(slot);
                self.replay_sets(Target::Primary).await
            }
            Target::Replica => {
                if let Some(r) = &self.replica {
                    // Leave a replica that dropped out of the read set at the next chance.
                    let still_good = view.read_set.contains(&r.backend)
                        || view.primary.as_deref() == Some(&r.backend);
                    if still_good || !r.idle() || r.in_transaction() {
                        return Ok(());
                    }
                    self.replica = None;
                }
                let mut candidates: Vec<(String, String, u16, u32)> = view
                    .backends
                    .iter()
                    .filter(|b| b.in_read_set)
                    .map(|b| (b.name.clone(), b.host.clone(), b.port, b.weight))
                    .collect();
                while !candidates.is_empty() {
                    let i = pick_weighted(&candidates);
                    let (name, host, port, _) = candidates.swap_remove(i);
                    let counters = self.ctx.stats.backend(&name);
                    match Slot::open(
                        Target::Replica,
                        &name,
                        &self.login(&host, port),
                        counters,
                        Arc::clone(&self.cancel_targets),
                    )
                    .await
                    {
                        Ok(slot) => {
                            self.replica = Some(slot);
                            return self.replay_sets(Target::Replica).await;
                        }
                        Err(e) => {
                            tracing::warn!(backend = %name, error = %e, "cannot open replica connection")
                        }
                    }
                }
                if !self.config.routing.fallback_reads_to_primary {
                    return Err(ProxyError::BackendUnavailable(
                        "no replica is available".into(),
                    ));
                }
                // Reads fall back to the primary, read-only so a replica listener never writes.
                let p = view.primary_backend().ok_or_else(|| {
                    ProxyError::BackendUnavailable("no replica and no primary is available".into())
                })?;
                let mut params = self.client.params.clone();
                params.push(("default_transaction_read_only".into(), "on".into()));
                let mut login = self.login(&p.host, p.port);
                login.params = &params;
                let slot = Slot::open(
                    Target::Replica,
                    &p.name,
                    &login,
                    self.ctx.stats.backend(&p.name),
                    Arc::clone(&self.cancel_targets),
                )
                .await?;
                self.replica = Some(slot);
                self.replay_sets(Target::Replica).await
            }
        }
    }

    async fn replay_sets(&mut self, target: Target) -> Result<(), ProxyError> {
        let sets = self.session_sets.clone();
        if let Some(slot) = self.slot_mut(target) {
            for sql in &sets {
                slot.send_silent_query(sql).await?;
            }
        }
        Ok(())
    }

    fn slot_mut(&mut self, target: Target) -> Option<&mut Slot> {
        match target {
            Target::Primary => self.primary.as_mut(),
            Target::Replica => self.replica.as_mut(),
        }
    }

    async fn run(&mut self, rd: OwnedReadHalf, mut wr: OwnedWriteHalf) -> Result<(), ProxyError> {
        let result = self.relay(rd, &mut wr).await;
        // Whatever ended the session, the client gets the errors queued for it.
        if !self.client_out.is_empty() {
            let _ = wr.write_all(&self.client_out).await;
        }
        result
    }

    async fn relay(
        &mut self,
        mut rd: OwnedReadHalf,
        wr: &mut OwnedWriteHalf,
    ) -> Result<(), ProxyError> {
        wr.write_all(&self.client_out).await?;
        self.client_out.clear();
        loop {
            if self.waiting.is_some() && self.replica.as_ref().is_none_or(|r| r.idle()) {
                if let Some(unit) = self.waiting.take() {
                    self.dispatch(unit).await?;
                }
            }
            if self.waiting.is_none() && !self.process_client_messages().await? {
                return Ok(());
            }
            if !self.client_out.is_empty() {
                wr.write_all(&self.client_out).await?;
                self.client_out.clear();
            }
            let reading_client = self.waiting.is_none();
            tokio::select! {
                n = rd.read_buf(&mut self.client_buf), if reading_client => {
                    if n? == 0 {
                        return Ok(());
                    }
                }
                n = read_slot(&mut self.primary) => self.on_slot_readable(Target::Primary, n).await?,
                n = read_slot(&mut self.replica) => self.on_slot_readable(Target::Replica, n).await?,
            }
        }
    }

    async fn on_slot_readable(
        &mut self,
        target: Target,
        n: std::io::Result<usize>,
    ) -> Result<(), ProxyError> {
        let lost = match n {
            Ok(0) => true,
            Ok(_) => {
                self.process_backend_messages(target).await?;
                false
            }
            Err(_) => true,
        };
        if lost {
            self.on_slot_lost(target)?;
        }
        Ok(())
    }

    /// A backend connection closed. An idle replica connection is simply dropped; losing the
    /// primary, or any connection the client waits on, ends the session with an error.
    fn on_slot_lost(&mut self, target: Target) -> Result<(), ProxyError> {
        let slot = match target {
            Target::Primary => self.primary.take(),
            Target::Replica => self.replica.take(),
        };
        let Some(slot) = slot else { return Ok(()) };
        let client_waits = slot.pending.iter().any(|u| u.forward);
        if target == Target::Replica && !client_waits && self.listener.role == ListenerRole::Auto {
            tracing::info!(backend = %slot.backend, "replica connection closed; will use another");
            return Ok(());
        }
        self.ctx.stats.count_error("08006");
        message::write_error(
            &mut self.client_out,
            "FATAL",
            "08006",
            &format!("pgcast: connection to backend {} was lost", slot.backend),
        );
        Err(ProxyError::BackendUnavailable(format!(
            "{} closed",
            slot.backend
        )))
    }

    async fn process_backend_messages(&mut self, target: Target) -> Result<(), ProxyError> {
        loop {
            let Some(slot) = self.slot_mut(target) else {
                return Ok(());
            };
            let Some(m) = slot.reader.buffered()? else {
                return Ok(());
            };
            let reply = slot.on_backend_message(&m);
            match reply {
                Reply::Forward => {
                    if m.tag == b'E' {
                        self.count_error(&m);
                    }
                    self.client_out.extend_from_slice(&m.raw);
                }
                Reply::Drop => {}
                Reply::UnitDone {
                    forward,
                    failed,
                    sets,
                } => {
                    if forward {
                        self.client_out.extend_from_slice(&m.raw);
                    } else if failed {
                        // Replaying session state failed on this connection: it no longer
                        // matches the session, so stop using it and stay on the primary.
                        tracing::warn!(
                            ?target,
                            "session state replay failed; pinning the session to the primary"
                        );
                        self.pinned_primary = true;
                        if target == Target::Replica {
                            if let Some(s) = &self.replica {
                                if s.idle() {
                                    self.replica = None;
                                }
                            }
                        }
                    }
                    if !failed && !sets.is_empty() {
                        self.session_sets.extend(sets.iter().cloned());
                        let other = match target {
                            Target::Primary => Target::Replica,
                            Target::Replica => Target::Primary,
                        };
                        if let Some(o) = self.slot_mut(other) {
                            for sql in &sets {
                                o.send_silent_query(sql).await?;
                            }
                        }
                    }
                }
                Reply::Unsolicited { fatal } => {
                    // Notifications, notices and parameter changes between queries.
                    let home = self.home_target();
                    if target == home || m.tag == b'A' || m.tag == b'N' {
                        self.client_out.extend_from_slice(&m.raw);
                    }
                    if fatal {
                        return self.on_slot_lost(target);
                    }
                }
            }
        }
    }

    fn home_target(&self) -> Target {
        match self.listener.role {
            ListenerRole::Replica => Target::Replica,
            _ if self.primary.is_some() => Target::Primary,
            _ => Target::Replica,
        }
    }

    fn count_error(&self, m: &Message) {
        let f = message::decode_error_fields(m.body());
        self.ctx.stats.count_error(&f.code);
    }

    /// Handles every complete client message in the buffer. Returns false on Terminate.
    async fn process_client_messages(&mut self) -> Result<bool, ProxyError> {
        while self.waiting.is_none() {
            let m = match message::decode_message(
                &mut self.client_buf,
                self.config.limits.max_message_bytes,
            ) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(true),
                Err(e) => {
                    self.protocol_violation(&e.to_string());
                    return Err(ProxyError::ClientProtocol(e));
                }
            };
            if self.discard_until_sync {
                if m.tag == b'S' {
                    self.discard_until_sync = false;
                    let status = self.tx_status();
                    message::write_ready_for_query(&mut self.client_out, status);
                }
                continue;
            }
            match m.tag {
                b'Q' => {
                    let sql = match message::query_text(m.body()) {
                        Ok(s) => s.to_string(),
                        Err(e) => {
                            self.protocol_violation(&e.to_string());
                            return Err(ProxyError::ClientProtocol(e));
                        }
                    };
                    let classes = self.classify.classify(&sql);
                    let mut unit = std::mem::take(&mut self.batch);
                    unit.classes.extend(classes.iter().copied());
                    if classes
                        .iter()
                        .all(|c| matches!(c, StatementClass::SessionSet | StatementClass::Neutral))
                    {
                        unit.set_sql.push(sql);
                    }
                    unit.bytes += m.raw.len();
                    unit.messages.push(m);
                    unit.ends = true;
                    self.dispatch(unit).await?;
                }
                b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S' => {
                    if let Err(e) = self.add_extended(m).await {
                        if let ProxyError::ClientProtocol(d) = &e {
                            self.protocol_violation(&d.to_string());
                        }
                        return Err(e);
                    }
                }
                b'd' | b'c' | b'f' => {
                    // COPY FROM STDIN data goes to the connection in copy-in mode.
                    let copy_in = self
                        .primary
                        .as_ref()
                        .is_some_and(|s| s.copy_in || s.has_open_unit());
                    let target = if copy_in {
                        Target::Primary
                    } else {
                        Target::Replica
                    };
                    if let Some(slot) = self.slot_mut(target) {
                        if m.tag != b'd' {
                            slot.copy_in = false;
                        }
                        slot.send(&m.raw).await?;
                    }
                }
                b'F' => {
                    // FunctionCall: may do anything; the primary runs it.
                    let unit = Unit {
                        messages: vec![m],
                        classes: vec![StatementClass::Write],
                        ends: true,
                        ..Unit::default()
                    };
                    self.dispatch(unit).await?;
                }
                b'X' => return Ok(false),
                other => {
                    let msg = format!("invalid frontend message type {}", other);
                    self.protocol_violation(&msg);
                    return Err(ProxyError::ClientProtocol(message::DecodeError::Malformed(
                        "frontend message type",
                    )));
                }
            }
        }
        Ok(true)
    }

    fn protocol_violation(&mut self, msg: &str) {
        self.ctx.stats.count_error("08P01");
        message::write_error(&mut self.client_out, "FATAL", "08P01", msg);
    }

    fn tx_status(&self) -> u8 {
        [&self.primary, &self.replica]
            .iter()
            .filter_map(|s| s.as_ref())
            .map(|s| s.tx_status)
            .find(|s| *s != b'I')
            .unwrap_or(b'I')
    }

    /// Adds an extended-protocol message to the current batch; sends the batch on Sync, Flush
    /// or when it grows large.
    async fn add_extended(&mut self, m: Message) -> Result<(), ProxyError> {
        let body = m.body();
        match m.tag {
            b'P' => {
                let (name, query) =
                    message::parse_message_fields(body).map_err(ProxyError::ClientProtocol)?;
                let classes = self.classify.classify(query);
                self.batch.classes.extend(classes.iter().copied());
                if classes
                    .iter()
                    .all(|c| matches!(c, StatementClass::SessionSet | StatementClass::Neutral))
                    && !classes.is_empty()
                {
                    self.batch.set_sql.push(query.to_string());
                }
                let info = StatementInfo {
                    hash: parse_hash(&m),
                    parse: m.clone(),
                    classes,
                };
                self.statements.insert(name.to_string(), info);
            }
            b'B' => {
                let (_, stmt) =
                    message::bind_message_fields(body).map_err(ProxyError::ClientProtocol)?;
                if let Some(info) = self.statements.get(stmt) {
                    self.batch.classes.extend(info.classes.iter().copied());
                }
            }
            b'D' => {
                let (kind, name) =
                    message::target_fields(body).map_err(ProxyError::ClientProtocol)?;
                if kind == b'S' {
                    if let Some(info) = self.statements.get(name) {
                        self.batch.classes.extend(info.classes.iter().copied());
                    }
                }
            }
            b'C' => {
                message::target_fields(body).map_err(ProxyError::ClientProtocol)?;
            }
            _ => {}
        }
        let tag = m.tag;
        self.batch.extended = true;
        self.batch.bytes += m.raw.len();
        self.batch.messages.push(m);
        if tag == b'S' {
            self.batch.ends = true;
        }
        if tag == b'S' || tag == b'H' || self.batch.bytes > MAX_BATCH_BYTES {
            let unit = std::mem::take(&mut self.batch);
            self.dispatch(unit).await?;
        }
        Ok(())
    }

    fn recent_write(&self) -> bool {
        match (self.config.routing.read_your_writes, self.last_write) {
            (_, None) | (ReadYourWrites::Transaction, _) => false,
            (ReadYourWrites::Session, Some(_)) => true,
            (ReadYourWrites::Window(w), Some(t)) => t.elapsed() < w,
        }
    }

    /// Routes a unit and sends it, or parks it until the replica connection is idle.
    async fn dispatch(&mut self, unit: Unit) -> Result<(), ProxyError> {
        // The rest of an extended batch that was sent early (Flush) follows it.
        let open = [Target::Primary, Target::Replica]
            .into_iter()
            .find(|t| match t {
                Target::Primary => self.primary.as_ref().is_some_and(|s| s.has_open_unit()),
                Target::Replica => self.replica.as_ref().is_some_and(|s| s.has_open_unit()),
            });
        if let Some(target) = open {
            return self.send_unit(target, unit, false).await;
        }
        let auto = self.listener.role == ListenerRole::Auto;
        if auto && self.replica.as_ref().is_some_and(|r| !r.idle()) {
            // Its transaction status is unknown until it answers: decide afterwards.
            self.waiting = Some(unit);
            return Ok(());
        }
        let in_transaction_on = if self.primary.as_ref().is_some_and(|s| s.in_transaction()) {
            Some(Target::Primary)
        } else if self.replica.as_ref().is_some_and(|s| s.in_transaction()) {
            Some(Target::Replica)
        } else {
            None
        };
        let state = SessionRouting {
            role: self.listener.role,
            in_transaction_on,
            pinned_to_primary: self.pinned_primary,
            recent_write: self.recent_write(),
        };
        let mut decision = router::decide(state, &unit.classes);
        if auto && self.primary.as_ref().is_some_and(|p| !p.idle()) {
            // Pipelining on the primary: the primary can run anything, keep the order.
            decision.target = Target::Primary;
        }
        if decision.pin_primary && !self.pinned_primary {
            tracing::debug!("session pinned to the primary");
            self.pinned_primary = true;
        }
        if decision.writes {
            self.last_write = Some(Instant::now());
        }
        let mut target = decision.target;
        if let Err(e) = self.ensure_slot(target).await {
            if target == Target::Replica && auto && self.view().primary.is_some() {
                // No replica: the primary serves the read.
                target = Target::Primary;
                self.ensure_slot(target).await.map_err(|e2| {
                    tracing::warn!(error = %e2, "no backend for unit");
                    e2
                })?;
            } else {
                let code = if decision.writes { "25006" } else { "57P03" };
                let msg = format!("pgcast: cannot run this statement: {e}");
                self.ctx.stats.count_error(code);
                message::write_error(&mut self.client_out, "ERROR", code, &msg);
                if unit.ends {
                    let status = self.tx_status();
                    message::write_ready_for_query(&mut self.client_out, status);
                } else {
                    self.discard_until_sync = true;
                }
                return Ok(());
            }
        }
        let counter = match target {
            Target::Primary => &self.ctx.stats.routed_primary,
            Target::Replica => &self.ctx.stats.routed_replica,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if decision.session_reset {
            // DISCARD ALL / RESET ALL: the other connection's state is stale; drop it.
            self.session_sets.clear();
            self.statements.clear();
            match target {
                Target::Primary if self.replica.as_ref().is_some_and(|r| r.idle()) => {
                    self.replica = None
                }
                _ => {}
            }
        }
        let with_sets = decision.session_set;
        self.send_unit(target, unit, with_sets).await
    }

    /// Writes a unit to a connection, injecting the statements it needs there first.
    async fn send_unit(
        &mut self,
        target: Target,
        unit: Unit,
        with_sets: bool,
    ) -> Result<(), ProxyError> {
        let statements = &self.statements;
        let slot = match target {
            Target::Primary => self.primary.as_mut(),
            Target::Replica => self.replica.as_mut(),
        }
        .ok_or_else(|| ProxyError::BackendUnavailable("connection vanished".into()))?;
        let mut out = BytesMut::with_capacity(unit.bytes + 64);
        let mut swallow = std::collections::VecDeque::new();
        let mut closes: Vec<(Target, String)> = Vec::new();
        for m in &unit.messages {
            let body = m.body();
            match m.tag {
                b'P' => {
                    if let Ok((name, _)) = message::parse_message_fields(body) {
                        slot.prepared.insert(name.to_string(), parse_hash(m));
                        slot.to_close.remove(name);
                    }
                }
                b'B' | b'D' => {
                    let name = if m.tag == b'B' {
                        message::bind_message_fields(body).ok().map(|(_, s)| s)
                    } else {
                        message::target_fields(body)
                            .ok()
                            .filter(|(k, _)| *k == b'S')
                            .map(|(_, s)| s)
                    };
                    if let Some(name) = name {
                        if let Some(info) = statements.get(name) {
                            let here = slot.prepared.get(name).copied();
                            if here != Some(info.hash) {
                                if (here.is_some() || slot.to_close.contains(name))
                                    && !name.is_empty()
                                {
                                    message::write_message(&mut out, b'C', |b| {
                                        b.extend_from_slice(b"S");
                                        message::put_cstr(b, name);
                                    });
                                    swallow.push_back(b'3');
                                }
                                out.extend_from_slice(&info.parse.raw);
                                swallow.push_back(b'1');
                                slot.prepared.insert(name.to_string(), info.hash);
                                slot.to_close.remove(name);
                            }
                        }
                    }
                }
                b'C' => {
                    if let Ok((b'S', name)) = message::target_fields(body) {
                        slot.prepared.remove(name);
                        let other = if target == Target::Primary {
                            Target::Replica
                        } else {
                            Target::Primary
                        };
                        closes.push((other, name.to_string()));
                    }
                }
                b'Q' => {
                    // A simple Query destroys the unnamed statement.
                    slot.prepared.remove("");
                }
                _ => {}
            }
            out.extend_from_slice(&m.raw);
        }
        slot.counters.queries.fetch_add(1, Ordering::Relaxed);
        if slot.has_open_unit() {
            if let Some(u) = slot.pending.back_mut() {
                u.swallow.extend(swallow);
                u.sync_sent = unit.ends;
            }
        } else {
            slot.push_unit(PendingUnit {
                forward: true,
                extended: unit.extended,
                sync_sent: unit.ends,
                swallow,
                saw_error: false,
                on_success_sets: if with_sets {
                    unit.set_sql.clone()
                } else {
                    Vec::new()
                },
            });
        }
        slot.send(&out).await?;
        for (other, name) in closes {
            self.statements.remove(&name);
            if let Some(o) = self.slot_mut(other) {
                if o.prepared.remove(&name).is_some() {
                    o.to_close.insert(name);
                }
            }
        }
        Ok(())
    }
}

async fn read_slot(slot: &mut Option<Slot>) -> std::io::Result<usize> {
    match slot {
        Some(s) => s.reader.rd.read_buf(&mut s.reader.buf).await,
        None => std::future::pending().await,
    }
}

/// Index of a weighted random choice (weights are > 0 for members of the read set).
fn pick_weighted(candidates: &[(String, String, u16, u32)]) -> usize {
    let total: u64 = candidates.iter().map(|c| c.3.max(1) as u64).sum();
    let mut r = rand::random::<u64>() % total.max(1);
    for (i, c) in candidates.iter().enumerate() {
        let w = c.3.max(1) as u64;
        if r < w {
            return i;
        }
        r -= w;
    }
    0
}
