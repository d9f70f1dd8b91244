//! The `pgcast` command line.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgcast::admin::{AdminCommand, CommandReply, Control};

#[derive(Parser)]
#[command(
    name = "pgcast",
    version,
    about = "SQL-aware PostgreSQL proxy with health checks and anycast announcement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "/etc/pgcast/pgcast.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit (0 valid, 2 invalid, or holding secrets while
    /// others may read it).
    CheckConfig {
        #[arg(short, long, default_value = "/etc/pgcast/pgcast.toml")]
        config: PathBuf,
    },
    /// Show listeners, backends and routing of a running pgcast.
    /// Exit code: 0 healthy, 1 degraded, 2 status unavailable.
    Status {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Take this balancer out of the anycast set for maintenance: pause new connections,
    /// give sessions in flight `drain.quiesce_ms`, withdraw every prefix (BGP first
    /// re-announces with GRACEFUL_SHUTDOWN), wait `drain.withdraw_grace_ms`, then accept
    /// again (on the balancer's own address).
    /// Stays drained until `pgcast undrain` or a restart.
    /// Exit code: 0 drained, 1 not (see the message), 2 no answer.
    Drain {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Announce the prefixes again after `pgcast drain`, as health allows.
    /// Exit code: 0 done, 2 no answer.
    Undrain {
        #[command(flatten)]
        target: AdminTarget,
    },
}

/// Which running pgcast a command talks to.
#[derive(clap::Args)]
struct AdminTarget {
    /// Configuration file (to find the admin socket).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Admin socket path (overrides the configuration's).
    #[arg(long)]
    admin: Option<PathBuf>,
    /// Print JSON (the status instead of a table; a command's reply instead of its message).
    #[arg(long)]
    json: bool,
}

/// mimalloc instead of glibc's malloc: less user time per transaction with many clients (its
/// per-thread free lists keep a session's short-lived allocations on memory the thread has just
/// used). docs/benchmarks.md, "Fewer instructions per transaction, and mimalloc".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            init_logging();
            match run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pgcast: {}", describe(&e));
                    ExitCode::from(1)
                }
            }
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Status { target } => match status(target) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("pgcast status: {}", describe(&e));
                ExitCode::from(2)
            }
        },
        Command::Drain { target } => control(Control::Drain, target),
        Command::Undrain { target } => control(Control::Undrain, target),
    }
}

/// The error and its causes, joined by ": ", leaving out a cause the message before it already
/// spells out (the module errors print their `source` inside their own message, so anyhow's
/// `{:#}` would print it twice: "cannot read /x: No such file…: No such file…").
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn control(command: Control, target: AdminTarget) -> ExitCode {
    let word = AdminCommand::Control(command).as_str();
    let result = (|| -> anyhow::Result<CommandReply> {
        let path = pgcast::daemon::admin_socket_path(target.admin, target.config.as_deref())?;
        let command = AdminCommand::Control(command);
        Ok(runtime()?.block_on(pgcast::admin::send_command(&path, command))?)
    })();
    match result {
        Ok(reply) => {
            if target.json {
                match serde_json::to_string_pretty(&reply) {
                    Ok(json) => println!("{json}"),
                    Err(e) => eprintln!("pgcast {word}: {e}"),
                }
            } else {
                println!("{}", reply.message);
            }
            ExitCode::from(if reply.ok { 0 } else { 1 })
        }
        Err(e) => {
            eprintln!("pgcast {word}: {}", describe(&e));
            ExitCode::from(2)
        }
    }
}

/// `pgcast check-config`: the file parses and validates, and the files it names (the TLS
/// certificate and key) load.
fn check_config(path: &std::path::Path) -> ExitCode {
    let c = match pgcast::config::Config::load_private(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Warnings do not fail the check: the file is valid, and may be meant so.
    for w in &c.warnings {
        eprintln!("warning: {w}");
    }
    if let Err(e) = pgcast::proxy::tls::ServerTls::new(c.tls.as_ref()) {
        eprintln!("{}: [tls]: {e}", path.display());
        return ExitCode::from(2);
    }
    if let Err(e) = pgcast::backend_tls::BackendTls::new(&c.backend_tls) {
        eprintln!("{}: [backend_tls]: {e}", path.display());
        return ExitCode::from(2);
    }
    println!(
        "{}: OK ({} listeners, {} backends, {} users{})",
        path.display(),
        c.listeners.len(),
        c.backends.len(),
        c.users.len(),
        if c.tls.is_some() { ", TLS" } else { "" }
    );
    ExitCode::SUCCESS
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGCAST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: in a file or the journal the escape codes are noise.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(&RuntimeKnobs::from_env()?)
}

/// The proxy runtime's settings from the environment, read once: `run` builds the runtime
/// with them and logs them.
struct RuntimeKnobs {
    /// `PGCAST_WORKER_THREADS`; None: tokio's default (one worker per core).
    worker_threads: Option<usize>,
    /// `PGCAST_IO_EVENTS_PER_TICK`, or tokio's own default.
    io_events_per_tick: usize,
}

/// tokio's own `max_io_events_per_tick` when `PGCAST_IO_EVENTS_PER_TICK` is not set.
const TOKIO_IO_EVENTS_PER_TICK: usize = 1024;

impl RuntimeKnobs {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            worker_threads: env_count("PGCAST_WORKER_THREADS")?,
            io_events_per_tick: env_count("PGCAST_IO_EVENTS_PER_TICK")?
                .unwrap_or(TOKIO_IO_EVENTS_PER_TICK),
        })
    }
}

fn runtime_with(knobs: &RuntimeKnobs) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = knobs.worker_threads {
        builder.worker_threads(n);
    }
    // PGCAST_IO_EVENTS_PER_TICK caps the sockets one poll of the reactor hands to a worker
    // (tokio's default 1,024). At 1 a worker that finds one ready socket runs it itself,
    // where with two or more it wakes an idle worker to share them: fewer wake-ups between
    // threads (8 and 32 clients: 8-22 % more TPS, system time per transaction down to
    // PgBouncer's), but with many clients on a host shared with PostgreSQL the proxy then runs
    // on fewer threads, with an epoll_wait per socket (1,000 clients: 14-18 % fewer TPS).
    // docs/benchmarks.md, "Fewer wake-ups between the proxy's workers" and "Fewer instructions
    // per transaction, and mimalloc".
    builder
        .max_io_events_per_tick(knobs.io_events_per_tick)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A count of at least 1 from the environment variable `name`; None if unset. Anything else
/// (not a whole number, 0, not UTF-8) stops the start with the variable's name, like a bad
/// config key: a knob set and silently ignored would leave a tuned host running untuned.
fn env_count(name: &str) -> anyhow::Result<Option<usize>> {
    let Some(value) = std::env::var_os(name) else {
        return Ok(None);
    };
    match value.to_str().and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(n) if n >= 1 => Ok(Some(n)),
        _ => {
            anyhow::bail!("environment variable {name}={value:?}: not a whole number of at least 1")
        }
    }
}

/// A single-worker runtime on a thread of its own, for a part that must keep its timers
/// whatever the proxy's workers are doing (a burst of logins, a huge statement to parse).
fn dedicated_runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .with_context(|| format!("cannot start the {name} runtime"))
}

fn run(config: PathBuf) -> anyhow::Result<()> {
    // Health (backend checks, the listener self-check) and routing (OSPF, BGP, BFD) each get
    // their own: the self-check sees a stalled proxy from outside it, and a health check's
    // login (SCRAM: 4096 HMAC rounds, ~60 ms of CPU in a debug build, far longer in wall time
    // on a loaded host) can never hold back a BFD packet, a Hello or a keepalive.
    let health = dedicated_runtime("pgcast-health")?;
    let routing = dedicated_runtime("pgcast-routing")?;
    let knobs = RuntimeKnobs::from_env()?;
    let proxy = runtime_with(&knobs)?;
    // Said once at start, so that whoever set a knob sees that it took.
    tracing::info!(
        workers = proxy.metrics().num_workers(),
        io_events_per_tick = knobs.io_events_per_tick,
        "proxy runtime (PGCAST_WORKER_THREADS, PGCAST_IO_EVENTS_PER_TICK)"
    );
    let result = proxy.block_on(pgcast::daemon::run(
        &config,
        pgcast::daemon::Runtimes {
            health: health.handle().clone(),
            routing: routing.handle().clone(),
        },
    ));
    // The speakers have said goodbye (withdrawal, Cease, BFD AdminDown) inside run().
    routing.shutdown_timeout(std::time::Duration::from_millis(200));
    health.shutdown_timeout(std::time::Duration::from_millis(200));
    result?;
    Ok(())
}

fn status(target: AdminTarget) -> anyhow::Result<u8> {
    let path = pgcast::daemon::admin_socket_path(target.admin, target.config.as_deref())?;
    let status = runtime()?.block_on(pgcast::admin::fetch_status(&path))?;
    if target.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(status.exit_code() as u8)
}
