//! The two canonical strategy forms: their JSON Schemas and checks, the
//! one normalisation of the executable form, and its translation to
//! backtesting.py code. Strategies (code generation) and backtests
//! (`quick_run`) both take canonical JSON, so it lives below both.

mod schema;
mod translate;

pub use schema::{
    check, check_definition, form_of, normalize_executable, with_definition_defaults, Schema, CANONICAL_SCHEMA,
    DEFINITION_SCHEMA, EXECUTABLE_SCHEMA,
};
pub use translate::{python_class_name, to_python};

/// Why a `strategy_code` cannot be run as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRunnable {
    InvalidJson(String),
    /// The validator's canonical JSON: steps in words, which only code
    /// generation turns into code.
    InWords,
    /// Executable JSON that fails its schema or cannot be translated.
    Invalid(api_core::FieldErrors),
}

impl std::fmt::Display for NotRunnable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidJson(err) => write!(f, "not valid JSON: {err}"),
            Self::InWords => f.write_str(
                "this canonical JSON describes its steps in words: generate its code with generate_executable_code, \
                 then run that",
            ),
            Self::Invalid(errors) => write!(f, "it cannot be translated to code: {errors}"),
        }
    }
}

impl From<NotRunnable> for api_core::ApiError {
    fn from(reason: NotRunnable) -> Self {
        match reason {
            NotRunnable::InvalidJson(detail) => {
                Self::Rejected(serde_json::json!({ "error": "Invalid JSON format", "detail": detail }))
            }
            NotRunnable::InWords => Self::bad_request(reason.to_string()),
            NotRunnable::Invalid(errors) => Self::Validation(errors),
        }
    }
}

/// Python the sandbox's runner can load, from a `strategy_code` (named
/// `field` in errors): Python as it is, or executable canonical JSON
/// translated locally ([`to_python`]), never by a Gemini call.
pub fn runnable_python(field: &str, code: &str) -> Result<String, NotRunnable> {
    let code = code.trim();
    if !code.starts_with('{') {
        return Ok(code.to_string());
    }
    let strategy: serde_json::Value =
        serde_json::from_str(code).map_err(|err| NotRunnable::InvalidJson(err.to_string()))?;
    if form_of(&strategy) == Schema::Canonical {
        return Err(NotRunnable::InWords);
    }
    check(Schema::Executable, field, &strategy).map_err(NotRunnable::Invalid)?;
    let strategy = normalize_executable(field, strategy).map_err(NotRunnable::Invalid)?;
    let name = strategy["strategy_name"].as_str().unwrap_or_default().to_string();
    to_python(field, &strategy, &name).map_err(NotRunnable::Invalid)
}
