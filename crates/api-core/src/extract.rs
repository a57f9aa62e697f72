//! Extractors whose rejections are [`ApiError`]s, so a malformed request is
//! answered in the same JSON shape as every other error.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, FieldErrors};

/// A JSON body. Syntax errors are a 400 with details, a missing or wrong
/// content type a 415, an oversized body a 413, and a body of the wrong
/// shape a DRF-style field error naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<Value>::from_request(req, state).await.map_err(json_rejection_to_error)?;
        from_json_value(value).map(ApiJson)
    }
}

/// Deserialises `value` into `T`, reporting the first bad field by name.
pub fn from_json_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::Validation(FieldErrors::single(
            "non_field_errors",
            "Invalid data. Expected a JSON object.",
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let inner = err.inner().to_string();
        let path = err.path().to_string();
        let (field, message) = match missing_field_name(&inner) {
            Some(missing) if path == "." => (missing.to_string(), "This field is required.".to_string()),
            Some(missing) => (format!("{path}.{missing}"), "This field is required.".to_string()),
            None => (top_level_field(&path), inner),
        };
        ApiError::Validation(FieldErrors::single(field, message))
    })
}

fn missing_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

fn top_level_field(path: &str) -> String {
    let first = path.split(['.', '[']).next().unwrap_or_default();
    if first.is_empty() || first == "?" {
        "non_field_errors".to_string()
    } else {
        first.to_string()
    }
}

fn json_rejection_to_error(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonSyntaxError(err) => ApiError::bad_request_with_details("Malformed JSON", err.body_text()),
        JsonRejection::JsonDataError(err) => ApiError::bad_request_with_details("Invalid JSON", err.body_text()),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        other => ApiError::bad_request_with_details("Could not read the request body", other.body_text()),
    }
}

/// An integer resource id from the path. Anything that is not one cannot
/// name a resource, so it is a 404 like any other unknown id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for ResourceId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await.map_err(|_| ApiError::NotFound)?;
        raw.parse().map(ResourceId).map_err(|_| ApiError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Login {
        username: String,
        password: String,
        symbols: Option<Vec<String>>,
    }

    fn field_error(result: Result<Login, ApiError>) -> FieldErrors {
        match result {
            Err(ApiError::Validation(fields)) => fields,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_field_is_named() {
        let errors = field_error(from_json_value(json!({"username": "a"})));
        assert_eq!(errors, FieldErrors::single("password", "This field is required."));
    }

    #[test]
    fn a_wrong_type_names_the_top_level_field() {
        let errors = field_error(from_json_value(json!({"username": "a", "password": "b", "symbols": ["x", 3]})));
        let rendered = format!("{errors:?}");
        assert!(rendered.contains("\"symbols\""), "{rendered}");
    }

    #[test]
    fn a_non_object_body_is_refused() {
        let errors = field_error(from_json_value(json!([1, 2])));
        assert!(format!("{errors:?}").contains("non_field_errors"));
    }
}

/// A request field that must never reach a log: a password, a token. It
/// reads from JSON as the plain value and prints as `[redacted]`, so a
/// request type can derive `Debug` safely.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Redacted<T>(pub T);

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod redacted_tests {
    use super::Redacted;

    #[derive(Debug, serde::Deserialize)]
    struct Login {
        username: String,
        password: Redacted<String>,
    }

    #[test]
    fn a_redacted_field_reads_plainly_and_never_prints() {
        let login: Login = serde_json::from_str(r#"{"username": "ada", "password": "quartz-Lantern-88"}"#).unwrap();
        assert_eq!((login.username.as_str(), login.password.0.as_str()), ("ada", "quartz-Lantern-88"));
        let printed = format!("{login:?}");
        assert!(printed.contains("ada") && !printed.contains("quartz"), "{printed}");
    }
}
