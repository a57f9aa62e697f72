//! The key pool: which keys a call may use, in which order, and how the pool
//! reacts to what happened.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::activity::{Activity, CallClass};
use crate::clock::Clock;
use crate::config::{KeySpec, PoolConfig, Strategy, Workload};
use crate::events::{EventLog, RotationEvent, POOL_ACTOR};
use crate::limiter::{
    AdmitRequest, BucketUsage, Candidate, Decision, Lasting, Limiter, LimiterError, Pick, Restriction, SnapshotRequest,
    Ticket, MAX_CANDIDATES,
};
use crate::outcome::{Outcome, QuotaScope};
use crate::pacific;
use crate::replicas::ReplicaId;

/// Tunables of the pool's reactions.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// How long an in-flight lease lives if its call never reports back.
    pub lease_ttl: Duration,
    /// The cooldown after a 429 that says nothing about how long to wait.
    pub default_cooldown: Duration,
    /// How long a dead key stays disabled without a successful probe.
    pub disable_ttl: Duration,
    /// A `limit: 0` project is out until an admin reset; this is its TTL.
    pub zero_limit_ttl: Duration,
    /// The longest wait between probes of one disabled key.
    pub max_probe_backoff: Duration,
    /// This replica's name in the shared state.
    pub replica: ReplicaId,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(120),
            default_cooldown: Duration::from_secs(10),
            disable_ttl: Duration::from_secs(7 * 86_400),
            zero_limit_ttl: Duration::from_secs(30 * 86_400),
            max_probe_backoff: Duration::from_secs(3600),
            replica: ReplicaId::random(),
        }
    }
}

/// What a call asks of the pool.
#[derive(Debug, Clone)]
pub struct AdmitSpec {
    /// The kind of work: picks the preferred key family.
    pub workload: Workload,
    /// An exact model (the SDK proxy): only its keys, no spill.
    pub model: Option<String>,
    /// May spill onto the other family when the preferred one is full.
    pub allow_spill: bool,
    /// Try this user's rendezvous key first.
    pub sticky_user: Option<String>,
    /// Estimated input tokens (⌈characters / 4⌉).
    pub estimated_tokens: u64,
}

/// An admitted call: the key to use (secret included) and its reservation.
#[derive(Debug, Clone)]
pub struct Grant {
    pub key: KeySpec,
    pub ticket: Ticket,
}

#[derive(Debug, Clone)]
pub enum AdmitResult {
    Granted(Box<Grant>),
    /// Nothing has room now; the earliest key will in `retry_after`.
    Full {
        retry_after: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no API keys configured")]
    NoKeys,
    #[error("no configured key serves model {0}")]
    NoKeyForModel(String),
    #[error("request of about {estimated} input tokens exceeds every key's limit of {max_tpm} tokens per window")]
    TooLarge { estimated: u64, max_tpm: u64 },
    #[error("every key that could serve this request is disabled")]
    Unusable,
    #[error(transparent)]
    Backend(#[from] LimiterError),
}

/// Probes a disabled key without spending generation quota (`GET models/{m}`).
#[async_trait]
pub trait KeyProbe: Send + Sync {
    async fn probe(&self, key: &KeySpec) -> ProbeResult;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Healthy,
    Dead(Outcome),
    /// Could not tell (network trouble, 5xx): try again later.
    Inconclusive,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct KeyStats {
    pub successes: u64,
    pub errors: u64,
    pub last_used_ms: Option<u64>,
    pub last_outcome: Option<&'static str>,
}

/// How many keys the pool has and how many could take a call now: what the
/// public health endpoints say of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Availability {
    pub configured: usize,
    pub available: usize,
}

/// How long a replica reuses its [`Availability`]: reading it costs two
/// limiter calls per key, and anyone may ask.
pub const AVAILABILITY_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize)]
pub struct KeyHealth {
    pub key_id: String,
    /// The key as operators see it: id plus the secret's last four characters.
    pub display: String,
    pub model: String,
    pub project: String,
    pub workload: &'static str,
    pub state: &'static str,
    pub cooldown_until_ms: Option<u64>,
    pub reason: Option<String>,
    pub stats: KeyStats,
}

/// What operators see of the pool: every key and every bucket.
#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    pub keys: Vec<KeyHealth>,
    pub buckets: Vec<BucketView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketView {
    pub project: String,
    pub model: String,
    pub rpm: u32,
    pub tpm: u64,
    pub rpd: Option<u32>,
    pub requests_in_window: u32,
    pub tokens_in_window: u64,
    pub requests_today: u32,
    pub remaining_rpm: u32,
    pub remaining_tpm: u64,
    pub remaining_rpd: Option<u32>,
    /// At or past `quota_warning_threshold` of its tightest limit.
    pub warning: bool,
}

/// Counters for the metrics exposition.
#[derive(Debug, Default)]
pub struct PoolMetrics {
    pub admitted: AtomicU64,
    pub full: AtomicU64,
    pub too_large: AtomicU64,
    /// No configured key could take the call (none, none for the model,
    /// or every candidate disabled).
    pub no_key: AtomicU64,
    outcomes: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl PoolMetrics {
    fn count_outcome(&self, key_id: &str, kind: &'static str) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        *outcomes.entry((key_id.to_string(), kind)).or_default() += 1;
    }

    /// (key id, outcome kind) → count.
    pub fn outcomes(&self) -> BTreeMap<(String, &'static str), u64> {
        self.outcomes.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct ProbeBackoff {
    next_at_ms: u64,
    failures: u32,
}

pub struct KeyPool {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Where rotating strategies start their window in groups larger than
    /// one admission call can look at.
    rotation: AtomicU64,
    limiter: Arc<dyn Limiter>,
    events: Arc<dyn EventLog>,
    activity: Arc<Activity>,
    clock: Arc<dyn Clock>,
    options: PoolOptions,
    stats: Mutex<HashMap<String, KeyStats>>,
    probes: Mutex<HashMap<String, ProbeBackoff>>,
    metrics: PoolMetrics,
    sequence: AtomicU64,
    /// The last [`Availability`] read and when (ms); the lock makes
    /// concurrent readers wait for one read rather than each making their own.
    availability: tokio::sync::Mutex<Option<(u64, Availability)>>,
}

/// FNV-1a: a hash every replica computes identically, so a user's sticky key
/// is the same whichever replica serves them.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

const LEAKED: &str = "key reported as leaked";
/// The start of the reason of a key an operator took out of rotation.
pub const OPERATOR_DISABLED: &str = "disabled by an operator";

/// Windows of [`MAX_CANDIDATES`] one admission may walk per model: enough
/// to reach past a full top of a large pool without unbounded round trips.
pub const MAX_WINDOWS: usize = 4;

/// One admission call's worth of candidates.
struct AdmissionWindow {
    candidates: Vec<Candidate>,
    rotate: bool,
}

/// The walk over one model's keys: a virtual order (the sticky key first,
/// or the keys from a rotating start) cut into windows of one call each.
struct GroupPlan<'a> {
    group: &'a [Candidate],
    start: usize,
    sticky: Option<usize>,
    rotate: bool,
}

impl GroupPlan<'_> {
    fn windows(&self) -> usize {
        self.group.len().div_ceil(MAX_CANDIDATES).min(MAX_WINDOWS)
    }

    /// The key at `position` in the virtual order.
    fn at(&self, position: usize) -> usize {
        let len = self.group.len();
        match self.sticky {
            Some(sticky) if position == 0 => sticky,
            // Everyone else in order, skipping the sticky key.
            Some(sticky) => {
                if position <= sticky {
                    position - 1
                } else {
                    position
                }
            }
            None => (self.start + position) % len,
        }
    }

    fn window(&self, index: usize) -> AdmissionWindow {
        let from = index * MAX_CANDIDATES;
        let to = (from + MAX_CANDIDATES).min(self.group.len());
        AdmissionWindow {
            candidates: (from..to).map(|position| self.group[self.at(position)].clone()).collect(),
            rotate: self.rotate,
        }
    }
}

/// A configuration with its selection order worked out once, at load and
/// reload, instead of on every admission.
struct Snapshot {
    config: Arc<PoolConfig>,
    index: HashMap<String, usize>,
    /// Per workload family: active keys in try order, grouped by model.
    families: HashMap<Workload, Vec<Vec<Candidate>>>,
    /// Per model: active keys in try order (the SDK proxy's exact model).
    by_model: HashMap<String, Vec<Candidate>>,
    max_tpm: HashMap<String, u64>,
}

impl Snapshot {
    fn new(config: PoolConfig) -> Self {
        let rank: HashMap<&str, usize> =
            config.fallback_order.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        let mut ordered: Vec<&KeySpec> = config.keys.iter().filter(|k| k.active).collect();
        ordered.sort_by(|a, b| {
            let ra = rank.get(a.key_id.as_str()).copied().unwrap_or(usize::MAX);
            let rb = rank.get(b.key_id.as_str()).copied().unwrap_or(usize::MAX);
            ra.cmp(&rb).then(a.priority.cmp(&b.priority)).then(a.key_id.cmp(&b.key_id))
        });
        let candidate = |key: &KeySpec| Candidate {
            key_id: key.key_id.clone(),
            model: key.model.clone(),
            project: key.project.clone(),
            limits: key.limits,
            max_in_flight: key.max_in_flight,
        };
        let mut families: HashMap<Workload, Vec<Vec<Candidate>>> = HashMap::new();
        let mut by_model: HashMap<String, Vec<Candidate>> = HashMap::new();
        for key in ordered {
            by_model.entry(key.model.clone()).or_default().push(candidate(key));
            let family = families.entry(key.workload).or_default();
            match family.iter_mut().find(|group| group[0].model == key.model) {
                Some(group) => group.push(candidate(key)),
                None => family.push(vec![candidate(key)]),
            }
        }
        let index = config.keys.iter().enumerate().map(|(i, k)| (k.key_id.clone(), i)).collect();
        let max_tpm = by_model
            .iter()
            .map(|(model, g)| (model.clone(), g.iter().map(|c| c.limits.tpm).max().unwrap_or(0)))
            .collect();
        Self { config: Arc::new(config), index, families, by_model, max_tpm }
    }

    /// The largest TPM among a group's keys (every key of a group has one model).
    fn max_tpm(&self, group: &[Candidate]) -> Option<u64> {
        group.first().and_then(|c| self.max_tpm_by_model(&c.model))
    }

    fn max_tpm_by_model(&self, model: &str) -> Option<u64> {
        self.max_tpm.get(model).copied()
    }
}

impl KeyPool {
    /// A pool for one process: memory limiter and event log, the system
    /// clock, default options.
    pub fn in_memory(config: PoolConfig) -> Self {
        Self::new(
            config,
            Arc::new(crate::limiter::memory::MemoryLimiter::default()),
            Arc::new(crate::events::MemoryEventLog::default()),
            Arc::new(crate::clock::SystemClock),
            PoolOptions::default(),
        )
    }

    pub fn new(
        config: PoolConfig,
        limiter: Arc<dyn Limiter>,
        events: Arc<dyn EventLog>,
        clock: Arc<dyn Clock>,
        options: PoolOptions,
    ) -> Self {
        Self {
            snapshot: RwLock::new(Arc::new(Snapshot::new(config))),
            rotation: AtomicU64::new(rand::random::<u64>() % 1024),
            limiter,
            events,
            activity: Arc::new(Activity::in_memory(clock.clone())),
            clock,
            options,
            stats: Mutex::new(HashMap::new()),
            probes: Mutex::new(HashMap::new()),
            metrics: PoolMetrics::default(),
            sequence: AtomicU64::new(0),
            availability: tokio::sync::Mutex::new(None),
        }
    }

    /// Keeps the hour and day counts in `activity` (shared through Redis)
    /// instead of this process's memory.
    #[must_use]
    pub fn with_activity(mut self, activity: Arc<Activity>) -> Self {
        self.activity = activity;
        self
    }

    /// Who used the pool over the last hour and day.
    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// This replica's name in the shared state.
    pub fn replica(&self) -> &ReplicaId {
        &self.options.replica
    }

    pub fn config(&self) -> Arc<PoolConfig> {
        self.snapshot().config.clone()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Swaps in a new configuration. Calls already admitted keep the key
    /// they were given; new admissions see the new pool.
    pub async fn reload(&self, config: PoolConfig) {
        let keys = config.keys.len();
        *self.snapshot.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(Snapshot::new(config));
        self.record("reloaded", None, format!("{keys} keys")).await;
    }

    pub fn limiter(&self) -> &Arc<dyn Limiter> {
        &self.limiter
    }

    pub fn metrics(&self) -> &PoolMetrics {
        &self.metrics
    }

    pub fn is_empty(&self) -> bool {
        self.config().keys.is_empty()
    }

    /// The candidate lists for `spec`, in the order they are tried: each of
    /// one model (one Cluster slot) and at most [`MAX_CANDIDATES`] keys.
    pub fn candidate_groups(&self, spec: &AdmitSpec) -> Result<Vec<Vec<Candidate>>, PoolError> {
        let snapshot = self.snapshot();
        let plans = self.plans(&snapshot, spec)?;
        Ok(plans.iter().flat_map(|plan| (0..plan.windows()).map(|w| plan.window(w).candidates)).collect())
    }

    /// How each model group of `spec` will be walked. Nothing is cloned
    /// here: windows are built only when admission reaches them.
    fn plans<'a>(&self, snapshot: &'a Snapshot, spec: &AdmitSpec) -> Result<Vec<GroupPlan<'a>>, PoolError> {
        if snapshot.config.keys.is_empty() {
            return Err(PoolError::NoKeys);
        }
        let groups: Vec<&'a [Candidate]> = match &spec.model {
            Some(model) => match snapshot.by_model.get(model) {
                Some(group) => vec![group.as_slice()],
                None => return Err(PoolError::NoKeyForModel(model.clone())),
            },
            None => {
                let preferred = snapshot.families.get(&spec.workload).map(Vec::as_slice).unwrap_or_default();
                let spill = spec.allow_spill || preferred.is_empty();
                let other = if spill {
                    snapshot.families.get(&spec.workload.other()).map(Vec::as_slice).unwrap_or_default()
                } else {
                    &[]
                };
                preferred.iter().chain(other).map(Vec::as_slice).collect()
            }
        };
        let max_tpm = groups.iter().filter_map(|g| snapshot.max_tpm(g)).max().ok_or(PoolError::NoKeys)?;
        if spec.estimated_tokens > max_tpm {
            return Err(PoolError::TooLarge { estimated: spec.estimated_tokens, max_tpm });
        }
        let rotating = snapshot.config.strategy != Strategy::Priority;
        Ok(groups
            .into_iter()
            .map(|group| {
                let len = group.len();
                let sticky = spec.sticky_user.as_deref().and_then(|user| {
                    // Rendezvous hashing: the user's key stays theirs as keys come and go.
                    (0..len).max_by_key(|&i| stable_hash(&[user, &group[i].key_id]))
                });
                let start = if sticky.is_none() && rotating && len > MAX_CANDIDATES {
                    usize::try_from(self.rotation.fetch_add(1, Ordering::Relaxed) % len as u64).unwrap_or(0)
                } else {
                    0
                };
                // A group one call can see whole is rotated by the backend's
                // counter (global across replicas on Redis); a larger one by
                // this pool's window start. Never both: two counters stepping
                // together would skip every other key.
                let rotate = rotating && sticky.is_none() && len <= MAX_CANDIDATES;
                GroupPlan { group, start, sticky, rotate }
            })
            .collect())
    }

    /// One admission attempt, never waiting: a key now, or when one will be free.
    pub async fn try_admit(&self, spec: &AdmitSpec) -> Result<AdmitResult, PoolError> {
        let snapshot = self.snapshot();
        let plans = match self.plans(&snapshot, spec) {
            Err(err @ PoolError::TooLarge { .. }) => {
                self.metrics.too_large.fetch_add(1, Ordering::Relaxed);
                return Err(err);
            }
            Err(err @ (PoolError::NoKeys | PoolError::NoKeyForModel(_) | PoolError::Unusable)) => {
                self.metrics.no_key.fetch_add(1, Ordering::Relaxed);
                return Err(err);
            }
            other => other?,
        };
        let config = &snapshot.config;
        let mut earliest: Option<u64> = None;
        let windows = plans.iter().flat_map(|plan| (0..plan.windows()).map(move |w| plan.window(w)));
        for window in windows {
            let request = AdmitRequest {
                candidates: window.candidates,
                tokens: spec.estimated_tokens,
                pick: if config.strategy == Strategy::LeastLoaded { Pick::LeastLoaded } else { Pick::FirstFit },
                rotate: window.rotate && config.strategy == Strategy::RoundRobin,
                window_ms: duration_ms(config.effective_window()),
                lease_ttl_ms: duration_ms(self.options.lease_ttl),
                entry_id: format!("{}-{}", self.options.replica, self.sequence.fetch_add(1, Ordering::Relaxed)),
            };
            match self.limiter.admit(&request).await? {
                Decision::Admitted(ticket) => {
                    let key = snapshot
                        .index
                        .get(&ticket.key_id)
                        .map(|&i| config.keys[i].clone())
                        .ok_or(PoolError::Unusable)?;
                    self.metrics.admitted.fetch_add(1, Ordering::Relaxed);
                    self.touch(&key.key_id, None);
                    return Ok(AdmitResult::Granted(Box::new(Grant { key, ticket })));
                }
                Decision::NoRoom { retry_after_ms } => {
                    if let Some(wait) = retry_after_ms {
                        earliest = Some(earliest.map_or(wait, |e| e.min(wait)));
                    }
                }
            }
        }
        match earliest {
            Some(wait) => {
                self.metrics.full.fetch_add(1, Ordering::Relaxed);
                Ok(AdmitResult::Full { retry_after: Duration::from_millis(wait.max(1)) })
            }
            None => {
                self.metrics.no_key.fetch_add(1, Ordering::Relaxed);
                Err(PoolError::Unusable)
            }
        }
    }

    fn touch(&self, key_id: &str, outcome: Option<&Outcome>) {
        let now = self.clock.now_ms();
        let mut stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = stats.entry(key_id.to_string()).or_default();
        match outcome {
            None => entry.last_used_ms = Some(now),
            Some(outcome @ Outcome::Success { .. }) => {
                entry.successes += 1;
                entry.last_outcome = Some(outcome.kind());
            }
            Some(outcome) => {
                entry.errors += 1;
                entry.last_outcome = Some(outcome.kind());
            }
        }
    }

    async fn record(&self, kind: &str, key: Option<&KeySpec>, detail: String) {
        self.record_as(POOL_ACTOR, kind, key, detail).await;
    }

    /// Adds an event to the rotation history in `actor`'s name.
    pub async fn record_as(&self, actor: &str, kind: &str, key: Option<&KeySpec>, detail: String) {
        let event = RotationEvent {
            at_ms: self.clock.now_ms(),
            kind: kind.to_string(),
            key_id: key.map(|k| k.key_id.clone()),
            project: key.map(|k| k.project.clone()),
            model: key.map(|k| k.model.clone()),
            detail,
            actor: actor.to_string(),
        };
        tracing::info!(kind, actor, key_id = ?event.key_id, detail = %event.detail, "key pool event");
        self.events.record(event).await;
    }

    /// Reacts to how a call through `grant` ended. Limiter failures here are
    /// logged, not returned: the caller's answer does not depend on them.
    pub async fn report(&self, grant: &Grant, outcome: &Outcome) {
        if let Err(err) = self.react(grant, outcome).await {
            tracing::warn!(error = %err, key_id = %grant.key.key_id, "could not record a call's outcome");
        }
    }

    /// Reacts to how a call that held no admission ticket ended (Google's
    /// `countTokens`, which spends no generation quota): the key is counted
    /// and, if Google says it is dead, taken out of rotation. A 429 there
    /// is countTokens' own quota, so the key's bucket does not cool down.
    pub async fn report_unmetered(&self, key: &KeySpec, outcome: &Outcome) {
        self.count_call(key, outcome);
        if let Err(err) = self.retire_if_dead(key, outcome).await {
            tracing::warn!(error = %err, key_id = %key.key_id, "could not record a call's outcome");
        }
    }

    fn count_call(&self, key: &KeySpec, outcome: &Outcome) {
        self.touch(&key.key_id, Some(outcome));
        self.metrics.count_outcome(&key.key_id, outcome.kind());
        let class = match outcome {
            Outcome::NotSent => None,
            Outcome::Success { .. } => Some(CallClass::Success),
            Outcome::RateLimited { .. } => Some(CallClass::RateLimited),
            _ => Some(CallClass::Error),
        };
        if let Some(class) = class {
            self.activity.key_call(&key.key_id, class);
        }
    }

    async fn react(&self, grant: &Grant, outcome: &Outcome) -> Result<(), LimiterError> {
        let key = &grant.key;
        let ticket = &grant.ticket;
        self.count_call(key, outcome);
        let window_ms = duration_ms(self.config().effective_window());
        match outcome {
            Outcome::Success { prompt_tokens } => {
                if let Some(actual) = prompt_tokens {
                    self.limiter.reconcile(ticket, *actual, window_ms).await?;
                }
                self.limiter.release(ticket).await?;
            }
            Outcome::NotSent => self.limiter.refund(ticket).await?,
            Outcome::RateLimited { scope, retry_delay, zero_limit } => {
                self.limiter.release(ticket).await?;
                let (duration, reason) = if *zero_limit {
                    (self.options.zero_limit_ttl, "quota limit 0: needs an admin reset".to_string())
                } else {
                    match scope {
                        QuotaScope::PerDay => {
                            let now = self.clock.now_ms();
                            let (_, day_end) = pacific::day_bounds_ms(now);
                            (Duration::from_millis(day_end.saturating_sub(now)), "per-day quota exhausted".to_string())
                        }
                        QuotaScope::PerMinute | QuotaScope::InputTokens | QuotaScope::Unknown => {
                            let delay = retry_delay.unwrap_or(self.options.default_cooldown);
                            (delay, format!("{} (retry in {:.1}s)", outcome.kind(), delay.as_secs_f64()))
                        }
                    }
                };
                self.limiter.cool_down(&key.model, &key.project, duration_ms(duration), &reason).await?;
                self.record("cooldown", Some(key), reason).await;
            }
            Outcome::UpstreamUnavailable
            | Outcome::TimedOut
            | Outcome::CallerError
            | Outcome::KeyInvalid
            | Outcome::KeyBlocked
            | Outcome::KeyLeaked
            | Outcome::ProjectDisabled => {
                self.limiter.release(ticket).await?;
                self.retire_if_dead(key, outcome).await?;
            }
        }
        Ok(())
    }

    /// Takes a key Google refused out of rotation; a disabled API takes
    /// every key of its project. Any other outcome leaves the key alone.
    async fn retire_if_dead(&self, key: &KeySpec, outcome: &Outcome) -> Result<(), LimiterError> {
        match outcome {
            Outcome::KeyInvalid | Outcome::KeyBlocked | Outcome::KeyLeaked => {
                let (lasting, reason) = self.dead_key(outcome);
                self.limiter.disable(&key.model, &key.key_id, lasting, reason).await?;
                self.record("disabled", Some(key), reason.to_string()).await;
            }
            Outcome::ProjectDisabled => {
                let reason = "project's API is disabled (SERVICE_DISABLED)";
                for other in self.config().keys.iter().filter(|k| k.project == key.project) {
                    self.limiter
                        .disable(
                            &other.model,
                            &other.key_id,
                            Lasting::Ms(duration_ms(self.options.disable_ttl)),
                            reason,
                        )
                        .await?;
                    self.record("disabled", Some(other), reason.to_string()).await;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A key back in rotation starts its probe backoff afresh.
    fn clear_probe_backoff(&self, key_id: &str) {
        self.probes.lock().unwrap_or_else(PoisonError::into_inner).remove(key_id);
    }

    /// How long a key Google refused stays out, and why. A leak is for
    /// good: only an operator brings the key back.
    fn dead_key(&self, outcome: &Outcome) -> (Lasting, &'static str) {
        let disabled = Lasting::Ms(duration_ms(self.options.disable_ttl));
        match outcome {
            Outcome::KeyLeaked => (Lasting::UntilOperator, LEAKED),
            Outcome::KeyBlocked => (disabled, "key blocked for this API (API_KEY_SERVICE_BLOCKED)"),
            _ => (disabled, "key invalid (API_KEY_INVALID)"),
        }
    }

    /// Lifts cooldowns and disables of a project (optionally one model):
    /// the operator's answer to `limit: 0` or a replaced key.
    pub async fn reset(&self, project: &str, model: Option<&str>, actor: &str) -> Result<usize, LimiterError> {
        let config = self.config();
        let keys: Vec<&KeySpec> =
            config.keys.iter().filter(|k| k.project == project && model.is_none_or(|m| m == k.model)).collect();
        for key in &keys {
            self.limiter.clear_cooldown(&key.model, &key.project).await?;
            self.limiter.enable(&key.model, &key.key_id).await?;
            self.clear_probe_backoff(&key.key_id);
            self.record_as(actor, "reset", Some(key), "cooldown and disable lifted by an operator".into()).await;
        }
        Ok(keys.len())
    }

    /// The configured key named `key_id`.
    pub fn key(&self, key_id: &str) -> Option<KeySpec> {
        let snapshot = self.snapshot();
        snapshot.index.get(key_id).map(|&i| snapshot.config.keys[i].clone())
    }

    /// Takes a key out of rotation until an operator enables it again; the
    /// probes leave it alone.
    pub async fn disable_by_operator(&self, key: &KeySpec, actor: &str) -> Result<(), LimiterError> {
        let reason = format!("{OPERATOR_DISABLED} by {actor}");
        self.limiter.disable(&key.model, &key.key_id, Lasting::UntilOperator, &reason).await?;
        self.record_as(actor, "disabled", Some(key), reason).await;
        Ok(())
    }

    /// Puts a key back into rotation, whatever disabled it (a leak included:
    /// the operator has replaced or cleared it).
    pub async fn enable_by_operator(&self, key: &KeySpec, actor: &str) -> Result<(), LimiterError> {
        self.limiter.enable(&key.model, &key.key_id).await?;
        self.clear_probe_backoff(&key.key_id);
        self.record_as(actor, "enabled", Some(key), "enabled by an operator".into()).await;
        Ok(())
    }

    /// Probes one key now, as an operator asked, and acts on the answer as
    /// the background probe would: a healthy disabled key comes back (unless
    /// an operator disabled it), a dead one is disabled.
    pub async fn probe_now(
        &self,
        key: &KeySpec,
        probe: &dyn KeyProbe,
        actor: &str,
    ) -> Result<ProbeResult, LimiterError> {
        let result = probe.probe(key).await;
        let restriction = self.limiter.disabled(&key.model, &key.key_id).await?;
        let detail = match &result {
            ProbeResult::Healthy => match &restriction {
                Some(r) if r.needs_operator => "healthy; left disabled (only an operator enables it)".to_string(),
                Some(_) => {
                    self.limiter.enable(&key.model, &key.key_id).await?;
                    self.clear_probe_backoff(&key.key_id);
                    "healthy; enabled".to_string()
                }
                None => "healthy".to_string(),
            },
            ProbeResult::Dead(outcome) => {
                let (lasting, reason) = self.dead_key(outcome);
                self.limiter.disable(&key.model, &key.key_id, lasting, reason).await?;
                format!("dead: {reason}")
            }
            ProbeResult::Inconclusive => "inconclusive (network trouble or a server error); nothing changed".into(),
        };
        self.record_as(actor, "probe", Some(key), detail).await;
        Ok(result)
    }

    /// One round of re-checks of disabled keys. Each key is probed by one
    /// replica at a time (a lock in the limiter's backend), with exponential
    /// backoff per key. Leaked keys are never re-enabled automatically.
    pub async fn probe_disabled(&self, probe: &dyn KeyProbe) -> Result<(), LimiterError> {
        let config = self.config();
        let now = self.clock.now_ms();
        let base = duration_ms(config.health_check_interval);
        for key in config.keys.iter().filter(|k| k.active) {
            let Some(restriction) = self.limiter.disabled(&key.model, &key.key_id).await? else {
                self.clear_probe_backoff(&key.key_id);
                continue;
            };
            if restriction.needs_operator {
                continue;
            }
            let backoff = self
                .probes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key.key_id)
                .copied()
                .unwrap_or_default();
            if backoff.next_at_ms > now {
                continue;
            }
            if !self.limiter.try_lock(&format!("probe:{}", key.key_id), base.max(1_000)).await? {
                continue;
            }
            let result = probe.probe(key).await;
            match result {
                ProbeResult::Healthy => {
                    self.limiter.enable(&key.model, &key.key_id).await?;
                    self.clear_probe_backoff(&key.key_id);
                    self.record("enabled", Some(key), "probe succeeded".into()).await;
                }
                ProbeResult::Dead(_) | ProbeResult::Inconclusive => {
                    let failures = backoff.failures.saturating_add(1);
                    let delay =
                        base.saturating_mul(1u64 << failures.min(16)).min(duration_ms(self.options.max_probe_backoff));
                    self.probes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(key.key_id.clone(), ProbeBackoff { next_at_ms: now + delay, failures });
                    if let ProbeResult::Dead(Outcome::KeyLeaked) = result {
                        self.limiter.disable(&key.model, &key.key_id, Lasting::UntilOperator, LEAKED).await?;
                        self.record("disabled", Some(key), LEAKED.into()).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// The pool's [`Availability`], read at most once per
    /// [`AVAILABILITY_TTL`] however often it is asked for.
    pub async fn availability(&self) -> Result<Availability, LimiterError> {
        let mut cached = self.availability.lock().await;
        let now = self.clock.now_ms();
        if let Some((at, availability)) = *cached {
            if now.saturating_sub(at) < duration_ms(AVAILABILITY_TTL) {
                return Ok(availability);
            }
        }
        let keys = self.health().await?;
        let availability =
            Availability { configured: keys.len(), available: keys.iter().filter(|k| k.state == "available").count() };
        *cached = Some((now, availability));
        Ok(availability)
    }

    /// Every key's health and every bucket's use, as every replica sees
    /// them, from one [`Limiter::snapshot`] (one Redis round trip).
    pub async fn view(&self) -> Result<PoolView, LimiterError> {
        let config = self.config();
        let window_ms = duration_ms(config.effective_window());
        let mut bucket_limits = BTreeMap::new();
        for key in &config.keys {
            bucket_limits.entry(key.bucket()).or_insert(key.limits);
        }
        let request = SnapshotRequest {
            window_ms,
            buckets: bucket_limits.keys().map(|b| (b.model.clone(), b.project.clone())).collect(),
            keys: config.keys.iter().map(|k| (k.model.clone(), k.key_id.clone())).collect(),
        };
        let snapshot = self.limiter.snapshot(&request).await?;
        let cooldowns: HashMap<(&str, &str), &Option<Restriction>> =
            snapshot.buckets.iter().map(|b| ((b.model.as_str(), b.project.as_str()), &b.cooldown)).collect();
        let stats = self.stats.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let keys = config
            .keys
            .iter()
            .zip(&snapshot.disabled)
            .map(|(key, disabled)| {
                let cooldown = cooldowns.get(&(key.model.as_str(), key.project.as_str())).and_then(|c| c.as_ref());
                let (state, until, reason) = match (disabled, cooldown) {
                    _ if !key.active => ("inactive", None, None),
                    (Some(d), _) if d.reason == LEAKED => ("leaked", None, Some(d.reason.clone())),
                    (Some(d), _) => ("disabled", None, Some(d.reason.clone())),
                    (None, Some(c)) => ("cooling_down", Some(c.until_ms), Some(c.reason.clone())),
                    (None, None) => ("available", None, None),
                };
                KeyHealth {
                    key_id: key.key_id.clone(),
                    display: format!("{} {}", key.key_id, key.secret.masked()),
                    model: key.model.clone(),
                    project: key.project.clone(),
                    workload: key.workload.as_str(),
                    state,
                    cooldown_until_ms: until,
                    reason,
                    stats: stats.get(&key.key_id).cloned().unwrap_or_default(),
                }
            })
            .collect();
        let buckets = bucket_limits
            .values()
            .zip(snapshot.buckets)
            .map(|(limits, usage)| {
                let BucketUsage { model, project, requests_in_window, tokens_in_window, requests_today, .. } = usage;
                let used =
                    crate::limiter::remaining_fraction(limits, requests_in_window, tokens_in_window, requests_today);
                BucketView {
                    project,
                    model,
                    rpm: limits.rpm,
                    tpm: limits.tpm,
                    rpd: limits.rpd,
                    requests_in_window,
                    tokens_in_window,
                    requests_today,
                    remaining_rpm: limits.rpm.saturating_sub(requests_in_window),
                    remaining_tpm: limits.tpm.saturating_sub(tokens_in_window),
                    remaining_rpd: limits.rpd.map(|rpd| rpd.saturating_sub(requests_today)),
                    warning: 1.0 - used >= config.quota_warning_threshold,
                }
            })
            .collect();
        Ok(PoolView { keys, buckets })
    }

    /// Health of every key, as every replica sees it.
    pub async fn health(&self) -> Result<Vec<KeyHealth>, LimiterError> {
        Ok(self.view().await?.keys)
    }

    /// Use and remaining room of every (project, model) bucket.
    pub async fn usage(&self) -> Result<Vec<BucketView>, LimiterError> {
        Ok(self.view().await?.buckets)
    }

    pub async fn history(&self, limit: usize) -> Vec<RotationEvent> {
        self.events.recent(limit).await
    }
}

pub fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
