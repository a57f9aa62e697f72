//! The resources: strategies, tags and templates.

pub mod strategies;
pub mod tags;
pub mod templates;

use api_core::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new().merge(strategies::routes()).merge(tags::routes()).merge(templates::routes())
}
