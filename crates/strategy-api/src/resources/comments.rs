//! `/api/strategies/comments/`: notes on one's own strategies, optionally
//! rated 1–5 and threaded under another comment on the same strategy.

use api_core::{ApiError, ApiJson, ApiResult, AppState, AuthUser, FieldErrors, Page, PageRequest, ResourceId};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use store::strategies::{CommentFields, CommentRow};

use api_core::Patch;

const CONTENT_MAX_CHARS: usize = 5_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/strategies/comments", get(list).post(create))
        .route("/api/strategies/comments/{id}", get(detail).put(replace).patch(update).delete(remove))
}

#[derive(Debug, Serialize)]
pub struct CommentView {
    pub id: i64,
    pub strategy: i64,
    pub parent: Option<i64>,
    pub content: String,
    pub rating: Option<i32>,
    pub user: i64,
    pub username: String,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[serde(serialize_with = "api_core::time::serialize")]
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<CommentRow> for CommentView {
    fn from(row: CommentRow) -> Self {
        Self {
            id: row.id,
            strategy: row.strategy_id,
            parent: row.parent_id,
            content: row.content,
            rating: row.rating,
            user: row.user_id,
            username: row.username,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CommentChanges {
    strategy: Option<i64>,
    #[serde(default)]
    parent: Patch<i64>,
    content: Option<String>,
    #[serde(default)]
    rating: Patch<i32>,
}

impl CommentChanges {
    fn apply(self, fields: &mut CommentFields) {
        if let Some(strategy) = self.strategy {
            fields.strategy_id = strategy;
        }
        self.parent.apply_to(&mut fields.parent_id);
        if let Some(content) = self.content {
            fields.content = content.trim().to_string();
        }
        self.rating.apply_to(&mut fields.rating);
    }
}

async fn check(state: &AppState, owner: i64, fields: &CommentFields, id: Option<i64>) -> ApiResult<()> {
    let mut errors = FieldErrors::new();
    if fields.content.is_empty() {
        errors.add("content", "This field may not be blank.");
    }
    errors.check_length("content", &fields.content, CONTENT_MAX_CHARS);
    if fields.rating.is_some_and(|rating| !(1..=5).contains(&rating)) {
        errors.add("rating", "Ensure this value is between 1 and 5.");
    }
    if state.store.strategy(fields.strategy_id, owner).await?.is_none() {
        errors.add("strategy", format!("Invalid pk \"{}\" - object does not exist.", fields.strategy_id));
    }
    if let Some(parent) = fields.parent_id {
        match state.store.comment(parent, owner).await? {
            Some(row) if Some(row.id) == id => errors.add("parent", "A comment cannot be its own parent."),
            Some(row) if row.strategy_id != fields.strategy_id => {
                errors.add("parent", "The parent comment belongs to another strategy.");
            }
            Some(_) => {}
            None => errors.add("parent", format!("Invalid pk \"{parent}\" - object does not exist.")),
        }
    }
    errors.into_result()
}

async fn list(State(state): State<AppState>, user: AuthUser, page: PageRequest) -> ApiResult<Json<Page<CommentView>>> {
    let (count, rows) = state.store.comments_page(user.user_id, page.limit(), page.offset()).await?;
    Ok(Json(page.into_page(count, rows.into_iter().map(CommentView::from).collect())?))
}

async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(changes): ApiJson<CommentChanges>,
) -> ApiResult<(StatusCode, Json<CommentView>)> {
    let mut missing = FieldErrors::new();
    if changes.strategy.is_none() {
        missing.add("strategy", "This field is required.");
    }
    if changes.content.is_none() {
        missing.add("content", "This field is required.");
    }
    missing.into_result()?;
    let mut fields = CommentFields { strategy_id: 0, parent_id: None, content: String::new(), rating: None };
    changes.apply(&mut fields);
    check(&state, user.user_id, &fields, None).await?;
    let row = state.store.create_comment(user.user_id, &fields).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

async fn detail(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
) -> ApiResult<Json<CommentView>> {
    let row = state.store.comment(id, user.user_id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

async fn change(
    state: &AppState,
    owner: i64,
    id: i64,
    changes: CommentChanges,
    full: bool,
) -> ApiResult<Json<CommentView>> {
    let current = state.store.comment(id, owner).await?.ok_or(ApiError::NotFound)?;
    if full && changes.content.is_none() {
        return Err(ApiError::Validation(FieldErrors::single("content", "This field is required.")));
    }
    let mut fields = CommentFields {
        strategy_id: current.strategy_id,
        parent_id: current.parent_id,
        content: current.content,
        rating: current.rating,
    };
    changes.apply(&mut fields);
    check(state, owner, &fields, Some(id)).await?;
    let row = state.store.update_comment(id, owner, &fields).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

async fn replace(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<CommentChanges>,
) -> ApiResult<Json<CommentView>> {
    change(&state, user.user_id, id, changes, true).await
}

async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    ResourceId(id): ResourceId,
    ApiJson(changes): ApiJson<CommentChanges>,
) -> ApiResult<Json<CommentView>> {
    change(&state, user.user_id, id, changes, false).await
}

async fn remove(State(state): State<AppState>, user: AuthUser, ResourceId(id): ResourceId) -> ApiResult<StatusCode> {
    if state.store.delete_comment(id, user.user_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
