//! Admission: the decision whether a call may use a key now.
//!
//! Two backends implement [`Limiter`] with identical semantics: in memory for
//! one process, and in Redis (one Lua script per admission) for any number
//! of replicas. The rules, per (project, model) bucket:
//! - **RPM**: at most `rpm` admissions in any sliding window (`window_ms`,
//!   guard included). Only a log of admission times keeps every one of
//!   Google's minutes, whatever their phase, under the limit.
//! - **burst**: GCRA pacing at `rpm` per window with `burst` tolerance.
//! - **TPM**: reserved input tokens in the same sliding window.
//! - **RPD**: admissions in the current Pacific day.
//! - **max_in_flight** (per key): leases with a TTL, released at call end.
//! - cooldowns (per bucket) and disables (per key) refuse outright.

pub mod failover;
pub mod memory;
pub mod redis;

use async_trait::async_trait;

use crate::config::BucketLimits;

/// The most candidates one admission looks at.
pub const MAX_CANDIDATES: usize = 16;

/// One key an admission may use, with its bucket's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub key_id: String,
    pub model: String,
    pub project: String,
    pub limits: BucketLimits,
    pub max_in_flight: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The first candidate, in order, that has room.
    FirstFit,
    /// Of those with room, the one with the largest remaining fraction of its
    /// tightest limit.
    LeastLoaded,
}

/// One admission attempt. Every candidate shares one model, so every Redis
/// key the attempt touches carries the same hash tag (one Cluster slot).
#[derive(Debug, Clone)]
pub struct AdmitRequest {
    pub candidates: Vec<Candidate>,
    /// Estimated input tokens, reserved now and reconciled later.
    pub tokens: u64,
    pub pick: Pick,
    /// Start the walk at a pool-wide counter (round robin).
    pub rotate: bool,
    /// Sliding window including its guard.
    pub window_ms: u64,
    pub lease_ttl_ms: u64,
    /// A unique id for this admission's window entry and lease.
    pub entry_id: String,
}

/// What an admission reserved, to be reconciled, released or refunded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub key_id: String,
    pub model: String,
    pub project: String,
    pub entry_id: String,
    pub tokens: u64,
    pub admitted_at_ms: u64,
    pub day_start_ms: u64,
    pub leased: bool,
    /// The GCRA emission interval this admission advanced its bucket by,
    /// handed back by a refund.
    pub pacing_interval_ms: u64,
    /// The bucket's requests and tokens in the window, this one included, as
    /// the deciding backend saw them.
    pub window_requests: u32,
    pub window_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Admitted(Ticket),
    /// Nothing has room. `retry_after_ms` is when the earliest candidate
    /// will; `None` when no candidate ever can (all disabled, or the request
    /// is larger than every candidate's TPM).
    NoRoom {
        retry_after_ms: Option<u64>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error("limiter backend unavailable: {0}")]
    Unavailable(String),
}

/// A bucket's use of its limits, for the health views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUsage {
    pub model: String,
    pub project: String,
    pub requests_in_window: u32,
    pub tokens_in_window: u64,
    pub requests_today: u32,
    pub cooldown: Option<Restriction>,
}

/// A cooldown or a disable: until when (ms since the epoch) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// `u64::MAX` when it lasts until an operator lifts it.
    pub until_ms: u64,
    pub reason: String,
    /// Only an operator lifts it (a leaked key): no timer, no probe.
    pub needs_operator: bool,
}

impl Restriction {
    pub fn timed(until_ms: u64, reason: &str) -> Self {
        Self { until_ms, reason: reason.to_string(), needs_operator: false }
    }

    pub fn until_operator(reason: &str) -> Self {
        Self { until_ms: u64::MAX, reason: reason.to_string(), needs_operator: true }
    }
}

/// How long a disable lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lasting {
    /// This many milliseconds; a probe may lift it sooner.
    Ms(u64),
    /// Until an operator lifts it.
    UntilOperator,
}

#[async_trait]
pub trait Limiter: Send + Sync {
    async fn admit(&self, request: &AdmitRequest) -> Result<Decision, LimiterError>;

    /// Replaces the ticket's reserved tokens with the real count.
    async fn reconcile(&self, ticket: &Ticket, actual_tokens: u64, window_ms: u64) -> Result<(), LimiterError>;

    /// Ends the call: frees its in-flight lease.
    async fn release(&self, ticket: &Ticket) -> Result<(), LimiterError>;

    /// Takes back the request unit and tokens: the call never reached Google.
    async fn refund(&self, ticket: &Ticket) -> Result<(), LimiterError>;

    /// Cools the (project, model) bucket for `duration_ms`; never shortens one.
    async fn cool_down(&self, model: &str, project: &str, duration_ms: u64, reason: &str) -> Result<(), LimiterError>;

    async fn disable(&self, model: &str, key_id: &str, lasting: Lasting, reason: &str) -> Result<(), LimiterError>;

    /// Lifts a key's disable.
    async fn enable(&self, model: &str, key_id: &str) -> Result<(), LimiterError>;

    /// Lifts a bucket's cooldown (the admin reset).
    async fn clear_cooldown(&self, model: &str, project: &str) -> Result<(), LimiterError>;

    async fn usage(&self, model: &str, project: &str, window_ms: u64) -> Result<BucketUsage, LimiterError>;

    async fn disabled(&self, model: &str, key_id: &str) -> Result<Option<Restriction>, LimiterError>;

    /// Takes a named lock for `ttl_ms` if nobody holds it (one prober per key).
    async fn try_lock(&self, name: &str, ttl_ms: u64) -> Result<bool, LimiterError>;

    /// Whether this replica decides alone because the shared state is out
    /// of reach; `None` for a backend that has no shared state.
    fn degraded(&self) -> Option<bool> {
        None
    }

    /// Many buckets' use and many keys' disables at once, for the
    /// operators' views: a backend with round trips does it in one.
    async fn snapshot(&self, request: &SnapshotRequest) -> Result<LimiterSnapshot, LimiterError> {
        let mut buckets = Vec::with_capacity(request.buckets.len());
        for (model, project) in &request.buckets {
            buckets.push(self.usage(model, project, request.window_ms).await?);
        }
        let mut disabled = Vec::with_capacity(request.keys.len());
        for (model, key_id) in &request.keys {
            disabled.push(self.disabled(model, key_id).await?);
        }
        Ok(LimiterSnapshot { buckets, disabled })
    }
}

/// What [`Limiter::snapshot`] reads: buckets as (model, project), keys as
/// (model, key id).
#[derive(Debug, Clone, Default)]
pub struct SnapshotRequest {
    pub window_ms: u64,
    pub buckets: Vec<(String, String)>,
    pub keys: Vec<(String, String)>,
}

/// In the order asked.
#[derive(Debug, Clone, Default)]
pub struct LimiterSnapshot {
    pub buckets: Vec<BucketUsage>,
    pub disabled: Vec<Option<Restriction>>,
}

/// One bucket's sliding window: admission times and tokens, oldest first,
/// with running totals so that admission never walks the whole log.
#[derive(Debug, Default, Clone)]
pub struct Window {
    entries: std::collections::VecDeque<WindowEntry>,
    tokens: u64,
}

#[derive(Debug, Clone)]
struct WindowEntry {
    at_ms: u64,
    id: String,
    tokens: u64,
}

impl Window {
    pub fn push(&mut self, at_ms: u64, id: &str, tokens: u64) {
        // Seeded or replayed entries may be older than the newest one.
        let position = self.entries.iter().rposition(|e| e.at_ms <= at_ms).map_or(0, |i| i + 1);
        self.entries.insert(position, WindowEntry { at_ms, id: id.to_string(), tokens });
        self.tokens += tokens;
    }

    /// Drops entries that have left the window ending at `now_ms`.
    pub fn prune(&mut self, now_ms: u64, window_ms: u64) {
        while let Some(oldest) = self.entries.front() {
            if oldest.at_ms + window_ms > now_ms {
                break;
            }
            self.tokens -= oldest.tokens;
            self.entries.pop_front();
        }
    }

    pub fn requests(&self) -> u32 {
        u32::try_from(self.entries.len()).unwrap_or(u32::MAX)
    }

    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Changes an entry's tokens (reconcile); searched newest first, where a
    /// call that just finished usually is.
    pub fn set_tokens(&mut self, id: &str, tokens: u64) {
        if let Some(entry) = self.entries.iter_mut().rev().find(|e| e.id == id) {
            self.tokens = self.tokens - entry.tokens + tokens;
            entry.tokens = tokens;
        }
    }

    pub fn remove(&mut self, id: &str) {
        if let Some(index) = self.entries.iter().rposition(|e| e.id == id) {
            if let Some(entry) = self.entries.remove(index) {
                self.tokens -= entry.tokens;
            }
        }
    }

    /// How long until the (already pruned) window has room for one more
    /// request of `tokens`: zero when it has room now, `None` when `tokens`
    /// alone exceed the TPM. The Lua script computes the same.
    pub fn wait_ms(&self, limits: &BucketLimits, tokens: u64, now_ms: u64, window_ms: u64) -> Option<u64> {
        if tokens > limits.tpm {
            return None;
        }
        let count = self.entries.len();
        let rpm = limits.rpm as usize;
        let mut wait = 0;
        if count >= rpm {
            // Room once the oldest (count - rpm + 1) entries have aged out.
            let freeing = self.entries[count - rpm].at_ms;
            wait = (freeing + window_ms).saturating_sub(now_ms);
        }
        if self.tokens + tokens > limits.tpm {
            let mut remaining = self.tokens;
            for entry in &self.entries {
                remaining -= entry.tokens;
                if remaining + tokens <= limits.tpm {
                    wait = wait.max((entry.at_ms + window_ms).saturating_sub(now_ms));
                    break;
                }
            }
        }
        Some(wait)
    }
}

/// GCRA's emission interval: the window spread evenly over its requests.
pub fn pacing_interval_ms(limits: &BucketLimits, window_ms: u64) -> u64 {
    (window_ms / u64::from(limits.rpm)).max(1)
}

/// GCRA: the emission interval and the wait before the next admission.
pub fn gcra(tat_ms: Option<u64>, limits: &BucketLimits, now_ms: u64, window_ms: u64) -> (u64, u64) {
    let interval = pacing_interval_ms(limits, window_ms);
    let tolerance = interval * u64::from(limits.burst.saturating_sub(1));
    let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
    let allowed_at = tat.saturating_sub(tolerance);
    let wait = allowed_at.saturating_sub(now_ms);
    let next_tat = tat + interval;
    (wait, next_tat)
}

/// The fraction of the tightest limit still free.
pub fn remaining_fraction(limits: &BucketLimits, requests: u32, tokens: u64, today: u32) -> f64 {
    let rpm = 1.0 - f64::from(requests) / f64::from(limits.rpm);
    let tpm = 1.0 - tokens as f64 / limits.tpm as f64;
    let rpd = limits.rpd.map_or(1.0, |rpd| 1.0 - f64::from(today) / f64::from(rpd));
    rpm.min(tpm).min(rpd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: u32, tpm: u64, burst: u32) -> BucketLimits {
        BucketLimits { rpm, tpm, rpd: None, burst }
    }

    fn window(entries: &[(u64, u64)]) -> Window {
        let mut window = Window::default();
        for (i, (at, tokens)) in entries.iter().enumerate() {
            window.push(*at, &i.to_string(), *tokens);
        }
        window
    }

    #[test]
    fn window_waits_for_the_entry_whose_exit_makes_room() {
        let l = limits(3, 1000, 3);
        let full = window(&[(1_000, 10), (2_000, 10), (3_000, 10)]);
        // Full: room when the oldest leaves at 1_000 + 60_000.
        assert_eq!(full.wait_ms(&l, 10, 5_000, 60_000), Some(56_000));
        let two = window(&[(1_000, 10), (2_000, 10)]);
        assert_eq!(two.wait_ms(&l, 10, 5_000, 60_000), Some(0));
    }

    #[test]
    fn token_waits_count_how_many_entries_must_leave() {
        let l = limits(100, 100, 100);
        let w = window(&[(1_000, 40), (2_000, 40), (3_000, 10)]);
        // 90 used; 50 more needs 40 freed: the first entry's exit.
        assert_eq!(w.wait_ms(&l, 50, 4_000, 10_000), Some(7_000));
        // 85 more needs 75 freed: the first two.
        assert_eq!(w.wait_ms(&l, 85, 4_000, 10_000), Some(8_000));
        assert_eq!(w.wait_ms(&l, 101, 4_000, 10_000), None);
    }

    #[test]
    fn running_totals_follow_prune_reconcile_and_remove() {
        let mut w = window(&[(1_000, 40), (2_000, 40), (3_000, 10)]);
        w.push(1_500, "late", 5);
        assert_eq!((w.requests(), w.tokens()), (4, 95));
        w.set_tokens("1", 4);
        assert_eq!(w.tokens(), 59);
        w.remove("late");
        w.prune(11_500, 10_000);
        assert_eq!((w.requests(), w.tokens()), (2, 14));
    }

    #[test]
    fn gcra_allows_the_burst_then_paces() {
        let l = limits(6, 1000, 3);
        // interval 10s, tolerance 20s
        let (wait, tat) = gcra(None, &l, 0, 60_000);
        assert_eq!((wait, tat), (0, 10_000));
        let (wait, tat) = gcra(Some(tat), &l, 0, 60_000);
        assert_eq!((wait, tat), (0, 20_000));
        let (wait, tat) = gcra(Some(tat), &l, 0, 60_000);
        assert_eq!((wait, tat), (0, 30_000));
        let (wait, _) = gcra(Some(tat), &l, 0, 60_000);
        assert_eq!(wait, 10_000);
    }
}
