//! The box's durable state in one SQLite file (WAL mode, `synchronous=FULL`): the tamper-evident
//! audit trail, the msgid dedupe table, accepted-but-unanswered inbound messages, and session
//! history.
//!
//! * **Audit trail** — append-only (UPDATE and DELETE are refused by triggers) and hash-chained:
//!   `hash = SHA-256(prev_hash ‖ seq ‖ ts_ms ‖ kind ‖ actor ‖ subject ‖ detail)` with each text
//!   field length-prefixed, so an edited, deleted or reordered row breaks the chain at that row
//!   ([`AuditStore::verify`]). Rows never carry secrets or message text, only ids and counts.
//! * **Dedupe** — `(channel, msgid)` is UNIQUE; WeCom's redeliveries and retries are dropped, also
//!   across restarts; rows older than the retention are pruned.
//! * **Inbound** — a message is written (with its dedupe row and its audit row, in one
//!   transaction) before it is acknowledged; [`AuditStore::pending_inbound`] lists what was
//!   accepted and not yet answered, for the start-up sweep.
//! * **History** — each session's turns, so a restarted session continues its conversation.
//!
//! All access goes through one writer (the audit actor); readers (the CLI) open read-only.
#![warn(missing_docs)]

use std::path::Path;

pub mod writer;
pub use writer::{record, AuditActor, AuditArgs, AuditMsg, AUDIT_ACTOR};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The database file name inside the data directory.
pub const DB_FILE: &str = "wecom-edge.sqlite3";

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite failed (I/O, disk full, corruption, a refused UPDATE on the audit table).
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be prepared.
    #[error("data directory {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// One turn of a session's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The chained hash of one row.
fn row_hash(
    prev: &[u8],
    seq: i64,
    ts_ms: i64,
    kind: &str,
    actor: &str,
    subject: &str,
    detail: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(ts_ms.to_be_bytes());
    for field in [kind, actor, subject, detail] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().into()
}

const SCHEMA: &str = "
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
    updated_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS inbound_state ON inbound (state);
CREATE TABLE IF NOT EXISTS history (
    session TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    role    TEXT NOT NULL,
    content TEXT NOT NULL,
    ts_ms   INTEGER NOT NULL,
    PRIMARY KEY (session, seq)
);
";

/// The single writer's handle on the database.
pub struct AuditStore {
    conn: Connection,
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore").finish_non_exhaustive()
    }
}

impl AuditStore {
    /// Opens (creating) `dir/wecom-edge.sqlite3` for writing: WAL, `synchronous=FULL` (a commit
    /// is on disk when it returns), foreign keys on, 5 s busy timeout, schema created.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(|source| AuditError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let conn = Connection::open(dir.join(DB_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(AuditStore { conn })
    }

    /// Opens an existing database read-only (for `wecom-edge audit`).
    ///
    /// # Errors
    /// [`AuditError`] (e.g. no database in `dir`).
    pub fn open_read_only(dir: &Path) -> Result<Self, AuditError> {
        let conn = Connection::open_with_flags(
            dir.join(DB_FILE),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(AuditStore { conn })
    }

    /// Raw access for tests and tools that must bypass the API (e.g. to tamper on purpose).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Appends one audit row; returns its seq.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn append(
        &mut self,
        kind: &str,
        actor: &str,
        subject: &str,
        detail: &Value,
    ) -> Result<i64, AuditError> {
        let tx = self.conn.transaction()?;
        let seq = append_in(&tx, kind, actor, subject, detail)?;
        tx.commit()?;
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
            append_in(
                &tx,
                "inbound_received",
                channel,
                msgid,
                &serde_json::json!({"inbound_id": id, "conversation": conversation}),
            )?;
            Accepted::New(id)
        } else {
            append_in(
                &tx,
                "duplicate_dropped",
                channel,
                msgid,
                &serde_json::json!({"conversation": conversation}),
            )?;
            Accepted::Duplicate
        };
        tx.commit()?;
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

    /// Accepted messages not yet answered, oldest first.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn pending_inbound(&self) -> Result<Vec<PendingInbound>, AuditError> {
        let mut st = self.conn.prepare(
            "SELECT id, channel, msgid, conversation, payload, received_ms FROM inbound
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

    /// Walks the whole chain: seqs 1, 2, 3 … without gaps, each `prev_hash` equal to the previous
    /// row's hash, each hash recomputed from the row. Returns the number of rows, or the first
    /// row that does not verify.
    ///
    /// # Errors
    /// [`AuditError`] when the database cannot be read; `Ok(Err(Broken))` when the chain breaks.
    pub fn verify(&self) -> Result<Result<i64, Broken>, AuditError> {
        let mut st = self
            .conn
            .prepare("SELECT seq, ts_ms, kind, actor, subject, detail, prev_hash, hash FROM audit ORDER BY seq")?;
        let mut rows = st.query([])?;
        let mut prev = vec![0u8; 32];
        let mut expected_seq = 1i64;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let broken = |reason: String| Ok(Err(Broken { seq, reason }));
            if seq != expected_seq {
                return broken(format!(
                    "expected row {expected_seq} here: rows are missing"
                ));
            }
            let stored_prev: Vec<u8> = r.get(6)?;
            if stored_prev != prev {
                return broken("prev_hash does not match the previous row's hash".into());
            }
            let h = row_hash(
                &prev,
                seq,
                r.get(1)?,
                &r.get::<_, String>(2)?,
                &r.get::<_, String>(3)?,
                &r.get::<_, String>(4)?,
                &r.get::<_, String>(5)?,
            );
            let stored: Vec<u8> = r.get(7)?;
            if stored != h {
                return broken("the row's content does not match its hash: it was edited".into());
            }
            prev = stored;
            expected_seq += 1;
        }
        Ok(Ok(expected_seq - 1))
    }
}

/// Appends inside a transaction (the chain head is read under the same write lock).
fn append_in(
    tx: &rusqlite::Transaction<'_>,
    kind: &str,
    actor: &str,
    subject: &str,
    detail: &Value,
) -> Result<i64, AuditError> {
    let head: Option<(i64, Vec<u8>)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match head {
        Some((s, h)) => (s + 1, h),
        None => (1, vec![0u8; 32]),
    };
    let ts = now_ms();
    let detail = detail.to_string();
    let hash = row_hash(&prev, seq, ts, kind, actor, subject, &detail);
    tx.execute(
        "INSERT INTO audit (seq, ts_ms, kind, actor, subject, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![seq, ts, kind, actor, subject, detail, prev, hash.to_vec()],
    )?;
    Ok(seq)
}
