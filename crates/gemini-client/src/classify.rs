//! Turning what Gemini answered into the pool's `Outcome` and the caller's
//! error. Google's error bodies carry typed details (`QuotaFailure`,
//! `RetryInfo`, `ErrorInfo`); the classification reads those, falling back
//! to the status and message.

use std::time::Duration;

use key_rotation::outcome::{Outcome, QuotaScope};
use serde_json::Value;

/// Why a call did not produce an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeminiError {
    #[error("rate limited ({scope:?}){}", retry_delay.map(|d| format!(", retry in {:.3}s", d.as_secs_f64())).unwrap_or_default())]
    RateLimited { scope: QuotaScope, retry_delay: Option<Duration>, zero_limit: bool, message: String },
    #[error("the API key was rejected: {message}")]
    KeyRejected { outcome: Outcome, message: String },
    #[error("Gemini is unavailable ({status}): {message}")]
    Unavailable { status: u16, message: String },
    #[error("the request timed out after it was sent")]
    TimedOut,
    #[error("could not reach Gemini: {0}")]
    NotSent(String),
    #[error("Gemini answered with a malformed body: {0}")]
    Malformed(String),
    #[error("the prompt was blocked ({reason})")]
    PromptBlocked { reason: String },
    #[error("the answer was withheld for safety")]
    Safety,
    #[error("Gemini returned no candidates")]
    Empty,
    #[error("unknown model: {0}")]
    ModelNotFound(String),
    /// Any other 4xx: the request itself was wrong. Google's body is kept.
    #[error("Gemini rejected the request ({status}): {message}")]
    BadRequest { status: u16, message: String, body: Value },
}

impl GeminiError {
    /// What the key pool should make of this error.
    pub fn outcome(&self) -> Outcome {
        match self {
            GeminiError::RateLimited { scope, retry_delay, zero_limit, .. } => {
                Outcome::RateLimited { scope: *scope, retry_delay: *retry_delay, zero_limit: *zero_limit }
            }
            GeminiError::KeyRejected { outcome, .. } => outcome.clone(),
            GeminiError::Unavailable { .. } | GeminiError::Malformed(_) => Outcome::UpstreamUnavailable,
            GeminiError::TimedOut => Outcome::TimedOut,
            GeminiError::NotSent(_) => Outcome::NotSent,
            GeminiError::PromptBlocked { .. }
            | GeminiError::Safety
            | GeminiError::Empty
            | GeminiError::ModelNotFound(_)
            | GeminiError::BadRequest { .. } => Outcome::CallerError,
        }
    }

    /// Whether another attempt (on another key, or later) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GeminiError::RateLimited { .. }
                | GeminiError::KeyRejected { .. }
                | GeminiError::Unavailable { .. }
                | GeminiError::TimedOut
                | GeminiError::NotSent(_)
                | GeminiError::Malformed(_)
        )
    }
}

/// Parses a protobuf JSON Duration: "37s", "0.447s".
pub fn parse_delay(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

fn details(error: &Value) -> impl Iterator<Item = &Value> {
    error["details"].as_array().into_iter().flatten()
}

fn detail_of<'a>(error: &'a Value, type_suffix: &str) -> Option<&'a Value> {
    details(error).find(|d| d["@type"].as_str().is_some_and(|t| t.ends_with(type_suffix)))
}

fn error_reason(error: &Value) -> Option<&str> {
    detail_of(error, "google.rpc.ErrorInfo").and_then(|d| d["reason"].as_str())
}

/// Classifies a non-2xx answer from its status and Google's error body.
pub fn classify_error(status: u16, body: &Value, model: &str) -> GeminiError {
    let error = &body["error"];
    let message = error["message"].as_str().unwrap_or_default().to_string();
    match status {
        429 => {
            let quota_id = detail_of(error, "google.rpc.QuotaFailure")
                .and_then(|d| d["violations"].as_array())
                .and_then(|violations| violations.iter().find_map(|v| v["quotaId"].as_str()))
                .unwrap_or_default();
            let scope = if quota_id.contains("PerDay") {
                QuotaScope::PerDay
            } else if quota_id.contains("Token") {
                QuotaScope::InputTokens
            } else if quota_id.contains("PerMinute") {
                QuotaScope::PerMinute
            } else {
                QuotaScope::Unknown
            };
            let retry_delay =
                detail_of(error, "google.rpc.RetryInfo").and_then(|d| d["retryDelay"].as_str()).and_then(parse_delay);
            let zero_limit = message.contains("limit: 0,") || message.trim_end().ends_with("limit: 0");
            GeminiError::RateLimited { scope, retry_delay, zero_limit, message }
        }
        400 if error_reason(error) == Some("API_KEY_INVALID") => {
            GeminiError::KeyRejected { outcome: Outcome::KeyInvalid, message }
        }
        401 => GeminiError::KeyRejected { outcome: Outcome::KeyInvalid, message },
        403 => {
            let outcome = match error_reason(error) {
                Some("SERVICE_DISABLED") => Outcome::ProjectDisabled,
                Some("API_KEY_SERVICE_BLOCKED") => Outcome::KeyBlocked,
                Some("API_KEY_INVALID") => Outcome::KeyInvalid,
                _ if message.contains("leaked") => Outcome::KeyLeaked,
                _ => Outcome::KeyInvalid,
            };
            GeminiError::KeyRejected { outcome, message }
        }
        404 => GeminiError::ModelNotFound(model.to_string()),
        500..=599 => GeminiError::Unavailable { status, message },
        _ => GeminiError::BadRequest { status, message, body: body.clone() },
    }
}

/// Checks a 2xx `GenerateContentResponse` for the ways it can hold no answer.
pub fn check_answer(body: &Value) -> Result<(), GeminiError> {
    if let Some(reason) = body["promptFeedback"]["blockReason"].as_str() {
        return Err(GeminiError::PromptBlocked { reason: reason.to_string() });
    }
    let candidates = body["candidates"].as_array().map(Vec::as_slice).unwrap_or_default();
    let Some(first) = candidates.first() else {
        return Err(GeminiError::Empty);
    };
    if first["finishReason"].as_str() == Some("SAFETY") {
        return Err(GeminiError::Safety);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn quota_body(quota_id: &str, retry: Option<&str>, limit: u32) -> Value {
        let mut details = vec![json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{ "quotaMetric": "m", "quotaId": quota_id }]
        })];
        if let Some(retry) = retry {
            details.push(json!({ "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry }));
        }
        json!({ "error": {
            "code": 429, "status": "RESOURCE_EXHAUSTED", "details": details,
            "message": format!("You exceeded your current quota.\n* Quota exceeded for metric: m, limit: {limit}, model: gemini-2.5-pro")
        }})
    }

    #[test]
    fn quota_failures_name_their_scope_and_delay() {
        let cases = [
            ("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", Some("37s"), QuotaScope::PerMinute, Some(37_000)),
            ("GenerateRequestsPerDayPerProjectPerModel-FreeTier", None, QuotaScope::PerDay, None),
            (
                "GenerateContentInputTokensPerModelPerMinute-FreeTier",
                Some("0.447s"),
                QuotaScope::InputTokens,
                Some(447),
            ),
        ];
        for (quota_id, retry, scope, delay_ms) in cases {
            let error = classify_error(429, &quota_body(quota_id, retry, 15), "m");
            assert_eq!(
                error,
                GeminiError::RateLimited {
                    scope,
                    retry_delay: delay_ms.map(Duration::from_millis),
                    zero_limit: false,
                    message: quota_body(quota_id, retry, 15)["error"]["message"].as_str().unwrap().to_string(),
                }
            );
        }
        let zero =
            classify_error(429, &quota_body("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", None, 0), "m");
        assert!(matches!(zero, GeminiError::RateLimited { zero_limit: true, .. }));
        let bare = classify_error(429, &json!({"error": {"code": 429, "message": "Resource has been exhausted"}}), "m");
        assert!(matches!(bare, GeminiError::RateLimited { scope: QuotaScope::Unknown, retry_delay: None, .. }));
    }

    #[test]
    fn dead_keys_and_disabled_projects_are_told_apart() {
        let info = |code: u16, reason: &str| json!({"error": {"code": code, "message": "m", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason}]}});
        let outcome = |status, body: Value| classify_error(status, &body, "m").outcome();
        assert_eq!(outcome(400, info(400, "API_KEY_INVALID")), Outcome::KeyInvalid);
        assert_eq!(outcome(403, info(403, "API_KEY_SERVICE_BLOCKED")), Outcome::KeyBlocked);
        assert_eq!(outcome(403, info(403, "SERVICE_DISABLED")), Outcome::ProjectDisabled);
        let leaked = json!({"error": {"code": 403, "message": "Your API key was reported as leaked. Please use another API key."}});
        assert_eq!(outcome(403, leaked), Outcome::KeyLeaked);
        // A 400 without API_KEY_INVALID is the caller's request, not the key.
        let bad = json!({"error": {"code": 400, "message": "Invalid JSON payload", "status": "INVALID_ARGUMENT"}});
        assert_eq!(outcome(400, bad), Outcome::CallerError);
    }

    #[test]
    fn model_wide_failures_do_not_blame_the_key() {
        for status in [500, 503, 504] {
            let error = classify_error(status, &json!({"error": {"message": "overloaded"}}), "m");
            assert_eq!(error.outcome(), Outcome::UpstreamUnavailable);
            assert!(error.is_retryable());
        }
        assert_eq!(classify_error(404, &json!({}), "gemini-9").outcome(), Outcome::CallerError);
    }

    #[test]
    fn answers_without_content_are_errors() {
        assert_eq!(
            check_answer(&json!({"promptFeedback": {"blockReason": "SAFETY"}})),
            Err(GeminiError::PromptBlocked { reason: "SAFETY".into() })
        );
        assert_eq!(check_answer(&json!({"candidates": [{"finishReason": "SAFETY"}]})), Err(GeminiError::Safety));
        assert_eq!(check_answer(&json!({"candidates": []})), Err(GeminiError::Empty));
        assert_eq!(check_answer(&json!({"candidates": [{"finishReason": "STOP", "content": {}}]})), Ok(()));
    }

    #[test]
    fn delays_parse_like_protobuf_durations() {
        assert_eq!(parse_delay("37s"), Some(Duration::from_secs(37)));
        assert_eq!(parse_delay("0.447s"), Some(Duration::from_millis(447)));
        assert_eq!(parse_delay("soon"), None);
        assert_eq!(parse_delay("-1s"), None);
    }
}
