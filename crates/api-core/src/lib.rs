//! The shared HTTP layer of the `/api` surface.
//!
//! Feature crates build their routers on these pieces so that every route
//! answers errors in one shape, authenticates one way and reads one state.

pub mod api_tokens;
pub mod auth;
pub mod bytes;
pub mod client_ip;
pub mod counters;
pub mod error;
pub mod extract;
pub mod hashing;
pub mod history;
pub mod idempotency;
pub mod jwt;
pub mod live_runs;
pub mod pagination;
pub mod patch;
pub mod rotation_history;
pub mod sessions;
pub mod state;
pub mod stream_slots;
pub mod streaming;
pub mod tasks;
pub mod time;
pub mod turn;

pub use auth::{authenticate_token, require_auth, AuthUser, MaybeAuthUser};
pub use client_ip::{ClientIp, TrustedProxies};
pub use error::{ApiError, ApiResult, FieldErrors};
pub use extract::{ApiJson, Redacted, ResourceId};
pub use hashing::{HashingGate, HashingPermit};
pub use idempotency::{Begun, Idempotency};
pub use jwt::{JwtKeys, TokenKind};
pub use pagination::{Page, PageRequest, PAGE_SIZE};
pub use patch::Patch;
pub use state::{AlertWebhook, AppState, AppStateInner, BacktestDefaults, ChatSettings, ReloadBroadcast};
pub use tasks::{run_detached, DetachedTasks};

/// Routes a feature crate contributes: `public` ones answer anonymous
/// callers; everything in `protected` sits behind [`require_auth`].
/// Keeping the two apart makes "authenticated unless listed" the default.
pub struct FeatureRoutes {
    pub public: axum::Router<AppState>,
    pub protected: axum::Router<AppState>,
}
