//! Whether an access token's session is still live. Tokens are checked
//! against their session (refresh-token family) in the database, so a
//! logout, a password change or a deactivation ends them on every replica.
//! Answers are cached for [`CACHE_TTL`]: that is how long another replica
//! may still accept a token after its session ends. This replica forgets
//! a session the moment it revokes it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use store::{Store, StoreResult};

pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Past this many cached sessions, stale entries are swept.
const SWEEP_AT: usize = 10_000;

#[derive(Debug, Default)]
pub struct SessionCheck {
    cache: Mutex<HashMap<(i64, String), (bool, Instant)>>,
}

impl SessionCheck {
    pub fn new() -> Self {
        Self::default()
    }

    pub async fn is_live(&self, store: &Store, family: &str, user_id: i64) -> StoreResult<bool> {
        let key = (user_id, family.to_string());
        if let Some((live, at)) = self.lock().get(&key) {
            if at.elapsed() < CACHE_TTL {
                return Ok(*live);
            }
        }
        let live = store.session_is_live(family, user_id).await?;
        let mut cache = self.lock();
        if cache.len() >= SWEEP_AT {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        cache.insert(key, (live, Instant::now()));
        Ok(live)
    }

    /// Forgets what is cached of one user's sessions, after this replica
    /// revoked some of them.
    pub fn forget_user(&self, user_id: i64) {
        self.lock().retain(|(user, _), _| *user != user_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, String), (bool, Instant)>> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
