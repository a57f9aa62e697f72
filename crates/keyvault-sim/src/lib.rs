//! A wire-faithful stand-in for Azure Key Vault's secrets REST API and the
//! Microsoft Entra endpoints a client gets its token from, for tests.
//!
//! There is no local Key Vault, so the secret-store tests run against this.
//! It is proven faithful by Microsoft's own `azure-keyvault-secrets` and
//! `azure-identity` Python SDKs (`tests/sdk.rs`), and shares no code with
//! our client in `secret-stores`.
//!
//! One TLS listener (the SDKs refuse plain HTTP) serves, as Azure does:
//! - Entra's tenant discovery document and its v2.0 token endpoint
//!   (client credentials, `client_secret_post`);
//! - the instance metadata service's managed-identity token endpoint, when
//!   the config enables it;
//! - Key Vault's secrets API: get (latest or a version), set, list with
//!   `nextLink` paging, each demanding `api-version` and a bearer token, and
//!   answering a request without one with Key Vault's 401 challenge.
//!
//! The certificate is for `localhost` and `127.0.0.1`, signed by the test
//! CA in `tls/` ([`ca_pem_path`]), which only the tests trust.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_rustls::rustls;

const SERVER_CERT: &[u8] = include_bytes!("../tls/server.pem");
const SERVER_KEY: &[u8] = include_bytes!("../tls/server.key");

/// The resource Key Vault names in its challenge, in Azure's public cloud.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";

/// The PEM file of the CA that signed the stand-in's certificate.
pub fn ca_pem_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tls/ca.pem"))
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Whether the managed-identity endpoint hands out tokens.
    pub managed_identity: bool,
    pub token_lifetime: Duration,
    /// Most secrets one list page holds when the client asks for no fewer
    /// (Key Vault's own maximum is 25).
    pub page_size: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            tenant_id: "00000000-0000-0000-0000-00000000a2e1".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            client_secret: "sim-client-secret".into(),
            managed_identity: false,
            token_lifetime: Duration::from_secs(3599),
            page_size: 25,
        }
    }
}

struct Version {
    id: String,
    value: String,
    content_type: Option<String>,
    tags: Option<Value>,
    created: u64,
    enabled: bool,
}

#[derive(Default)]
struct Vault {
    /// Name → its versions, oldest first; the last is the current one.
    secrets: BTreeMap<String, Vec<Version>>,
    /// Issued access tokens and when each expires.
    tokens: HashMap<String, Instant>,
    /// The caller's identity lacks the `get`/`list` permission.
    deny_reads: bool,
    token_requests: u64,
    secret_reads: u64,
}

struct Shared {
    config: SimConfig,
    base_url: String,
    vault: Mutex<Vault>,
}

impl Shared {
    fn vault(&self) -> MutexGuard<'_, Vault> {
        self.vault.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running stand-in; dropping it (or [`KeyVaultSim::stop`]) closes the
/// listener and every open connection.
pub struct KeyVaultSim {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeyVaultSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KeyVaultSim {
    pub async fn start(config: SimConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared { config, base_url: format!("https://{addr}"), vault: Mutex::default() });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config()?));
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            // Connections live in the set so that stopping the listener ends them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let (acceptor, app) = (acceptor.clone(), app.clone());
                        connections.spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else { return };
                            let service = hyper_util::service::TowerToHyperService::new(app);
                            let io = hyper_util::rt::TokioIo::new(tls);
                            if let Err(err) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                                tracing::debug!(%err, "keyvault-sim connection ended");
                            }
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// The vault's URL (`AZURE_VAULT_URL`), e.g. `https://127.0.0.1:40123`.
    pub fn vault_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The authority host (`AZURE_AUTHORITY_HOST`): the same listener.
    pub fn authority_host(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The managed-identity endpoint (`AZURE_MANAGED_IDENTITY_ENDPOINT`).
    pub fn managed_identity_endpoint(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.shared.base_url)
    }

    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// Stores a new current version of a secret, as `az keyvault secret set`.
    pub fn set_secret(&self, name: &str, value: &str) {
        self.shared.vault().set(&self.shared.base_url, name, value.to_string(), None, None);
    }

    /// Deletes a secret (purged at once: soft delete is not modelled).
    pub fn delete_secret(&self, name: &str) {
        self.shared.vault().secrets.remove(name);
    }

    /// Disables a secret's current version: reading it is then forbidden.
    pub fn disable_secret(&self, name: &str) {
        if let Some(current) = self.shared.vault().secrets.get_mut(name).and_then(|versions| versions.last_mut()) {
            current.enabled = false;
        }
    }

    /// Takes away (or gives back) the caller's read permission.
    pub fn deny_reads(&self, denied: bool) {
        self.shared.vault().deny_reads = denied;
    }

    /// Ends every issued token's life now.
    pub fn expire_tokens(&self) {
        self.shared.vault().tokens.clear();
    }

    /// Closes the listener and every open connection: the vault is down.
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn token_requests(&self) -> u64 {
        self.shared.vault().token_requests
    }

    pub fn secret_reads(&self) -> u64 {
        self.shared.vault().secret_reads
    }
}

impl Vault {
    fn set(
        &mut self,
        base_url: &str,
        name: &str,
        value: String,
        content_type: Option<String>,
        tags: Option<Value>,
    ) -> &Version {
        let version = format!("{:032x}", rand::random::<u128>());
        let versions = self.secrets.entry(name.to_string()).or_default();
        versions.push(Version {
            id: format!("{base_url}/secrets/{name}/{version}"),
            value,
            content_type,
            tags,
            created: unix_now(),
            enabled: true,
        });
        versions.last().expect("just pushed")
    }
}

fn tls_config() -> std::io::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |err: &dyn std::fmt::Display| std::io::Error::new(std::io::ErrorKind::InvalidData, err.to_string());
    let certs = CertificateDer::pem_slice_iter(SERVER_CERT).collect::<Result<Vec<_>, _>>().map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_slice(SERVER_KEY).map_err(|e| invalid(&e))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/v2.0/.well-known/openid-configuration", get(openid_configuration))
        .route("/{tenant}/oauth2/v2.0/token", axum::routing::post(client_credentials_token))
        .route("/metadata/identity/oauth2/token", get(managed_identity_token))
        .route("/secrets", get(list_secrets))
        .route("/secrets/", get(list_secrets))
        .route("/secrets/{name}", get(get_latest).put(set_secret))
        .route("/secrets/{name}/", get(get_latest))
        .route("/secrets/{name}/{version}", get(get_version))
        .fallback(|| async { vault_error(StatusCode::NOT_FOUND, "NotFound", "The requested resource was not found.") })
        .with_state(shared)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

fn new_token() -> String {
    format!("sim-at-{:032x}{:032x}", rand::random::<u128>(), rand::random::<u128>())
}

// ---- Microsoft Entra ---------------------------------------------------

/// An Entra (AAD) error, as its token endpoint writes them.
fn entra_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
        "timestamp": "2026-01-01 00:00:00Z",
        "trace_id": "00000000-0000-0000-0000-000000000000",
        "correlation_id": "00000000-0000-0000-0000-000000000000",
    });
    (status, Json(body)).into_response()
}

async fn openid_configuration(State(shared): State<Arc<Shared>>, Path(tenant): Path<String>) -> Response {
    if tenant != shared.config.tenant_id {
        return entra_error(StatusCode::BAD_REQUEST, "invalid_tenant", 90002, &format!("Tenant '{tenant}' not found."));
    }
    let base = format!("{}/{tenant}", shared.base_url);
    Json(json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{}/oidc/userinfo", shared.base_url),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    }))
    .into_response()
}

async fn client_credentials_token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    form: Result<axum::Form<BTreeMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    shared.vault().token_requests += 1;
    let config = &shared.config;
    if tenant != config.tenant_id {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    let Ok(axum::Form(form)) = form else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must be form-encoded.",
        );
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    for required in ["grant_type", "client_id", "scope"] {
        if field(required).is_empty() {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                &format!("The request body must contain the following parameter: '{required}'."),
            );
        }
    }
    if field("grant_type") != "client_credentials" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type.",
        );
    }
    if field("client_id") != config.client_id {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!("Application with identifier '{}' was not found in the directory.", field("client_id")),
        );
    }
    if field("client_secret") != config.client_secret {
        return entra_error(StatusCode::UNAUTHORIZED, "invalid_client", 7000215, "Invalid client secret provided.");
    }
    if !field("scope").split(' ').any(|scope| scope.ends_with("/.default")) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
        );
    }
    let lifetime = config.token_lifetime;
    let token = new_token();
    shared.vault().tokens.insert(token.clone(), Instant::now() + lifetime);
    Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "ext_expires_in": lifetime.as_secs(),
        "access_token": token,
    }))
    .into_response()
}

/// The instance metadata service's answer (`api-version=2018-02-01`), whose
/// numbers are strings.
async fn managed_identity_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    shared.vault().token_requests += 1;
    let invalid = |description: &str| {
        (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid_request", "error_description": description})))
            .into_response()
    };
    if headers.get("metadata").and_then(|value| value.to_str().ok()) != Some("true") {
        return invalid("Required metadata header not specified");
    }
    if !query.contains_key("api-version") {
        return invalid("Required query variable 'api-version' is missing");
    }
    let Some(resource) = query.get("resource") else {
        return invalid("Required query variable 'resource' is missing");
    };
    if !shared.config.managed_identity {
        return invalid("Identity not found");
    }
    let lifetime = shared.config.token_lifetime.as_secs();
    let token = new_token();
    shared.vault().tokens.insert(token.clone(), Instant::now() + shared.config.token_lifetime);
    let now = unix_now();
    Json(json!({
        "access_token": token,
        "client_id": shared.config.client_id,
        "expires_in": lifetime.to_string(),
        "expires_on": (now + lifetime).to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": now.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
    .into_response()
}

// ---- Key Vault ---------------------------------------------------------

fn vault_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

fn forbidden(message: &str, inner: &str) -> Response {
    let body = json!({"error": {"code": "Forbidden", "message": message, "innererror": {"code": inner}}});
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

/// Key Vault's gate on every call: a valid bearer token (without one, the
/// 401 challenge that tells a client where to get one), a known
/// `api-version`, and the read permission. `Some` is the refusal.
fn refusal(shared: &Shared, headers: &HeaderMap, query: &BTreeMap<String, String>) -> Option<Response> {
    let challenge = || {
        let value = format!(
            "Bearer authorization=\"{}/{}\", resource=\"{VAULT_RESOURCE}\"",
            shared.base_url, shared.config.tenant_id
        );
        let body = json!({"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}});
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, value)], Json(body)).into_response()
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(token) = token else { return Some(challenge()) };
    let mut vault = shared.vault();
    match vault.tokens.get(token) {
        Some(expires) if *expires > Instant::now() => {}
        Some(_) => {
            drop(vault);
            return Some(vault_error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "AKV10022: Invalid token: the token has expired.",
            ));
        }
        None => {
            drop(vault);
            return Some(vault_error(StatusCode::UNAUTHORIZED, "Unauthorized", "AKV10032: Invalid issuer."));
        }
    }
    match query.get("api-version").map(String::as_str) {
        None | Some("") => {
            return Some(vault_error(StatusCode::BAD_REQUEST, "BadParameter", "The 'api-version' query parameter is missing."))
        }
        Some(version) if !known_api_version(version) => {
            return Some(vault_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                &format!("The specified version ({version}) is not recognized. Consider using the latest supported version (2025-07-01)."),
            ))
        }
        Some(_) => {}
    }
    if vault.deny_reads {
        drop(vault);
        return Some(forbidden(
            "The user, group or application 'appid=sim' does not have secrets get permission on key vault 'sim'.",
            "AccessDenied",
        ));
    }
    vault.secret_reads += 1;
    None
}

/// Key Vault's versions: `7.0` … `7.6`, then dated ones (`2025-07-01`).
fn known_api_version(version: &str) -> bool {
    let dated = version.len() >= 10
        && version.as_bytes()[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    dated || version.strip_prefix("7.").is_some_and(|minor| minor.parse::<u8>().is_ok_and(|m| m <= 6))
}

fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn attributes(version: &Version) -> Value {
    json!({
        "enabled": version.enabled,
        "created": version.created,
        "updated": version.created,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    })
}

fn bundle(version: &Version) -> Value {
    let mut body = json!({"value": version.value, "id": version.id, "attributes": attributes(version)});
    if let Some(content_type) = &version.content_type {
        body["contentType"] = json!(content_type);
    }
    if let Some(tags) = &version.tags {
        body["tags"] = tags.clone();
    }
    body
}

fn read(shared: &Shared, name: &str, version: Option<&str>) -> Response {
    if !valid_name(name) {
        return vault_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The request URI contains an invalid name: names may contain only 0-9, a-z, A-Z and -.",
        );
    }
    let vault = shared.vault();
    let found = vault.secrets.get(name).and_then(|versions| match version {
        None => versions.last(),
        Some(version) => versions.iter().find(|v| v.id.ends_with(&format!("/{version}"))),
    });
    match found {
        None => vault_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            &format!("A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"),
        ),
        Some(version) if !version.enabled => forbidden("Operation get is not allowed on a disabled secret.", "SecretDisabled"),
        Some(version) => Json(bundle(version)).into_response(),
    }
}

async fn get_latest(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(&shared, &headers, &query) {
        return refused;
    }
    read(&shared, &name, None)
}

async fn get_version(
    State(shared): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(&shared, &headers, &query) {
        return refused;
    }
    read(&shared, &name, Some(&version))
}

async fn set_secret(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(refused) = refusal(&shared, &headers, &query) {
        return refused;
    }
    if !valid_name(&name) {
        return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "The request URI contains an invalid name.");
    }
    let Ok(Json(body)) = body else {
        return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "The request body is not valid JSON.");
    };
    let Some(value) = body["value"].as_str() else {
        return vault_error(StatusCode::BAD_REQUEST, "BadParameter", "Property 'value' is required.");
    };
    let content_type = body["contentType"].as_str().map(str::to_string);
    let tags = body.get("tags").filter(|tags| tags.is_object()).cloned();
    let mut vault = shared.vault();
    let version = vault.set(&shared.base_url, &name, value.to_string(), content_type, tags);
    Json(bundle(version)).into_response()
}

/// `GET /secrets`: the current version of each secret, without values,
/// `maxresults` at a time (at most 25), the rest behind `nextLink`.
async fn list_secrets(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(refused) = refusal(&shared, &headers, &query) {
        return refused;
    }
    let page = match query.get("maxresults").map(|text| text.parse::<usize>()) {
        None => shared.config.page_size,
        Some(Ok(n)) if (1..=25).contains(&n) => n.min(shared.config.page_size),
        Some(_) => {
            return vault_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                "Invalid value for maxresults: it must be between 1 and 25.",
            )
        }
    };
    let after = query.get("$skiptoken").cloned().unwrap_or_default();
    let vault = shared.vault();
    let mut items = vault.secrets.iter().filter(|(name, _)| after.is_empty() || name.as_str() > after.as_str());
    let mut value = Vec::new();
    let mut last = None;
    for (name, versions) in items.by_ref().take(page) {
        let Some(current) = versions.last() else { continue };
        let mut item = json!({"id": format!("{}/secrets/{name}", shared.base_url), "attributes": attributes(current)});
        if let Some(content_type) = &current.content_type {
            item["contentType"] = json!(content_type);
        }
        if let Some(tags) = &current.tags {
            item["tags"] = tags.clone();
        }
        value.push(item);
        last = Some(name.clone());
    }
    let next_link = match (items.next(), last) {
        (Some(_), Some(last)) => json!(format!(
            "{}/secrets?api-version={}&$skiptoken={last}&maxresults={page}",
            shared.base_url,
            query.get("api-version").map(String::as_str).unwrap_or("7.5"),
        )),
        _ => Value::Null,
    };
    Json(json!({"value": value, "nextLink": next_link})).into_response()
}
