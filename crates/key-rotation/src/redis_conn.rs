//! A Redis connection with a deadline on every call.
//!
//! The client library's own timeouts are sized for batch jobs, far too long
//! for a request path, so every call here is bounded by `deadline`. The
//! connection is made lazily and re-made after a failure, so a Redis that is
//! down at start-up or restarts later never stops the server.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Client;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis call exceeded its {0:?} deadline")]
    Deadline(Duration),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

pub struct RedisHandle {
    client: Client,
    connection: Mutex<Option<MultiplexedConnection>>,
    deadline: Duration,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection info may hold a password; never print it.
        f.debug_struct("RedisHandle").field("deadline", &self.deadline).finish_non_exhaustive()
    }
}

impl RedisHandle {
    /// Parses `url` without connecting.
    pub fn new(url: &str, deadline: Duration) -> Result<Self, RedisError> {
        Ok(Self { client: Client::open(url)?, connection: Mutex::new(None), deadline })
    }

    /// The client, for connections of their own (pub/sub).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// A connection, made within the deadline if there is none yet.
    pub async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = tokio::time::timeout(self.deadline, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| RedisError::Deadline(self.deadline))??;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Runs one command within the deadline. A failed connection is dropped
    /// so the next call reconnects.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        let outcome = tokio::time::timeout(self.deadline, cmd.query_async::<T>(&mut connection)).await;
        self.settle(outcome).await
    }

    /// Runs a pipeline (one round trip) within the deadline.
    pub async fn pipeline<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        let outcome = tokio::time::timeout(self.deadline, pipe.query_async::<T>(&mut connection)).await;
        self.settle(outcome).await
    }

    /// Runs a Lua script (EVALSHA, loading it on first use) within the deadline.
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut connection = self.connection().await?;
        let outcome = tokio::time::timeout(self.deadline, invocation.invoke_async::<T>(&mut connection)).await;
        self.settle(outcome).await
    }

    async fn settle<T>(
        &self,
        outcome: Result<Result<T, redis::RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<T, RedisError> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                if err.is_io_error() || err.is_connection_dropped() || err.is_unrecoverable_error() {
                    self.connection.lock().await.take();
                }
                Err(err.into())
            }
            Err(_) => {
                self.connection.lock().await.take();
                Err(RedisError::Deadline(self.deadline))
            }
        }
    }

    /// Publishes `message` on `channel`; returns how many subscribers
    /// (replicas) received it.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<u64, RedisError> {
        self.query(redis::cmd("PUBLISH").arg(channel).arg(message)).await
    }

    /// Hands every message published on `channel` to `on_message`, in
    /// order, subscribing again after any failure. Runs until dropped.
    pub async fn follow<F, Fut>(&self, channel: &str, mut on_message: F)
    where
        F: FnMut(String) -> Fut + Send,
        Fut: std::future::Future<Output = ()> + Send,
    {
        use futures::StreamExt as _;
        loop {
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            }
            .await;
            match subscribed {
                Ok(mut pubsub) => {
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        if let Ok(payload) = message.get_payload::<String>() {
                            on_message(payload).await;
                        }
                    }
                    tracing::debug!(channel, "subscription ended; subscribing again");
                }
                Err(err) => tracing::debug!(error = %err, channel, "cannot subscribe"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    pub async fn ping(&self) -> Result<(), RedisError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}
