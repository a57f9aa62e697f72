//! A cap on the event streams one user holds open at once. A stream holds
//! an upstream connection, a key's lease and a task until it ends, so
//! without a cap one client could hold the server's all.
//!
//! Counted per replica: the cap bounds what one replica spends on a user.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{ApiError, ApiResult};

#[derive(Debug)]
pub struct StreamSlots {
    per_user: u32,
    open: Arc<Mutex<HashMap<i64, u32>>>,
}

/// One open stream; its slot frees when this drops.
#[derive(Debug)]
pub struct StreamSlot {
    user_id: i64,
    open: Arc<Mutex<HashMap<i64, u32>>>,
}

impl StreamSlots {
    pub fn new(per_user: u32) -> Self {
        Self { per_user, open: Arc::default() }
    }

    /// A slot for one more stream of `user_id`, or 429.
    pub fn acquire(&self, user_id: i64) -> ApiResult<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(user_id).or_default();
        if *count >= self.per_user {
            return Err(ApiError::TooManyStreams { limit: self.per_user });
        }
        *count += 1;
        Ok(StreamSlot { user_id, open: self.open.clone() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_per_user_and_free_when_dropped() {
        let slots = StreamSlots::new(2);
        let first = slots.acquire(1).unwrap();
        let _second = slots.acquire(1).unwrap();
        assert!(slots.acquire(1).is_err());
        let _other = slots.acquire(2).unwrap();
        drop(first);
        let _third = slots.acquire(1).unwrap();
        assert!(slots.acquire(1).is_err());
    }
}
