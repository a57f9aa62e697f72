//! Google's error bodies, as the Generative Language API sends them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

pub struct GoogleError {
    pub status: StatusCode,
    pub body: Value,
}

impl IntoResponse for GoogleError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

fn error(code: u16, status: &str, message: &str, details: Vec<Value>) -> GoogleError {
    let mut error = json!({ "code": code, "message": message, "status": status });
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    GoogleError {
        status: StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body: json!({ "error": error }),
    }
}

fn error_info(reason: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": { "service": "generativelanguage.googleapis.com" }
    })
}

/// `RetryInfo.retryDelay` is a protobuf Duration in JSON: "37s", "0.447s".
pub fn format_delay(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let text = format!("{:.3}", ms as f64 / 1000.0);
        format!("{}s", text.trim_end_matches('0'))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    PerMinute,
    PerDay,
    InputTokensPerMinute,
}

pub fn quota_exceeded(kind: QuotaKind, model: &str, limit: u64, retry_ms: Option<u64>) -> GoogleError {
    let (quota_id, metric) = match kind {
        QuotaKind::PerMinute => {
            ("GenerateRequestsPerMinutePerProjectPerModel-FreeTier", "generate_content_free_tier_requests")
        }
        QuotaKind::PerDay => {
            ("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "generate_content_free_tier_requests")
        }
        QuotaKind::InputTokensPerMinute => {
            ("GenerateContentInputTokensPerModelPerMinute-FreeTier", "generate_content_free_tier_input_token_count")
        }
    };
    let message = format!(
        "You exceeded your current quota, please check your plan and billing details. \
         For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n\
         * Quota exceeded for metric: generativelanguage.googleapis.com/{metric}, limit: {limit}, model: {model}"
    );
    let mut details = vec![
        json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{
                "quotaMetric": format!("generativelanguage.googleapis.com/{metric}"),
                "quotaId": quota_id,
                "quotaDimensions": { "location": "global", "model": model },
                "quotaValue": limit.to_string()
            }]
        }),
        json!({
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{ "description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits" }]
        }),
    ];
    if let Some(ms) = retry_ms {
        details.push(json!({ "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format_delay(ms) }));
    }
    error(429, "RESOURCE_EXHAUSTED", &message, details)
}

/// A 429 without any details, as Google sometimes sends.
pub fn bare_rate_limit() -> GoogleError {
    error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", vec![])
}

pub fn invalid_key() -> GoogleError {
    let message = "API key not valid. Please pass a valid API key.";
    error(
        400,
        "INVALID_ARGUMENT",
        message,
        vec![
            error_info("API_KEY_INVALID"),
            json!({ "@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message }),
        ],
    )
}

pub fn leaked_key() -> GoogleError {
    error(403, "PERMISSION_DENIED", "Your API key was reported as leaked. Please use another API key.", vec![])
}

pub fn blocked_key() -> GoogleError {
    error(
        403,
        "PERMISSION_DENIED",
        "Requests to this API generativelanguage.googleapis.com method google.ai.generativelanguage.v1beta.GenerativeService.GenerateContent are blocked.",
        vec![error_info("API_KEY_SERVICE_BLOCKED")],
    )
}

pub fn service_disabled(project: &str) -> GoogleError {
    error(
        403,
        "PERMISSION_DENIED",
        &format!(
            "Generative Language API has not been used in project {project} before or it is disabled. \
             Enable it by visiting the API console, then retry."
        ),
        vec![error_info("SERVICE_DISABLED")],
    )
}

pub fn missing_key() -> GoogleError {
    error(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
        vec![],
    )
}

pub fn model_not_found(model: &str, version: &str) -> GoogleError {
    error(
        404,
        "NOT_FOUND",
        &format!(
            "models/{model} is not found for API version {version}, or is not supported for generateContent. \
             Call ListModels to see the list of available models and their supported methods."
        ),
        vec![],
    )
}

pub fn bad_request(message: &str) -> GoogleError {
    error(400, "INVALID_ARGUMENT", message, vec![])
}

pub fn overloaded() -> GoogleError {
    error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", vec![])
}

pub fn internal() -> GoogleError {
    error(500, "INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting", vec![])
}

pub fn deadline_exceeded() -> GoogleError {
    error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.", vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_print_like_protobuf_durations() {
        assert_eq!(format_delay(37_000), "37s");
        assert_eq!(format_delay(447), "0.447s");
        assert_eq!(format_delay(1_500), "1.5s");
    }
}
