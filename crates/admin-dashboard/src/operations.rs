//! What operators read and do, once: the pages and the admin JSON API both
//! call these, so an action has the same effect and the same history
//! record whichever way it came.
//!
//! Every number here is read from the shared state (the limiter, the
//! activity counts, the database), so every replica behind a load balancer
//! shows the same ones.

use std::collections::{BTreeMap, BTreeSet};

use api_core::{ApiError, ApiResult, AppState};
use chrono::{TimeZone, Utc};
use key_rotation::activity::{ActivityReport, HourAndDay, KeyActivity, UserActivity};
use key_rotation::config::KeySpec;
use key_rotation::pool::{BucketView, PoolView, ProbeResult};
use serde::Serialize;
use store::operators::{EventFilter, RotationEventRow};

/// Who is acting, as the history records it: `admin:<username>`.
#[derive(Debug, Clone)]
pub struct Actor(String);

impl Actor {
    pub fn admin(username: &str) -> Self {
        Self(format!("admin:{username}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `03:49:15 UTC`: the pages' clock time (the JSON keeps ISO 8601).
pub fn clock(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .map_or_else(String::new, |at| at.format("%H:%M:%S UTC").to_string())
}

/// `1h 02m`, `4m 05s`, `12s`.
pub fn span(ms: u64) -> String {
    let secs = ms.div_ceil(1000);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

pub fn iso(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    Utc.timestamp_millis_opt(ms).single().map(|at| api_core::time::iso8601(&at))
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or_default()
}

/// One key as the keys page and `GET /api/admin/keys/` show it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    pub key_id: String,
    /// The secret's last four characters, after an ellipsis.
    pub last4: String,
    pub project: String,
    pub model: String,
    pub workload: &'static str,
    pub priority: i64,
    /// `available`, `cooling_down`, `disabled`, `leaked` or `inactive`.
    pub state: &'static str,
    pub cooldown_until: Option<String>,
    pub reason: Option<String>,
    pub hour: KeyActivity,
    pub day: KeyActivity,
    pub last_used: Option<String>,
    /// For the page: `until 03:49:15 UTC (1m 59s left)`.
    #[serde(skip)]
    pub cooldown_display: Option<String>,
    /// For the page: `12s ago`.
    #[serde(skip)]
    pub last_used_display: Option<String>,
}

/// A bucket's use of one limit.
#[derive(Debug, Clone, Serialize)]
pub struct LimitUse {
    /// `rpm`, `tpm` or `rpd`.
    pub limit: &'static str,
    pub used: u64,
    pub of: u64,
    pub utilization: f64,
    pub remaining: u64,
    /// When the used part is back: the end of the sliding window for `rpm`
    /// and `tpm`, Pacific midnight for `rpd`.
    pub resets_at: Option<String>,
    /// For the page: `in 42s`.
    #[serde(skip)]
    pub resets_in: Option<String>,
}

/// A (project, model) bucket as the buckets page and `usage/` show it.
#[derive(Debug, Clone, Serialize)]
pub struct BucketRow {
    pub project: String,
    pub model: String,
    pub warning: bool,
    pub limits: Vec<LimitUse>,
}

fn bucket_row(bucket: &BucketView, window_ms: u64, now: u64) -> BucketRow {
    let window_end = Some((now + window_ms, now));
    let mut limits = vec![
        limit_use("rpm", u64::from(bucket.requests_in_window), u64::from(bucket.rpm), window_end),
        limit_use("tpm", bucket.tokens_in_window, bucket.tpm, window_end),
    ];
    if let Some(rpd) = bucket.rpd {
        let (_, day_end) = key_rotation::pacific::day_bounds_ms(now);
        limits.push(limit_use("rpd", u64::from(bucket.requests_today), u64::from(rpd), Some((day_end, now))));
    }
    BucketRow { project: bucket.project.clone(), model: bucket.model.clone(), warning: bucket.warning, limits }
}

/// `resets`: when the used part is back, and now (ms); nothing to reset
/// when nothing is used.
fn limit_use(limit: &'static str, used: u64, of: u64, resets: Option<(u64, u64)>) -> LimitUse {
    let utilization = if of == 0 { 1.0 } else { (used as f64 / of as f64).min(1.0) };
    let resets = resets.filter(|_| used > 0);
    LimitUse {
        limit,
        used,
        of,
        utilization,
        remaining: of.saturating_sub(used),
        resets_at: resets.and_then(|(at, _)| iso(at)),
        resets_in: resets.map(|(at, now)| format!("in {}", span(at.saturating_sub(now)))),
    }
}

/// One model's keys and capacity, for the overview.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub model: String,
    pub keys: usize,
    pub usable_keys: usize,
    /// Summed over the model's buckets.
    pub limits: Vec<LimitUse>,
}

/// The overview page, and what it polls.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub models: Vec<ModelSummary>,
    /// `None` without Redis (one replica, nothing to degrade).
    pub degraded: Option<bool>,
    /// Replicas alive in the heartbeat registry (Redis only).
    pub replicas: Option<u32>,
    /// Over the last hour, every replica together.
    pub upstream_429s: u64,
    pub user_429s: u64,
    pub upstream_errors: u64,
    pub successes: u64,
    pub warning_threshold: f64,
    /// When the key secrets' store is failing: which store, and since when.
    pub secret_store_failing: Option<String>,
    /// Whether this replica can run backtests, and if not why.
    pub sandbox: sandbox::Readiness,
    /// The backtest queue, every replica's: `None` when it could not be read.
    pub backtests: Option<String>,
}

/// Everything one refresh of the pages reads: the pool's state (one
/// limiter snapshot) and the activity counts (one round trip).
pub struct Reading {
    pub view: PoolView,
    pub backtests: Option<store::backtests::BacktestQueue>,
    pub activity: ActivityReport,
    pub config: std::sync::Arc<key_rotation::config::PoolConfig>,
    pub now_ms: u64,
}

pub async fn read(state: &AppState) -> ApiResult<Reading> {
    let since = Utc::now()
        - chrono::Duration::from_std(backtests::worker::SEEN_WITHIN).unwrap_or(chrono::Duration::seconds(15));
    let (view, activity, backtests) =
        tokio::join!(state.pool.view(), state.pool.activity().report(), state.store.backtest_queue(since));
    let backtests =
        backtests.inspect_err(|err| tracing::warn!(error = %err, "the backtest queue could not be read")).ok();
    Ok(Reading { view: view?, activity: activity?, backtests, config: state.pool.config(), now_ms: now_ms() })
}

impl Reading {
    pub fn keys(&self) -> Vec<KeyRow> {
        self.config
            .keys
            .iter()
            .zip(&self.view.keys)
            .map(|(spec, health)| {
                let activity = self.activity.keys.get(&spec.key_id).copied().unwrap_or_default();
                KeyRow {
                    key_id: spec.key_id.clone(),
                    last4: spec.secret.masked(),
                    project: spec.project.clone(),
                    model: spec.model.clone(),
                    workload: spec.workload.as_str(),
                    priority: spec.priority,
                    state: health.state,
                    cooldown_until: health.cooldown_until_ms.and_then(iso),
                    reason: health.reason.clone(),
                    hour: activity.hour,
                    day: activity.day,
                    last_used: self.activity.last_used_ms.get(&spec.key_id).copied().and_then(iso),
                    cooldown_display: health.cooldown_until_ms.map(|until| {
                        format!("until {} ({} left)", clock(until), span(until.saturating_sub(self.now_ms)))
                    }),
                    last_used_display: self
                        .activity
                        .last_used_ms
                        .get(&spec.key_id)
                        .map(|&at| format!("{} ago", span(self.now_ms.saturating_sub(at)))),
                }
            })
            .collect()
    }

    pub fn buckets(&self) -> Vec<BucketRow> {
        let window_ms = key_rotation::pool::duration_ms(self.config.effective_window());
        self.view.buckets.iter().map(|bucket| bucket_row(bucket, window_ms, self.now_ms)).collect()
    }

    pub fn overview(&self, state: &AppState) -> Overview {
        let models: BTreeSet<&str> = self.view.keys.iter().map(|k| k.model.as_str()).collect();
        let models = models
            .into_iter()
            .map(|model| {
                let keys: Vec<_> = self.view.keys.iter().filter(|k| k.model == model).collect();
                let buckets: Vec<&BucketView> = self.view.buckets.iter().filter(|b| b.model == model).collect();
                let sum = |f: &dyn Fn(&BucketView) -> (u64, u64)| {
                    buckets.iter().map(|b| f(b)).fold((0, 0), |(u, o), (bu, bo)| (u + bu, o + bo))
                };
                let (rpm_used, rpm) = sum(&|b| (u64::from(b.requests_in_window), u64::from(b.rpm)));
                let (tpm_used, tpm) = sum(&|b| (b.tokens_in_window, b.tpm));
                let mut limits = vec![limit_use("rpm", rpm_used, rpm, None), limit_use("tpm", tpm_used, tpm, None)];
                if buckets.iter().all(|b| b.rpd.is_some()) && !buckets.is_empty() {
                    let (rpd_used, rpd) = sum(&|b| (u64::from(b.requests_today), u64::from(b.rpd.unwrap_or(0))));
                    limits.push(limit_use("rpd", rpd_used, rpd, None));
                }
                ModelSummary {
                    model: model.to_string(),
                    keys: keys.len(),
                    usable_keys: keys.iter().filter(|k| k.state == "available").count(),
                    limits,
                }
            })
            .collect();
        let hour = |f: fn(&KeyActivity) -> u64| self.activity.keys.values().map(|a| f(&a.hour)).sum::<u64>();
        Overview {
            models,
            degraded: state.pool.limiter().degraded(),
            replicas: state.replicas.as_ref().map(|registry| registry.live()),
            upstream_429s: hour(|a| a.rate_limited),
            upstream_errors: hour(|a| a.errors),
            successes: hour(|a| a.successes),
            user_429s: self.activity.users.values().map(|u| u.hour.rate_limited).sum(),
            warning_threshold: self.config.quota_warning_threshold,
            secret_store_failing: state.secret_store.failing_since_ms().map(|since| {
                format!("{} has not answered since {}", state.secret_store.store().unwrap_or_default(), clock(since))
            }),
            sandbox: state.sandbox.readiness(),
            backtests: self.backtests.map(|queue| {
                let waited = queue.oldest_queued_at.map_or(String::new(), |at| {
                    let ms = u64::try_from((Utc::now() - at).num_milliseconds().max(0)).unwrap_or(0);
                    format!(" (the oldest for {})", span(ms))
                });
                format!(
                    "{} queued{waited}, {} running; {} worker slots reporting in",
                    queue.queued, queue.running, queue.worker_slots
                )
            }),
        }
    }

    /// Per key, the key's bucket and its use; per bucket, its limits.
    pub fn usage(&self) -> Usage {
        let keys = self
            .config
            .keys
            .iter()
            .map(|spec| {
                let activity = self.activity.keys.get(&spec.key_id).copied().unwrap_or_default();
                KeyUsage {
                    key_id: spec.key_id.clone(),
                    project: spec.project.clone(),
                    model: spec.model.clone(),
                    hour: activity.hour,
                    day: activity.day,
                }
            })
            .collect();
        let mut projects: BTreeMap<String, ProjectUsage> = BTreeMap::new();
        for (spec, activity) in self.config.keys.iter().map(|k| (k, self.activity.keys.get(&k.key_id))) {
            let project = projects.entry(spec.project.clone()).or_default();
            project.keys += 1;
            if let Some(activity) = activity {
                project.hour_calls += activity.hour.calls();
                project.day_calls += activity.day.calls();
            }
        }
        Usage { warning_threshold: self.config.quota_warning_threshold, buckets: self.buckets(), projects, keys }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyUsage {
    pub key_id: String,
    pub project: String,
    pub model: String,
    pub hour: KeyActivity,
    pub day: KeyActivity,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProjectUsage {
    pub keys: usize,
    pub hour_calls: u64,
    pub day_calls: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub warning_threshold: f64,
    pub buckets: Vec<BucketRow>,
    pub projects: BTreeMap<String, ProjectUsage>,
    pub keys: Vec<KeyUsage>,
}

/// One of the heaviest AI users.
#[derive(Debug, Clone, Serialize)]
pub struct UserRow {
    /// The caller as the executor names them (`user:<id>`).
    pub caller: String,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub hour: UserActivity,
    pub day: UserActivity,
}

/// How many users the users page lists.
pub const TOP_USERS: usize = 25;

/// The heaviest users of the last day, by calls, with their names.
pub async fn heaviest_users(state: &AppState, activity: &ActivityReport) -> ApiResult<Vec<UserRow>> {
    let mut users: Vec<(&String, &HourAndDay<UserActivity>)> = activity.users.iter().collect();
    users.sort_by_key(|(_, a)| std::cmp::Reverse((a.day.requests, a.day.tokens, a.day.rate_limited)));
    let mut rows = Vec::new();
    for (caller, activity) in users.into_iter().take(TOP_USERS) {
        let user_id = caller.strip_prefix("user:").and_then(|id| id.parse::<i64>().ok());
        let username = match user_id {
            Some(id) => state.store.user_by_id(id).await?.map(|row| row.username),
            None => None,
        };
        rows.push(UserRow { caller: caller.clone(), user_id, username, hour: activity.hour, day: activity.day });
    }
    Ok(rows)
}

/// Most API tokens an operator's list shows.
pub const LISTED_API_TOKENS: i64 = 500;

/// A gateway token as operators see it (never the token itself): whose it
/// is, when it was last used, and its calls over the hour and the day.
#[derive(Debug, Clone, Serialize)]
pub struct ApiTokenRow {
    #[serde(flatten)]
    pub token: store::api_tokens::OwnedApiTokenRow,
    pub hour: UserActivity,
    pub day: UserActivity,
}

/// Every user's tokens, most recently used first.
pub async fn api_tokens(state: &AppState, activity: &ActivityReport) -> ApiResult<Vec<ApiTokenRow>> {
    let tokens = state.store.all_api_tokens(LISTED_API_TOKENS).await?;
    Ok(tokens
        .into_iter()
        .map(|token| {
            let usage = activity.api_tokens.get(&token.id.to_string()).copied().unwrap_or_default();
            ApiTokenRow { token, hour: usage.hour, day: usage.day }
        })
        .collect())
}

/// An operator revokes any user's token (a leaked one, say); every replica
/// refuses it within the token cache's life.
pub async fn revoke_api_token(state: &AppState, token_id: i64, actor: &Actor) -> ApiResult<Done> {
    if !state.store.delete_any_api_token(token_id).await? {
        return Err(ApiError::NotFound);
    }
    state.api_tokens.forget_all();
    tracing::info!(token_id, actor = %actor.as_str(), "API token revoked by an operator");
    Ok(Done { message: format!("revoked API token {token_id}") })
}

/// A history entry as pages and JSON show it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub at: String,
    pub kind: String,
    pub key_id: Option<String>,
    pub project: Option<String>,
    pub model: Option<String>,
    pub detail: String,
    pub actor: String,
}

impl From<RotationEventRow> for EventRow {
    fn from(row: RotationEventRow) -> Self {
        EventRow {
            id: row.id,
            at: api_core::time::iso8601(&row.at),
            kind: row.kind,
            key_id: row.key_id,
            project: row.project,
            model: row.model,
            detail: row.detail,
            actor: row.actor,
        }
    }
}

pub async fn history(
    state: &AppState,
    filter: &EventFilter,
    limit: i64,
    offset: i64,
) -> ApiResult<(i64, Vec<EventRow>)> {
    let (count, rows) = state.history.page(filter, limit, offset).await?;
    Ok((count, rows.into_iter().map(EventRow::from).collect()))
}

fn key(state: &AppState, key_id: &str) -> ApiResult<KeySpec> {
    state.pool.key(key_id).ok_or(ApiError::NotFound)
}

/// What an action did, for the operator to read.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    pub message: String,
}

pub async fn reset_bucket(state: &AppState, project: &str, model: &str, actor: &Actor) -> ApiResult<Done> {
    let keys = state.pool.reset(project, Some(model), actor.as_str()).await?;
    if keys == 0 {
        return Err(ApiError::NotFound);
    }
    Ok(Done { message: format!("reset {project}/{model} ({keys} key(s))") })
}

pub async fn disable_key(state: &AppState, key_id: &str, actor: &Actor) -> ApiResult<Done> {
    let key = key(state, key_id)?;
    state.pool.disable_by_operator(&key, actor.as_str()).await?;
    Ok(Done { message: format!("disabled {key_id}") })
}

pub async fn enable_key(state: &AppState, key_id: &str, actor: &Actor) -> ApiResult<Done> {
    let key = key(state, key_id)?;
    state.pool.enable_by_operator(&key, actor.as_str()).await?;
    Ok(Done { message: format!("enabled {key_id}") })
}

pub async fn probe_key(state: &AppState, key_id: &str, actor: &Actor) -> ApiResult<Done> {
    let key = key(state, key_id)?;
    let result = state.pool.probe_now(&key, state.probe.as_ref(), actor.as_str()).await?;
    let verdict = match result {
        ProbeResult::Healthy => "healthy".to_string(),
        ProbeResult::Dead(outcome) => format!("dead ({})", outcome.kind()),
        ProbeResult::Inconclusive => "inconclusive".to_string(),
    };
    Ok(Done { message: format!("probed {key_id}: {verdict}") })
}

pub async fn reload(state: &AppState, actor: &Actor) -> ApiResult<Done> {
    let reached = state.reload.request_reload().await.map_err(|err| {
        tracing::warn!(error = format!("{err:#}"), "reload request failed");
        ApiError::Unavailable("the reload request could not be sent".into())
    })?;
    state.pool.record_as(actor.as_str(), "reload_requested", None, reached.clone()).await;
    Ok(Done { message: reached })
}

pub async fn test_alert(state: &AppState, actor: &Actor) -> ApiResult<Done> {
    let sent = crate::alerts::send_test(state, actor.as_str()).await;
    let detail = match &sent {
        Ok(()) => "delivered".to_string(),
        Err(err) => err.to_string(),
    };
    state.pool.record_as(actor.as_str(), "test_alert", None, detail).await;
    match sent {
        Ok(()) => Ok(Done { message: "test alert delivered".into() }),
        Err(crate::alerts::TestAlertError::NotConfigured) => {
            Err(ApiError::Conflict("ALERT_WEBHOOK_URL is not set; there is nowhere to send an alert".into()))
        }
        Err(err) => Err(ApiError::Unavailable(err.to_string())),
    }
}
