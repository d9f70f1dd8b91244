//! A client session's start: start-up and authentication within their time limit, a
//! logged-in slot, the session state on the heap, its home connection (or greeting); then the
//! relay loop of `session.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::cancel::CancelTargets;
use super::prelogin::PreLoginPermit;
use super::session::{Session, Unit};
use super::slots::Slots;
use super::startup::{self, ClientStartup, StartupOutcome};
use super::stats::{ClientGuard, Refusal, StartupFailure};
use super::tls::{self, ClientStream};
use super::{session_pid, ProxyContext, ProxyError};
use crate::config::{Config, ListenerConfig, PoolMode};

/// Serves one accepted client connection to its end. `prelogin` is its place in the pre-login
/// budget (none for the self-check's probe), given back when start-up ends; only then, once
/// the client authenticated, does it take a logged-in slot, so a stranger never holds one.
///
/// Both phases are awaited boxed, and what passes between them is boxed too: a task holds
/// room for the largest state its future can be in for as long as it lives (a local moved
/// away keeps its room until its scope ends), and an idle client should hold only what its
/// relay loop needs, not room for the start-up it went through once (the task's future was
/// 5.8 KB with the phases inline, measured).
pub async fn serve_client(
    stream: TcpStream,
    listener: Arc<ListenerConfig>,
    ctx: Arc<ProxyContext>,
    prelogin: Option<PreLoginPermit>,
) -> Result<(), ProxyError> {
    let Some(login) = Box::pin(log_in(stream, &listener, &ctx, prelogin)).await? else {
        return Ok(());
    };
    Box::pin(serve_session(login, listener, ctx)).await
}

/// A client that authenticated and holds a logged-in slot.
struct LoggedIn {
    stream: ClientStream,
    client: ClientStartup,
    config: Arc<Config>,
    /// What the client sent after its login messages, not yet read.
    buf: BytesMut,
    _slot: OwnedSemaphorePermit,
}

/// Start-up and authentication, within `limits.startup_timeout`; then a logged-in slot. None
/// when the connection ends here (cancel request, failed or refused login).
async fn log_in(
    stream: TcpStream,
    listener: &ListenerConfig,
    ctx: &Arc<ProxyContext>,
    prelogin: Option<PreLoginPermit>,
) -> Result<Option<Box<LoggedIn>>, ProxyError> {
    let config = ctx.config.borrow().clone();
    let peer = stream.peer_addr().ok();
    let mut stream = ClientStream::Plain(stream);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let outcome = tokio::time::timeout(
        config.limits.startup_timeout,
        Box::pin(startup::client_startup(
            &mut stream,
            &mut buf,
            ctx,
            &config,
            listener.tls,
            startup::Arrival {
                listener: &listener.name,
                peer,
            },
        )),
    )
    .await;
    let client = match outcome {
        Err(_) => {
            let msg = "canceling authentication due to timeout";
            startup::note_failure(ctx, peer, StartupFailure::Timeout, msg);
            startup::fatal(&mut stream, ctx, "57014", msg).await?;
            return Ok(None);
        }
        // Counted and logged here, within limits: a stranger's failure is no session error.
        Ok(Err(e)) => {
            startup::note_failure(ctx, peer, startup::failure_kind(&e), &e.to_string());
            return Ok(None);
        }
        Ok(Ok(StartupOutcome::Cancelled)) => return Ok(None),
        Ok(Ok(StartupOutcome::Session(c))) => *c,
    };
    drop(prelogin);
    let Ok(slot) = Arc::clone(&ctx.client_slots).try_acquire_owned() else {
        ctx.stats.refused.count(Refusal::ClientsFull);
        crate::log_limited!(warn, listener = %listener.name,
                user = %client.user.name,
                "login refused: limits.max_client_connections clients are logged in");
        startup::fatal(&mut stream, ctx, "53300", "sorry, too many clients already").await?;
        return Ok(None);
    };
    Ok(Some(Box::new(LoggedIn {
        stream,
        client,
        config,
        buf,
        _slot: slot,
    })))
}

/// The logged-in session: its home connection (or greeting), then the relay loop.
async fn serve_session(
    login: Box<LoggedIn>,
    listener: Arc<ListenerConfig>,
    ctx: Arc<ProxyContext>,
) -> Result<(), ProxyError> {
    let _client = ClientGuard::new(ctx.stats.listener(&listener.name));
    let (mut session, mut stream, _slot) = Session::start(login, listener, ctx);
    let registration = match Box::pin(session.open_home()).await {
        Ok(r) => r,
        Err(e) => {
            session.report_connect_error(&e);
            Box::pin(tls::send(&mut stream, &session.client_out)).await?;
            return Err(e);
        }
    };
    let (rd, wr) = stream.into_split();
    let result = session.run(rd, wr).await;
    drop(registration);
    result
}

impl Session {
    /// A new session of a client that logged in, on the heap (see [`serve_client`]), with its
    /// connection and its logged-in slot. Takes the login's box, so that it is freed here and
    /// not when the session ends.
    #[allow(clippy::boxed_local)] // the box is the login's, handed over to be freed here
    fn start(
        login: Box<LoggedIn>,
        listener: Arc<ListenerConfig>,
        ctx: Arc<ProxyContext>,
    ) -> (Box<Session>, ClientStream, OwnedSemaphorePermit) {
        let LoggedIn {
            stream,
            client,
            config,
            buf,
            _slot: slot,
        } = *login;
        let issued_pid = (!config.pool.connects_at_login())
            .then(|| session_pid::issue_pid(rand::random::<u32>()));
        let cancel_targets = match issued_pid {
            // Transaction mode records no aliases (see `session_pid.rs`).
            Some(pid) if config.pool.mode == PoolMode::Session => {
                Arc::new(CancelTargets::aliased(Arc::clone(&ctx.pid_aliases), pid))
            }
            _ => Arc::new(CancelTargets::default()),
        };
        let session = Box::new(Session {
            classify: ctx.catalogs.for_database(&client.database),
            ctx,
            config,
            listener,
            client,
            slots: Slots::default(),
            cancel_targets,
            statements: HashMap::new(),
            batch: Unit::default(),
            waiting: None,
            pinned_primary: false,
            last_write: None,
            session_sets: Vec::new(),
            discard_until_sync: false,
            deferred_begin: None,
            deferred_begin_read_only: false,
            relayed_fatal: false,
            client_terminated: false,
            retry: None,
            issued_pid,
            greeting: None,
            client_buf: buf,
            // Grows with what the client is sent; an idle client holds next to nothing.
            client_out: BytesMut::new(),
            routes: Default::default(),
        });
        (session, stream, slot)
    }
}
