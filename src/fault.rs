//! A test-only fault hook: lets the integration tests make a task that decides the anycast
//! announcement panic, to prove that pgcast then fails closed (withdraws and exits non-zero).
//!
//! Debug builds only: with `PGCAST_TEST_FAULT_DIR=DIR` in the environment, the task named
//! `NAME` panics once the file `DIR/NAME` exists (polled every 100 ms), or, for a stall,
//! blocks its thread while the file exists. Release builds never
//! look at the variable, so no environment can make a production balancer panic.

use std::time::Duration;

/// The environment variable that names the trigger directory.
pub const FAULT_DIR_ENV: &str = "PGCAST_TEST_FAULT_DIR";

/// Resolves (and the caller panics) once the fault for `task` is triggered; never resolves in
/// release builds or without the environment variable.
pub async fn triggered(task: &'static str) {
    match trigger_path(task) {
        Some(path) => loop {
            if path.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        },
        None => std::future::pending().await,
    }
}

/// Panics the calling task once the fault for `task` is triggered (see the module docs).
pub async fn panic_when_triggered(task: &'static str) -> ! {
    triggered(task).await;
    panic!("test fault injected into the {task} task ({FAULT_DIR_ENV})");
}

/// Blocks the calling thread (the whole runtime, if it has one worker) while the fault for
/// `task` stays triggered: a stall, as a frozen or starved thread would cause.
pub fn stall_while_triggered(task: &'static str) {
    let Some(path) = trigger_path(task) else {
        return;
    };
    tracing::warn!(
        "test fault: the {task} thread stalls while {} exists",
        path.display()
    );
    while path.exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn trigger_path(task: &str) -> Option<std::path::PathBuf> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let dir = std::env::var_os(FAULT_DIR_ENV)?;
    Some(std::path::Path::new(&dir).join(task))
}
