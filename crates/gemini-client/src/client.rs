//! The HTTP client: one pooled reqwest (rustls) client, the key in
//! `x-goog-api-key` (never in a URL), bodies passed through as JSON values.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use key_rotation::secrets::ApiKeySecret;
use serde_json::Value;

use crate::classify::{check_answer, classify_error, GeminiError};

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";
pub const DEFAULT_VERSION: &str = "v1beta";
/// The total timeout of a unary exchange unless set otherwise.
pub const DEFAULT_EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct GeminiClient {
    http: reqwest::Client,
    base_url: String,
    version: String,
    exchange_timeout: Duration,
}

/// A streamed answer: whole `GenerateContentResponse` chunks, each with
/// cumulative usage. The first chunk has already arrived when this exists.
pub struct GeminiStream {
    first: Option<Value>,
    rest: Pin<Box<dyn Stream<Item = Result<Value, GeminiError>> + Send>>,
}

impl GeminiStream {
    pub async fn next(&mut self) -> Option<Result<Value, GeminiError>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        self.rest.next().await
    }
}

fn transport_error(err: &reqwest::Error) -> GeminiError {
    // Only a connection that never opened (or a request never built) proves
    // Google saw nothing; anything later counts as sent, so no refund.
    if err.is_connect() || err.is_builder() {
        GeminiError::NotSent(err.to_string())
    } else if err.is_timeout() {
        GeminiError::TimedOut
    } else {
        GeminiError::Unavailable { status: 0, message: err.to_string() }
    }
}

impl GeminiClient {
    /// `connect_timeout` bounds opening a connection. Every unary exchange
    /// (generate, countTokens, a model's GET) also has a total timeout,
    /// [`DEFAULT_EXCHANGE_TIMEOUT`] unless set: no hung upstream can hold a
    /// caller for ever. Streams are bounded by their callers instead (the
    /// executor's deadline until the first chunk, then the idle timeout).
    pub fn new(base_url: &str, version: &str, connect_timeout: Duration) -> Result<Self, GeminiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("algoagent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| GeminiError::NotSent(err.to_string()))?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            version: version.to_string(),
            exchange_timeout: DEFAULT_EXCHANGE_TIMEOUT,
        })
    }

    /// Sets the total timeout of every unary exchange.
    #[must_use]
    pub fn with_exchange_timeout(mut self, timeout: Duration) -> Self {
        self.exchange_timeout = timeout;
        self
    }

    fn url(&self, model: &str, method: Option<&str>) -> String {
        match method {
            Some(method) => format!("{}/{}/models/{model}:{method}", self.base_url, self.version),
            None => format!("{}/{}/models/{model}", self.base_url, self.version),
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        key: &ApiKeySecret,
    ) -> Result<reqwest::Response, GeminiError> {
        // Sensitive: never shown by the HTTP stack's own debugging.
        let mut value = reqwest::header::HeaderValue::from_str(key.expose())
            .map_err(|_| GeminiError::NotSent("the API key is not a valid header value".into()))?;
        value.set_sensitive(true);
        request.header("x-goog-api-key", value).send().await.map_err(|err| transport_error(&err))
    }

    async fn json_or_error(response: reqwest::Response, model: &str) -> Result<Value, GeminiError> {
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|err| transport_error(&err))?;
        let parsed: Result<Value, _> = serde_json::from_slice(&bytes);
        if !(200..300).contains(&status) {
            // A proxy's 5xx may not be JSON; the status still classifies it.
            return Err(classify_error(status, &parsed.unwrap_or(Value::Null), model));
        }
        parsed.map_err(|err| GeminiError::Malformed(err.to_string()))
    }

    /// `models/{m}:generateContent`. The body is passed through unchanged;
    /// an answer with no content (blocked, SAFETY, empty) is an error.
    pub async fn generate(&self, key: &ApiKeySecret, model: &str, body: &Value) -> Result<Value, GeminiError> {
        let answer = self.generate_as_is(key, model, body).await?;
        check_answer(&answer)?;
        Ok(answer)
    }

    /// As [`GeminiClient::generate`], with Google's 200 answer as it is: a
    /// blocked prompt or a safety stop is an answer, for the SDK gateway,
    /// whose clients read `finishReason` and `promptFeedback` themselves.
    pub async fn generate_as_is(&self, key: &ApiKeySecret, model: &str, body: &Value) -> Result<Value, GeminiError> {
        let request = self.http.post(self.url(model, Some("generateContent"))).timeout(self.exchange_timeout);
        let response = self.send(request.json(body), key).await?;
        Self::json_or_error(response, model).await
    }

    /// `models/{m}:countTokens`: the total.
    pub async fn count_tokens(&self, key: &ApiKeySecret, model: &str, body: &Value) -> Result<u64, GeminiError> {
        let answer = self.count_tokens_answer(key, model, body).await?;
        answer["totalTokens"].as_u64().ok_or_else(|| GeminiError::Malformed("no totalTokens".into()))
    }

    /// `models/{m}:countTokens`: Google's whole answer.
    pub async fn count_tokens_answer(
        &self,
        key: &ApiKeySecret,
        model: &str,
        body: &Value,
    ) -> Result<Value, GeminiError> {
        let request = self.http.post(self.url(model, Some("countTokens"))).timeout(self.exchange_timeout);
        let response = self.send(request.json(body), key).await?;
        Self::json_or_error(response, model).await
    }

    /// `GET models/{m}`: checks a key without spending generation quota.
    pub async fn get_model(&self, key: &ApiKeySecret, model: &str) -> Result<Value, GeminiError> {
        let response = self.send(self.http.get(self.url(model, None)).timeout(self.exchange_timeout), key).await?;
        Self::json_or_error(response, model).await
    }

    /// `models/{m}:streamGenerateContent?alt=sse`. Returns once the first
    /// chunk is in hand, so a failure before it is a plain error.
    pub async fn stream(&self, key: &ApiKeySecret, model: &str, body: &Value) -> Result<GeminiStream, GeminiError> {
        self.open_stream(key, model, body, true).await
    }

    /// As [`GeminiClient::stream`], with a blocked or safety-stopped first
    /// chunk passed on as it is (see [`GeminiClient::generate_as_is`]).
    pub async fn stream_as_is(
        &self,
        key: &ApiKeySecret,
        model: &str,
        body: &Value,
    ) -> Result<GeminiStream, GeminiError> {
        self.open_stream(key, model, body, false).await
    }

    async fn open_stream(
        &self,
        key: &ApiKeySecret,
        model: &str,
        body: &Value,
        checked: bool,
    ) -> Result<GeminiStream, GeminiError> {
        let url = format!("{}?alt=sse", self.url(model, Some("streamGenerateContent")));
        let response = self.send(self.http.post(url).json(body), key).await?;
        if !response.status().is_success() {
            return Err(Self::json_or_error(response, model).await.err().unwrap_or(GeminiError::Empty));
        }
        let mut events = Box::pin(sse_events(response.bytes_stream()));
        let first = match events.next().await {
            Some(Ok(first)) => first,
            Some(Err(err)) => return Err(err),
            None => return Err(GeminiError::Empty),
        };
        if checked {
            check_answer(&first)?;
        }
        Ok(GeminiStream { first: Some(first), rest: events })
    }
}

/// Splits an SSE byte stream into its `data:` JSON events. Events end with a
/// blank line (CRLF CRLF from Google; LF LF accepted too).
fn sse_events(
    bytes: impl Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Value, GeminiError>> + Send {
    futures::stream::unfold((Box::pin(bytes), Vec::<u8>::new(), false), |(mut bytes, mut buffer, done)| async move {
        if done {
            return None;
        }
        loop {
            if let Some((end, gap)) = find_event_end(&buffer) {
                let event: Vec<u8> = buffer.drain(..end + gap).collect();
                let text = String::from_utf8_lossy(&event[..end]).to_string();
                let data: String = text
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue;
                }
                let item = serde_json::from_str(&data).map_err(|err| GeminiError::Malformed(err.to_string()));
                return Some((item, (bytes, buffer, false)));
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                Some(Err(err)) => return Some((Err(transport_error(&err)), (bytes, buffer, true))),
                None if buffer.iter().all(u8::is_ascii_whitespace) => return None,
                None => {
                    // A final event without its blank line: the stream was cut.
                    return Some((Err(GeminiError::Malformed("stream ended mid-event".into())), (bytes, buffer, true)));
                }
            }
        }
    })
}

fn find_event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}
