//! Alerts on the key pool, posted to `ALERT_WEBHOOK_URL`: the conditions
//! of `deploy/prometheus/alerts.yml`, for deployments without Prometheus.
//!
//! - Each replica checks every `ALERT_CHECK_SECS`, off the request path.
//! - A condition is posted at most once per `ALERT_REPEAT_SECS` across all
//!   replicas: the replica that takes the limiter's lock on it first (a
//!   Redis `SET NX PX`, or this process's memory without Redis) sends it.
//! - Each post is JSON with a Slack-compatible `text`, retried twice with
//!   backoff, and signed with HMAC-SHA256 in `X-AlgoAgent-Signature` when
//!   `ALERT_WEBHOOK_SECRET` is set. Deliveries are counted in the metrics.

use std::collections::HashMap;
use std::time::Duration;

use api_core::{AlertWebhook, AppState};
use key_rotation::pool::PoolView;
use secrecy::ExposeSecret;
use serde_json::json;
use tokio::time::Instant;

/// Attempts per delivery, and the wait before each retry.
const RETRY_BACKOFF: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(2)];
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// One condition that holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Stable across checks and replicas: what a repeat is counted by.
    pub condition: String,
    pub severity: &'static str,
    pub summary: String,
}

/// The conditions of the alert rules, as the pool stands now.
/// `upstream_429s` is how many upstream 429s this replica saw since its
/// last check.
pub fn conditions(view: &PoolView, threshold: f64, degraded: Option<&str>, upstream_429s: u64) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let mut models: Vec<&str> = view.keys.iter().map(|k| k.model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    for model in models {
        if !view.keys.iter().any(|k| k.model == model && k.state == "available") {
            alerts.push(Alert {
                condition: format!("no_usable_key:{model}"),
                severity: "critical",
                summary: format!("No usable Gemini key for {model}"),
            });
        }
    }
    for bucket in &view.buckets {
        let mut limits = vec![
            ("rpm", f64::from(bucket.requests_in_window), f64::from(bucket.rpm)),
            ("tpm", bucket.tokens_in_window as f64, bucket.tpm as f64),
        ];
        if let Some(rpd) = bucket.rpd {
            limits.push(("rpd", f64::from(bucket.requests_today), f64::from(rpd)));
        }
        for (limit, used, of) in limits {
            let ratio = if of > 0.0 { used / of } else { 0.0 };
            let place = format!("{}/{}/{limit}", bucket.project, bucket.model);
            if ratio >= 1.0 {
                alerts.push(Alert {
                    condition: format!("bucket_exhausted:{place}"),
                    severity: "critical",
                    summary: format!("{}/{} has used all of its {limit} quota", bucket.project, bucket.model),
                });
            } else if ratio >= threshold {
                alerts.push(Alert {
                    condition: format!("bucket_near_limit:{place}"),
                    severity: "warning",
                    summary: format!(
                        "{}/{} is near its {limit} limit ({:.0}%)",
                        bucket.project,
                        bucket.model,
                        ratio * 100.0
                    ),
                });
            }
        }
    }
    for key in view.keys.iter().filter(|k| k.state == "disabled" || k.state == "leaked") {
        alerts.push(Alert {
            condition: format!("key_{}:{}", key.state, key.key_id),
            severity: "warning",
            summary: format!("Gemini key {} is {}", key.key_id, key.state),
        });
    }
    if upstream_429s > 0 {
        alerts.push(Alert {
            condition: "upstream_rate_limited".into(),
            severity: "warning",
            summary: format!("Gemini answered {upstream_429s} 429s: the configured limits may exceed the real quota"),
        });
    }
    if let Some(replica) = degraded {
        alerts.push(Alert {
            condition: format!("limiter_degraded:{replica}"),
            severity: "critical",
            summary: format!("Replica {replica} admits without Redis"),
        });
    }
    alerts
}

fn client() -> Option<reqwest::Client> {
    match reqwest::Client::builder().timeout(DELIVERY_TIMEOUT).build() {
        Ok(client) => Some(client),
        Err(err) => {
            tracing::error!(error = %err, "alerts: cannot build an HTTP client; no alerts will be posted");
            None
        }
    }
}

/// Checks and posts, every `check_every`, until the task is dropped.
/// Without `ALERT_WEBHOOK_URL` there is nothing to do.
pub async fn run(state: AppState) {
    let Some(settings) = state.alert_webhook.clone() else {
        return;
    };
    let Some(client) = client() else {
        return;
    };
    let mut posted: HashMap<String, Instant> = HashMap::new();
    let mut seen_429s = upstream_429s(&state);
    loop {
        tokio::time::sleep(settings.check_every).await;
        let view = match state.pool.view().await {
            Ok(view) => view,
            Err(err) => {
                tracing::warn!(error = %err, "alerts: the pool's state could not be read");
                continue;
            }
        };
        let total_429s = upstream_429s(&state);
        let replica = state.pool.replica().to_string();
        let degraded = state.pool.limiter().degraded().unwrap_or(false).then_some(replica.as_str());
        let threshold = state.pool.config().quota_warning_threshold;
        let alerts = conditions(&view, threshold, degraded, total_429s.saturating_sub(seen_429s));
        seen_429s = total_429s;
        posted.retain(|_, at| at.elapsed() < settings.repeat);
        let mut claimed = Vec::new();
        for alert in alerts {
            if claim(&state, &settings, &mut posted, &alert.condition).await {
                claimed.push(alert);
            }
        }
        // Together, so one slow or failing post does not hold up the others.
        let deliveries = claimed.iter().map(|alert| deliver(&client, &settings, alert, &replica));
        for delivered in futures::future::join_all(deliveries).await {
            state.counters.count_alert_delivery(delivered);
        }
    }
}

fn upstream_429s(state: &AppState) -> u64 {
    state
        .pool
        .metrics()
        .outcomes()
        .into_iter()
        .filter(|((_, outcome), _)| outcome.starts_with("rate_limited") || *outcome == "quota_zero")
        .map(|(_, count)| count)
        .sum()
}

/// Why a test alert was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum TestAlertError {
    #[error("ALERT_WEBHOOK_URL is not set")]
    NotConfigured,
    #[error("the webhook did not accept the alert (after retries)")]
    NotDelivered,
}

/// Posts a test alert now (the operators' "send a test alert"), with the
/// same signing, retries and counting as a real one.
pub async fn send_test(state: &AppState, actor: &str) -> Result<(), TestAlertError> {
    let settings = state.alert_webhook.as_ref().ok_or(TestAlertError::NotConfigured)?;
    let client = client().ok_or(TestAlertError::NotDelivered)?;
    let alert = Alert { condition: "test".into(), severity: "info", summary: format!("Test alert sent by {actor}") };
    let delivered = deliver(&client, settings, &alert, &state.pool.replica().to_string()).await;
    state.counters.count_alert_delivery(delivered);
    if delivered {
        Ok(())
    } else {
        Err(TestAlertError::NotDelivered)
    }
}

/// Whether this replica is the one to post `condition` now: it holds the
/// limiter's lock on it for `ALERT_REPEAT_SECS` (shared through Redis when
/// configured; in this process otherwise).
async fn claim(
    state: &AppState,
    settings: &AlertWebhook,
    posted: &mut HashMap<String, Instant>,
    condition: &str,
) -> bool {
    if posted.contains_key(condition) {
        return false;
    }
    // Asked once per repeat interval: a condition another replica posted
    // is not asked about again until it could be posted again.
    posted.insert(condition.to_string(), Instant::now());
    let repeat_ms = u64::try_from(settings.repeat.as_millis()).unwrap_or(u64::MAX).max(1);
    match state.pool.limiter().try_lock(&format!("alert:{condition}"), repeat_ms).await {
        Ok(claimed) => claimed,
        Err(err) => {
            // Better a duplicate alert than a lost one.
            tracing::warn!(error = %err, "alerts: cannot claim a condition; posting anyway");
            true
        }
    }
}

/// The JSON posted for `alert`, exactly as signed.
pub fn body(alert: &Alert, replica: &str) -> String {
    json!({
        "text": format!("[{}] {}", alert.severity, alert.summary),
        "alert": alert.condition,
        "severity": alert.severity,
        "summary": alert.summary,
        "replica": replica,
        "at": api_core::time::iso8601(&chrono::Utc::now()),
    })
    .to_string()
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
        unreachable!("HMAC takes a key of any length")
    };
    mac.update(body.as_bytes());
    format!("sha256={}", api_core::bytes::hex(&mac.finalize().into_bytes()))
}

async fn deliver(client: &reqwest::Client, settings: &AlertWebhook, alert: &Alert, replica: &str) -> bool {
    let body = body(alert, replica);
    let mut waits = RETRY_BACKOFF.iter();
    loop {
        let mut request = client
            .post(settings.url.expose_secret())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(secret) = &settings.secret {
            request = request.header("x-algoagent-signature", signature(secret.expose_secret(), &body));
        }
        // The URL is a secret (webhook URLs carry their token): errors are
        // logged by kind, never with it.
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                tracing::info!(alert = %alert.condition, "alert posted");
                return true;
            }
            Ok(response) => {
                tracing::warn!(alert = %alert.condition, status = response.status().as_u16(), "alert refused");
            }
            Err(err) => tracing::warn!(alert = %alert.condition, timeout = err.is_timeout(), "alert not delivered"),
        }
        let Some(wait) = waits.next() else {
            return false;
        };
        tokio::time::sleep(*wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use key_rotation::pool::{BucketView, KeyHealth, KeyStats};

    fn key(id: &str, model: &str, state: &'static str) -> KeyHealth {
        KeyHealth {
            key_id: id.into(),
            display: id.into(),
            model: model.into(),
            project: format!("p-{id}"),
            workload: "light",
            state,
            cooldown_until_ms: None,
            reason: None,
            stats: KeyStats::default(),
        }
    }

    fn bucket(project: &str, requests: u32, rpm: u32) -> BucketView {
        BucketView {
            project: project.into(),
            model: "gemini-2.5-flash".into(),
            rpm,
            tpm: 1_000,
            rpd: None,
            requests_in_window: requests,
            tokens_in_window: 0,
            requests_today: requests,
            remaining_rpm: rpm.saturating_sub(requests),
            remaining_tpm: 1_000,
            remaining_rpd: None,
            warning: false,
        }
    }

    #[test]
    fn the_conditions_follow_the_alert_rules() {
        let view = PoolView {
            keys: vec![
                key("a", "gemini-2.5-flash", "available"),
                key("b", "gemini-2.5-pro", "leaked"),
                key("c", "gemini-2.5-pro", "cooling_down"),
            ],
            buckets: vec![bucket("quiet", 1, 10), bucket("busy", 9, 10), bucket("full", 10, 10)],
        };
        let found: Vec<String> =
            conditions(&view, 0.8, Some("r1"), 2).into_iter().map(|alert| alert.condition).collect();
        assert_eq!(
            found,
            [
                "no_usable_key:gemini-2.5-pro",
                "bucket_near_limit:busy/gemini-2.5-flash/rpm",
                "bucket_exhausted:full/gemini-2.5-flash/rpm",
                "key_leaked:b",
                "upstream_rate_limited",
                "limiter_degraded:r1",
            ]
        );
        assert!(
            conditions(&PoolView { keys: vec![key("a", "m", "available")], buckets: vec![] }, 0.8, None, 0).is_empty()
        );
    }

    #[test]
    fn the_signature_is_an_hmac_of_the_exact_body() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC 4231-style vector.
        assert_eq!(
            signature("key", "The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
