//! `/api/strategies/tags/`: a user's labels for strategies (name,
//! description, colour). Names are unique per user.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest, ResourceId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use store::strategies::{TagFields, TagRow};
use store::StoreError;

const NAME_MAX_CHARS: usize = 50;
const DESCRIPTION_MAX_CHARS: usize = 1_000;
const DEFAULT_COLOR: &str = "#007bff";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/tags", get(list).post(create))
        .route("/api/strategies/tags/{id}", get(detail).put(replace).patch(update).delete(remove))
}

#[derive(Debug, Serialize)]
pub struct TagView {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub color: String,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<TagRow> for TagView {
    fn from(row: TagRow) -> Self {
        Self { id: row.id, name: row.name, description: row.description, color: row.color, created_at: row.created_at }
    }
}

#[derive(Debug, Deserialize)]
pub struct TagChanges {
    name: Option<String>,
    description: Option<String>,
    color: Option<String>,
}

impl TagChanges {
    fn apply(self, fields: &mut TagFields) {
        if let Some(name) = self.name {
            fields.name = name.trim().to_string();
        }
        if let Some(description) = self.description {
            fields.description = description;
        }
        if let Some(color) = self.color {
            fields.color = color.trim().to_string();
        }
    }
}

fn validate(fields: &TagFields) -> ApiResult<()> {
    let mut errors = FieldErrors::new();
    if fields.name.is_empty() {
        errors.add("name", "This field may not be blank.");
    }
    errors.check_length("name", &fields.name, NAME_MAX_CHARS);
    errors.check_length("description", &fields.description, DESCRIPTION_MAX_CHARS);
    let hex = fields.color.strip_prefix('#').unwrap_or_default();
    if hex.len() != 6 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        errors.add("color", "Enter a colour as #rrggbb.");
    }
    errors.into_result()
}

/// The insert or update itself detects a taken name.
fn name_taken(err: StoreError) -> ApiError {
    match err {
        StoreError::UniqueViolation => {
            ApiError::Validation(FieldErrors::single("name", "You already have a tag with this name."))
        }
        other => other.into(),
    }
}

async fn list(State(state): State<AppState>, user: AuthUser, page: PageRequest) -> ApiResult<Json<Page<TagView>>> {
    let (count, rows) = state.store.tags_page(user.user_id, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(TagView::from).collect())?))
}

async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(changes): ApiJson<TagChanges>,
) -> ApiResult<(StatusCode, Json<TagView>)> {
    if changes.name.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("name", "This field is required.")));
    }
    let mut fields = TagFields { name: String::new(), description: String::new(), color: DEFAULT_COLOR.into() };
    changes.apply(&mut fields);
    validate(&fields)?;
    let row = state.store.create_tag(user.user_id, &fields).await.map_err(name_taken)?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

async fn detail(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<Json<TagView>> {
    let row = state.store.tag(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

async fn change(state: &AppState, owner: i64, id: i64, changes: TagChanges, full: bool) -> ApiResult<Json<TagView>> {
    let current = state.store.tag(id, owner).await?.ok_or(ApiError::NotFound)?;
    if full && changes.name.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("name", "This field is required.")));
    }
    let mut fields = TagFields { name: current.name, description: current.description, color: current.color };
    changes.apply(&mut fields);
    validate(&fields)?;
    let row = state.store.update_tag(id, owner, &fields).await.map_err(name_taken)?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

async fn replace(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<TagChanges>,
) -> ApiResult<Json<TagView>> {
    change(&state, user.user_id, id, changes, true).await
}

async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<TagChanges>,
) -> ApiResult<Json<TagView>> {
    change(&state, user.user_id, id, changes, false).await
}

async fn remove(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<StatusCode> {
    if state.store.delete_tag(id, user.user_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
