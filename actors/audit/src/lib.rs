//! The box's durable state in one SQLite file (WAL mode, `synchronous=FULL`): the tamper-evident
//! audit trail, the msgid dedupe table, accepted-but-unanswered inbound messages, and session
//! history.
//!
//! * **Audit trail** — append-only (UPDATE and DELETE are refused by triggers) and chained with a
//!   keyed MAC: `hash = HMAC-SHA256(key, prev_hash ‖ seq ‖ ts_ms ‖ kind ‖ actor ‖ subject ‖ detail)`
//!   (seq and ts_ms as 8 big-endian bytes, each text field prefixed with its length as 8
//!   big-endian bytes; 32 zero bytes before the first row). An edited, deleted, reordered or
//!   re-hashed row breaks the chain at that row ([`AuditStore::verify`]), and without the key
//!   the chain cannot be recomputed. Rows never carry secrets or message text.
//! * **Key** ([`AuditKey`]) — 32 random bytes outside the database (by default
//!   `DATA_DIR/keys/audit.key`, 0600 in a 0700 directory, made at the first start; any other
//!   path may be given, e.g. a systemd credential). Its id (first 8 bytes of its SHA-256, hex) is
//!   recorded; the key itself never is.
//! * **Versions** — the `meta` table (write-once) holds `chain = 'hmac-sha256-v1'`, a random
//!   `db_id`, the `key_id` and `keyed_from`, the first keyed row. A new database is keyed from
//!   row 1. A database from before the key (no `meta`, plain `SHA-256(…)` rows) keeps its rows;
//!   at its first keyed open it gets `keyed_from` = its last row + 1 and a `chain_keyed` row
//!   there, so the first keyed row's MAC covers the whole legacy chain; verify checks rows before
//!   `keyed_from` with plain SHA-256 and the rest with HMAC.
//! * **Head** ([`Head`], file `DATA_DIR/audit.head`) — after every committed append the writer
//!   replaces the head file (db_id, key_id, keyed_from, last seq and hash, MAC'd with the key;
//!   temporary file, fsync, rename; the directory fsynced when the last time was 5 s or more
//!   ago), and the audit actor logs it every 10 minutes for the journal. A head naming a row
//!   past the end is a truncation (deleted last rows, a WAL cut after a crash); a head naming
//!   another `db_id` is a deleted, emptied or replaced database; a head behind the database is
//!   fine (the rows after it are keyed: a commit whose head write was cut short).
//! * **Start** ([`AuditStore::open`]) — what the head and the database disagree on is not
//!   papered over: each finding ([`StartFinding`]) is logged at error level, appended as an
//!   audit row (`audit_chain_restarted`, `audit_truncated_detected`, `audit_head_mismatch`,
//!   `audit_head_missing`, `audit_head_invalid`), and kept for the box ([`AuditStore::findings`]);
//!   then the head is re-anchored. A corrupt database, or one keyed with another key, is moved
//!   aside (`wecom-edge.sqlite3.corrupt-<unix_ms>`, `….key-<key_id>-<unix_ms>`, with its -wal and
//!   -shm) and a new one started.
//! * **Limits** — someone with the files but not the key can still remove the `meta` table and
//!   the head file and recompute the whole chain with plain SHA-256: that looks like a legacy
//!   database never opened by a keyed writer, and verify reports it as legacy and unanchored.
//!   Removing the whole data directory (key included) starts over without a trace on disk.
//!   The periodic head lines in the journal are the witness outside the data directory.
//! * **Dedupe** — `(channel, msgid)` is UNIQUE; WeCom's redeliveries and retries are dropped, also
//!   across restarts; rows older than the retention are pruned.
//! * **Inbound** — a message is written (with its dedupe row and its audit row, in one
//!   transaction) before it is acknowledged; [`AuditStore::pending_inbound`] lists what was
//!   accepted and not yet answered, for the start-up sweep.
//! * **Outbox** — answers generated but not delivered, with what is still to send, kept until
//!   the outbox actor delivers them or gives up ([`AuditStore::outbox_put`]).
//! * **History** — each session's turns, so a restarted session continues its conversation.
//! * **Knowledge** — the company's documents in chunks, retrieved by BM25 over jieba-segmented
//!   words ([`knowledge`]; its own file, written by `wecom-edge kb` and the start-up import).
//!
//! All access goes through one writer (the audit actor); readers (the CLI) open read-only.
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod chain;
mod head;
mod key;
pub mod knowledge;
mod outbox;
mod report;
pub mod writer;
pub use head::{Head, HeadStatus, HEAD_FILE};
pub use key::{AuditKey, KEY_FILE};
pub use outbox::OutboxItem;
pub use report::{Incident, RestartReason, StartFinding, Verification, INCIDENT_KINDS};
pub use writer::{record, AuditActor, AuditArgs, AuditMsg, AUDIT_ACTOR};

use chain::{
    hash_at, head_status, last_row, mismatch, move_aside, open_checked, read_meta, row_hash,
    start_finding, table_exists, write_meta, Chain, DbFile, Meta,
};
use head::HeadRead;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

/// The database file name inside the data directory.
pub const DB_FILE: &str = "wecom-edge.sqlite3";

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite failed (I/O, disk full, corruption, a refused UPDATE on the audit table).
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be prepared (or a corrupt database moved aside).
    #[error("data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The audit key could not be read, is not a key, or could not be created.
    #[error("audit key {path}: {source}")]
    Key {
        /// The key file.
        path: String,
        /// The I/O error (`NotFound`: no key there).
        source: std::io::Error,
    },
    /// The head file could not be written at open.
    #[error("audit head {path}: {source}")]
    Head {
        /// The head file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The OS's random source failed (making a key or a db_id).
    #[error("random source: {0}")]
    Random(getrandom::Error),
    /// Earlier writes failed and wait for replay (the audit actor keeps order: nothing new is
    /// written before them).
    #[error("earlier writes are still waiting for the store to take writes again")]
    Deferred,
    /// SQLite's `quick_check`, or the chain metadata, found the database damaged.
    #[error("database damaged: {0}")]
    Corrupt(String),
    /// The database's chain is of a version this build does not know.
    #[error("audit chain: {0}")]
    Meta(String),
    /// There is no database file (read-only opens do not create one).
    #[error("no audit database at {path}")]
    NoDatabase {
        /// The missing file.
        path: String,
    },
    /// The store was opened read-only; it cannot append.
    #[error("the audit store is open read-only")]
    ReadOnly,
}

pub(crate) fn dir_err(dir: &Path, source: std::io::Error) -> AuditError {
    AuditError::Dir {
        path: dir.display().to_string(),
        source,
    }
}

/// `rows` as RFC 4180 CSV with a header row — seq, ts_ms, kind, actor, subject, detail (its
/// JSON text), prev_hash, hash — as `wecom-edge audit export --format csv` and the console's
/// export write them.
///
/// # Errors
/// Writing to `out`.
pub fn write_csv(out: impl std::io::Write, rows: &[AuditRow]) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "seq",
        "ts_ms",
        "kind",
        "actor",
        "subject",
        "detail",
        "prev_hash",
        "hash",
    ])?;
    for r in rows {
        w.write_record([
            r.seq.to_string(),
            r.ts_ms.to_string(),
            r.kind.clone(),
            r.actor.clone(),
            r.subject.clone(),
            r.detail.to_string(),
            r.prev_hash.clone(),
            r.hash.clone(),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When it was written (unix milliseconds).
    pub ts_ms: i64,
    /// What happened: `inbound_received`, `duplicate_dropped`, `rate_limited`,
    /// `generation_started`, `generation_finished`, `reply_sent`, `reply_failed`,
    /// `actor_restarted`, `config_loaded`, `callback_rejected`, …
    pub kind: String,
    /// Which part of the box wrote it.
    pub actor: String,
    /// What it is about (a msgid, a conversation key, an actor id).
    pub subject: String,
    /// Details as JSON (counts, timings, error codes; never secrets or message text).
    pub detail: Value,
    /// The previous row's hash (32 zero bytes for the first), hex.
    pub prev_hash: String,
    /// This row's hash, hex.
    pub hash: String,
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// The first row that does not verify.
    pub seq: i64,
    /// Why.
    pub reason: String,
}

/// What [`AuditStore::accept_inbound`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// New: stored under this inbound id.
    New(i64),
    /// Seen before (WeCom's redelivery or retry): dropped.
    Duplicate,
}

/// An accepted inbound message that is not answered yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingInbound {
    /// Inbound id.
    pub id: i64,
    /// Channel (e.g. `aibot/{bot_id}`).
    pub channel: String,
    /// WeCom's msgid.
    pub msgid: String,
    /// The conversation key.
    pub conversation: String,
    /// The message as accepted (JSON).
    pub payload: Value,
    /// When it was accepted (unix ms).
    pub received_ms: i64,
    /// Generations started for it so far ([`AuditStore::start_attempt`]); one that keeps
    /// crashing or stalling the model is settled with an apology instead of replayed forever.
    pub attempts: i64,
}

/// One turn of a session's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// Wall-clock time as unix milliseconds (0 before the epoch): the unit of every `*_ms` column.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn random_id() -> Result<String, AuditError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(AuditError::Random)?;
    Ok(hex(&b))
}

/// Directory fsyncs after head writes are at most this far apart.
const DIR_SYNC_EVERY: Duration = Duration::from_secs(5);

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON meta
    BEGIN SELECT RAISE(ABORT, 'the audit meta table is write-once'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON meta
    BEGIN SELECT RAISE(ABORT, 'the audit meta table is write-once'); END;
CREATE TABLE IF NOT EXISTS audit (
    seq       INTEGER PRIMARY KEY,
    ts_ms     INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    subject   TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TABLE IF NOT EXISTS dedupe (
    channel       TEXT NOT NULL,
    msgid         TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (channel, msgid)
);
CREATE INDEX IF NOT EXISTS dedupe_age ON dedupe (first_seen_ms);
CREATE TABLE IF NOT EXISTS inbound (
    id           INTEGER PRIMARY KEY,
    channel      TEXT NOT NULL,
    msgid        TEXT NOT NULL,
    conversation TEXT NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('accepted', 'answered', 'failed')),
    received_ms  INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS inbound_state ON inbound (state);
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY,
    inbound_id   INTEGER NOT NULL,
    conversation TEXT NOT NULL,
    origin       TEXT NOT NULL,
    parts        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_ms   INTEGER NOT NULL,
    next_ms      INTEGER NOT NULL,
    deadline_ms  INTEGER NOT NULL,
    last_error   TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS probe (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    ts_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    session TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    role    TEXT NOT NULL,
    content TEXT NOT NULL,
    ts_ms   INTEGER NOT NULL,
    PRIMARY KEY (session, seq)
);
";

/// The writer's chain state (absent on read-only stores).
struct Writer {
    key: AuditKey,
    head: Head,
    findings: Vec<StartFinding>,
    dir_synced: Instant,
}

/// The single writer's handle on the database (or a reader's, from
/// [`AuditStore::open_read_only`]).
pub struct AuditStore {
    conn: Connection,
    dir: PathBuf,
    w: Option<Writer>,
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore")
            .field("dir", &self.dir)
            .field("head", &self.w.as_ref().map(|w| &w.head))
            .finish_non_exhaustive()
    }
}

impl AuditStore {
    /// Opens (creating) `dir/wecom-edge.sqlite3` for writing: WAL, `synchronous=FULL` (a commit
    /// is on disk when it returns), 5 s busy timeout, schema created, `PRAGMA quick_check` run.
    /// New rows are chained with `key`. Then it checks the head file (`dir/audit.head`) against
    /// the database; what disagrees becomes a [`StartFinding`] ([`AuditStore::findings`]), an
    /// audit row and an error log line (see the module docs). A corrupt database, or one keyed
    /// with another key, is moved aside and a new one started. Finally the head is written.
    ///
    /// # Errors
    /// [`AuditError`]: I/O on the directory or the head, SQLite, an unknown chain version.
    pub fn open(dir: &Path, key: AuditKey) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| dir_err(dir, e))?;
        let db = dir.join(DB_FILE);
        let before = match std::fs::metadata(&db) {
            Err(_) => DbFile::Missing,
            Ok(m) if m.len() == 0 => DbFile::Empty,
            Ok(_) => DbFile::Present,
        };
        let head = head::read(dir, &key);
        let reopen = |db: &Path| {
            open_checked(db)?.map_err(|why| AuditError::Corrupt(format!("a new database: {why}")))
        };
        let mut restart = None;
        let (mut conn, mut meta) = match open_checked(&db)? {
            Ok(x) => x,
            Err(why) => {
                let moved = move_aside(&db, "corrupt")?;
                tracing::error!(file = %moved.display(), error = %why,
                    "audit database corrupt: moved aside, a new chain starts");
                restart = Some((RestartReason::Corrupt { error: why }, moved));
                reopen(&db)?
            }
        };
        if let Some(db_key_id) = meta
            .as_ref()
            .filter(|m| m.key_id != key.id())
            .map(|m| m.key_id.clone())
        {
            drop(conn);
            let moved = move_aside(&db, &format!("key-{db_key_id}"))?;
            tracing::error!(file = %moved.display(), db_key_id, key_id = key.id(),
                "audit database keyed with another key: moved aside, a new chain starts");
            restart = Some((RestartReason::KeyChanged { db_key_id }, moved));
            (conn, meta) = reopen(&db)?;
        }
        let last = last_row(&conn)?;
        let status = head_status(&head, meta.as_ref(), last.as_ref(), |s| hash_at(&conn, s))?;
        let old_head = match head {
            HeadRead::Valid(h) => Some(h),
            _ => None,
        };
        let mut findings: Vec<StartFinding> = match restart {
            Some((reason, moved)) => Some(StartFinding::ChainRestarted {
                reason,
                moved_to: Some(moved),
                old_head,
            }),
            None => start_finding(status, before, meta.is_some(), last.as_ref(), old_head),
        }
        .into_iter()
        .collect();

        let tx = conn.transaction()?;
        let meta = match meta {
            Some(m) => m,
            None => {
                let m = Meta {
                    db_id: random_id()?,
                    key_id: key.id().to_string(),
                    keyed_from: last.as_ref().map_or(1, |l| l.0 + 1),
                };
                write_meta(&tx, &m)?;
                if let Some((n, _)) = last {
                    findings.insert(0, StartFinding::LegacyKeyed { legacy_rows: n });
                }
                m
            }
        };
        for f in &findings {
            let detail = serde_json::to_value(f).unwrap_or(Value::Null);
            append_in(&tx, &key, f.kind(), "audit", DB_FILE, &detail)?;
        }
        tx.commit()?;
        for f in &findings {
            if f.is_alert() {
                tracing::error!(kind = f.kind(), "{f}");
            } else {
                tracing::info!(kind = f.kind(), "{f}");
            }
        }

        let (seq, hash) = last_row(&conn)?.unwrap_or((0, vec![0u8; 32]));
        let head = Head {
            db_id: meta.db_id,
            key_id: key.id().to_string(),
            keyed_from: meta.keyed_from,
            seq,
            hash: hex(&hash),
        };
        head::write(dir, &key, &head, true).map_err(|source| AuditError::Head {
            path: dir.join(HEAD_FILE).display().to_string(),
            source,
        })?;
        Ok(AuditStore {
            conn,
            dir: dir.to_path_buf(),
            w: Some(Writer {
                key,
                head,
                findings,
                dir_synced: Instant::now(),
            }),
        })
    }

    /// Opens an existing database read-only (for `wecom-edge audit`). Needs no key; only
    /// [`AuditStore::verify`] does.
    ///
    /// # Errors
    /// [`AuditError::NoDatabase`] when `dir` has no database file; [`AuditError::Sqlite`].
    pub fn open_read_only(dir: &Path) -> Result<Self, AuditError> {
        let db = dir.join(DB_FILE);
        if !db.exists() {
            return Err(AuditError::NoDatabase {
                path: db.display().to_string(),
            });
        }
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(AuditStore {
            conn,
            dir: dir.to_path_buf(),
            w: None,
        })
    }

    /// Verifies the trail in `dir` read-only, like [`AuditStore::verify`], also when the
    /// database file is gone: then a head file that verifies is reported as
    /// [`HeadStatus::ForeignDb`] with `db_id: None` (0 rows).
    ///
    /// # Errors
    /// [`AuditError::NoDatabase`] when there is neither a database nor a head file;
    /// [`AuditError`] when the database cannot be read.
    pub fn verify_dir(dir: &Path, key: &AuditKey) -> Result<Verification, AuditError> {
        match Self::open_read_only(dir) {
            Ok(s) => s.verify(key),
            Err(e @ AuditError::NoDatabase { .. }) => {
                let head = head::read(dir, key);
                if matches!(head, HeadRead::Missing) {
                    return Err(e);
                }
                Ok(Verification {
                    rows: 0,
                    broken: None,
                    keyed_from: None,
                    head: head_status(&head, None, None, |_| Ok(None))?,
                    incidents: Vec::new(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// What this open found (empty when the head and the database agreed); writer stores only.
    pub fn findings(&self) -> &[StartFinding] {
        self.w.as_ref().map_or(&[], |w| &w.findings)
    }

    /// The chain's head as last anchored (the head file's content); `None` on a read-only
    /// store. For the writer's periodic journal line.
    pub fn head(&self) -> Option<&Head> {
        self.w.as_ref().map(|w| &w.head)
    }

    /// Records the new head in memory and in the head file after a commit. A failed head
    /// write is logged, not returned: the rows are committed, and an older head only reads as
    /// "behind" (the next commit retries).
    fn anchor(&mut self, seq: i64, hash: [u8; 32]) {
        let Some(w) = self.w.as_mut() else { return };
        w.head.seq = seq;
        w.head.hash = hex(&hash);
        let sync = w.dir_synced.elapsed() >= DIR_SYNC_EVERY;
        match head::write(&self.dir, &w.key, &w.head, sync) {
            Ok(()) if sync => w.dir_synced = Instant::now(),
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, seq, "audit head file not written"),
        }
    }

    /// Raw access for tests and tools that must bypass the API (e.g. to tamper on purpose).
    /// Rows written through it are not keyed and do not move the head.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Appends one audit row (HMAC-chained) and re-anchors the head; returns its seq.
    ///
    /// # Errors
    /// [`AuditError`] ([`AuditError::ReadOnly`] on a read-only store).
    pub fn append(
        &mut self,
        kind: &str,
        actor: &str,
        subject: &str,
        detail: &Value,
    ) -> Result<i64, AuditError> {
        let w = self.w.as_ref().ok_or(AuditError::ReadOnly)?;
        let tx = self.conn.transaction()?;
        let (seq, hash) = append_in(&tx, &w.key, kind, actor, subject, detail)?;
        tx.commit()?;
        self.anchor(seq, hash);
        Ok(seq)
    }

    /// Records an inbound message before it is acknowledged: dedupe row, inbound row and audit
    /// row (`inbound_received`, or `duplicate_dropped`) in one transaction.
    ///
    /// # Errors
    /// [`AuditError`]; on error nothing was written and the message must not be acknowledged.
    pub fn accept_inbound(
        &mut self,
        channel: &str,
        msgid: &str,
        conversation: &str,
        payload: &Value,
    ) -> Result<Accepted, AuditError> {
        let w = self.w.as_ref().ok_or(AuditError::ReadOnly)?;
        let tx = self.conn.transaction()?;
        let now = now_ms();
        let fresh = tx.execute(
            "INSERT OR IGNORE INTO dedupe (channel, msgid, first_seen_ms) VALUES (?1, ?2, ?3)",
            params![channel, msgid, now],
        )? == 1;
        let res = if fresh {
            tx.execute(
                "INSERT INTO inbound (channel, msgid, conversation, payload, state, received_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, 'accepted', ?5, ?5)",
                params![channel, msgid, conversation, payload.to_string(), now],
            )?;
            let id = tx.last_insert_rowid();
            let row = append_in(
                &tx,
                &w.key,
                "inbound_received",
                channel,
                msgid,
                &serde_json::json!({"inbound_id": id, "conversation": conversation}),
            )?;
            (Accepted::New(id), row)
        } else {
            let row = append_in(
                &tx,
                &w.key,
                "duplicate_dropped",
                channel,
                msgid,
                &serde_json::json!({"conversation": conversation}),
            )?;
            (Accepted::Duplicate, row)
        };
        tx.commit()?;
        let (res, (seq, hash)) = res;
        self.anchor(seq, hash);
        Ok(res)
    }

    /// Marks an inbound message answered (or failed, when the user was told it failed).
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn finish_inbound(&mut self, id: i64, answered: bool) -> Result<(), AuditError> {
        self.conn.execute(
            "UPDATE inbound SET state = ?2, updated_ms = ?3 WHERE id = ?1",
            params![id, if answered { "answered" } else { "failed" }, now_ms()],
        )?;
        Ok(())
    }

    /// Counts one more generation started for inbound message `id` (durable before the model
    /// sees it) and returns the count; 0 when there is no such message.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn start_attempt(&mut self, id: i64) -> Result<i64, AuditError> {
        Ok(self
            .conn
            .query_row(
                "UPDATE inbound SET attempts = attempts + 1, updated_ms = ?2 WHERE id = ?1
                 RETURNING attempts",
                params![id, now_ms()],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0))
    }

    /// The watchdog's write probe: a real write (one row of the `probe` table rewritten) that
    /// must commit, so a full or read-only disk shows (an empty transaction writes nothing and
    /// succeeds on both).
    ///
    /// # Errors
    /// [`AuditError`]: SQLITE_FULL, SQLITE_READONLY, I/O errors.
    pub fn probe(&mut self) -> Result<(), AuditError> {
        self.conn.execute(
            "INSERT INTO probe (id, ts_ms) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET ts_ms = excluded.ts_ms",
            params![now_ms()],
        )?;
        Ok(())
    }

    /// Accepted messages not yet answered, oldest first.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn pending_inbound(&self) -> Result<Vec<PendingInbound>, AuditError> {
        let mut st = self.conn.prepare(
            "SELECT id, channel, msgid, conversation, payload, received_ms, attempts FROM inbound
             WHERE state = 'accepted' ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            let payload: String = r.get(4)?;
            Ok(PendingInbound {
                id: r.get(0)?,
                channel: r.get(1)?,
                msgid: r.get(2)?,
                conversation: r.get(3)?,
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                received_ms: r.get(5)?,
                attempts: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets dedupe rows (and finished inbound rows) older than `max_age`; returns how many
    /// dedupe rows went.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn prune(&mut self, max_age: std::time::Duration) -> Result<usize, AuditError> {
        let cutoff = now_ms() - max_age.as_millis() as i64;
        let n = self.conn.execute(
            "DELETE FROM dedupe WHERE first_seen_ms <= ?1",
            params![cutoff],
        )?;
        self.conn.execute(
            "DELETE FROM inbound WHERE state != 'accepted' AND updated_ms <= ?1",
            params![cutoff],
        )?;
        Ok(n)
    }

    /// Appends a turn to a session's history.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn history_push(
        &mut self,
        session: &str,
        role: &str,
        content: &str,
    ) -> Result<(), AuditError> {
        self.conn.execute(
            "INSERT INTO history (session, seq, role, content, ts_ms)
             VALUES (?1, COALESCE((SELECT MAX(seq) FROM history WHERE session = ?1), 0) + 1, ?2, ?3, ?4)",
            params![session, role, content, now_ms()],
        )?;
        Ok(())
    }

    /// A session's last `limit` turns, oldest first.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn history(&self, session: &str, limit: usize) -> Result<Vec<Turn>, AuditError> {
        let mut st = self.conn.prepare(
            "SELECT role, content FROM (SELECT seq, role, content FROM history WHERE session = ?1
             ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
        )?;
        let rows = st.query_map(params![session, limit as i64], |r| {
            Ok(Turn {
                role: r.get(0)?,
                content: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets a session's history (`#reset`).
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn history_clear(&mut self, session: &str) -> Result<usize, AuditError> {
        Ok(self
            .conn
            .execute("DELETE FROM history WHERE session = ?1", params![session])?)
    }

    /// Audit rows with `ts_ms >= since_ms`, in chain order.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn rows_since(&self, since_ms: i64) -> Result<Vec<AuditRow>, AuditError> {
        self.query_rows("WHERE ts_ms >= ?1 ORDER BY seq", params![since_ms])
    }

    /// The last `n` audit rows, in chain order.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn tail(&self, n: usize) -> Result<Vec<AuditRow>, AuditError> {
        let mut rows = self.query_rows("ORDER BY seq DESC LIMIT ?1", params![n as i64])?;
        rows.reverse();
        Ok(rows)
    }

    /// The newest rows first: of `kind` (a trailing `*` matches a prefix; `None`: every
    /// kind), with `since_ms <= ts_ms < until_ms` where given, at most `limit`.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn query(
        &self,
        kind: Option<&str>,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
        limit: Option<usize>,
    ) -> Result<Vec<AuditRow>, AuditError> {
        // A prefix is matched by a range, not LIKE: `_` and `%` in a kind are literal.
        let (lo, hi) = match kind {
            None => (String::new(), None),
            Some(k) => match k.strip_suffix('*') {
                Some(prefix) => {
                    let mut hi = prefix.to_string();
                    hi.push(char::MAX);
                    (prefix.to_string(), Some(hi))
                }
                None => (k.to_string(), Some(k.to_string())),
            },
        };
        let exact = kind.is_some_and(|k| !k.ends_with('*'));
        self.query_rows(
            "WHERE (?1 = 0 OR (?2 = 1 AND kind = ?3) OR (?2 = 0 AND kind >= ?3 AND kind < ?4))
               AND ts_ms >= ?5 AND ts_ms < ?6
             ORDER BY seq DESC LIMIT ?7",
            params![
                kind.is_some() as i64,
                exact as i64,
                lo,
                hi.unwrap_or_default(),
                since_ms.unwrap_or(i64::MIN),
                until_ms.unwrap_or(i64::MAX),
                limit.map_or(-1, |l| l as i64),
            ],
        )
    }

    /// Every kind the trail holds, sorted.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn kinds(&self) -> Result<Vec<String>, AuditError> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT kind FROM audit ORDER BY kind")?;
        let kinds = st.query_map([], |r| r.get(0))?;
        Ok(kinds.collect::<Result<_, _>>()?)
    }

    /// Messages received at or after `since_ms`, per channel (`aibot/bot-1`, `app/1000002`):
    /// (channel, messages, distinct conversations), by channel.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn inbound_counts(&self, since_ms: i64) -> Result<Vec<(String, u64, u64)>, AuditError> {
        let mut st = self.conn.prepare(
            "SELECT channel, COUNT(*), COUNT(DISTINCT conversation) FROM inbound
             WHERE received_ms >= ?1 GROUP BY channel ORDER BY channel",
        )?;
        let rows = st.query_map(params![since_ms], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn query_rows(
        &self,
        clause: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<AuditRow>, AuditError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT seq, ts_ms, kind, actor, subject, detail, prev_hash, hash FROM audit {clause}"
        ))?;
        let rows = st.query_map(p, |r| {
            let detail: String = r.get(5)?;
            let prev: Vec<u8> = r.get(6)?;
            let hash: Vec<u8> = r.get(7)?;
            Ok(AuditRow {
                seq: r.get(0)?,
                ts_ms: r.get(1)?,
                kind: r.get(2)?,
                actor: r.get(3)?,
                subject: r.get(4)?,
                detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
                prev_hash: hex(&prev),
                hash: hex(&hash),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Walks the whole chain in one read snapshot: seqs 1, 2, 3 … without gaps, each
    /// `prev_hash` equal to the previous row's hash, each hash recomputed from the row (plain
    /// SHA-256 before `keyed_from`, HMAC-SHA256 with `key` from it on); stops at the first row
    /// that does not verify. Then compares the head file (read first, so a concurrent writer
    /// can only put the database ahead of it) with the database.
    ///
    /// # Errors
    /// [`AuditError`] when the database cannot be read or names an unknown chain version.
    pub fn verify(&self, key: &AuditKey) -> Result<Verification, AuditError> {
        let head = head::read(&self.dir, key);
        let tx = self.conn.unchecked_transaction()?;
        let meta = read_meta(&tx)?;
        let keyed_from = meta.as_ref().map(|m| m.keyed_from);
        let mut v = Verification {
            rows: 0,
            broken: None,
            keyed_from,
            head: HeadStatus::Missing,
            incidents: Vec::new(),
        };
        if table_exists(&tx, "audit")? {
            let mut st = tx.prepare(
                "SELECT seq, ts_ms, kind, actor, subject, detail, prev_hash, hash FROM audit ORDER BY seq",
            )?;
            let mut rows = st.query([])?;
            let mut prev = vec![0u8; 32];
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                let kind: String = r.get(2)?;
                let stored_prev: Vec<u8> = r.get(6)?;
                let stored: Vec<u8> = r.get(7)?;
                let keyed = keyed_from.is_some_and(|k| seq >= k);
                let reason = if seq != v.rows + 1 {
                    Some(format!(
                        "expected row {} here: rows are missing",
                        v.rows + 1
                    ))
                } else if stored_prev != prev {
                    Some("prev_hash does not match the previous row's hash".into())
                } else {
                    let chain = if keyed {
                        Chain::Keyed(key)
                    } else {
                        Chain::Plain
                    };
                    let (actor, subject, detail): (String, String, String) =
                        (r.get(3)?, r.get(4)?, r.get(5)?);
                    let fields = [kind.as_str(), &actor, &subject, &detail];
                    let h = row_hash(chain, &prev, seq, r.get(1)?, fields);
                    (stored != h).then(|| mismatch(keyed, meta.as_ref(), key))
                };
                if let Some(reason) = reason {
                    v.broken = Some(Broken { seq, reason });
                    break;
                }
                if INCIDENT_KINDS.contains(&kind.as_str()) {
                    v.incidents.push(Incident { seq, kind });
                }
                prev = stored;
                v.rows = seq;
            }
        }
        let last = last_row(&tx)?;
        v.head = head_status(&head, meta.as_ref(), last.as_ref(), |s| hash_at(&tx, s))?;
        Ok(v)
    }
}

/// Appends a keyed row inside a transaction (the chain head is read under the same write
/// lock); returns its seq and hash.
fn append_in(
    tx: &rusqlite::Transaction<'_>,
    key: &AuditKey,
    kind: &str,
    actor: &str,
    subject: &str,
    detail: &Value,
) -> Result<(i64, [u8; 32]), AuditError> {
    let (seq, prev) = match last_row(tx)? {
        Some((s, h)) => (s + 1, h),
        None => (1, vec![0u8; 32]),
    };
    let ts = now_ms();
    let detail = detail.to_string();
    let hash = row_hash(
        Chain::Keyed(key),
        &prev,
        seq,
        ts,
        [kind, actor, subject, &detail],
    );
    tx.execute(
        "INSERT INTO audit (seq, ts_ms, kind, actor, subject, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![seq, ts, kind, actor, subject, detail, prev, hash.to_vec()],
    )?;
    Ok((seq, hash))
}
