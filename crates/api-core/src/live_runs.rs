//! Backtests being watched live on this replica: each run's event list is
//! produced once, by one task, and every watcher (WebSocket or SSE) paces
//! through the same list on its own.
//!
//! A run is here while someone watches it; its producer reads
//! [`LiveRun::watchers`] to tell when nobody here does any more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde_json::Value;
use tokio::sync::watch;

/// A run's events once produced, or why there are none.
pub type Outcome = Result<Arc<[Value]>, String>;

#[derive(Debug, Default)]
pub struct LiveRuns {
    runs: Mutex<HashMap<i64, Weak<LiveRun>>>,
}

#[derive(Debug)]
pub struct LiveRun {
    pub id: i64,
    outcome: watch::Sender<Option<Outcome>>,
    watchers: AtomicUsize,
}

/// One watcher of a run; it stops counting when dropped.
#[derive(Debug)]
pub struct Watcher {
    run: Arc<LiveRun>,
}

impl LiveRuns {
    /// Watches run `id`: the watcher, and whether the run was not watched
    /// here before (the caller then starts its producer).
    pub fn watch(&self, id: i64) -> (Watcher, bool) {
        let mut runs = self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        runs.retain(|_, run| run.strong_count() > 0);
        if let Some(run) = runs.get(&id).and_then(Weak::upgrade) {
            run.watchers.fetch_add(1, Ordering::SeqCst);
            return (Watcher { run }, false);
        }
        let (outcome, _) = watch::channel(None);
        let run = Arc::new(LiveRun { id, outcome, watchers: AtomicUsize::new(1) });
        runs.insert(id, Arc::downgrade(&run));
        (Watcher { run }, true)
    }

    /// Runs watched here now.
    pub fn len(&self) -> usize {
        let runs = self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        runs.values().filter(|run| run.strong_count() > 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LiveRun {
    /// Sets the run's events (or failure), once; later calls change nothing.
    pub fn produce(&self, outcome: Outcome) {
        self.outcome.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(outcome);
            true
        });
    }

    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::SeqCst)
    }
}

impl Watcher {
    pub fn run(&self) -> &Arc<LiveRun> {
        &self.run
    }

    /// The run's events, once produced.
    pub async fn outcome(&self) -> Outcome {
        let mut receiver = self.run.outcome.subscribe();
        // The sender lives in the run, which this watcher holds: it cannot close.
        let outcome = receiver.wait_for(Option::is_some).await.map(|outcome| outcome.clone());
        outcome.ok().flatten().unwrap_or_else(|| Err("the run's events were lost".into()))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.run.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn watchers_share_one_outcome_and_are_counted() {
        let runs = LiveRuns::default();
        let (first, created) = runs.watch(7);
        assert!(created);
        let (second, created) = runs.watch(7);
        assert!(!created, "a second watcher joins the same run");
        assert_eq!(first.run().watchers(), 2);
        let run = first.run().clone();
        run.produce(Ok(Arc::from(vec![json!({"type": "complete"})])));
        run.produce(Err("ignored: produced once".into()));
        assert_eq!(second.outcome().await.unwrap().len(), 1);
        assert_eq!(first.outcome().await.unwrap()[0]["type"], "complete");

        drop(first);
        assert_eq!(run.watchers(), 1);
        drop(second);
        assert_eq!(run.watchers(), 0);
        drop(run);
        assert!(runs.is_empty());
        let (_again, created) = runs.watch(7);
        assert!(created, "a run nobody watches any more starts afresh");
    }
}
