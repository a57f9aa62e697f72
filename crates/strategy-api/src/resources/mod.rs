//! The owner-scoped resources: strategies and tags.

pub mod strategies;
pub mod tags;

use api_core::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new().merge(strategies::routes()).merge(tags::routes())
}
