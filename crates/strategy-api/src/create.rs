//! `POST /api/strategies/api/create_strategy/`, as the old app meant it:
//! the strategy, a template made for it (linked both ways), and a
//! validation in the background, as a backtest job: the strategy is
//! `validating` until the run ends `valid` or `invalid`, with a
//! validation record.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use store::generated::ValidationFields;
use store::strategies::{StrategyRow, TemplateFields};
use store::StoreError;

use crate::python_checks;
use crate::resources::strategies::{check_fields, name_taken, new_fields, StrategyView};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/strategies/api/create_strategy", post(create_strategy))
}

/// Names tried for the template before giving up ("Template: x (50)").
const MAX_TEMPLATE_VARIANTS: u32 = 50;

#[derive(Debug, Deserialize)]
struct CreateStrategyRequest {
    name: Option<String>,
    #[serde(default)]
    description: String,
    template_id: Option<i64>,
    strategy_code: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    timeframe: String,
    #[serde(default)]
    risk_level: String,
    expected_return: Option<f64>,
    max_drawdown: Option<f64>,
    #[serde(default)]
    skip_template_creation: bool,
}

async fn create_strategy(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<CreateStrategyRequest>,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::new();
    let name = request.name.as_deref().map(str::trim).unwrap_or_default().to_string();
    if name.is_empty() {
        errors.add("name", "This field is required.");
    }
    let code = request.strategy_code.clone().unwrap_or_default();
    if code.trim().is_empty() {
        errors.add("strategy_code", "This field is required.");
    }
    errors.into_result()?;
    if let Some(template_id) = request.template_id {
        if state.store.template(template_id, user.user_id).await?.is_none() {
            return Ok((StatusCode::NOT_FOUND, Json(json!({ "error": "Template not found" }))).into_response());
        }
    }
    let mut fields = new_fields();
    fields.name = name;
    fields.description = request.description.trim().to_string();
    fields.template_id = request.template_id;
    fields.strategy_code = code;
    fields.parameters = request.parameters.clone().unwrap_or_else(|| json!({}));
    fields.status = "validating".into();
    fields.tags = request.tags.iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    fields.timeframe = request.timeframe.trim().to_string();
    fields.risk_level = request.risk_level.trim().to_string();
    fields.expected_return = request.expected_return;
    fields.max_drawdown = request.max_drawdown;
    check_fields(&state, user.user_id, &fields).await?;
    let strategy = state.store.create_strategy(user.user_id, &fields).await.map_err(name_taken)?;

    let mut body = json!({});
    if request.template_id.is_none() && !request.skip_template_creation {
        let template = template_for(&state, user.user_id, &strategy).await?;
        fields.template_id = Some(template.0);
        state.store.update_strategy(strategy.id, user.user_id, &fields).await?;
        body["auto_created_template"] = json!({
            "id": template.0,
            "name": template.1,
            "message": format!("A template was created from this strategy: {}", template.1),
        });
    }
    let message = validate_in_background(&state, user.user_id, &strategy).await?;
    let strategy = state.store.strategy(strategy.id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    let mut view = serde_json::to_value(StrategyView::from(strategy)).unwrap_or_default();
    if let (Some(view), Some(extra)) = (view.as_object_mut(), body.as_object()) {
        view.extend(extra.clone());
    }
    view["validation_message"] = json!(message);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `Template: <name>`, numbered when taken (template names are unique
/// across users), linked to the strategy: its id and name.
async fn template_for(state: &AppState, owner: i64, strategy: &StrategyRow) -> ApiResult<(i64, String)> {
    let base = format!("Template: {}", strategy.name);
    let category = strategy.tags.0.first().cloned().unwrap_or_else(|| "custom".into());
    for attempt in 1..=MAX_TEMPLATE_VARIANTS {
        let name = if attempt == 1 { base.clone() } else { format!("{base} ({attempt})") };
        let fields = TemplateFields {
            name: name.clone(),
            description: strategy.description.clone(),
            category: category.clone(),
            template_code: strategy.strategy_code.clone(),
            parameters_schema: json!({}),
            is_active: true,
            is_system_template: false,
        };
        match state.store.create_template(owner, &fields).await {
            Ok(template) => {
                state.store.sync_template(template.id, strategy).await?;
                return Ok((template.id, name));
            }
            Err(StoreError::UniqueViolation) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::Validation(FieldErrors::single("name", "Every template name for this strategy is taken.")))
}

/// Starts the validation and says what happens next. Code that fails its
/// static checks (or is not runnable) is `invalid` at once; otherwise a
/// backtest job decides, when one can run; without one, the static checks do.
async fn validate_in_background(state: &AppState, owner: i64, strategy: &StrategyRow) -> ApiResult<String> {
    let code = strategy_schema::runnable_python("strategy_code", &strategy.strategy_code)
        .map_err(|reason| format!("strategy_code cannot run: {reason}"));
    let report = match &code {
        Ok(code) => Some(python_checks::check(code).await),
        Err(_) => None,
    };
    let static_errors: Vec<String> = match (&code, &report) {
        (Err(reason), _) => vec![reason.clone()],
        (Ok(_), Some(report)) => report.problems.iter().map(|p| p.message.clone()).collect(),
        (Ok(_), None) => vec![],
    };
    let accepting = match backtests::accepting(state).await {
        Ok(()) => Ok(()),
        Err(ApiError::Unavailable(reason)) => Err(reason),
        Err(err) => return Err(err),
    };
    if let (true, Ok(code), Ok(())) = (static_errors.is_empty(), &code, &accepting) {
        let config = json!({ "symbol": "GOOG", "period": "1y" });
        let mut run = backtests::prepare_test_run(state, owner, &config).await?;
        run.parameters["purpose"] = json!(backtests::worker::VALIDATES_STRATEGY);
        let queued = backtests::submit(state, owner, Some(strategy.id), code, &run).await?;
        tracing::info!(strategy = strategy.id, run = queued.id, "strategy validation queued");
        return Ok(format!(
            "Strategy is being validated in the background (backtest {} on GOOG over a year). Check status before \
             backtesting.",
            queued.run_id
        ));
    }
    let passed = static_errors.is_empty();
    let warnings: Vec<String> =
        accepting.as_ref().err().map(|reason| format!("Not run: {reason}.")).into_iter().collect();
    let fields = ValidationFields {
        strategy_id: strategy.id,
        validation_type: "static_checks",
        status: if passed { "passed" } else { "failed" }.into(),
        errors: json!(static_errors),
        warnings: json!(warnings),
        details: json!({ "executed": false, "source": "create_strategy" }),
    };
    state.store.record_validation(owner, &fields).await?;
    let status = if passed { "valid" } else { "invalid" };
    state.store.set_strategy_status(strategy.id, owner, status).await?;
    Ok(match (passed, accepting) {
        (false, _) => format!("Strategy is invalid: {}", static_errors.join("; ")),
        (true, Err(reason)) => format!("Strategy passed its static checks; it was not run: {reason}."),
        (true, Ok(())) => "Strategy passed its static checks.".into(),
    })
}
