//! `/api/strategies/strategies/`: a user's strategies, with the list filters
//! `status`, `tags` and `search`, newest first. `(name, version)` is unique
//! per user, enforced by the write itself.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest, Patch, ResourceId};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::strategies::{StrategyFields, StrategyFilter, StrategyRow};
use store::StoreError;

/// `executed` and `failed` are what `execute/` (and `generate_with_ai/`
/// with a run) leave, as in the old app.
pub const STATUSES: [&str; 10] =
    ["draft", "validating", "valid", "invalid", "testing", "active", "inactive", "archived", "executed", "failed"];
pub const RISK_LEVELS: [&str; 3] = ["low", "medium", "high"];
const NAME_MAX_CHARS: usize = 200;
const VERSION_MAX_CHARS: usize = 20;
const TIMEFRAME_MAX_CHARS: usize = 20;
const TAG_MAX_CHARS: usize = 50;
const MAX_TAGS: usize = 20;
pub const DEFAULT_VERSION: &str = "1.0.0";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/api/search", axum::routing::post(search))
        .route("/api/strategies/strategies", get(list).post(create))
        .route("/api/strategies/strategies/{id}", get(detail).put(replace).patch(update).delete(remove))
}

/// One shape for list and detail: the list view's extras (`template_name`,
/// `created_by_username`, `validation_status`, `latest_performance`) cost
/// nothing to include everywhere.
#[derive(Debug, Serialize)]
pub struct StrategyView {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub template: Option<i64>,
    pub template_name: Option<String>,
    pub strategy_code: String,
    pub parameters: Value,
    pub status: String,
    pub version: String,
    pub tags: Vec<String>,
    pub timeframe: String,
    pub risk_level: String,
    pub expected_return: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub created_by: i64,
    pub created_by_username: String,
    /// The newest validation run's status (`passed` or `failed`); null until one ran.
    pub validation_status: Option<String>,
    /// The newest backtest's headline figures; backtests come later.
    pub latest_performance: Option<Value>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub updated_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "api_core::time::serialize_opt")]
    pub last_validated: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<StrategyRow> for StrategyView {
    fn from(row: StrategyRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            description: row.description,
            template: row.template_id,
            template_name: row.template_name,
            strategy_code: row.strategy_code,
            parameters: row.parameters.0,
            status: row.status,
            version: row.version,
            tags: row.tags.0,
            timeframe: row.timeframe,
            risk_level: row.risk_level,
            expected_return: row.expected_return,
            max_drawdown: row.max_drawdown,
            created_by: row.user_id,
            created_by_username: row.created_by_username,
            validation_status: row.validation_status,
            latest_performance: row.performance_id.map(|id| {
                serde_json::json!({
                    "id": id,
                    "total_return": row.performance_total_return,
                    "sharpe_ratio": row.performance_sharpe_ratio,
                    "max_drawdown": row.performance_max_drawdown,
                    "win_rate": row.performance_win_rate,
                    "total_trades": row.performance_total_trades,
                    "created_at": row.performance_created_at.map(|at| api_core::time::iso8601(&at)),
                })
            }),
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_validated: row.last_validated,
        }
    }
}

/// The writable fields; read-only ones a client echoes back are ignored.
#[derive(Debug, Deserialize)]
pub struct StrategyChanges {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    template: Patch<i64>,
    strategy_code: Option<String>,
    parameters: Option<Value>,
    status: Option<String>,
    version: Option<String>,
    tags: Option<Vec<String>>,
    timeframe: Option<String>,
    risk_level: Option<String>,
    #[serde(default)]
    expected_return: Patch<f64>,
    #[serde(default)]
    max_drawdown: Patch<f64>,
}

impl StrategyChanges {
    fn apply(self, fields: &mut StrategyFields) {
        if let Some(value) = self.name {
            fields.name = value.trim().to_string();
        }
        if let Some(value) = self.description {
            fields.description = value;
        }
        self.template.apply_to(&mut fields.template_id);
        if let Some(value) = self.strategy_code {
            fields.strategy_code = value;
        }
        if let Some(value) = self.parameters {
            fields.parameters = value;
        }
        if let Some(value) = self.status {
            fields.status = value.trim().to_string();
        }
        if let Some(value) = self.version {
            fields.version = value.trim().to_string();
        }
        if let Some(tags) = self.tags {
            let mut kept: Vec<String> = Vec::new();
            for tag in tags.iter().map(|t| t.trim()) {
                if !kept.iter().any(|k| k == tag) {
                    kept.push(tag.to_string());
                }
            }
            fields.tags = kept;
        }
        if let Some(value) = self.timeframe {
            fields.timeframe = value.trim().to_string();
        }
        if let Some(value) = self.risk_level {
            fields.risk_level = value.trim().to_string();
        }
        self.expected_return.apply_to(&mut fields.expected_return);
        self.max_drawdown.apply_to(&mut fields.max_drawdown);
    }
}

pub fn new_fields() -> StrategyFields {
    StrategyFields {
        name: String::new(),
        description: String::new(),
        template_id: None,
        strategy_code: String::new(),
        parameters: Value::Object(Default::default()),
        status: "draft".into(),
        version: DEFAULT_VERSION.into(),
        tags: Vec::new(),
        timeframe: String::new(),
        risk_level: String::new(),
        expected_return: None,
        max_drawdown: None,
    }
}

pub(crate) async fn check_fields(state: &AppState, owner: i64, fields: &StrategyFields) -> ApiResult<()> {
    let mut errors = FieldErrors::new();
    if fields.name.is_empty() {
        errors.add("name", "This field may not be blank.");
    }
    errors.check_length("name", &fields.name, NAME_MAX_CHARS);
    if fields.version.is_empty() {
        errors.add("version", "This field may not be blank.");
    }
    errors.check_length("version", &fields.version, VERSION_MAX_CHARS);
    errors.check_length("timeframe", &fields.timeframe, TIMEFRAME_MAX_CHARS);
    errors.check_bytes("strategy_code", &fields.strategy_code, crate::python_checks::MAX_CODE_BYTES);
    if !STATUSES.contains(&fields.status.as_str()) {
        errors.add("status", format!("\"{}\" is not a valid choice.", fields.status));
    }
    if !fields.risk_level.is_empty() && !RISK_LEVELS.contains(&fields.risk_level.as_str()) {
        errors.add("risk_level", format!("\"{}\" is not a valid choice.", fields.risk_level));
    }
    if !fields.parameters.is_object() {
        errors.add("parameters", "Expected a JSON object.");
    }
    if fields.tags.len() > MAX_TAGS {
        errors.add("tags", format!("Ensure this field has no more than {MAX_TAGS} elements."));
    }
    if fields.tags.iter().any(String::is_empty) {
        errors.add("tags", "A tag may not be blank.");
    }
    if fields.tags.iter().any(|tag| tag.chars().count() > TAG_MAX_CHARS) {
        errors.add("tags", format!("Ensure each tag has no more than {TAG_MAX_CHARS} characters."));
    }
    for (field, value) in [("expected_return", fields.expected_return), ("max_drawdown", fields.max_drawdown)] {
        if value.is_some_and(|v| !v.is_finite()) {
            errors.add(field, "A valid number is required.");
        }
    }
    if let Some(template) = fields.template_id {
        if !state.store.template_visible(template, owner).await? {
            errors.add("template", format!("Invalid pk \"{template}\" - object does not exist."));
        }
    }
    errors.into_result()
}

/// The insert or update itself detects a taken `(name, version)`.
/// Names tried before a new strategy's name counts as taken.
const MAX_NAME_VARIANTS: u32 = 50;

/// Creates a strategy (its fields checked), its name made free as in the old
/// app: a taken name becomes "name v2", "name v3", …
pub(crate) async fn create_with_free_name(
    state: &AppState,
    owner: i64,
    mut fields: StrategyFields,
) -> ApiResult<StrategyRow> {
    let base = fields.name.clone();
    let mut attempt = 1;
    loop {
        match state.store.create_strategy(owner, &fields).await {
            Ok(row) => return Ok(row),
            Err(StoreError::UniqueViolation) if attempt < MAX_NAME_VARIANTS => {
                attempt += 1;
                fields.name = format!("{base} v{attempt}");
            }
            Err(err) => return Err(name_taken(err)),
        }
    }
}

pub(crate) fn name_taken(err: StoreError) -> ApiError {
    match err {
        StoreError::UniqueViolation => {
            ApiError::Validation(FieldErrors::single("name", "You already have a strategy with this name and version."))
        }
        other => other.into(),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    tags: Option<String>,
    search: Option<String>,
}

fn given(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<ListQuery>,
    page: PageRequest,
) -> ApiResult<Json<Page<StrategyView>>> {
    let filter = StrategyFilter {
        status: given(query.status),
        tags: given(query.tags).into_iter().collect(),
        search: given(query.search),
        ..StrategyFilter::default()
    };
    let (count, rows) = state.store.strategies_page(user.user_id, &filter, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(StrategyView::from).collect())?))
}

async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(changes): ApiJson<StrategyChanges>,
) -> ApiResult<(StatusCode, Json<StrategyView>)> {
    if changes.name.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("name", "This field is required.")));
    }
    let mut fields = new_fields();
    changes.apply(&mut fields);
    check_fields(&state, user.user_id, &fields).await?;
    let row = state.store.create_strategy(user.user_id, &fields).await.map_err(name_taken)?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

async fn detail(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<StrategyView>> {
    let row = state.store.strategy(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

async fn change(
    state: &AppState,
    owner: i64,
    id: i64,
    changes: StrategyChanges,
    full: bool,
) -> ApiResult<Json<StrategyView>> {
    let current = state.store.strategy(id, owner).await?.ok_or(ApiError::NotFound)?;
    if full && changes.name.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("name", "This field is required.")));
    }
    let mut fields = StrategyFields::from(&current);
    changes.apply(&mut fields);
    check_fields(state, owner, &fields).await?;
    let row = state.store.update_strategy(id, owner, &fields).await.map_err(name_taken)?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

async fn replace(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<StrategyChanges>,
) -> ApiResult<Json<StrategyView>> {
    change(&state, user.user_id, id, changes, true).await
}

async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<StrategyChanges>,
) -> ApiResult<Json<StrategyView>> {
    change(&state, user.user_id, id, changes, false).await
}

async fn remove(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<StatusCode> {
    if state.store.delete_strategy(id, user.user_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// Tags as a list, or as one comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TagQuery {
    List(Vec<String>),
    Text(String),
}

#[derive(Debug, Deserialize)]
pub struct SearchRequest {
    query: Option<String>,
    category: Option<String>,
    tags: Option<TagQuery>,
    status: Option<String>,
    risk_level: Option<String>,
    timeframe: Option<String>,
}

/// `POST /api/strategies/api/search/`: the caller's strategies matching
/// every given criterion, newest first; the first page of them and the total.
async fn search(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<SearchRequest>,
) -> ApiResult<Json<Value>> {
    let tags = match request.tags {
        None => Vec::new(),
        Some(TagQuery::List(tags)) => tags,
        Some(TagQuery::Text(text)) => text.split(',').map(str::to_string).collect(),
    };
    // Each tag is a clause of the query: the same cap as a strategy's own tags.
    if tags.len() > MAX_TAGS {
        return Err(ApiError::Validation(FieldErrors::single(
            "tags",
            format!("Ensure this field has no more than {MAX_TAGS} elements."),
        )));
    }
    let filter = StrategyFilter {
        status: given(request.status),
        tags: tags.into_iter().filter_map(|tag| given(Some(tag))).collect(),
        search: given(request.query),
        risk_level: given(request.risk_level),
        timeframe: given(request.timeframe),
        category: given(request.category),
    };
    let (count, rows) = state.store.strategies_page(user.user_id, &filter, api_core::PAGE_SIZE, 0).await?;
    let strategies: Vec<StrategyView> = rows.into_iter().map(StrategyView::from).collect();
    Ok(Json(serde_json::json!({ "strategies": strategies, "count": count })))
}
