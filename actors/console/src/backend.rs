//! What the console shows and steers, as the running box provides it ([`Backend`]).
//!
//! The console crate knows nothing of the box's actors: the box implements [`Backend`] over
//! its health checks, metrics, audit store, knowledge base, content filter and turn pipeline,
//! and the pages render these plain values. Tests give a stand-in.
//!
//! Every method but [`Backend::ask`] may block (SQLite reads, file reads): the server calls
//! them on tokio's blocking pool.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use crate::pages::Overview;

/// One WeCom endpoint: an AI bot, a self-built app or a group robot webhook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bot {
    /// `AI bot (long connection)`, `AI bot (webhook)`, `app`, `robot webhook`.
    pub kind: String,
    /// Its id: the bot_id, the agentid, the webhook's name.
    pub id: String,
    /// `connected`, `connecting`, `standby`, `kicked`, `disconnected: …`, `callbacks` …
    pub state: String,
    /// The state is a healthy one.
    pub ok: bool,
    /// How long the state has lasted (`None`: not tracked for this kind).
    pub since: Option<Duration>,
    /// How long ago WeCom last acknowledged a heartbeat ping (long connections).
    pub last_ping: Option<Duration>,
    /// Reconnects since the box started (long connections).
    pub reconnects: Option<u64>,
    /// Messages received since local midnight (from the inbound table).
    pub messages_today: u64,
}

/// Counts of conversations (never their text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversations {
    /// Per endpoint (`aibot/bot-1`, `app/1000002`, `openai/…`, `console/…`): messages
    /// received since local midnight and the distinct conversations they came from.
    pub today: Vec<(String, u64, u64)>,
    /// The session actors running now, by conversation key (`aibot/bot-1/…`).
    pub active: Vec<String>,
    /// Answers waiting in the outbox to be delivered.
    pub outbox_pending: i64,
}

/// The audit page's filter: rows of one kind (or every kind) in a time range, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this kind (`reply_sent`); a trailing `*` matches a prefix (`console_*`).
    pub kind: Option<String>,
    /// Only rows at or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// Only rows before this time (unix ms).
    pub until_ms: Option<i64>,
    /// At most this many rows (the page shows [`AUDIT_PAGE_ROWS`]; an export has no limit).
    pub limit: Option<usize>,
}

/// Rows an audit page shows at once.
pub const AUDIT_PAGE_ROWS: usize = 200;

/// One audit row, as the page shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its place in the chain.
    pub seq: i64,
    /// When (unix ms).
    pub ts_ms: i64,
    /// `reply_sent`, `console_login` …
    pub kind: String,
    /// Who wrote it (`session`, `console` …).
    pub actor: String,
    /// What it is about (a conversation key, a client address …).
    pub subject: String,
    /// Its detail, JSON text.
    pub detail: String,
}

/// The audit trail, filtered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditPage {
    /// The rows, newest first.
    pub rows: Vec<AuditEntry>,
    /// Every kind in the trail, for the filter's list.
    pub kinds: Vec<String>,
}

/// An export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line (`wecom-edge audit export`'s format).
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// A document in the knowledge base.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    /// Its name (the file name it was stored under).
    pub doc: String,
    /// Its title.
    pub title: String,
    /// Its chunks.
    pub chunks: usize,
    /// Its size (bytes).
    pub bytes: u64,
    /// `cli`, `dir` (the configured folder) or `console`.
    pub source: String,
}

/// The content filter's rule sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterView {
    /// Terms in force.
    pub terms: usize,
    /// Regular expressions in force.
    pub regexes: usize,
}

/// What the filter does to a phrase (the "test a phrase" box).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterTest {
    /// Each match: the rule, its action (`block`, `mask`, `log`), the matched text.
    pub hits: Vec<(String, String, String)>,
    /// The phrase as the model would get it (masked).
    pub masked: String,
}

/// A model file the box has: the loaded one and the imported ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelFile {
    /// The file's name.
    pub name: String,
    /// The one answering now.
    pub loaded: bool,
    /// The box can switch to it from the console ([`Backend::switch_model`]).
    pub switchable: bool,
    /// `wecom-edge model inspect`'s report (text), or why the file could not be read.
    pub report: String,
}

/// What a "Try it" question streams back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TryEvent {
    /// The answer so far (each extends the one before).
    Text(String),
    /// The final answer (or the notice that ended the turn).
    Final(String),
}

/// The box, as the console sees it.
pub trait Backend: Send + Sync + 'static {
    /// The Overview page's values.
    fn overview(&self) -> Overview;
    /// Every configured WeCom endpoint.
    fn bots(&self) -> Vec<Bot>;
    /// Conversation counts.
    ///
    /// # Errors
    /// The store could not be read (the text says why).
    fn conversations(&self) -> Result<Conversations, String>;
    /// Audit rows matching `q`.
    ///
    /// # Errors
    /// The store could not be read.
    fn audit(&self, q: &AuditQuery) -> Result<AuditPage, String>;
    /// `wecom-edge audit verify`: `Ok(summary)` when intact, else `Err(problems)`.
    ///
    /// # Errors
    /// The chain is broken, or could not be read.
    fn verify(&self) -> Result<String, String>;
    /// Rows matching `q` in `format`, and how many there are.
    ///
    /// # Errors
    /// The store could not be read.
    fn export(&self, q: &AuditQuery, format: ExportFormat) -> Result<(Vec<u8>, usize), String>;
    /// The knowledge base's documents; `None` when the box has none configured.
    fn knowledge(&self) -> Option<Result<Vec<Document>, String>>;
    /// Stores an uploaded document `name` (its extension says how it is read); what happened.
    ///
    /// # Errors
    /// Unsupported, unreadable or empty document; the store.
    fn knowledge_add(&self, name: &str, bytes: &[u8]) -> Result<String, String>;
    /// Removes document `name`.
    ///
    /// # Errors
    /// No such document; the store.
    fn knowledge_remove(&self, name: &str) -> Result<(), String>;
    /// The content filter's sizes; `None` when no filter is configured.
    fn filter(&self) -> Option<FilterView>;
    /// What the filter in force does to `phrase`.
    fn filter_test(&self, phrase: &str) -> FilterTest;
    /// The model files.
    fn models(&self) -> Vec<ModelFile>;
    /// Asks the box to switch to the imported model `name` (one [`ModelFile::switchable`]):
    /// it is checked as a stick's model is, then the box restarts on it. What happens next.
    ///
    /// # Errors
    /// No such switchable model; the request could not be written.
    fn switch_model(&self, name: &str) -> Result<String, String>;
    /// Asks `question` through the same turn pipeline as a WeCom user, as console user
    /// `who` (its own audit actor id); the answer streams on the receiver.
    fn ask(&self, who: &str, question: &str) -> UnboundedReceiver<TryEvent>;
}
