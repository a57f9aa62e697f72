//! Server-sent events on app endpoints (DESIGN.md §4): `delta`, `progress`,
//! `done` and, after the first byte, `error`.
//!
//! The work behind a stream runs in its own task, registered with
//! [`crate::tasks::DetachedTasks`], and talks to the response through a
//! channel. That task therefore outlives the client: when the client leaves
//! (the channel closes) or the server shuts down, it still saves what was
//! produced.

use std::convert::Infallible;

use std::time::Duration;

use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::tasks::DetachedTasks;

/// Whether the caller asked for a stream: `?stream=true` (or `1`), or
/// `Accept: text/event-stream`. `?stream=false` wins over the header.
pub fn wants_stream(query: Option<&str>, headers: &HeaderMap) -> Result<bool, ApiError> {
    let flag = query
        .unwrap_or_default()
        .split('&')
        .rev()
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == "stream");
    if let Some((_, value)) = flag {
        return match value.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(ApiError::bad_request("stream must be true or false")),
        };
    }
    let accepts_events = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| media.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("text/event-stream"));
    Ok(accepts_events)
}

/// `event: delta` — a piece of generated text.
pub fn delta(text: &str) -> Event {
    event("delta", &json!({ "text": text }))
}

/// `event: progress` — a stage of longer work.
pub fn progress(stage: &str, detail: &str) -> Event {
    event("progress", &json!({ "stage": stage, "detail": detail }))
}

/// `event: done` — the same JSON the non-streaming call returns.
pub fn done(body: &Value) -> Event {
    event("done", body)
}

/// `event: error` — a failure after the first byte, when the status line
/// can no longer say it.
pub fn error(message: &str, code: &str) -> Event {
    event("error", &json!({ "error": message, "code": code }))
}

/// `event: error` for a failure the status line could have said: the same
/// JSON body (and `status`) the non-streaming call answers with.
pub fn failure(err: &ApiError) -> Event {
    let mut body = err.body();
    body["status"] = json!(err.status_code().as_u16());
    event("error", &body)
}

fn event(name: &str, data: &Value) -> Event {
    // serde_json escapes newlines, so the data is always one SSE line.
    Event::default().event(name).data(data.to_string())
}

/// How long a send may wait on a client that stopped reading before the
/// stream is given up: its upstream call and key lease are released.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the last event (`done` or `error`) may wait; nothing follows it.
const LAST_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why an event could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailed {
    /// The client disconnected.
    ClientGone,
    /// The client stopped reading for [`WRITE_TIMEOUT`].
    ClientStalled,
    /// The server is shutting down.
    ShuttingDown,
}

/// Sends one event of a stream in progress, never waiting past
/// [`WRITE_TIMEOUT`] or shutdown.
pub async fn send(events: &mpsc::Sender<Event>, event: Event, tasks: &DetachedTasks) -> Result<(), SendFailed> {
    tokio::select! {
        biased;
        () = tasks.shutting_down() => Err(SendFailed::ShuttingDown),
        sent = tokio::time::timeout(WRITE_TIMEOUT, events.send(event)) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SendFailed::ClientGone),
            Err(_) => Err(SendFailed::ClientStalled),
        },
    }
}

/// Sends a stream's last event if the client takes it within a second; at
/// shutdown too, so the client learns why its stream ended.
pub async fn send_last(events: &mpsc::Sender<Event>, event: Event) {
    let _ = tokio::time::timeout(LAST_WRITE_TIMEOUT, events.send(event)).await;
}

/// The response side of a stream: whatever the task sends, in order, with
/// keep-alive comments so idle proxies do not cut it.
pub fn response(events: mpsc::Receiver<Event>) -> Response {
    let stream = futures::stream::unfold(events, |mut events| async move {
        events.recv().await.map(|event| (Ok::<_, Infallible>(event), events))
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// A finished stream of one event (an idempotent replay, say).
pub fn single(event: Event) -> Response {
    let (sender, receiver) = mpsc::channel(1);
    // The channel has room for it, so this cannot fail.
    let _ = sender.try_send(event);
    response(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_or_a_shutdown_ends_the_wait() {
        let tasks = DetachedTasks::default();
        let (events, mut receiver) = mpsc::channel(1);
        assert_eq!(send(&events, delta("a"), &tasks).await, Ok(()));
        // The channel is full and nobody reads: the send gives up.
        assert_eq!(send(&events, delta("b"), &tasks).await, Err(SendFailed::ClientStalled));
        tasks.begin_shutdown();
        assert_eq!(send(&events, delta("c"), &tasks).await, Err(SendFailed::ShuttingDown));
        assert!(receiver.recv().await.is_some());
        drop(receiver);
        let tasks = DetachedTasks::default();
        assert_eq!(send(&events, delta("d"), &tasks).await, Err(SendFailed::ClientGone));
    }

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_query_flag_and_the_accept_header_ask_for_a_stream() {
        let none = HeaderMap::new();
        assert!(!wants_stream(None, &none).unwrap());
        assert!(wants_stream(Some("stream=true"), &none).unwrap());
        assert!(wants_stream(Some("page=2&stream=1"), &none).unwrap());
        assert!(!wants_stream(Some("stream=false"), &accept("text/event-stream")).unwrap());
        assert!(wants_stream(None, &accept("application/json, text/event-stream;q=0.9")).unwrap());
        assert!(!wants_stream(None, &accept("application/json")).unwrap());
        assert!(!wants_stream(Some("streaming=true"), &none).unwrap());
        assert!(wants_stream(Some("stream=yes"), &none).is_err());
        assert!(wants_stream(Some("stream"), &none).is_err());
    }
}
