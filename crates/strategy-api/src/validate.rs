//! `POST /api/strategies/api/validate_strategy_with_ai/`: the rule-based
//! validator, recorded in a strategy chat session, with an optional
//! Gemini-formatted markdown summary.
//!
//! The rule-based result is the answer; Gemini only formats it. When the
//! formatting call fails (pool full, upstream fault), the result still
//! stands and says so in `warnings` and `metadata.formatting`.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use gemini_client::chat::parse_answer;
use gemini_client::{CallSpec, ChatRequest, ExecError, GenerationConfig, Message, Role};
use key_rotation::config::Workload;
use serde::Deserialize;
use serde_json::{json, Value};
use store::strategy_chat::StrategyChatRow;

use crate::canonical::{canonical_json, check, Schema};
use crate::validator::{self, Analysis, InputType, Verdict};

pub const STRATEGY_TEXT_MAX_CHARS: usize = 20_000;
const TITLE_CHARS: usize = 50;
/// Earlier messages of the session given to Gemini as context.
const CONTEXT_MESSAGES: usize = 4;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/strategies/api/validate_strategy_with_ai", post(validate_with_ai))
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub struct ValidateRequest {
    pub(crate) strategy_text: Option<String>,
    #[serde(default)]
    input_type: Option<String>,
    #[serde(default = "default_true")]
    use_gemini: bool,
    #[serde(default)]
    strict_mode: bool,
    session_id: Option<String>,
    #[serde(default = "default_true")]
    use_context: bool,
}

/// What `validate_strategy_with_ai` (and later `create_strategy_with_ai`)
/// produce: the body, and the analysis when the text validated.
pub struct Validation {
    pub body: Value,
    pub analysis: Option<Analysis>,
    pub session: StrategyChatRow,
    /// The text's title: the session's, the canonical JSON's, a new strategy's name.
    pub title: String,
}

fn input_type(value: Option<&str>) -> ApiResult<Option<InputType>> {
    match value.unwrap_or("auto") {
        "auto" => Ok(Some(InputType::Auto)),
        "numbered" => Ok(Some(InputType::Numbered)),
        "freetext" => Ok(Some(InputType::Freetext)),
        // A URL is something to fetch, never something to read as rules.
        "url" => Ok(None),
        other => {
            Err(ApiError::Validation(FieldErrors::single("input_type", format!("\"{other}\" is not a valid choice."))))
        }
    }
}

fn recommendations(analysis: &Analysis) -> Vec<Value> {
    let mut list = Vec::new();
    if !analysis.has_entry {
        list.push(json!({"title": "Define the entry", "description": "Say exactly when a position is opened.",
            "rationale": "Without an entry condition the strategy cannot be traded or backtested.",
            "priority": "high", "category": "entry", "test_params": {}}));
    }
    if !analysis.has_exit {
        list.push(json!({"title": "Define the exit", "description": "Say when a position is closed: a signal, a target or a time limit.",
            "rationale": "A strategy without exits holds every position indefinitely.",
            "priority": "high", "category": "exit", "test_params": {}}));
    }
    if !analysis.has_stop_loss {
        list.push(
            json!({"title": "Add a stop loss", "description": "Cap the loss of each trade, e.g. 2% below the entry.",
            "rationale": "A stop loss bounds the damage of a trade that goes wrong.",
            "priority": "high", "category": "risk", "test_params": {"stop_loss": [0.01, 0.02, 0.03]}}),
        );
    }
    if !analysis.has_sizing {
        list.push(
            json!({"title": "Size positions by risk", "description": "Risk a fixed fraction of equity per trade.",
            "rationale": "Sizing by risk keeps one trade from dominating the results.",
            "priority": "medium", "category": "risk", "test_params": {"risk_per_trade": [0.005, 0.01, 0.02]}}),
        );
    }
    if analysis.indicators.is_empty() {
        list.push(
            json!({"title": "Name the indicators", "description": "Name each indicator and its period, e.g. EMA(20).",
            "rationale": "Code generation needs exact indicators and periods.",
            "priority": "medium", "category": "specification", "test_params": {}}),
        );
    }
    list
}

fn title_of(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut title: String = flat.chars().take(TITLE_CHARS).collect();
    if flat.chars().count() > TITLE_CHARS {
        title.push('…');
    }
    title
}

/// The markdown summary, asked for as JSON through `responseSchema`.
async fn formatted_response(
    state: &AppState,
    user_id: i64,
    analysis: &Analysis,
    context: Vec<Message>,
) -> Result<String, String> {
    let mut messages = context;
    messages.push(Message {
        role: Role::User,
        text: format!(
            "Format this validated trading strategy as concise markdown for the trader: a title, the steps as a \
             numbered list, the strategy type ({}), the risk tier ({}), and what is missing.\n\nSteps:\n{}",
            analysis.classification,
            analysis.risk_tier,
            analysis.steps.iter().enumerate().map(|(i, s)| format!("{}. {s}", i + 1)).collect::<Vec<_>>().join("\n")
        ),
    });
    let request = ChatRequest {
        system: Some("You format trading strategies as clear markdown. Never invent rules that were not given.".into()),
        messages,
        config: GenerationConfig {
            response_mime_type: Some("application/json".into()),
            response_schema: Some(json!({
                "type": "OBJECT",
                "properties": { "formatted_response": { "type": "STRING" } },
                "required": ["formatted_response"],
            })),
            ..GenerationConfig::default()
        },
    };
    let spec = CallSpec::for_user(format!("user:{user_id}"), Workload::Light, request.to_body());
    let completed = state.gemini.generate(&spec).await.map_err(|err| {
        tracing::info!(error = %err, "formatting by Gemini failed");
        err.public_message().to_string()
    })?;
    let answer = parse_answer(&completed.body).map_err(|err| {
        tracing::info!(error = %err, "formatting by Gemini was refused");
        ExecError::Rejected(err).public_message().to_string()
    })?;
    let parsed: Value =
        serde_json::from_str(&answer.text).map_err(|_| "Gemini's answer was not the JSON asked for".to_string())?;
    parsed["formatted_response"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "Gemini's answer had no formatted_response".to_string())
}

/// Validates, records the exchange and builds the response body.
pub async fn run_validation(state: &AppState, user_id: i64, request: ValidateRequest) -> ApiResult<Validation> {
    let text = request.strategy_text.clone().unwrap_or_default();
    let mut errors = FieldErrors::new();
    if text.trim().is_empty() {
        errors.add("strategy_text", "This field is required.");
    }
    errors.check_length("strategy_text", &text, STRATEGY_TEXT_MAX_CHARS);
    errors.into_result()?;
    let input_type = input_type(request.input_type.as_deref())?;
    let title = title_of(&text);

    let session = match &request.session_id {
        Some(id) => state.store.strategy_chat(id, user_id).await?.ok_or(ApiError::NotFound)?,
        None => {
            let id = format!("chat_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
            state.store.create_strategy_chat(user_id, &id, &title, None).await?
        }
    };
    api_core::turn::check_room(state, session.message_count)?;
    let earlier = state.store.strategy_chat_messages_page(session.id, CONTEXT_MESSAGES as i64, None).await?;
    let context_used = request.use_context && !earlier.is_empty();
    let input_label = request.input_type.clone().unwrap_or_else(|| "auto".into());
    state
        .store
        .add_strategy_chat_message(
            session.id,
            "user",
            &text,
            &json!({ "kind": "strategy_text", "input_type": input_label }),
        )
        .await?;

    let verdict = match input_type {
        Some(kind) => validator::validate(&text, kind),
        None => Verdict::UrlFetchRequired { urls: validator::urls(&text) },
    };
    let provenance = json!({ "validator": "rule-based", "rules_version": "1.0", "input_type": input_label });
    let (mut body, analysis) = match verdict {
        Verdict::Success(analysis) if request.strict_mode && analysis.confidence == "low" => {
            let issues: Vec<String> =
                recommendations(&analysis).iter().filter_map(|r| r["title"].as_str().map(str::to_string)).collect();
            let body = json!({ "status": "error", "message": "Strict mode: the strategy is too incomplete to accept.",
                               "issues": issues });
            (body, None)
        }
        Verdict::Success(analysis) => {
            (success_body(state, user_id, &analysis, &title, &request, &earlier).await?, Some(analysis))
        }
        Verdict::Error { issue, message } => {
            (json!({ "status": "error", "message": message, "issues": [issue] }), None)
        }
        Verdict::ApprovalRequired { reason } => (json!({ "status": "approval_required", "message": reason }), None),
        Verdict::UrlFetchRequired { urls } => (
            json!({ "status": "url_fetch_required", "urls": urls,
                    "message": "The strategy is at an address; fetch it and send its text." }),
            None,
        ),
    };
    body["provenance"] = provenance;
    let summary =
        body["formatted_response"].as_str().or(body["message"].as_str()).unwrap_or("Strategy validated.").to_string();
    state.store.add_strategy_chat_message(session.id, "assistant", &summary, &body).await?;
    body["session_id"] = json!(session.session_id);
    body["message_count"] = json!(session.message_count + 2);
    body["context_used"] = json!(context_used);
    Ok(Validation { body, analysis, session, title })
}

async fn success_body(
    state: &AppState,
    user_id: i64,
    analysis: &Analysis,
    title: &str,
    request: &ValidateRequest,
    earlier: &[store::strategy_chat::StrategyChatMessageRow],
) -> ApiResult<Value> {
    let canonical = canonical_json(analysis, title);
    // Built by us from validated parts; a mismatch is our bug, reported as such.
    check(Schema::Canonical, "canonical_json", &canonical).map_err(|errors| {
        ApiError::internal(anyhow::anyhow!("the canonical strategy does not match its own schema: {errors:?}"))
    })?;
    let recommendations_list = recommendations(analysis);
    let recommendations =
        recommendations_list.iter().filter_map(|r| r["title"].as_str()).collect::<Vec<_>>().join("; ");
    let mut warnings: Vec<String> = Vec::new();
    if analysis.confidence == "low" {
        warnings.push("The strategy is incomplete; see the recommendations.".into());
    }
    let next_actions =
        if analysis.confidence == "high" { json!(["generate_code", "backtest"]) } else { json!(["refine_strategy"]) };
    let mut body = json!({
        "status": "success",
        "canonicalized_steps": analysis.steps,
        "classification": analysis.classification,
        "classification_detail": {
            "type": analysis.classification,
            "risk_tier": analysis.risk_tier,
            "primary_instruments": analysis.instruments,
        },
        "recommendations": recommendations,
        "recommendations_list": recommendations_list,
        "confidence": analysis.confidence,
        "next_actions": next_actions,
        "canonical_json": canonical.to_string(),
        "canonical_json_formatted": serde_json::to_string_pretty(&canonical).unwrap_or_default(),
        "metadata": {
            "step_count": analysis.steps.len(),
            "indicators": analysis.indicators,
            "has_stop_loss": analysis.has_stop_loss,
            "has_position_sizing": analysis.has_sizing,
        },
    });
    if request.use_gemini {
        let context: Vec<Message> = if request.use_context {
            earlier
                .iter()
                .rev()
                .take(CONTEXT_MESSAGES)
                .rev()
                .map(|m| Message {
                    role: if m.role == "assistant" { Role::Model } else { Role::User },
                    text: m.content.clone(),
                })
                .collect()
        } else {
            Vec::new()
        };
        match formatted_response(state, user_id, analysis, context).await {
            Ok(markdown) => {
                body["formatted_response"] = json!(markdown);
                body["metadata"]["formatting"] = json!({ "status": "ok" });
            }
            Err(error) => {
                tracing::info!(error = %error, "formatting by Gemini failed; the rule-based result stands");
                warnings.push(format!("The Gemini-formatted summary is unavailable: {error}"));
                body["metadata"]["formatting"] = json!({ "status": "failed", "error": error });
            }
        }
    } else {
        body["metadata"]["formatting"] = json!({ "status": "not_requested" });
    }
    body["warnings"] = json!(warnings);
    Ok(body)
}

async fn validate_with_ai(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<ValidateRequest>,
) -> ApiResult<Json<Value>> {
    let task_state = state.clone();
    let work = async move { Ok(run_validation(&task_state, user.user_id, request).await?.body) };
    Ok(Json(api_core::run_detached(&state, None, work).await?))
}
