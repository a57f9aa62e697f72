//! The rotating executor: the one way any Gemini call is made.
//!
//! fair use → key admission → call → classify → report, retried on another
//! key when the key was at fault (at most `max_attempts`, all inside the
//! deadline). With no room, it waits until the time admission named if that
//! fits the deadline; otherwise it answers with an accurate `Retry-After`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use key_rotation::config::Workload;
use key_rotation::fair_use::{FairUse, UserDecision, UserLimits, UserTicket};
use key_rotation::limiter::LimiterError;
use key_rotation::outcome::Outcome;
use key_rotation::pool::{AdmitResult, AdmitSpec, Grant, KeyPool, PoolError};
use rand::Rng;
use serde_json::Value;
use tokio::time::Instant;

use prometheus_client::metrics::histogram::Histogram;

use crate::chat::estimate_tokens;
use crate::classify::GeminiError;
use crate::client::{GeminiClient, GeminiStream};

#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// The whole call, retries and waiting included (`AI_DEADLINE_SECS`).
    pub deadline: Duration,
    pub max_attempts: u32,
    /// First backoff after a model-wide failure; doubles per attempt.
    pub backoff: Duration,
    /// Time kept for the call itself: waiting for room only happens when
    /// this much is left after it, so a waited-for call is not cut off by
    /// the deadline (an honest 429 is better than a late 504).
    pub call_reserve: Duration,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(25),
            max_attempts: 4,
            backoff: Duration::from_millis(200),
            call_reserve: Duration::from_secs(1),
        }
    }
}

/// One call: what to send and how to choose its key.
#[derive(Debug, Clone)]
pub struct CallSpec {
    /// Whose quota this is (fair use) and, when `sticky`, whose key.
    pub user: Option<String>,
    /// The gateway API token the call came with, whose use operators see
    /// apart from the rest of the user's.
    pub api_token: Option<i64>,
    pub sticky: bool,
    pub workload: Workload,
    /// An exact model (the SDK proxy); otherwise the admitted key's model.
    pub model: Option<String>,
    pub allow_spill: bool,
    pub body: Value,
    /// Overrides the default deadline.
    pub deadline: Option<Duration>,
}

impl CallSpec {
    /// A user's call of `workload`, sticky to their key, free to spill
    /// onto the other family when its own is full: what every app feature
    /// (chat, formatting, generation) sends.
    pub fn for_user(user: impl Into<String>, workload: Workload, body: Value) -> Self {
        Self {
            user: Some(user.into()),
            api_token: None,
            sticky: true,
            workload,
            model: None,
            allow_spill: true,
            body,
            deadline: None,
        }
    }
}

/// Why a call produced no answer. The HTTP layers render it.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no API keys configured")]
    NoKeys,
    #[error("no configured key serves model {0}")]
    NoKeyForModel(String),
    #[error("request of about {estimated} input tokens is larger than any key allows ({max_tpm} per window)")]
    TooLarge { estimated: u64, max_tpm: u64 },
    #[error("per-user limit reached; retry in {retry_after:?}")]
    UserLimited { retry_after: Duration },
    #[error("every key is at its limit; retry in {retry_after:?}")]
    PoolFull { retry_after: Duration },
    #[error("every key that could serve this request is disabled")]
    Unusable,
    #[error("the AI call did not finish within its deadline")]
    DeadlineExceeded,
    /// The caller's request was refused (blocked prompt, SAFETY, unknown model, bad request).
    #[error(transparent)]
    Rejected(GeminiError),
    /// Gemini kept failing (5xx, malformed answers, key failures) for every attempt.
    #[error("Gemini failed after {attempts} attempts: {last}")]
    Upstream { attempts: u32, last: GeminiError },
    #[error("quota state unavailable: {0}")]
    Backend(#[from] LimiterError),
}

impl ExecError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ExecError::NoKeys | ExecError::Unusable | ExecError::Backend(_) => 503,
            ExecError::NoKeyForModel(_) => 404,
            ExecError::TooLarge { .. } => 413,
            ExecError::UserLimited { .. } | ExecError::PoolFull { .. } => 429,
            ExecError::DeadlineExceeded => 504,
            ExecError::Rejected(GeminiError::ModelNotFound(_)) => 404,
            ExecError::Rejected(GeminiError::BadRequest { status, .. }) => *status,
            ExecError::Rejected(_) => 422,
            ExecError::Upstream { last: GeminiError::TimedOut, .. } => 504,
            ExecError::Upstream { .. } => 502,
        }
    }

    /// The stable machine-readable code clients may switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ExecError::NoKeys => "no_api_keys",
            ExecError::NoKeyForModel(_) => "model_not_available",
            ExecError::TooLarge { .. } => "request_too_large",
            ExecError::UserLimited { .. } => "user_rate_limited",
            ExecError::PoolFull { .. } => "ai_capacity_exhausted",
            ExecError::Unusable => "no_usable_keys",
            ExecError::DeadlineExceeded => "ai_deadline_exceeded",
            ExecError::Rejected(_) => "ai_request_rejected",
            ExecError::Upstream { .. } => "ai_upstream_error",
            ExecError::Backend(_) => "quota_backend_unavailable",
        }
    }

    /// What a client is told. Never the upstream's own text, which can
    /// carry URLs and internals; that goes to the log (`Display`).
    pub fn public_message(&self) -> &'static str {
        match self {
            ExecError::NoKeys => "no API keys configured",
            ExecError::NoKeyForModel(_) => "No configured key serves this model",
            ExecError::TooLarge { .. } => "The request is larger than any key's token limit",
            ExecError::UserLimited { .. } => "You are sending AI requests too fast",
            ExecError::PoolFull { .. } => "Every API key is at its rate limit",
            ExecError::Unusable => "Every API key that could serve this request is disabled",
            ExecError::DeadlineExceeded => "The AI call did not finish in time",
            ExecError::Rejected(_) => "The AI model refused this request",
            ExecError::Upstream { .. } => "The AI service failed",
            ExecError::Backend(_) => "Quota state is unavailable",
        }
    }

    /// For `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ExecError::UserLimited { retry_after } | ExecError::PoolFull { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<PoolError> for ExecError {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::NoKeys => ExecError::NoKeys,
            PoolError::NoKeyForModel(model) => ExecError::NoKeyForModel(model),
            PoolError::TooLarge { estimated, max_tpm } => ExecError::TooLarge { estimated, max_tpm },
            PoolError::Unusable => ExecError::Unusable,
            PoolError::Backend(err) => ExecError::Backend(err),
        }
    }
}

/// A finished call.
#[derive(Debug, Clone)]
pub struct Completed {
    pub body: Value,
    pub key_id: String,
    pub model: String,
    pub attempts: u32,
    /// Time spent waiting on Google, every attempt together: what the
    /// gateway reports as `Server-Timing`, so a client can tell it from
    /// the time spent in the gateway.
    pub upstream: Duration,
}

pub struct Executor {
    client: GeminiClient,
    pool: Arc<KeyPool>,
    fair_use: Arc<dyn FairUse>,
    user_limits: UserLimits,
    settings: ExecutorSettings,
    sequence: AtomicU64,
    metrics: ExecutorMetrics,
}

/// A stream whose first chunk has arrived. Chunks after the first byte are
/// never resent: a failure mid-stream ends it with an error.
pub struct ExecStream {
    inner: GeminiStream,
    grant: Grant,
    pool: Arc<KeyPool>,
    prompt_tokens: Option<u64>,
    reported: bool,
    pub key_id: String,
    pub model: String,
}

impl ExecStream {
    pub async fn next(&mut self) -> Option<Result<Value, GeminiError>> {
        let item = self.inner.next().await;
        match &item {
            Some(Ok(chunk)) => {
                self.prompt_tokens = chunk["usageMetadata"]["promptTokenCount"].as_u64().or(self.prompt_tokens);
            }
            Some(Err(err)) => self.report(err.outcome()).await,
            None => self.report(Outcome::Success { prompt_tokens: self.prompt_tokens }).await,
        }
        item
    }

    async fn report(&mut self, outcome: Outcome) {
        if !self.reported {
            self.reported = true;
            self.pool.report(&self.grant, &outcome).await;
        }
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        if self.reported {
            return;
        }
        // Abandoned mid-stream (the client left): the call reached Google,
        // so the unit stays spent; the lease is released.
        let pool = self.pool.clone();
        let grant = self.grant.clone();
        let outcome = Outcome::Success { prompt_tokens: self.prompt_tokens };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { pool.report(&grant, &outcome).await });
        }
    }
}

enum Attempt<T> {
    Done(T),
    Retry(GeminiError),
    Fail(ExecError),
}

/// What the executor measures, per replica, for the metrics exposition.
#[derive(Debug, Clone)]
pub struct ExecutorMetrics {
    /// From asking the pool for a key to getting one, waits for room included.
    pub admission_wait: Histogram,
    /// One upstream attempt, from sending to the answer (or the first chunk).
    pub upstream_latency: Histogram,
}

impl Default for ExecutorMetrics {
    fn default() -> Self {
        // Seconds: admissions are immediate or wait up to the AI deadline;
        // upstream answers take 50 ms to tens of seconds.
        let waits = [0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0];
        let latencies = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0];
        Self { admission_wait: Histogram::new(waits), upstream_latency: Histogram::new(latencies) }
    }
}

impl Executor {
    pub fn new(
        client: GeminiClient,
        pool: Arc<KeyPool>,
        fair_use: Arc<dyn FairUse>,
        user_limits: UserLimits,
        settings: ExecutorSettings,
    ) -> Self {
        Self {
            client,
            pool,
            fair_use,
            user_limits,
            settings,
            sequence: AtomicU64::new(0),
            metrics: ExecutorMetrics::default(),
        }
    }

    pub fn metrics(&self) -> &ExecutorMetrics {
        &self.metrics
    }

    /// The deadline of a call that sets none (`AI_DEADLINE_SECS`).
    pub fn default_deadline(&self) -> Duration {
        self.settings.deadline
    }

    pub fn pool(&self) -> &Arc<KeyPool> {
        &self.pool
    }

    /// A whole answer (`generateContent`); a blocked prompt, a safety stop
    /// or an empty answer is an error.
    pub async fn generate(&self, spec: &CallSpec) -> Result<Completed, ExecError> {
        self.generate_checked(spec, true).await
    }

    /// A whole answer as Google gave it, a safety stop included: for the
    /// SDK gateway, whose clients read `finishReason` themselves. Such an
    /// answer is the key's success, never held against it.
    pub async fn generate_as_is(&self, spec: &CallSpec) -> Result<Completed, ExecError> {
        self.generate_checked(spec, false).await
    }

    async fn generate_checked(&self, spec: &CallSpec, checked: bool) -> Result<Completed, ExecError> {
        self.run(spec, |grant, model, remaining| async move {
            let call = async {
                if checked {
                    self.client.generate(&grant.key.secret, &model, &spec.body).await
                } else {
                    self.client.generate_as_is(&grant.key.secret, &model, &spec.body).await
                }
            };
            match tokio::time::timeout(remaining, call).await {
                Err(_) => {
                    self.pool.report(&grant, &Outcome::TimedOut).await;
                    Attempt::Fail(ExecError::DeadlineExceeded)
                }
                Ok(Ok(body)) => {
                    let prompt_tokens = body["usageMetadata"]["promptTokenCount"].as_u64();
                    self.pool.report(&grant, &Outcome::Success { prompt_tokens }).await;
                    let key_id = grant.key.key_id.clone();
                    Attempt::Done(Completed { body, key_id, model, attempts: 0, upstream: Duration::ZERO })
                }
                Ok(Err(err)) => self.failed(&grant, err).await,
            }
        })
        .await
        .map(|(mut completed, attempts, upstream)| {
            completed.attempts = attempts;
            completed.upstream = upstream;
            completed
        })
    }

    /// A streamed answer: returns once the first chunk is in hand, so every
    /// failure before it is an ordinary error with a real status.
    pub async fn stream(&self, spec: &CallSpec) -> Result<ExecStream, ExecError> {
        self.stream_checked(spec, true).await
    }

    /// As [`Executor::stream`], with a blocked or safety-stopped first
    /// chunk passed on (see [`Executor::generate_as_is`]).
    pub async fn stream_as_is(&self, spec: &CallSpec) -> Result<ExecStream, ExecError> {
        self.stream_checked(spec, false).await
    }

    async fn stream_checked(&self, spec: &CallSpec, checked: bool) -> Result<ExecStream, ExecError> {
        self.run(spec, |grant, model, remaining| async move {
            let open = async {
                if checked {
                    self.client.stream(&grant.key.secret, &model, &spec.body).await
                } else {
                    self.client.stream_as_is(&grant.key.secret, &model, &spec.body).await
                }
            };
            match tokio::time::timeout(remaining, open).await {
                Err(_) => {
                    self.pool.report(&grant, &Outcome::TimedOut).await;
                    Attempt::Fail(ExecError::DeadlineExceeded)
                }
                Ok(Ok(inner)) => Attempt::Done(ExecStream {
                    inner,
                    key_id: grant.key.key_id.clone(),
                    model,
                    grant,
                    pool: self.pool.clone(),
                    prompt_tokens: None,
                    reported: false,
                }),
                Ok(Err(err)) => self.failed(&grant, err).await,
            }
        })
        .await
        .map(|(stream, ..)| stream)
    }

    /// `countTokens` for `spec.model`, through a key serving it. Counting
    /// spends no generation quota, so it is not admitted: the keys are
    /// tried in the pool's order, and a key's failure moves to the next.
    pub async fn count_tokens(&self, spec: &CallSpec) -> Result<Value, ExecError> {
        let model = spec.model.clone().ok_or(ExecError::NoKeys)?;
        let admit = AdmitSpec {
            workload: spec.workload,
            model: Some(model.clone()),
            allow_spill: false,
            sticky_user: None,
            estimated_tokens: 0,
        };
        let deadline = Instant::now() + spec.deadline.unwrap_or(self.settings.deadline);
        let candidates: Vec<_> = self.pool.candidate_groups(&admit)?.into_iter().flatten().collect();
        // A request against the caller's fair use but no tokens: Google
        // meters countTokens apart from generation, yet a caller flooding
        // it still wears out the shared keys.
        let user_ticket = match self.fair_use_check(spec, 0).await {
            Ok(ticket) => ticket,
            Err(err) => {
                if matches!(err, ExecError::UserLimited { .. }) {
                    self.count_caller(spec, 0, true);
                }
                return Err(err);
            }
        };
        let mut last_error = None;
        let mut answered = None;
        for candidate in candidates.into_iter().take(self.settings.max_attempts as usize) {
            let Some(key) = self.pool.key(&candidate.key_id) else { continue };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let call = self.client.count_tokens_answer(&key.secret, &model, &spec.body);
            match tokio::time::timeout(remaining, call).await {
                Err(_) => {
                    answered = Some(Err(ExecError::DeadlineExceeded));
                    break;
                }
                Ok(Ok(answer)) => {
                    self.pool.report_unmetered(&key, &Outcome::Success { prompt_tokens: None }).await;
                    answered = Some(Ok(answer));
                    break;
                }
                Ok(Err(err)) => {
                    self.pool.report_unmetered(&key, &err.outcome()).await;
                    if !(err.outcome().is_key_failure() || err.is_retryable()) {
                        answered = Some(Err(ExecError::Rejected(err)));
                        break;
                    }
                    tracing::info!(key_id = %key.key_id, outcome = err.outcome().kind(), "countTokens failed on a key");
                    last_error = Some(err);
                }
            }
        }
        let exhausted = match last_error {
            Some(last) => ExecError::Upstream { attempts: self.settings.max_attempts, last },
            None => ExecError::Unusable,
        };
        let outcome = answered.unwrap_or(Err(exhausted));
        match &outcome {
            Ok(_) | Err(ExecError::Rejected(_)) => self.count_caller(spec, 0, false),
            Err(_) => self.refund_user(user_ticket.as_ref()).await,
        }
        outcome
    }

    async fn failed<T>(&self, grant: &Grant, err: GeminiError) -> Attempt<T> {
        self.pool.report(grant, &err.outcome()).await;
        tracing::info!(key_id = %grant.key.key_id, outcome = err.outcome().kind(), "gemini call failed");
        if err.is_retryable() {
            Attempt::Retry(err)
        } else {
            Attempt::Fail(ExecError::Rejected(err))
        }
    }

    async fn run<T, F, Fut>(&self, spec: &CallSpec, attempt: F) -> Result<(T, u32, Duration), ExecError>
    where
        F: Fn(Grant, String, Duration) -> Fut,
        Fut: std::future::Future<Output = Attempt<T>>,
    {
        let deadline = Instant::now() + spec.deadline.unwrap_or(self.settings.deadline);
        let estimated = estimate_tokens(&spec.body);
        let user_ticket = match self.fair_use_check(spec, estimated).await {
            Ok(ticket) => ticket,
            Err(err) => {
                if matches!(err, ExecError::UserLimited { .. }) {
                    self.count_caller(spec, estimated, true);
                }
                return Err(err);
            }
        };
        let admit = AdmitSpec {
            workload: spec.workload,
            model: spec.model.clone(),
            allow_spill: spec.allow_spill,
            sticky_user: spec.user.clone().filter(|_| spec.sticky),
            estimated_tokens: estimated,
        };
        let mut attempts = 0;
        let mut admitted_once = false;
        let mut waiting_since = Instant::now();
        let mut upstream = Duration::ZERO;
        let mut last_error: Option<GeminiError> = None;
        let outcome = loop {
            if attempts >= self.settings.max_attempts {
                break Err(ExecError::Upstream { attempts, last: last_error.take().unwrap_or(GeminiError::Empty) });
            }
            let grant = match self.pool.try_admit(&admit).await {
                Ok(AdmitResult::Granted(grant)) => *grant,
                Ok(AdmitResult::Full { retry_after }) => {
                    let jitter =
                        Duration::from_millis(rand::rng().random_range(0..=retry_after.as_millis().min(50) as u64));
                    let wake = Instant::now() + retry_after + jitter;
                    if wake + self.settings.call_reserve >= deadline {
                        break Err(ExecError::PoolFull { retry_after });
                    }
                    tokio::time::sleep_until(wake).await;
                    continue;
                }
                Err(err) => break Err(err.into()),
            };
            admitted_once = true;
            attempts += 1;
            self.metrics.admission_wait.observe(waiting_since.elapsed().as_secs_f64());
            let model = spec.model.clone().unwrap_or_else(|| grant.key.model.clone());
            let remaining = deadline.saturating_duration_since(Instant::now());
            let sent = Instant::now();
            let key_id = grant.key.key_id.clone();
            let attempted = attempt(grant, model, remaining).await;
            let elapsed = sent.elapsed();
            upstream += elapsed;
            self.metrics.upstream_latency.observe(elapsed.as_secs_f64());
            self.pool.activity().key_latency(&key_id, elapsed);
            waiting_since = Instant::now();
            match attempted {
                Attempt::Done(value) => break Ok(value),
                Attempt::Fail(err) => break Err(err),
                Attempt::Retry(err) => {
                    // A key's failure moves straight to another key; a
                    // model-wide one backs off first.
                    let backoff = match err.outcome() {
                        outcome if outcome.is_key_failure() => Duration::ZERO,
                        _ => self.settings.backoff * 2u32.saturating_pow(attempts.saturating_sub(1)),
                    };
                    last_error = Some(err);
                    if Instant::now() + backoff >= deadline {
                        break Err(ExecError::DeadlineExceeded);
                    }
                    tokio::time::sleep(backoff).await;
                }
            }
        };
        if !admitted_once {
            // No key took the call: the user's unit comes back.
            self.refund_user(user_ticket.as_ref()).await;
        }
        let refused = matches!(outcome, Err(ExecError::PoolFull { .. }));
        if admitted_once || refused {
            self.count_caller(spec, estimated, refused);
        }
        outcome.map(|value| (value, attempts, upstream))
    }

    /// The call in the operators' per-user (and per-token) counts.
    fn count_caller(&self, spec: &CallSpec, estimated: u64, refused: bool) {
        let activity = self.pool.activity();
        if let Some(user) = &spec.user {
            activity.user_call(user, estimated, refused);
        }
        if let Some(token) = spec.api_token {
            activity.api_token_call(token, estimated, refused);
        }
    }

    /// Gives back a fair-use unit no key spent.
    async fn refund_user(&self, ticket: Option<&UserTicket>) {
        if let Some(ticket) = ticket {
            if let Err(err) = self.fair_use.refund(ticket).await {
                tracing::warn!(error = %err, "could not refund a user's fair-use unit");
            }
        }
    }

    async fn fair_use_check(&self, spec: &CallSpec, estimated: u64) -> Result<Option<UserTicket>, ExecError> {
        let Some(user) = &spec.user else {
            return Ok(None);
        };
        // Named by the pool's replica id: entries of another replica must never collide.
        let entry = format!("u{}-{}", self.pool.replica(), self.sequence.fetch_add(1, Ordering::Relaxed));
        match self.fair_use.admit(user, estimated, self.user_limits, &entry).await? {
            UserDecision::Allowed(ticket) => Ok(Some(ticket)),
            UserDecision::Limited { retry_after } => Err(ExecError::UserLimited { retry_after }),
            UserDecision::TooLarge => Err(ExecError::TooLarge { estimated, max_tpm: self.user_limits.tpm }),
        }
    }
}
