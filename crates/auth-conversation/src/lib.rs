//! Accounts and conversations: registration, login, JWT sessions, profiles,
//! and AI contexts.

pub mod accounts;
pub mod api_tokens;
pub mod chat;
pub mod contexts;
pub mod sessions;

use api_core::FeatureRoutes;

/// This crate's routes, split into the public and the authenticated.
pub fn routes() -> FeatureRoutes {
    let accounts = accounts::routes();
    FeatureRoutes {
        public: accounts.public,
        protected: accounts
            .protected
            .merge(api_tokens::routes())
            .merge(contexts::routes())
            .merge(sessions::routes())
            .merge(chat::routes()),
    }
}
