//! The resources: strategies, tags, templates and comments.

pub mod comments;
pub mod strategies;
pub mod tags;
pub mod templates;

use api_core::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new().merge(strategies::routes()).merge(tags::routes()).merge(templates::routes()).merge(comments::routes())
}
