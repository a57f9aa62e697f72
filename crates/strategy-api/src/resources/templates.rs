//! `/api/strategies/templates/`: starting points for strategies. System
//! templates are readable by everyone and writable by administrators; a
//! user's own templates are theirs alone. Names are unique.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest, ResourceId};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::strategies::{TemplateFields, TemplateRow};
use store::StoreError;

const NAME_MAX_CHARS: usize = 200;
const CATEGORY_MAX_CHARS: usize = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/templates", get(list).post(create))
        .route("/api/strategies/templates/{id}", get(detail).put(replace).patch(update).delete(remove))
        .route("/api/strategies/templates/{id}/sync_from_strategy", post(sync_from_strategy))
        .route("/api/strategies/templates/{id}/get_context", get(get_context))
}

#[derive(Debug, Serialize)]
pub struct TemplateView {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub category: String,
    pub template_code: String,
    pub parameters_schema: Value,
    pub is_active: bool,
    pub linked_strategy: Option<i64>,
    pub is_system_template: bool,
    pub latest_strategy_code: String,
    pub latest_parameters: Value,
    pub chat_history: Value,
    pub created_by: Option<i64>,
    pub created_by_username: Option<String>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<TemplateRow> for TemplateView {
    fn from(row: TemplateRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            description: row.description,
            category: row.category,
            template_code: row.template_code,
            parameters_schema: row.parameters_schema.0,
            is_active: row.is_active,
            linked_strategy: row.linked_strategy_id,
            is_system_template: row.is_system_template,
            latest_strategy_code: row.latest_strategy_code,
            latest_parameters: row.latest_parameters.0,
            chat_history: row.chat_history.0,
            created_by: row.user_id,
            created_by_username: row.created_by_username,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct TemplateChanges {
    name: Option<String>,
    description: Option<String>,
    category: Option<String>,
    template_code: Option<String>,
    parameters_schema: Option<Value>,
    is_active: Option<bool>,
    is_system_template: Option<bool>,
}

impl TemplateChanges {
    fn apply(self, fields: &mut TemplateFields) {
        if let Some(value) = self.name {
            fields.name = value.trim().to_string();
        }
        if let Some(value) = self.description {
            fields.description = value;
        }
        if let Some(value) = self.category {
            fields.category = value.trim().to_string();
        }
        if let Some(value) = self.template_code {
            fields.template_code = value;
        }
        if let Some(value) = self.parameters_schema {
            fields.parameters_schema = value;
        }
        if let Some(value) = self.is_active {
            fields.is_active = value;
        }
        if let Some(value) = self.is_system_template {
            fields.is_system_template = value;
        }
    }
}

fn check(fields: &TemplateFields) -> ApiResult<()> {
    let mut errors = FieldErrors::new();
    if fields.name.is_empty() {
        errors.add("name", "This field may not be blank.");
    }
    errors.check_length("name", &fields.name, NAME_MAX_CHARS);
    errors.check_length("category", &fields.category, CATEGORY_MAX_CHARS);
    errors.check_bytes("template_code", &fields.template_code, crate::python_checks::MAX_CODE_BYTES);
    if !fields.parameters_schema.is_object() {
        errors.add("parameters_schema", "Expected a JSON object.");
    }
    errors.into_result()
}

fn name_taken(err: StoreError) -> ApiError {
    match err {
        StoreError::UniqueViolation => {
            ApiError::Validation(FieldErrors::single("name", "A template with this name already exists."))
        }
        other => other.into(),
    }
}

async fn is_admin(state: &AppState, user: AuthUser) -> ApiResult<bool> {
    user.is_admin(state).await
}

/// A template the caller may change: their own, or any system one for an
/// administrator. A visible one they may not change is a 403; an invisible
/// one a 404.
async fn writable(state: &AppState, user: AuthUser, id: i64) -> ApiResult<TemplateRow> {
    let row = state.store.template(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    let own = row.user_id == Some(user.user_id) && !row.is_system_template;
    if own || is_admin(state, user).await? {
        Ok(row)
    } else {
        Err(ApiError::Forbidden)
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    category: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<ListQuery>,
    page: PageRequest,
) -> ApiResult<Json<Page<TemplateView>>> {
    let category = query.category.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
    let (count, rows) =
        state.store.templates_page(user.user_id, category.as_deref(), page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(TemplateView::from).collect())?))
}

async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(changes): ApiJson<TemplateChanges>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    if changes.name.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("name", "This field is required.")));
    }
    let mut fields = TemplateFields {
        name: String::new(),
        description: String::new(),
        category: String::new(),
        template_code: String::new(),
        parameters_schema: json!({}),
        is_active: true,
        is_system_template: false,
    };
    changes.apply(&mut fields);
    check(&fields)?;
    if fields.is_system_template && !is_admin(&state, user).await? {
        return Err(ApiError::Forbidden);
    }
    let row = state.store.create_template(user.user_id, &fields).await.map_err(name_taken)?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

async fn detail(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<TemplateView>> {
    let row = state.store.template(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

async fn change(
    state: &AppState,
    user: AuthUser,
    id: i64,
    changes: TemplateChanges,
    full: bool,
) -> ApiResult<Json<TemplateView>> {
    let current = writable(state, user, id).await?;
    if full && changes.name.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("name", "This field is required.")));
    }
    let mut fields = TemplateFields::from(&current);
    changes.apply(&mut fields);
    check(&fields)?;
    if fields.is_system_template && !current.is_system_template && !is_admin(state, user).await? {
        return Err(ApiError::Forbidden);
    }
    state.store.update_template(id, &fields).await.map_err(name_taken)?;
    let row = state.store.template(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

async fn replace(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<TemplateChanges>,
) -> ApiResult<Json<TemplateView>> {
    change(&state, user, id, changes, true).await
}

async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<TemplateChanges>,
) -> ApiResult<Json<TemplateView>> {
    change(&state, user, id, changes, false).await
}

async fn remove(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<StatusCode> {
    writable(&state, user, id).await?;
    if state.store.delete_template(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

#[derive(Debug, Deserialize)]
pub struct SyncRequest {
    strategy_id: Option<i64>,
}

/// Copies a strategy's current code and parameters into the template and
/// links them; the strategy defaults to the one already linked.
async fn sync_from_strategy(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(request): ApiJson<SyncRequest>,
) -> ApiResult<Json<Value>> {
    let template = writable(&state, user, id).await?;
    let Some(strategy_id) = request.strategy_id.or(template.linked_strategy_id) else {
        return Err(ApiError::Validation(FieldErrors::single(
            "strategy_id",
            "This template has no linked strategy; name one.",
        )));
    };
    let strategy = state.store.strategy(strategy_id, user.user_id).await?.ok_or_else(|| {
        ApiError::Validation(FieldErrors::single(
            "strategy_id",
            format!("Invalid pk \"{strategy_id}\" - object does not exist."),
        ))
    })?;
    state.store.sync_template(id, &strategy).await?;
    let row = state.store.template(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(json!({ "message": "Template synced from strategy", "template": TemplateView::from(row) })))
}

/// What a chat or generation needs to continue from this template.
async fn get_context(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<Value>> {
    let row = state.store.template(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    let linked = match row.linked_strategy_id {
        Some(strategy) => state
            .store
            .strategy(strategy, user.user_id)
            .await?
            .map(|s| json!({ "id": s.id, "name": s.name, "status": s.status, "version": s.version })),
        None => None,
    };
    Ok(Json(json!({
        "template_id": row.id,
        "name": row.name,
        "category": row.category,
        "template_code": row.template_code,
        "parameters_schema": row.parameters_schema.0,
        "latest_strategy_code": row.latest_strategy_code,
        "latest_parameters": row.latest_parameters.0,
        "chat_history": row.chat_history.0,
        "linked_strategy": linked,
    })))
}
