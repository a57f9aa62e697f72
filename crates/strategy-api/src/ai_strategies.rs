//! `POST /api/strategies/api/create_strategy_with_ai/` and
//! `PUT|PATCH /api/strategies/api/{id}/update_strategy_with_ai/`: validate a
//! text, then keep its canonical JSON as a strategy.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, ResourceId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use store::generated::ValidationFields;
use store::strategies::StrategyFields;
use store::strategy_chat::StrategyChatRow;

use crate::resources::strategies::{check_fields, create_with_free_name, name_taken, new_fields, StrategyView};
use crate::validate::{run_validation, ValidateRequest, Validation};
use crate::validator::Analysis;

/// Names tried after the first: "name v2" … "name v50".
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/api/create_strategy_with_ai", post(create_with_ai))
        .route("/api/strategies/api/{id}/update_strategy_with_ai", put(update_with_ai).patch(update_with_ai))
}

#[derive(Debug, Deserialize)]
pub struct AiStrategyRequest {
    #[serde(flatten)]
    validation: ValidateRequest,
    name: Option<String>,
    description: Option<String>,
    tags: Option<Vec<String>>,
}

/// A failed validation is a 400 that carries the whole verdict.
fn validated(validation: Validation) -> ApiResult<(Value, Analysis, Validation)> {
    match validation.analysis.clone() {
        Some(analysis) => Ok((validation.body.clone(), analysis, validation)),
        None => {
            let mut body = validation.body;
            body["error"] = json!("Strategy validation failed");
            body["success"] = json!(false);
            Err(ApiError::Rejected(body))
        }
    }
}

/// What a validated text writes into a strategy.
fn apply_analysis(fields: &mut StrategyFields, body: &Value, analysis: &Analysis) {
    fields.strategy_code = body["canonical_json"].as_str().unwrap_or_default().to_string();
    fields.status = "valid".into();
    let mut parameters = fields.parameters.as_object().cloned().unwrap_or_default();
    parameters.insert("classification".into(), json!(analysis.classification));
    parameters.insert("risk_tier".into(), json!(analysis.risk_tier));
    parameters.insert("confidence".into(), json!(analysis.confidence));
    fields.parameters = Value::Object(parameters);
}

/// Keeps the validator's verdict as one of the strategy's validation runs.
async fn record_ai_validation(state: &AppState, user_id: i64, strategy_id: i64, body: &Value) -> ApiResult<()> {
    let passed = body["status"] == "success";
    let errors =
        if passed { json!([]) } else { body.get("issues").cloned().unwrap_or_else(|| json!([body["message"]])) };
    let fields = ValidationFields {
        strategy_id,
        validation_type: "ai_validation",
        status: if passed { "passed" } else { "failed" }.into(),
        errors,
        warnings: body.get("warnings").cloned().unwrap_or_else(|| json!([])),
        details: json!({
            "validator_status": body["status"],
            "classification": body.get("classification"),
            "confidence": body.get("confidence"),
            "risk_tier": body.pointer("/classification_detail/risk_tier"),
            "session_id": body.get("session_id"),
        }),
    };
    state.store.record_validation(user_id, &fields).await?;
    Ok(())
}

/// The answer: the strategy, the whole validation, and the session.
fn response(row: store::strategies::StrategyRow, ai_validation: &Value, session: &StrategyChatRow) -> Value {
    let message_count = ai_validation["message_count"].clone();
    json!({
        "success": true,
        "strategy": StrategyView::from(row),
        "ai_validation": ai_validation,
        "session_id": session.session_id,
        "message_count": message_count,
    })
}

async fn create_with_ai(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<AiStrategyRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let task_state = state.clone();
    let work = async move { create(task_state, user, request).await };
    let body = api_core::run_detached(&state, None, work).await?;
    Ok((StatusCode::CREATED, Json(body)))
}

async fn create(state: AppState, user: AuthUser, request: AiStrategyRequest) -> ApiResult<Value> {
    let validation = run_validation(&state, user.user_id, request.validation).await?;
    let (body, analysis, validation) = validated(validation)?;
    let mut fields = new_fields();
    fields.name =
        request.name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).unwrap_or(validation.title.clone());
    fields.description = request.description.unwrap_or_default();
    if let Some(tags) = request.tags {
        fields.tags = tags.into_iter().map(|t| t.trim().to_string()).collect();
    }
    apply_analysis(&mut fields, &body, &analysis);
    check_fields(&state, user.user_id, &fields).await?;
    let row = create_with_free_name(&state, user.user_id, fields).await?;
    record_ai_validation(&state, user.user_id, row.id, &body).await?;
    state.store.link_strategy_chat(validation.session.id, row.id).await?;
    let row = state.store.strategy(row.id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(response(row, &body, &validation.session))
}

async fn update_with_ai(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(request): ApiJson<AiStrategyRequest>,
) -> ApiResult<Json<Value>> {
    let task_state = state.clone();
    let work = async move { update(task_state, user, id, request).await };
    Ok(Json(api_core::run_detached(&state, None, work).await?))
}

async fn update(state: AppState, user: AuthUser, id: i64, request: AiStrategyRequest) -> ApiResult<Value> {
    let current = state.store.strategy(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    let validation = run_validation(&state, user.user_id, request.validation).await?;
    if validation.analysis.is_none() {
        // A failed re-validation is still a run over this strategy.
        record_ai_validation(&state, user.user_id, id, &validation.body).await?;
    }
    let (body, analysis, validation) = validated(validation)?;
    let mut fields = StrategyFields::from(&current);
    if let Some(name) = request.name {
        fields.name = name.trim().to_string();
    }
    if let Some(description) = request.description {
        fields.description = description;
    }
    if let Some(tags) = request.tags {
        fields.tags = tags.into_iter().map(|t| t.trim().to_string()).collect();
    }
    apply_analysis(&mut fields, &body, &analysis);
    if fields.name.is_empty() {
        return Err(ApiError::Validation(FieldErrors::single("name", "This field may not be blank.")));
    }
    check_fields(&state, user.user_id, &fields).await?;
    state.store.update_strategy(id, user.user_id, &fields).await.map_err(name_taken)?.ok_or(ApiError::NotFound)?;
    record_ai_validation(&state, user.user_id, id, &body).await?;
    state.store.link_strategy_chat(validation.session.id, id).await?;
    let row = state.store.strategy(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(response(row, &body, &validation.session))
}
