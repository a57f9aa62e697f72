//! `algoagent import-django --from <sqlite file | postgres URL>`: moves an
//! old Django deployment's data into ours, in one transaction.
//!
//! - Users keep their Django password hashes (verified at login, re-hashed
//!   to argon2id at the first one); `is_staff`/`is_superuser` become the
//!   admin role. Profiles, AI contexts, chat sessions and their messages,
//!   strategies with tags, comments, templates, validations and
//!   performance, and strategy chats come across.
//! - Into an empty database the old ids are kept (clients hold them) and
//!   the identity sequences moved past them. With `--merge`, every id is
//!   shifted past ours and the old → new map written to a file.
//! - Where the old data does not fit our schema it is mapped to the nearest
//!   faithful form, and each case is listed in the summary; a table or row
//!   that does not come across is counted as skipped, with the reason.
//! - A ledger records the source's fingerprint: the same import again
//!   changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{json, Value};
use store::import::{Cell, ImportWrite, LinkUpdate, TableRows};
use store::legacy::{LegacySource, TextRow};
use store::Store;

/// Tables without which a database is not the old app's.
pub const REQUIRED_TABLES: [&str; 6] = [
    "auth_user",
    "auth_api_userprofile",
    "auth_api_aicontext",
    "auth_api_chatsession",
    "auth_api_chatmessage",
    "strategy_api_strategy",
];

/// Old tables that do not come across, and why.
const NOT_IMPORTED: &[(&str, &str)] = &[
    ("auth_group", "groups are not used here"),
    ("auth_group_permissions", "groups are not used here"),
    ("auth_permission", "Django's permission catalogue; roles replace it"),
    ("auth_user_groups", "groups are not used here"),
    (
        "auth_user_user_permissions",
        "per-user permissions are not used here; is_staff/is_superuser become the admin role",
    ),
    ("django_admin_log", "Django admin's own log"),
    ("django_content_type", "Django's model catalogue"),
    ("django_migrations", "Django's migration record"),
    ("django_session", "Django's web sessions; users log in again"),
    ("sqlite_sequence", "SQLite's own bookkeeping"),
    ("token_blacklist_outstandingtoken", "old JWTs are not valid here; users log in again"),
    ("token_blacklist_blacklistedtoken", "old JWTs are not valid here; users log in again"),
    ("backtest_api_backtestalert", "backtest runs are not imported (re-run them here)"),
    ("backtest_api_backtestconfig", "backtest runs are not imported (re-run them here)"),
    ("backtest_api_backtestresult", "backtest runs are not imported (re-run them here)"),
    ("backtest_api_backtestrun", "backtest runs are not imported (re-run them here)"),
    ("backtest_api_trade", "backtest runs are not imported (re-run them here)"),
    ("data_api_datacache", "market data is fetched again, not imported"),
    ("data_api_datarequest", "market data is fetched again, not imported"),
    ("data_api_indicator", "market data is fetched again, not imported"),
    ("data_api_indicatordata", "market data is fetched again, not imported"),
    ("data_api_marketdata", "market data is fetched again, not imported"),
    ("data_api_symbol", "market data is fetched again, not imported"),
];

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub from: String,
    pub dry_run: bool,
    pub merge: bool,
    /// Owner of strategies whose `created_by` is empty.
    pub orphans_to: Option<String>,
    /// With `--merge`: where the old → new id map is written.
    pub map_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{from} is not an AlgoAgent (Django) database: missing table(s) {}", missing.join(", "))]
    NotDjango { from: String, missing: Vec<String> },
    #[error(
        "{} strateg{} ha{} no owner (created_by is empty): {}; choose one with --orphans-to <username>. Nothing was written.",
        strategies.len(),
        if strategies.len() == 1 { "y" } else { "ies" },
        if strategies.len() == 1 { "s" } else { "ve" },
        strategies.join(", ")
    )]
    Orphans { strategies: Vec<String> },
    #[error("--orphans-to {0}: no such user in the old database")]
    UnknownOrphanOwner(String),
    #[error("this database already has {0} user(s); import into an empty one, or pass --merge. Nothing was written.")]
    TargetHasUsers(i64),
    #[error("--merge: the username {0:?} exists in both databases; rename one and run again. Nothing was written.")]
    UsernameCollision(String),
    #[error("{table} row {id}: column {column}: {reason}. Nothing was written.")]
    Malformed { table: &'static str, id: String, column: &'static str, reason: String },
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("writing the id map {path}: {source}")]
    MapFile { path: String, source: std::io::Error },
}

/// One old table's line of the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSummary {
    pub read: i64,
    pub imported: i64,
    pub merged: i64,
    pub skipped: i64,
    pub reasons: BTreeSet<String>,
}

/// What an import did (or, dry, would do).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub tables: BTreeMap<String, TableSummary>,
    /// Where the old data did not fit, and what was done.
    pub notes: Vec<String>,
}

impl Summary {
    fn table(&mut self, name: &str) -> &mut TableSummary {
        self.tables.entry(name.to_string()).or_default()
    }

    /// The table printed at the end.
    pub fn render(&self) -> String {
        let mut out =
            format!("{:<38} {:>6} {:>9} {:>7} {:>8}  reason\n", "old table", "read", "imported", "merged", "skipped");
        for (name, t) in &self.tables {
            let reasons: Vec<&str> = t.reasons.iter().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "{name:<38} {:>6} {:>9} {:>7} {:>8}  {}",
                t.read,
                t.imported,
                t.merged,
                t.skipped,
                reasons.join("; ")
            );
        }
        if !self.notes.is_empty() {
            out.push_str("\nmapped to the nearest faithful form:\n");
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

#[derive(Debug)]
pub enum Outcome {
    Imported(Summary),
    DryRun(Summary),
    AlreadyImported { at: DateTime<Utc> },
}

/// Django's datetimes: UTC text, with or without a fraction, with an offset
/// from Postgres.
fn datetime(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|naive| naive.and_utc())
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z").map(|at| at.with_timezone(&Utc)))
        .or_else(|_| DateTime::parse_from_rfc3339(text).map(|at| at.with_timezone(&Utc)))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d").map(|day| day.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .ok()
}

/// A row of one old table, its columns by name.
struct Row<'a> {
    table: &'static str,
    columns: &'a [&'a str],
    values: &'a TextRow,
}

impl Row<'_> {
    fn raw(&self, column: &str) -> Option<&str> {
        let index = self.columns.iter().position(|c| *c == column)?;
        self.values[index].as_deref()
    }

    fn id(&self) -> String {
        self.raw(self.columns[0]).unwrap_or("?").to_string()
    }

    fn bad(&self, column: &'static str, reason: impl Into<String>) -> ImportError {
        ImportError::Malformed { table: self.table, id: self.id(), column, reason: reason.into() }
    }

    fn text(&self, column: &'static str) -> String {
        self.raw(column).unwrap_or_default().to_string()
    }

    fn int(&self, column: &'static str) -> Result<Option<i64>, ImportError> {
        match self.raw(column) {
            None => Ok(None),
            Some(text) => text
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| self.bad(column, format!("not a whole number: {text:?}"))),
        }
    }

    fn required_int(&self, column: &'static str) -> Result<i64, ImportError> {
        self.int(column)?.ok_or_else(|| self.bad(column, "is empty"))
    }

    fn real(&self, column: &'static str) -> Result<Option<f64>, ImportError> {
        match self.raw(column) {
            None => Ok(None),
            Some(text) => {
                text.trim().parse::<f64>().map(Some).map_err(|_| self.bad(column, format!("not a number: {text:?}")))
            }
        }
    }

    fn boolean(&self, column: &'static str) -> Result<bool, ImportError> {
        match self.raw(column).map(str::trim) {
            Some("1" | "true" | "t" | "True") => Ok(true),
            Some("0" | "false" | "f" | "False") | None => Ok(false),
            Some(other) => Err(self.bad(column, format!("not a boolean: {other:?}"))),
        }
    }

    fn time(&self, column: &'static str) -> Result<Option<DateTime<Utc>>, ImportError> {
        match self.raw(column) {
            None => Ok(None),
            Some(text) => datetime(text).map(Some).ok_or_else(|| self.bad(column, format!("not a datetime: {text:?}"))),
        }
    }

    fn required_time(&self, column: &'static str) -> Result<DateTime<Utc>, ImportError> {
        self.time(column)?.ok_or_else(|| self.bad(column, "is empty"))
    }

    /// A JSON column as a value; `default` (itself JSON) when empty.
    fn json_or(&self, column: &'static str, default: &str) -> Result<Value, ImportError> {
        let text = self.raw(column).unwrap_or(default);
        serde_json::from_str(text).map_err(|err| self.bad(column, format!("not JSON: {err}")))
    }

    fn json_value(&self, column: &'static str) -> Result<Value, ImportError> {
        self.json_or(column, "null")
    }
}

/// Rows of an old table with the columns asked for.
struct Table {
    name: &'static str,
    columns: Vec<&'static str>,
    rows: Vec<TextRow>,
}

impl Table {
    fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(|values| Row { table: self.name, columns: &self.columns, values })
    }
}

async fn read(
    source: &LegacySource,
    present: &BTreeSet<String>,
    name: &'static str,
    columns: &[&'static str],
) -> Result<Table, ImportError> {
    let rows = if present.contains(name) { source.rows(name, columns, columns[0]).await? } else { Vec::new() };
    Ok(Table { name, columns: columns.to_vec(), rows })
}

/// Shifts old ids past ours (`--merge`), per table; zero into an empty database.
#[derive(Default)]
struct Ids {
    offsets: HashMap<&'static str, i64>,
}

impl Ids {
    fn new_id(&self, table: &'static str, old: i64) -> i64 {
        old + self.offsets.get(table).copied().unwrap_or(0)
    }

    fn cell(&self, table: &'static str, old: Option<i64>) -> Cell {
        Cell::Int(old.map(|old| self.new_id(table, old)))
    }
}

const OUR_TABLES_WITH_IDS: [&str; 12] = [
    "users",
    "user_profiles",
    "ai_contexts",
    "chat_sessions",
    "chat_messages",
    "strategy_templates",
    "strategies",
    "strategy_comments",
    "strategy_validations",
    "strategy_performance",
    "strategy_chat_sessions",
    "strategy_chat_messages",
];

/// Runs the import (or, with `--dry-run`, works it out and writes nothing).
pub async fn import(target: &Store, options: &ImportOptions) -> Result<Outcome, ImportError> {
    let source = LegacySource::open(&options.from).await?;
    let outcome = import_from(target, &source, options).await;
    source.close().await;
    outcome
}

#[allow(clippy::too_many_lines, reason = "one pass over the old schema, table by table, reads best in one place")]
async fn import_from(target: &Store, source: &LegacySource, options: &ImportOptions) -> Result<Outcome, ImportError> {
    let present: BTreeSet<String> = source.tables().await?.into_iter().collect();
    let missing: Vec<String> =
        REQUIRED_TABLES.iter().filter(|t| !present.contains(**t)).map(|t| (*t).to_string()).collect();
    if !missing.is_empty() {
        return Err(ImportError::NotDjango { from: redacted_source(&options.from), missing });
    }

    let users = read(
        source,
        &present,
        "auth_user",
        &[
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "password",
            "is_staff",
            "is_superuser",
            "is_active",
            "date_joined",
            "last_login",
        ],
    )
    .await?;
    let fingerprint = fingerprint(source, &present, &users).await?;
    if let Some(at) = target.import_recorded(&fingerprint).await? {
        return Ok(Outcome::AlreadyImported { at });
    }
    let existing_users = target.count_users().await?;
    if existing_users > 0 && !options.merge {
        return Err(ImportError::TargetHasUsers(existing_users));
    }
    let mut ids = Ids::default();
    if options.merge {
        for table in OUR_TABLES_WITH_IDS {
            ids.offsets.insert(table, target.max_id(table).await?);
        }
    }

    let mut summary = Summary::default();
    for table in &present {
        let count = source.count(table).await?;
        let entry = summary.table(table);
        entry.read = count;
        if let Some((_, reason)) = NOT_IMPORTED.iter().find(|(name, _)| name == table) {
            entry.skipped = count;
            if count > 0 {
                entry.reasons.insert((*reason).to_string());
            }
        }
    }
    let mut write = ImportWrite { fingerprint, source: redacted_source(&options.from), ..ImportWrite::default() };
    let count = |summary: &mut Summary, table: &str, rows: usize| {
        let entry = summary.table(table);
        if options.merge {
            entry.merged += rows as i64;
        } else {
            entry.imported += rows as i64;
        }
    };

    // Users.
    let mut usernames: HashMap<i64, String> = HashMap::new();
    let mut rows = Vec::new();
    for row in users.iter() {
        let id = row.required_int("id")?;
        let username = row.text("username");
        if options.merge && target.user_by_username(&username).await?.is_some() {
            return Err(ImportError::UsernameCollision(username));
        }
        usernames.insert(id, username.clone());
        let admin = row.boolean("is_staff")? || row.boolean("is_superuser")?;
        rows.push(vec![
            ids.cell("users", Some(id)),
            Cell::text(username),
            Cell::text(row.text("email")),
            Cell::text(row.text("first_name")),
            Cell::text(row.text("last_name")),
            Cell::text(row.text("password")),
            Cell::text(if admin { store::accounts::ROLE_ADMIN } else { store::accounts::ROLE_USER }),
            Cell::Bool(row.boolean("is_active")?),
            Cell::time(row.required_time("date_joined")?),
            Cell::Time(row.time("last_login")?),
        ]);
    }
    count(&mut summary, "auth_user", rows.len());
    write.tables.push(TableRows {
        table: "users",
        columns: &[
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "password_hash",
            "role",
            "is_active",
            "date_joined",
            "last_login",
        ],
        rows,
    });
    let user_exists = |id: Option<i64>| id.is_some_and(|id| usernames.contains_key(&id));

    // Profiles.
    let profiles = read(
        source,
        &present,
        "auth_api_userprofile",
        &[
            "id",
            "user_id",
            "default_risk_tolerance",
            "default_timeframe",
            "preferred_symbols",
            "trading_goals",
            "strategy_preferences",
            "risk_parameters",
            "created_at",
            "updated_at",
            "last_active",
        ],
    )
    .await?;
    let mut rows = Vec::new();
    for row in profiles.iter() {
        let tolerance = row.text("default_risk_tolerance");
        let tolerance = if ["conservative", "moderate", "aggressive"].contains(&tolerance.as_str()) {
            tolerance
        } else {
            summary.notes.push(format!(
                "profile {}: risk tolerance {tolerance:?} is not one of ours; set to moderate",
                row.id()
            ));
            "moderate".to_string()
        };
        rows.push(vec![
            ids.cell("user_profiles", row.int("id")?),
            ids.cell("users", row.int("user_id")?),
            Cell::text(tolerance),
            Cell::text(row.text("default_timeframe")),
            Cell::Json(row.json_or("preferred_symbols", "[]")?),
            Cell::text(row.text("trading_goals")),
            Cell::text(row.text("strategy_preferences")),
            Cell::Json(row.json_or("risk_parameters", "{}")?),
            Cell::time(row.required_time("created_at")?),
            Cell::time(row.required_time("updated_at")?),
            Cell::time(row.required_time("last_active")?),
        ]);
    }
    count(&mut summary, "auth_api_userprofile", rows.len());
    write.tables.push(TableRows {
        table: "user_profiles",
        columns: &[
            "id",
            "user_id",
            "default_risk_tolerance",
            "default_timeframe",
            "preferred_symbols",
            "trading_goals",
            "strategy_preferences",
            "risk_parameters",
            "created_at",
            "updated_at",
            "last_active",
        ],
        rows,
    });

    // AI contexts.
    let contexts = read(
        source,
        &present,
        "auth_api_aicontext",
        &[
            "id",
            "user_id",
            "session_name",
            "instructions",
            "context_data",
            "is_active",
            "created_at",
            "updated_at",
            "last_used",
        ],
    )
    .await?;
    let mut rows = Vec::new();
    for row in contexts.iter() {
        rows.push(vec![
            ids.cell("ai_contexts", row.int("id")?),
            ids.cell("users", row.int("user_id")?),
            Cell::text(row.text("session_name")),
            Cell::text(row.text("instructions")),
            Cell::Json(row.json_or("context_data", "{}")?),
            Cell::Bool(row.boolean("is_active")?),
            Cell::time(row.required_time("created_at")?),
            Cell::time(row.required_time("updated_at")?),
            Cell::Time(row.time("last_used")?),
        ]);
    }
    count(&mut summary, "auth_api_aicontext", rows.len());
    write.tables.push(TableRows {
        table: "ai_contexts",
        columns: &[
            "id",
            "user_id",
            "session_name",
            "instructions",
            "context_data",
            "is_active",
            "created_at",
            "updated_at",
            "last_used",
        ],
        rows,
    });

    // Chat sessions and their messages, in order.
    let sessions = read(
        source,
        &present,
        "auth_api_chatsession",
        &[
            "id",
            "session_id",
            "user_id",
            "ai_context_id",
            "title",
            "generated_strategies",
            "is_active",
            "created_at",
            "updated_at",
            "strategy_template_id",
        ],
    )
    .await?;
    let mut rows = Vec::new();
    for row in sessions.iter() {
        if let Some(template) = row.int("strategy_template_id")? {
            summary.notes.push(format!(
                "chat session {}: its link to strategy template {template} has no column here; the session is kept without it",
                row.id()
            ));
        }
        rows.push(vec![
            ids.cell("chat_sessions", row.int("id")?),
            Cell::text(row.text("session_id")),
            ids.cell("users", row.int("user_id")?),
            ids.cell("ai_contexts", row.int("ai_context_id")?),
            Cell::text(row.text("title")),
            Cell::Json(row.json_or("generated_strategies", "[]")?),
            Cell::Bool(row.boolean("is_active")?),
            Cell::time(row.required_time("created_at")?),
            Cell::time(row.required_time("updated_at")?),
        ]);
    }
    count(&mut summary, "auth_api_chatsession", rows.len());
    write.tables.push(TableRows {
        table: "chat_sessions",
        columns: &[
            "id",
            "session_id",
            "user_id",
            "ai_context_id",
            "title",
            "generated_strategies",
            "is_active",
            "created_at",
            "updated_at",
        ],
        rows,
    });
    let messages = read(
        source,
        &present,
        "auth_api_chatmessage",
        &["id", "session_id", "role", "content", "metadata", "tokens_used", "created_at"],
    )
    .await?;
    let mut rows = Vec::new();
    let mut last_role: BTreeMap<i64, String> = BTreeMap::new();
    for row in messages.iter() {
        let role = row.text("role");
        if !["user", "assistant", "system"].contains(&role.as_str()) {
            let entry = summary.table("auth_api_chatmessage");
            entry.skipped += 1;
            entry.reasons.insert(format!("role {role:?} is not user, assistant or system"));
            continue;
        }
        let session = row.required_int("session_id")?;
        last_role.insert(session, role.clone());
        rows.push(vec![
            ids.cell("chat_messages", row.int("id")?),
            ids.cell("chat_sessions", Some(session)),
            Cell::text(role),
            Cell::text(row.text("content")),
            Cell::Json(row.json_or("metadata", "{}")?),
            Cell::int(row.int("tokens_used")?.unwrap_or(0)),
            Cell::time(row.required_time("created_at")?),
        ]);
    }
    for (session, role) in &last_role {
        if role == "user" {
            summary.notes.push(format!(
                "chat session {session} ends on a user turn (no answer was saved); kept as it is, the next message continues it"
            ));
        }
    }
    count(&mut summary, "auth_api_chatmessage", rows.len());
    write.tables.push(TableRows {
        table: "chat_messages",
        columns: &["id", "session_id", "role", "content", "metadata", "tokens_used", "created_at"],
        rows,
    });

    // Strategies: each needs an owner.
    let strategies = read(
        source,
        &present,
        "strategy_api_strategy",
        &[
            "id",
            "created_by_id",
            "name",
            "description",
            "template_id",
            "strategy_code",
            "parameters",
            "status",
            "version",
            "tags",
            "timeframe",
            "risk_level",
            "expected_return",
            "max_drawdown",
            "created_at",
            "updated_at",
            "last_validated",
        ],
    )
    .await?;
    let orphan_owner = match &options.orphans_to {
        None => None,
        Some(name) => Some(
            usernames
                .iter()
                .find(|(_, username)| *username == name)
                .map(|(id, _)| *id)
                .ok_or_else(|| ImportError::UnknownOrphanOwner(name.clone()))?,
        ),
    };
    let orphans: Vec<String> = strategies
        .iter()
        .filter(|row| !user_exists(row.int("created_by_id").ok().flatten()))
        .map(|row| format!("#{} {:?}", row.id(), row.text("name")))
        .collect();
    if !orphans.is_empty() && orphan_owner.is_none() {
        return Err(ImportError::Orphans { strategies: orphans });
    }
    let mut owner_of: HashMap<i64, i64> = HashMap::new();
    for row in strategies.iter() {
        let id = row.required_int("id")?;
        let owner = row.int("created_by_id")?.filter(|id| usernames.contains_key(id)).or(orphan_owner);
        if let Some(owner) = owner {
            owner_of.insert(id, owner);
        }
    }
    if let (false, Some(name)) = (orphans.is_empty(), &options.orphans_to) {
        summary.notes.push(format!(
            "{} strateg(ies) without an owner given to {name}: {}",
            orphans.len(),
            orphans.join(", ")
        ));
    }

    // Tags: the old ones are global, ours per user: each tag goes to every
    // owner of a strategy linked to it.
    let tags =
        read(source, &present, "strategy_api_strategytag", &["id", "name", "description", "color", "created_at"])
            .await?;
    let links =
        read(source, &present, "strategy_api_strategytag_strategies", &["id", "strategytag_id", "strategy_id"]).await?;
    let tag_names: HashMap<i64, String> =
        tags.iter().filter_map(|row| Some((row.int("id").ok()??, row.text("name")))).collect();
    let mut linked: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let mut tag_owners: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for link in links.iter() {
        let (Some(tag), Some(strategy)) = (link.int("strategytag_id")?, link.int("strategy_id")?) else { continue };
        if let Some(name) = tag_names.get(&tag) {
            linked.entry(strategy).or_default().insert(name.clone());
        }
        if let Some(owner) = owner_of.get(&strategy) {
            tag_owners.entry(tag).or_default().insert(*owner);
        }
    }
    count(&mut summary, "strategy_api_strategytag_strategies", links.rows.len());
    let mut rows = Vec::new();
    for row in tags.iter() {
        let tag = row.required_int("id")?;
        let owners = tag_owners.get(&tag).cloned().unwrap_or_default();
        let owners: Vec<i64> =
            if owners.is_empty() { orphan_owner.into_iter().collect() } else { owners.into_iter().collect() };
        if owners.is_empty() {
            let entry = summary.table("strategy_api_strategytag");
            entry.skipped += 1;
            entry.reasons.insert("no strategy uses it, so it has no owner (give one with --orphans-to)".into());
            continue;
        }
        if owners.len() > 1 {
            summary.notes.push(format!(
                "tag {:?} was shared by {} users; each now has a copy of their own",
                row.text("name"),
                owners.len()
            ));
        }
        if tag_owners.get(&tag).is_none_or(BTreeSet::is_empty) {
            summary.notes.push(format!(
                "tag {:?} had no strategy; given to {}",
                row.text("name"),
                options.orphans_to.clone().unwrap_or_default()
            ));
        }
        for owner in owners {
            rows.push(vec![
                ids.cell("users", Some(owner)),
                Cell::text(row.text("name")),
                Cell::text(row.text("description")),
                Cell::text(row.text("color")),
                Cell::time(row.required_time("created_at")?),
            ]);
        }
        count(&mut summary, "strategy_api_strategytag", 1);
    }
    let tag_rows =
        TableRows { table: "strategy_tags", columns: &["user_id", "name", "description", "color", "created_at"], rows };

    // Templates first (strategies name them); their link back to a
    // strategy is set once the strategies are in.
    let templates = read(
        source,
        &present,
        "strategy_api_strategytemplate",
        &[
            "id",
            "name",
            "description",
            "category",
            "template_code",
            "parameters_schema",
            "is_active",
            "created_at",
            "updated_at",
            "created_by_id",
            "chat_history",
            "is_system_template",
            "latest_parameters",
            "latest_strategy_code",
            "linked_strategy_id",
        ],
    )
    .await?;
    let mut rows = Vec::new();
    for row in templates.iter() {
        let mut name = row.text("name");
        if options.merge && target.template_name_taken(&name).await? {
            let renamed = format!("{name} (imported)");
            summary
                .notes
                .push(format!("template name {name:?} is taken here (names are unique); imported as {renamed:?}"));
            name = renamed;
        }
        if let Some(linked) = row.int("linked_strategy_id")? {
            write.links.push(LinkUpdate {
                sql: "UPDATE strategy_templates SET linked_strategy_id = $1 WHERE id = $2",
                values: vec![ids.cell("strategies", Some(linked)), ids.cell("strategy_templates", row.int("id")?)],
            });
        }
        rows.push(vec![
            ids.cell("strategy_templates", row.int("id")?),
            Cell::text(name),
            Cell::text(row.text("description")),
            Cell::text(row.text("category")),
            Cell::text(row.text("template_code")),
            Cell::Json(row.json_or("parameters_schema", "{}")?),
            Cell::Bool(row.boolean("is_active")?),
            Cell::Bool(row.boolean("is_system_template")?),
            Cell::text(row.text("latest_strategy_code")),
            Cell::Json(row.json_or("latest_parameters", "{}")?),
            Cell::Json(row.json_or("chat_history", "[]")?),
            ids.cell("users", row.int("created_by_id")?.filter(|id| usernames.contains_key(id))),
            Cell::time(row.required_time("created_at")?),
            Cell::time(row.required_time("updated_at")?),
        ]);
    }
    count(&mut summary, "strategy_api_strategytemplate", rows.len());
    write.tables.push(TableRows {
        table: "strategy_templates",
        columns: &[
            "id",
            "name",
            "description",
            "category",
            "template_code",
            "parameters_schema",
            "is_active",
            "is_system_template",
            "latest_strategy_code",
            "latest_parameters",
            "chat_history",
            "user_id",
            "created_at",
            "updated_at",
        ],
        rows,
    });

    let mut rows = Vec::new();
    for row in strategies.iter() {
        let id = row.required_int("id")?;
        let Some(owner) = owner_of.get(&id) else { continue };
        let listed: Vec<String> = match row.json_value("tags")? {
            Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        };
        let linked_names = linked.get(&id).cloned().unwrap_or_default();
        let mut all: Vec<String> = listed.clone();
        for name in &linked_names {
            if !all.contains(name) {
                all.push(name.clone());
            }
        }
        if listed.iter().collect::<BTreeSet<_>>() != linked_names.iter().collect::<BTreeSet<_>>() {
            summary.notes.push(format!(
                "strategy {id}: its tag list {listed:?} and its linked tags {:?} disagree; it keeps both ({all:?})",
                linked_names.iter().collect::<Vec<_>>()
            ));
        }
        rows.push(vec![
            ids.cell("strategies", Some(id)),
            ids.cell("users", Some(*owner)),
            Cell::text(row.text("name")),
            Cell::text(row.text("description")),
            ids.cell("strategy_templates", row.int("template_id")?),
            Cell::text(row.text("strategy_code")),
            Cell::Json(row.json_or("parameters", "{}")?),
            Cell::text(row.text("status")),
            Cell::text(row.text("version")),
            Cell::Json(Value::from(all)),
            Cell::text(row.text("timeframe")),
            Cell::text(row.text("risk_level")),
            Cell::Real(row.real("expected_return")?),
            Cell::Real(row.real("max_drawdown")?),
            Cell::time(row.required_time("created_at")?),
            Cell::time(row.required_time("updated_at")?),
            Cell::Time(row.time("last_validated")?),
        ]);
    }
    count(&mut summary, "strategy_api_strategy", rows.len());
    write.tables.push(TableRows {
        table: "strategies",
        columns: &[
            "id",
            "user_id",
            "name",
            "description",
            "template_id",
            "strategy_code",
            "parameters",
            "status",
            "version",
            "tags",
            "timeframe",
            "risk_level",
            "expected_return",
            "max_drawdown",
            "created_at",
            "updated_at",
            "last_validated",
        ],
        rows,
    });
    write.tables.push(tag_rows);

    // Comments keep their author.
    let comments = read(
        source,
        &present,
        "strategy_api_strategycomment",
        &["id", "author_id", "strategy_id", "parent_id", "content", "rating", "is_review", "created_at", "updated_at"],
    )
    .await?;
    let mut rows = Vec::new();
    for row in comments.iter() {
        let strategy = row.required_int("strategy_id")?;
        let author = row.required_int("author_id")?;
        if owner_of.get(&strategy).is_some_and(|owner| *owner != author) {
            summary.notes.push(format!(
                "comment {} is by {} on another user's strategy {strategy}; kept with its author",
                row.id(),
                usernames.get(&author).cloned().unwrap_or_default()
            ));
        }
        if row.boolean("is_review")? {
            summary.notes.push(format!("comment {}: the review flag has no column here; its rating is kept", row.id()));
        }
        rows.push(vec![
            ids.cell("strategy_comments", row.int("id")?),
            ids.cell("users", Some(author)),
            ids.cell("strategies", Some(strategy)),
            ids.cell("strategy_comments", row.int("parent_id")?),
            Cell::text(row.text("content")),
            Cell::Int(row.int("rating")?.filter(|r| (1..=5).contains(r))),
            Cell::time(row.required_time("created_at")?),
            Cell::time(row.required_time("updated_at")?),
        ]);
    }
    count(&mut summary, "strategy_api_strategycomment", rows.len());
    write.tables.push(TableRows {
        table: "strategy_comments",
        columns: &["id", "user_id", "strategy_id", "parent_id", "content", "rating", "created_at", "updated_at"],
        rows,
    });

    // Validations: their checks and scores go into `details`.
    let validations = read(
        source,
        &present,
        "strategy_api_strategyvalidation",
        &[
            "id",
            "strategy_id",
            "validation_type",
            "status",
            "score",
            "passed_checks",
            "failed_checks",
            "warnings",
            "recommendations",
            "validator_version",
            "validation_config",
            "execution_time",
            "created_at",
            "completed_at",
        ],
    )
    .await?;
    let mut rows = Vec::new();
    for row in validations.iter() {
        let strategy = row.required_int("strategy_id")?;
        let Some(owner) = owner_of.get(&strategy) else { continue };
        let details = json!({
            "imported_from": "django",
            "score": row.real("score")?,
            "passed_checks": row.json_value("passed_checks")?,
            "recommendations": row.json_value("recommendations")?,
            "validator_version": row.text("validator_version"),
            "validation_config": row.json_value("validation_config")?,
            "execution_time": row.real("execution_time")?,
            "completed_at": row.raw("completed_at"),
        });
        rows.push(vec![
            ids.cell("strategy_validations", row.int("id")?),
            ids.cell("users", Some(*owner)),
            ids.cell("strategies", Some(strategy)),
            Cell::text(row.text("validation_type")),
            Cell::text(row.text("status")),
            Cell::Json(row.json_or("failed_checks", "[]")?),
            Cell::Json(row.json_or("warnings", "[]")?),
            Cell::Json(details),
            Cell::time(row.required_time("created_at")?),
        ]);
    }
    count(&mut summary, "strategy_api_strategyvalidation", rows.len());
    write.tables.push(TableRows {
        table: "strategy_validations",
        columns: &[
            "id",
            "user_id",
            "strategy_id",
            "validation_type",
            "status",
            "errors",
            "warnings",
            "details",
            "created_at",
        ],
        rows,
    });

    // Performance: the old rows name no symbol or timeframe.
    let performance = read(
        source,
        &present,
        "strategy_api_strategyperformance",
        &[
            "id",
            "strategy_id",
            "backtest_id",
            "total_return",
            "annualized_return",
            "volatility",
            "sharpe_ratio",
            "max_drawdown",
            "win_rate",
            "profit_factor",
            "total_trades",
            "winning_trades",
            "losing_trades",
            "avg_trade_return",
            "start_date",
            "end_date",
            "initial_capital",
            "final_capital",
            "created_at",
        ],
    )
    .await?;
    let mut rows = Vec::new();
    for row in performance.iter() {
        let strategy = row.required_int("strategy_id")?;
        let Some(owner) = owner_of.get(&strategy) else { continue };
        summary.notes.push(format!(
            "performance {}: the old row names no symbol or timeframe; both are left empty, its other figures are in metrics",
            row.id()
        ));
        let metrics = json!({
            "imported_from": "django",
            "backtest_id": row.text("backtest_id"),
            "annualized_return": row.real("annualized_return")?,
            "volatility": row.real("volatility")?,
            "profit_factor": row.real("profit_factor")?,
            "winning_trades": row.int("winning_trades")?,
            "losing_trades": row.int("losing_trades")?,
            "avg_trade_return": row.real("avg_trade_return")?,
        });
        rows.push(vec![
            ids.cell("strategy_performance", row.int("id")?),
            ids.cell("users", Some(*owner)),
            ids.cell("strategies", Some(strategy)),
            Cell::text(""),
            Cell::text(""),
            Cell::Time(row.time("start_date")?),
            Cell::Time(row.time("end_date")?),
            Cell::Real(row.real("initial_capital")?),
            Cell::Real(row.real("final_capital")?),
            Cell::Real(row.real("total_return")?),
            Cell::Real(row.real("sharpe_ratio")?),
            Cell::Real(row.real("max_drawdown")?),
            Cell::Real(row.real("win_rate")?),
            Cell::Int(row.int("total_trades")?),
            Cell::Json(metrics),
            Cell::time(row.required_time("created_at")?),
        ]);
    }
    count(&mut summary, "strategy_api_strategyperformance", rows.len());
    const PERFORMANCE: &[&str] = &[
        "id",
        "user_id",
        "strategy_id",
        "symbol",
        "timeframe",
        "period_start",
        "period_end",
        "initial_capital",
        "final_value",
        "total_return",
        "sharpe_ratio",
        "max_drawdown",
        "win_rate",
        "total_trades",
        "metrics",
        "created_at",
    ];
    write.tables.push(TableRows { table: "strategy_performance", columns: PERFORMANCE, rows });

    // The latest backtest result of a strategy becomes a performance row.
    let latest = read(
        source,
        &present,
        "strategy_api_latestbacktestresult",
        &[
            "strategy_id",
            "symbol",
            "timeframe",
            "period",
            "initial_balance",
            "commission",
            "total_trades",
            "winning_trades",
            "losing_trades",
            "win_rate",
            "net_profit",
            "total_return_pct",
            "final_equity",
            "max_drawdown",
            "sharpe_ratio",
            "trades",
            "equity_curve",
            "created_at",
            "updated_at",
        ],
    )
    .await?;
    let mut rows = Vec::new();
    for row in latest.iter() {
        let strategy = row.required_int("strategy_id")?;
        let Some(owner) = owner_of.get(&strategy) else { continue };
        summary.notes.push(format!(
            "latest backtest result of strategy {strategy}: kept as a performance record (percentages as the old app wrote them; trades and equity curve in metrics)"
        ));
        let metrics = json!({
            "imported_from": "django latestbacktestresult",
            "period": row.text("period"),
            "commission": row.real("commission")?,
            "winning_trades": row.int("winning_trades")?,
            "losing_trades": row.int("losing_trades")?,
            "net_profit": row.real("net_profit")?,
            "total_return_pct": row.real("total_return_pct")?,
            "max_drawdown_pct": row.real("max_drawdown")?,
            "win_rate_pct": row.real("win_rate")?,
            "trades": row.json_value("trades")?,
            "equity_curve": row.json_value("equity_curve")?,
        });
        rows.push(vec![
            ids.cell("users", Some(*owner)),
            ids.cell("strategies", Some(strategy)),
            Cell::text(row.text("symbol")),
            Cell::text(row.text("timeframe")),
            Cell::Time(None),
            Cell::Time(None),
            Cell::Real(row.real("initial_balance")?),
            Cell::Real(row.real("final_equity")?),
            Cell::Real(row.real("total_return_pct")?.map(|pct| pct / 100.0)),
            Cell::Real(row.real("sharpe_ratio")?),
            Cell::Real(row.real("max_drawdown")?.map(|pct| pct / 100.0)),
            Cell::Real(row.real("win_rate")?),
            Cell::Int(row.int("total_trades")?),
            Cell::Json(metrics),
            Cell::time(row.required_time("updated_at")?),
        ]);
    }
    count(&mut summary, "strategy_api_latestbacktestresult", rows.len());
    write.tables.push(TableRows { table: "strategy_performance", columns: &PERFORMANCE[1..], rows });

    // Strategy chats and their messages.
    let chats = read(
        source,
        &present,
        "strategy_api_strategychat",
        &[
            "id",
            "session_id",
            "user_id",
            "strategy_id",
            "title",
            "is_active",
            "context_summary",
            "model_name",
            "temperature",
            "max_tokens",
            "created_at",
            "updated_at",
        ],
    )
    .await?;
    let mut rows = Vec::new();
    let mut chat_ids = BTreeSet::new();
    for row in chats.iter() {
        let strategy = row.int("strategy_id")?;
        let user = row
            .int("user_id")?
            .filter(|id| usernames.contains_key(id))
            .or_else(|| strategy.and_then(|s| owner_of.get(&s).copied()))
            .or(orphan_owner);
        let Some(user) = user else {
            let entry = summary.table("strategy_api_strategychat");
            entry.skipped += 1;
            entry.reasons.insert("no user and no strategy owner (give one with --orphans-to)".into());
            continue;
        };
        chat_ids.insert(row.required_int("id")?);
        rows.push(vec![
            ids.cell("strategy_chat_sessions", row.int("id")?),
            Cell::text(row.text("session_id")),
            ids.cell("users", Some(user)),
            ids.cell("strategies", strategy.filter(|s| owner_of.contains_key(s))),
            Cell::text(row.text("title")),
            Cell::Bool(row.boolean("is_active")?),
            Cell::text(row.text("context_summary")),
            Cell::text(row.text("model_name")),
            Cell::Real(Some(row.real("temperature")?.unwrap_or(0.7))),
            Cell::int(row.int("max_tokens")?.unwrap_or(2048)),
            Cell::time(row.required_time("created_at")?),
            Cell::time(row.required_time("updated_at")?),
        ]);
    }
    count(&mut summary, "strategy_api_strategychat", rows.len());
    write.tables.push(TableRows {
        table: "strategy_chat_sessions",
        columns: &[
            "id",
            "session_id",
            "user_id",
            "strategy_id",
            "title",
            "is_active",
            "context_summary",
            "model_name",
            "temperature",
            "max_tokens",
            "created_at",
            "updated_at",
        ],
        rows,
    });
    let chat_messages = read(
        source,
        &present,
        "strategy_api_strategychatmessage",
        &["id", "session_id", "role", "content", "tokens_used", "metadata", "function_call", "created_at"],
    )
    .await?;
    let mut rows = Vec::new();
    for row in chat_messages.iter() {
        let session = row.required_int("session_id")?;
        let role = row.text("role");
        let reason = if !chat_ids.contains(&session) {
            Some("its chat was not imported".to_string())
        } else if !["user", "assistant", "system"].contains(&role.as_str()) {
            Some(format!("role {role:?} is not user, assistant or system"))
        } else {
            None
        };
        if let Some(reason) = reason {
            let entry = summary.table("strategy_api_strategychatmessage");
            entry.skipped += 1;
            entry.reasons.insert(reason);
            continue;
        }
        let mut metadata = row.json_value("metadata")?;
        if !metadata.is_object() {
            metadata = json!({});
        }
        if let Some(tokens) = row.int("tokens_used")? {
            metadata["tokens_used"] = json!(tokens);
        }
        let function_call = row.json_value("function_call")?;
        if !function_call.is_null() {
            metadata["function_call"] = function_call;
        }
        rows.push(vec![
            ids.cell("strategy_chat_messages", row.int("id")?),
            ids.cell("strategy_chat_sessions", Some(session)),
            Cell::text(role),
            Cell::text(row.text("content")),
            Cell::Json(metadata),
            Cell::time(row.required_time("created_at")?),
        ]);
    }
    count(&mut summary, "strategy_api_strategychatmessage", rows.len());
    write.tables.push(TableRows {
        table: "strategy_chat_messages",
        columns: &["id", "session_id", "role", "content", "metadata", "created_at"],
        rows,
    });

    // Every old table is accounted for: what was read and not imported is
    // counted as skipped with a reason.
    for (name, entry) in &mut summary.tables {
        let accounted = entry.imported + entry.merged + entry.skipped;
        if accounted < entry.read {
            entry.skipped += entry.read - accounted;
            entry.reasons.insert(if NOT_IMPORTED.iter().any(|(n, _)| n == name) || name.starts_with("django_") {
                "not part of AlgoAgent's data".to_string()
            } else {
                "rows whose strategy or user did not come across".to_string()
            });
        }
    }

    if options.dry_run {
        return Ok(Outcome::DryRun(summary));
    }
    write.summary = summary.render();
    target.write_import(&write).await?;
    if let (true, Some(path)) = (options.merge, &options.map_file) {
        write_map(path, &ids, &write)?;
    }
    Ok(Outcome::Imported(summary))
}

/// The old → new ids of a merge, per our table, as JSON.
fn write_map(path: &std::path::Path, ids: &Ids, write: &ImportWrite) -> Result<(), ImportError> {
    let mut map = serde_json::Map::new();
    for table in &write.tables {
        if table.columns.first() != Some(&"id") {
            continue;
        }
        let offset = ids.offsets.get(table.table).copied().unwrap_or(0);
        let pairs: serde_json::Map<String, Value> = table
            .rows
            .iter()
            .filter_map(|row| match row.first() {
                Some(Cell::Int(Some(new))) => Some(((new - offset).to_string(), json!(new))),
                _ => None,
            })
            .collect();
        map.insert(table.table.to_string(), Value::Object(pairs));
    }
    let text = serde_json::to_string_pretty(&Value::Object(map)).unwrap_or_default();
    std::fs::write(path, text).map_err(|source| ImportError::MapFile { path: path.display().to_string(), source })
}

/// Names the source without a password.
fn redacted_source(from: &str) -> String {
    crate::config::ConnectionUrl::new(from).redacted()
}

/// What identifies one old database: its migrations and its users.
async fn fingerprint(source: &LegacySource, present: &BTreeSet<String>, users: &Table) -> Result<String, ImportError> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    if present.contains("django_migrations") {
        for row in source.rows("django_migrations", &["id", "app", "name", "applied"], "id").await? {
            for value in row {
                hasher.update(value.unwrap_or_default().as_bytes());
                hasher.update([0]);
            }
        }
    }
    for row in users.iter() {
        for column in ["id", "username", "date_joined"] {
            hasher.update(row.raw(column).unwrap_or_default().as_bytes());
            hasher.update([0]);
        }
    }
    Ok(api_core::bytes::hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn djangos_datetimes_parse_with_and_without_fractions_and_offsets() {
        assert_eq!(datetime("2025-10-31 08:00:00").unwrap().to_rfc3339(), "2025-10-31T08:00:00+00:00");
        assert_eq!(datetime("2025-10-31 08:00:00.123456").unwrap().timestamp_subsec_micros(), 123_456);
        assert_eq!(datetime("2025-10-31 08:00:00.5+00").unwrap().timestamp_subsec_millis(), 500);
        assert_eq!(datetime("2025-01-01").unwrap().to_rfc3339(), "2025-01-01T00:00:00+00:00");
        assert!(datetime("yesterday").is_none());
    }
}
