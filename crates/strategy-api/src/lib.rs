//! `/api/strategies/`: what REST clients use to keep, validate and generate
//! trading strategies. Every route is authenticated and owner-scoped.

pub mod actions;
pub mod ai_strategies;
pub mod bots;
pub mod canonical;
pub mod catalog;
pub mod chat;
pub mod code_prompt;
pub mod codegen;
pub mod create;
pub mod production;
pub mod python_checks;
pub mod resources;
pub mod validate;
pub mod validator;

use api_core::FeatureRoutes;

/// This crate's routes: all of them behind authentication.
pub fn routes() -> FeatureRoutes {
    FeatureRoutes {
        public: axum::Router::new(),
        protected: resources::routes()
            .merge(validate::routes())
            .merge(ai_strategies::routes())
            .merge(catalog::routes())
            .merge(chat::routes())
            .merge(codegen::routes())
            .merge(actions::routes())
            .merge(create::routes())
            .merge(bots::routes())
            .merge(production::routes()),
    }
}
