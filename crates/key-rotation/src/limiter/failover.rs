//! The Redis limiter with a safety net.
//!
//! When Redis calls keep failing or missing their deadline, admission falls
//! back to a local limiter that gives this replica `limit × 0.8 / live
//! replicas`: the aggregate stays under the limit, never unlimited and never
//! an outage.
//!
//! "Keep failing" matters. A lone slow call (a busy CPU, a stalled event
//! loop) is not an outage, and must not be treated as one: the other
//! replicas still admit through Redis at the full limit and never see this
//! replica's local admissions, so one replica degrading alone lets the pool
//! exceed its limits. (The load run caught exactly that: on a saturated
//! 2-core machine, 50 ms deadlines were missed now and then, one replica
//! degraded, and Google answered 429.) So an admission whose Redis call
//! fails is refused with a short retry time, and only failures with no
//! success in between for `OUTAGE_AFTER_MS` switch to degraded mode.
//!
//! When Redis answers again, the replica first replays the admissions it made
//! alone into the shared windows, then stays conservative (Redis and the
//! local share must both agree) for two windows: a restarted Redis has lost
//! its windows, and the other replicas need up to a retry interval to replay
//! theirs.
//!
//! A Redis admission that timed out may have been admitted there; it is
//! counted locally as admitted too, never as free.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::memory::MemoryLimiter;
use super::redis::RedisLimiter;
use super::{
    AdmitRequest, BucketUsage, Candidate, Decision, Lasting, Limiter, LimiterError, LimiterSnapshot, Restriction,
    SnapshotRequest, Ticket,
};
use crate::clock::{Clock, SystemClock};
use crate::config::BucketLimits;
use crate::replicas::ReplicaRegistry;

/// The fraction of a limit all replicas together use while degraded.
pub const DEGRADED_FRACTION: f64 = 0.8;
/// How often a degraded replica checks whether Redis is back.
const RETRY_EVERY_MS: u64 = 1_000;
/// Redis failures with no success in between for this long are an outage.
pub const OUTAGE_AFTER_MS: u64 = 500;
/// Until then, an admission whose Redis call failed is refused for this long.
const BLIP_RETRY_MS: u64 = 25;
/// Windows of double-checking after Redis returns: one for the windows a
/// restart lost, one more for every replica to replay its local admissions.
const RECOVERY_WINDOWS: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Degraded,
    /// Redis is back; until `until_ms` both it and the local share decide.
    Recovering {
        until_ms: u64,
    },
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Degraded => "degraded",
            Mode::Recovering { .. } => "recovering",
        }
    }
}

pub struct FailoverLimiter {
    redis: RedisLimiter,
    local: Arc<MemoryLimiter>,
    registry: Arc<ReplicaRegistry>,
    clock: Arc<dyn Clock>,
    mode: Mutex<Mode>,
    next_retry_ms: AtomicU64,
    /// When the current run of Redis failures began; 0 while Redis answers.
    failing_since_ms: AtomicU64,
    /// Times this replica entered degraded mode, for the metrics.
    pub degradations: AtomicU64,
    /// Admissions made while degraded, with their window, not yet in Redis.
    unshared: Mutex<Vec<(Ticket, u64)>>,
    /// Per bucket, the fill Redis last reported: requests, tokens, when, and
    /// the window it applies to.
    last_seen: Mutex<HashMap<(String, String), SeenFill>>,
}

#[derive(Debug, Clone, Copy)]
struct SeenFill {
    requests: u32,
    tokens: u64,
    at_ms: u64,
    window_ms: u64,
}

fn scaled(limits: BucketLimits, share: f64) -> BucketLimits {
    let scale = |value: u64| ((value as f64 * share).floor() as u64).max(1);
    let rpm = u32::try_from(scale(u64::from(limits.rpm))).unwrap_or(u32::MAX);
    BucketLimits {
        rpm,
        tpm: scale(limits.tpm),
        rpd: limits.rpd.map(|rpd| u32::try_from(scale(u64::from(rpd))).unwrap_or(u32::MAX)),
        burst: limits.burst.min(rpm).max(1),
    }
}

impl FailoverLimiter {
    pub fn new(redis: RedisLimiter, registry: Arc<ReplicaRegistry>) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        Self {
            redis,
            local: Arc::new(MemoryLimiter::new(clock.clone())),
            registry,
            clock,
            mode: Mutex::new(Mode::Shared),
            next_retry_ms: AtomicU64::new(0),
            failing_since_ms: AtomicU64::new(0),
            degradations: AtomicU64::new(0),
            unshared: Mutex::new(Vec::new()),
            last_seen: Mutex::new(HashMap::new()),
        }
    }

    /// This replica's local limiter (the one degraded mode admits through).
    pub fn local(&self) -> &MemoryLimiter {
        &self.local
    }

    /// Follows the restriction changes every replica announces, applying
    /// them to the local limiter, and reconnects after failures. Runs until
    /// the task is dropped.
    pub async fn follow_restrictions(self: Arc<Self>) {
        let channel = self.redis.restrictions_channel();
        let local = self.local.clone();
        self.redis
            .handle()
            .follow(&channel, |payload| {
                let local = local.clone();
                async move {
                    match serde_json::from_str::<super::redis::RestrictionChange>(&payload) {
                        Ok(change) => {
                            if let Err(err) = change.apply(local.as_ref()).await {
                                tracing::debug!(error = %err, "could not apply a restriction change locally");
                            }
                        }
                        Err(err) => tracing::debug!(error = %err, "ignored a malformed restriction change"),
                    }
                }
            })
            .await;
    }

    pub fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_mode(&self, mode: Mode) {
        let mut current = self.mode.lock().unwrap_or_else(PoisonError::into_inner);
        if *current == mode {
            return;
        }
        match mode {
            Mode::Degraded => {
                self.degradations.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    live_replicas = self.registry.live(),
                    "Redis unreachable: admitting on this replica's share of each limit (degraded)"
                );
            }
            Mode::Recovering { .. } => tracing::warn!("Redis is back: conservative for one window"),
            Mode::Shared => tracing::info!("admission shared through Redis again"),
        }
        *current = mode;
    }

    /// This replica's local share of a request: every limit scaled.
    fn local_request(&self, request: &AdmitRequest) -> AdmitRequest {
        let share = DEGRADED_FRACTION / f64::from(self.registry.live());
        let mut local = request.clone();
        local.candidates =
            request.candidates.iter().map(|c| Candidate { limits: scaled(c.limits, share), ..c.clone() }).collect();
        local
    }

    fn redis_answered(&self) {
        self.failing_since_ms.store(0, Ordering::Relaxed);
    }

    /// Notes a failed Redis call; true once the failures amount to an outage.
    fn redis_failed(&self, err: &LimiterError) -> bool {
        let now = self.clock.now_ms().max(1);
        let since = match self.failing_since_ms.compare_exchange(0, now, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => now,
            Err(since) => since,
        };
        let outage = now.saturating_sub(since) >= OUTAGE_AFTER_MS;
        if !outage {
            tracing::debug!(error = %err, failing_for_ms = now - since, "redis call failed; not yet an outage");
        }
        outage
    }

    fn degrade(&self, err: &LimiterError) {
        tracing::debug!(error = %err, "redis admission failed");
        self.next_retry_ms.store(self.clock.now_ms() + RETRY_EVERY_MS, Ordering::Relaxed);
        if self.mode() == Mode::Shared {
            self.seed_from_last_seen();
        }
        self.set_mode(Mode::Degraded);
    }

    /// On losing Redis, a replica knows its own recent admissions (mirrored)
    /// but not the others'. Redis told it each bucket's fill at its last
    /// admission there; the difference is the others' use, added to the
    /// local window as entries that expire as late as theirs possibly can.
    fn seed_from_last_seen(&self) {
        let now = self.clock.now_ms();
        let seen: Vec<((String, String), SeenFill)> =
            self.last_seen.lock().unwrap_or_else(PoisonError::into_inner).drain().collect();
        for ((model, project), fill) in seen {
            if fill.at_ms + fill.window_ms <= now {
                continue;
            }
            let (own_requests, own_tokens) = self.local.window_use(&model, &project, fill.window_ms);
            let others_requests = fill.requests.saturating_sub(own_requests);
            let others_tokens = fill.tokens.saturating_sub(own_tokens);
            if others_requests > 0 {
                self.local.seed(&model, &project, others_requests, others_tokens, fill.at_ms);
            }
        }
    }

    /// Whether a degraded replica should try Redis again now.
    fn retry_due(&self) -> bool {
        let now = self.clock.now_ms();
        let due = self.next_retry_ms.load(Ordering::Relaxed);
        now >= due
            && self
                .next_retry_ms
                .compare_exchange(due, now + RETRY_EVERY_MS, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
    }

    /// Admits on this replica's share alone, remembering the admission so it
    /// can be replayed into Redis later.
    async fn admit_locally(&self, request: &AdmitRequest) -> Result<Decision, LimiterError> {
        let decision = self.local.admit(&self.local_request(request)).await?;
        if let Decision::Admitted(ticket) = &decision {
            self.unshared.lock().unwrap_or_else(PoisonError::into_inner).push((ticket.clone(), request.window_ms));
        }
        Ok(decision)
    }

    /// Replays the admissions made while degraded that are still inside
    /// their window. Kept for another try if Redis fails again.
    async fn replay_unshared(&self) -> Result<(), LimiterError> {
        let now = self.clock.now_ms();
        let pending: Vec<(Ticket, u64)> = {
            let mut unshared = self.unshared.lock().unwrap_or_else(PoisonError::into_inner);
            unshared.retain(|(ticket, window)| ticket.admitted_at_ms + window > now);
            std::mem::take(&mut *unshared)
        };
        if let Err(err) = self.redis.replay(&pending).await {
            self.unshared.lock().unwrap_or_else(PoisonError::into_inner).extend(pending);
            return Err(err);
        }
        Ok(())
    }

    /// Applies a state change to both backends: the local copy keeps
    /// cooldowns and disables known while Redis is away.
    async fn both(
        &self,
        local: impl std::future::Future<Output = Result<(), LimiterError>>,
        shared: impl std::future::Future<Output = Result<(), LimiterError>>,
    ) -> Result<(), LimiterError> {
        local.await?;
        match shared.await {
            Ok(()) => self.redis_answered(),
            Err(err) if self.mode() != Mode::Shared || self.redis_failed(&err) => self.degrade(&err),
            // A blip: the change stands on this replica only. The others
            // learn a lost cooldown from Google's next 429; a lost
            // reconcile leaves the estimate in place of the real count.
            Err(_) => {}
        }
        Ok(())
    }
}

#[async_trait]
impl Limiter for FailoverLimiter {
    async fn admit(&self, request: &AdmitRequest) -> Result<Decision, LimiterError> {
        let mode = self.mode();
        let now = self.clock.now_ms();
        match mode {
            Mode::Shared => match self.redis.admit(request).await {
                Ok(Decision::Admitted(ticket)) => {
                    self.redis_answered();
                    self.local.mirror(&self.local_request(request), &ticket.key_id);
                    self.last_seen.lock().unwrap_or_else(PoisonError::into_inner).insert(
                        (ticket.model.clone(), ticket.project.clone()),
                        SeenFill {
                            requests: ticket.window_requests,
                            tokens: ticket.window_tokens,
                            at_ms: ticket.admitted_at_ms,
                            window_ms: request.window_ms,
                        },
                    );
                    Ok(Decision::Admitted(ticket))
                }
                Ok(refused) => {
                    self.redis_answered();
                    Ok(refused)
                }
                Err(err) if self.redis_failed(&err) => {
                    self.degrade(&err);
                    self.admit_locally(request).await
                }
                // Not an outage (yet): refuse briefly rather than admit on
                // a share the other replicas do not know about.
                Err(_) => Ok(Decision::NoRoom { retry_after_ms: Some(BLIP_RETRY_MS) }),
            },
            Mode::Degraded if !self.retry_due() => self.admit_locally(request).await,
            Mode::Degraded | Mode::Recovering { .. } => {
                if let Mode::Recovering { until_ms } = mode {
                    if now >= until_ms {
                        self.set_mode(Mode::Shared);
                        return self.admit(request).await;
                    }
                }
                if mode == Mode::Degraded {
                    // Whether Redis is back is asked directly, not through an
                    // admission: under load the local share is usually full,
                    // and a replica that only asked when it had room could
                    // stay degraded long after Redis returned.
                    let back = match self.replay_unshared().await {
                        Ok(()) => self.redis.handle().ping().await.map_err(LimiterError::from),
                        Err(err) => Err(err),
                    };
                    if let Err(err) = back {
                        self.degrade(&err);
                        return self.admit_locally(request).await;
                    }
                    self.redis_answered();
                    self.set_mode(Mode::Recovering { until_ms: now + RECOVERY_WINDOWS * request.window_ms });
                }
                // Conservative: the local share first, then Redis too.
                let local = self.local.admit(&self.local_request(request)).await?;
                let Decision::Admitted(ticket) = local else {
                    return Ok(local);
                };
                let mut shared_request = request.clone();
                shared_request.candidates.retain(|c| c.key_id == ticket.key_id);
                let shared = self.redis.admit(&shared_request).await;
                if shared.is_ok() {
                    self.redis_answered();
                }
                match shared {
                    Ok(Decision::Admitted(shared)) => Ok(Decision::Admitted(shared)),
                    Ok(refused) => {
                        self.local.refund(&ticket).await?;
                        Ok(refused)
                    }
                    // Still down (or down again): the local admission stands
                    // and will be replayed.
                    Err(err) => {
                        self.degrade(&err);
                        self.unshared
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((ticket.clone(), request.window_ms));
                        Ok(Decision::Admitted(ticket))
                    }
                }
            }
        }
    }

    async fn reconcile(&self, ticket: &Ticket, actual_tokens: u64, window_ms: u64) -> Result<(), LimiterError> {
        self.both(
            self.local.reconcile(ticket, actual_tokens, window_ms),
            self.redis.reconcile(ticket, actual_tokens, window_ms),
        )
        .await
    }

    async fn release(&self, ticket: &Ticket) -> Result<(), LimiterError> {
        self.both(self.local.release(ticket), self.redis.release(ticket)).await
    }

    async fn refund(&self, ticket: &Ticket) -> Result<(), LimiterError> {
        self.both(self.local.refund(ticket), self.redis.refund(ticket)).await
    }

    async fn cool_down(&self, model: &str, project: &str, duration_ms: u64, reason: &str) -> Result<(), LimiterError> {
        self.both(
            self.local.cool_down(model, project, duration_ms, reason),
            self.redis.cool_down(model, project, duration_ms, reason),
        )
        .await
    }

    async fn disable(&self, model: &str, key_id: &str, lasting: Lasting, reason: &str) -> Result<(), LimiterError> {
        self.both(
            self.local.disable(model, key_id, lasting, reason),
            self.redis.disable(model, key_id, lasting, reason),
        )
        .await
    }

    async fn enable(&self, model: &str, key_id: &str) -> Result<(), LimiterError> {
        self.both(self.local.enable(model, key_id), self.redis.enable(model, key_id)).await
    }

    async fn clear_cooldown(&self, model: &str, project: &str) -> Result<(), LimiterError> {
        self.both(self.local.clear_cooldown(model, project), self.redis.clear_cooldown(model, project)).await
    }

    async fn usage(&self, model: &str, project: &str, window_ms: u64) -> Result<BucketUsage, LimiterError> {
        match self.redis.usage(model, project, window_ms).await {
            Ok(usage) => Ok(usage),
            Err(_) => self.local.usage(model, project, window_ms).await,
        }
    }

    async fn disabled(&self, model: &str, key_id: &str) -> Result<Option<Restriction>, LimiterError> {
        match self.redis.disabled(model, key_id).await {
            Ok(state) => Ok(state),
            Err(_) => self.local.disabled(model, key_id).await,
        }
    }

    fn degraded(&self) -> Option<bool> {
        Some(self.mode() == Mode::Degraded)
    }

    async fn snapshot(&self, request: &SnapshotRequest) -> Result<LimiterSnapshot, LimiterError> {
        match self.redis.snapshot(request).await {
            Ok(snapshot) => Ok(snapshot),
            Err(_) => self.local.snapshot(request).await,
        }
    }

    async fn try_lock(&self, name: &str, ttl_ms: u64) -> Result<bool, LimiterError> {
        match self.redis.try_lock(name, ttl_ms).await {
            Ok(locked) => Ok(locked),
            Err(_) => self.local.try_lock(name, ttl_ms).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_degraded_share_scales_every_limit_and_keeps_at_least_one() {
        let limits = BucketLimits { rpm: 60, tpm: 1_000_000, rpd: Some(1000), burst: 60 };
        let half = scaled(limits, 0.8 / 2.0);
        assert_eq!((half.rpm, half.tpm, half.rpd, half.burst), (24, 400_000, Some(400), 24));
        let tiny = scaled(BucketLimits { rpm: 2, tpm: 10, rpd: None, burst: 2 }, 0.8 / 8.0);
        assert_eq!((tiny.rpm, tiny.tpm, tiny.burst), (1, 1, 1));
    }
}
