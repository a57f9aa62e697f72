//! The resources: strategies, tags, templates, comments, and the read-only
//! validation runs and backtest results.

pub mod comments;
pub mod results;
pub mod runs;
pub mod strategies;
pub mod tags;
pub mod templates;

use api_core::AppState;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(strategies::routes())
        .merge(tags::routes())
        .merge(templates::routes())
        .merge(comments::routes())
        .merge(runs::routes())
        .merge(results::routes())
}
