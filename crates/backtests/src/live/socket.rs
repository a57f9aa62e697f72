//! `ws/backtest/stream/`: the old chat UI's protocol, with authentication
//! added (the old app had none): a JWT as `?token=` (never logged: request
//! logs name the route, not the URI) or in the first message,
//! `{"action": "authenticate", "token": "…"}` or a `token` beside any
//! action.
//!
//! Actions: `start_backtest {config}`, `watch_backtest {run_id}` (another
//! client's view of a run of the user's), `stop_backtest`. Anything else
//! gets the old `Unknown action: X`. One stream at a time per connection:
//! a new start replaces the one in progress.

use std::time::Duration;

use api_core::pagination::query_pairs;
use api_core::{authenticate_token, ApiError, AppState, AuthUser};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{attach, error_event, start, StartRequest, CLIENT_BUFFER};

/// How long a connection may stay unauthenticated.
const AUTHENTICATE_WITHIN: Duration = Duration::from_secs(10);
/// The largest message a client may send (a config with its code).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Close codes: the client broke the rules; the server is busy or going.
const POLICY_VIOLATION: u16 = 1008;
const TRY_AGAIN_LATER: u16 = 1013;
const GOING_AWAY: u16 = 1001;

fn authentication_required() -> String {
    "Authentication required: connect with ?token=<access token>, or send {\"action\": \"authenticate\", \"token\": \"<access token>\"} first".into()
}

pub(super) async fn upgrade(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::bad_request_with_details(
                "This is a WebSocket endpoint: connect with a WebSocket client",
                rejection.body_text(),
            )
            .into_response();
        }
    };
    let token = query_pairs(query.as_deref()).into_iter().find(|(key, _)| key == "token").map(|(_, token)| token);
    upgrade.max_message_size(MAX_MESSAGE_BYTES).on_upgrade(move |socket| connection(state, socket, token))
}

async fn send(socket: &mut WebSocket, message: &Value) -> bool {
    socket.send(Message::Text(message.to_string().into())).await.is_ok()
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let reason: String = reason.chars().take(120).collect();
    let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

/// An `error` the client can read, then the close saying why.
async fn refuse(socket: &mut WebSocket, message: &str, code: u16, reason: &str) {
    send(socket, &error_event(message, None)).await;
    close(socket, code, reason).await;
}

/// A message's JSON object, or the error to answer with.
fn parse(text: &str) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(message)) => Ok(message),
        Ok(_) => Err("Invalid JSON: send an object, {\"action\": …}".into()),
        Err(err) => Err(format!("Invalid JSON: {err}")),
    }
}

/// Who is connected, and the first message if it asked for more than
/// authentication; `None` when the connection ended.
async fn authenticate(
    state: &AppState,
    socket: &mut WebSocket,
    token: Option<String>,
) -> Option<(AuthUser, Option<serde_json::Map<String, Value>>)> {
    if let Some(token) = token {
        return match authenticate_token(state, &token).await {
            Ok(user) => Some((user, None)),
            Err(_) => {
                refuse(socket, "Token is invalid or expired", POLICY_VIOLATION, "token is invalid or expired").await;
                None
            }
        };
    }
    let deadline = tokio::time::Instant::now() + AUTHENTICATE_WITHIN;
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv()).await;
        let text = match received {
            Err(_) => {
                refuse(socket, &authentication_required(), POLICY_VIOLATION, "authentication required").await;
                return None;
            }
            Ok(None | Some(Err(_) | Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => continue,
        };
        let mut message = match parse(&text) {
            Ok(message) => message,
            Err(problem) => {
                if !send(socket, &error_event(&problem, None)).await {
                    return None;
                }
                continue;
            }
        };
        let Some(token) = message.remove("token").and_then(|token| token.as_str().map(str::to_string)) else {
            refuse(socket, &authentication_required(), POLICY_VIOLATION, "authentication required").await;
            return None;
        };
        let Ok(user) = authenticate_token(state, &token).await else {
            refuse(socket, "Token is invalid or expired", POLICY_VIOLATION, "token is invalid or expired").await;
            return None;
        };
        return match message.get("action").and_then(Value::as_str) {
            None | Some("authenticate") => {
                send(socket, &json!({ "type": "authenticated", "user_id": user.user_id })).await;
                Some((user, None))
            }
            Some(_) => Some((user, Some(message))),
        };
    }
}

/// The stream in progress on a connection; it stops when replaced or
/// when the connection ends.
struct Current(Option<JoinHandle<()>>);

impl Current {
    fn replace(&mut self, task: Option<JoinHandle<()>>) {
        if let Some(old) = std::mem::replace(&mut self.0, task) {
            old.abort();
        }
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        self.replace(None);
    }
}

async fn connection(state: AppState, mut socket: WebSocket, token: Option<String>) {
    let Some((user, first)) = authenticate(&state, &mut socket, token).await else { return };
    let _slot = match state.stream_slots.acquire(user.user_id) {
        Ok(slot) => slot,
        Err(err) => {
            refuse(&mut socket, &err.message(), TRY_AGAIN_LATER, "too many streams").await;
            return;
        }
    };
    let (sender, mut outgoing) = mpsc::channel::<Value>(CLIENT_BUFFER);
    let mut current = Current(None);
    if let Some(message) = first {
        if let Some(reply) = act(&state, user, message, &sender, &mut current).await {
            send(&mut socket, &reply).await;
        }
    }
    loop {
        tokio::select! {
            biased;
            () = state.tasks.shutting_down() => {
                send(&mut socket, &super::shutting_down()).await;
                close(&mut socket, GOING_AWAY, "server shutting down").await;
                break;
            }
            Some(message) = outgoing.recv() => {
                if !send(&mut socket, &message).await {
                    break;
                }
            }
            incoming = socket.recv() => {
                let text = match incoming {
                    None | Some(Err(_) | Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        send(&mut socket, &error_event("Invalid JSON: send text messages", None)).await;
                        continue;
                    }
                    // Pings are answered by the library.
                    Some(Ok(_)) => continue,
                };
                let reply = match parse(&text) {
                    Ok(message) => act(&state, user, message, &sender, &mut current).await,
                    Err(problem) => Some(error_event(&problem, None)),
                };
                if let Some(reply) = reply {
                    if !send(&mut socket, &reply).await {
                        break;
                    }
                }
            }
        }
    }
}

/// Carries out one message; a direct reply, if any.
async fn act(
    state: &AppState,
    user: AuthUser,
    mut message: serde_json::Map<String, Value>,
    sender: &mpsc::Sender<Value>,
    current: &mut Current,
) -> Option<Value> {
    message.remove("token");
    let action = message.get("action").cloned().unwrap_or(Value::Null);
    match action.as_str() {
        Some("start_backtest") => {
            let config = message.remove("config").unwrap_or(Value::Null);
            let request = match StartRequest::read(state, user.user_id, &config).await {
                Ok(request) => request,
                Err(err) => return Some(error_event(&err.message(), None)),
            };
            let (state, sender) = (state.clone(), sender.clone());
            current.replace(Some(tokio::spawn(async move {
                let _ = start(&state, user.user_id, &request, &sender, Value::clone).await;
            })));
            None
        }
        Some("watch_backtest") => {
            let Some(id) =
                message.get("run_id").and_then(|id| id.as_i64().or_else(|| id.as_str()?.trim().parse().ok()))
            else {
                return Some(error_event("watch_backtest needs a run_id", None));
            };
            let run = match state.store.backtest_run(id, user.user_id).await {
                Ok(Some(run)) => run,
                Ok(None) => return Some(error_event(&format!("Run {id} not found"), None)),
                Err(err) => return Some(error_event(&ApiError::from(err).message(), None)),
            };
            let (state, sender) = (state.clone(), sender.clone());
            current.replace(Some(tokio::spawn(async move {
                let _ = attach(&state, &run, &sender, Value::clone).await;
            })));
            None
        }
        Some("stop_backtest") => {
            current.replace(None);
            Some(json!({ "type": "stopped" }))
        }
        Some("authenticate") => Some(json!({ "type": "authenticated", "user_id": user.user_id })),
        // As the old consumer printed it: a string bare, anything else as Python would.
        Some(other) => Some(error_event(&format!("Unknown action: {other}"), None)),
        None if action.is_null() => Some(error_event("Unknown action: None", None)),
        None => Some(error_event(&format!("Unknown action: {action}"), None)),
    }
}
