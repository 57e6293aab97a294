//! Owns the long-lived tasks of a running server (the revocation watch, the media sweep,
//! the watchdog, the uplink or the relays' endpoint): each is started here under a name,
//! none outlives the server, and none may end on its own.
//!
//! Every one of these tasks runs until it is told to stop. One that ends earlier (a panic,
//! an endpoint that closed under it) leaves the server half-working: a hub whose uplink
//! task died would go on acknowledging messages that never leave the village. So the first
//! early exit is reported to [`Core::serve`](crate::server::Core::serve), which shuts the
//! whole server down in order and returns an error; systemd then restarts it. Sessions are
//! owned separately (one tracker, closed with a grace period); per-stream tasks inside a
//! link are owned by that link.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub(crate) struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    stop: CancellationToken,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self { tasks: JoinSet::new(), names: HashMap::new(), stop: CancellationToken::new() }
    }
}

impl Supervisor {
    /// The token every supervised task must stop on.
    pub(crate) fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Starts `task`; it must run until [`Supervisor::stop_token`] is cancelled.
    pub(crate) fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// Resolves with the name of the first task that ends before it was told to stop
    /// (and how); never resolves while they all run, or when there are none.
    pub(crate) async fn first_exit(&mut self) -> (&'static str, String) {
        match self.tasks.join_next_with_id().await {
            Some(Ok((id, ()))) => (self.name(id), "it returned".into()),
            Some(Err(e)) => (self.name(e.id()), if e.is_panic() { "it panicked".into() } else { e.to_string() }),
            None => std::future::pending().await,
        }
    }

    fn name(&self, id: Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("unnamed task")
    }

    /// Tells every task to stop and waits until all have.
    pub(crate) async fn shutdown(mut self) {
        self.stop.cancel();
        while let Some(joined) = self.tasks.join_next_with_id().await {
            if let Err(e) = joined
                && e.is_panic()
            {
                tracing::error!(task = self.name(e.id()), "task panicked while stopping");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_first_task_to_end_early_is_named_and_shutdown_stops_the_rest() {
        let mut s = Supervisor::default();
        let stop = s.stop_token();
        let stopped = CancellationToken::new();
        let seen = stopped.clone();
        s.spawn("steady", async move {
            stop.cancelled().await;
            seen.cancel();
        });
        s.spawn("fragile", async { tokio::time::sleep(std::time::Duration::from_secs(5)).await });
        let (name, how) = s.first_exit().await;
        assert_eq!((name, how.as_str()), ("fragile", "it returned"));
        assert!(!stopped.is_cancelled(), "the steady task still runs until shutdown");
        s.shutdown().await;
        assert!(stopped.is_cancelled(), "shutdown stopped the steady task and waited for it");
    }

    #[tokio::test]
    async fn a_panicking_task_is_reported_as_such() {
        let mut s = Supervisor::default();
        s.spawn("broken", async { panic!("boom") });
        let (name, how) = s.first_exit().await;
        assert_eq!((name, how.as_str()), ("broken", "it panicked"));
    }
}
