//! Fail closed: the tasks whose death would leave this balancer announcing while nothing
//! decides the announcement any more (health, the coupling, the speakers' actors, the
//! listeners). The daemon waits on all of them beside its signals; the first that ends turns
//! into a withdrawal and a non-zero exit, so systemd restarts pgcast.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use tokio::task::JoinHandle;

/// Named tasks that must run as long as pgcast does.
#[derive(Default)]
pub struct CriticalTasks {
    tasks: Vec<(String, JoinHandle<()>)>,
}

/// Which critical task ended, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskExit {
    pub task: String,
    /// "panicked: …", "was cancelled" or "returned".
    pub how: String,
}

impl std::fmt::Display for TaskExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.task, self.how)
    }
}

impl CriticalTasks {
    pub fn add(&mut self, name: impl Into<String>, task: JoinHandle<()>) {
        self.tasks.push((name.into(), task));
    }

    pub fn extend(&mut self, tasks: Vec<(String, JoinHandle<()>)>) {
        self.tasks.extend(tasks);
    }

    /// The first task to end (never resolves while all run, or when there are none). The
    /// task that ended is removed, so this can be awaited again.
    pub async fn first_exit(&mut self) -> TaskExit {
        let (i, outcome) = poll_fn(|cx| {
            for (i, (_, task)) in self.tasks.iter_mut().enumerate() {
                if let Poll::Ready(outcome) = Pin::new(task).poll(cx) {
                    return Poll::Ready((i, outcome));
                }
            }
            Poll::Pending
        })
        .await;
        let (task, _) = self.tasks.swap_remove(i);
        let how = match outcome {
            Ok(()) => "returned".to_string(),
            Err(e) if e.is_panic() => format!("panicked: {}", panic_message(e.into_panic())),
            Err(_) => "was cancelled".to_string(),
        };
        TaskExit { task, how }
    }

    /// Waits for every task to end (on the way out, after telling them to stop).
    pub async fn join_all(self) {
        for (_, task) in self.tasks {
            let _ = task.await;
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_the_task_that_panicked_and_keeps_the_others() {
        let mut tasks = CriticalTasks::default();
        tasks.add("forever", tokio::spawn(std::future::pending::<()>()));
        tasks.add(
            "faulty",
            tokio::spawn(async {
                tokio::task::yield_now().await;
                panic!("boom");
            }),
        );
        let exit = tasks.first_exit().await;
        assert_eq!(exit.task, "faulty");
        assert_eq!(exit.how, "panicked: boom");
        tasks.add("done", tokio::spawn(async {}));
        let exit = tasks.first_exit().await;
        assert_eq!(
            (exit.task.as_str(), exit.how.as_str()),
            ("done", "returned")
        );
        let still = tokio::time::timeout(std::time::Duration::from_millis(50), tasks.first_exit());
        assert!(still.await.is_err(), "the pending task has not ended");
    }
}
