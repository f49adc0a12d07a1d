//! The chain's mechanics: row hashes, the `meta` table, the head comparison, and opening a
//! database file with corruption checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::Mac;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::head::HeadRead;
use crate::{
    dir_err, hex, now_ms, sync_dir, AuditError, AuditKey, Head, HeadStatus, RestartReason,
    StartFinding, SCHEMA,
};

/// The chain version recorded in `meta`.
const CHAIN_V1: &str = "hmac-sha256-v1";

/// The database file as found before opening.
#[derive(PartialEq)]
pub(crate) enum DbFile {
    Missing,
    Empty,
    Present,
}

/// How a row's hash is made: plain SHA-256 (legacy rows) or HMAC-SHA256 with the key.
#[derive(Clone, Copy)]
pub(crate) enum Chain<'a> {
    Plain,
    Keyed(&'a AuditKey),
}

/// The chained hash of one row: `fields` are kind, actor, subject and detail (JSON text).
pub(crate) fn row_hash(
    chain: Chain<'_>,
    prev: &[u8],
    seq: i64,
    ts_ms: i64,
    fields: [&str; 4],
) -> [u8; 32] {
    fn feed<H: sha2::digest::Update>(mut h: H, prev: &[u8], seq: i64, ts: i64, f: [&str; 4]) -> H {
        h.update(prev);
        h.update(&seq.to_be_bytes());
        h.update(&ts.to_be_bytes());
        for field in f {
            h.update(&(field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        h
    }
    match chain {
        Chain::Plain => feed(Sha256::new(), prev, seq, ts_ms, fields)
            .finalize()
            .into(),
        Chain::Keyed(key) => feed(key.mac(), prev, seq, ts_ms, fields)
            .finalize()
            .into_bytes()
            .into(),
    }
}

/// Why a row's stored hash differs from the recomputed one.
pub(crate) fn mismatch(keyed: bool, meta: Option<&Meta>, key: &AuditKey) -> String {
    match meta {
        Some(m) if keyed && m.key_id != key.id() => format!(
            "the row's HMAC does not verify: the chain was keyed with key {}, this is key {}",
            m.key_id,
            key.id()
        ),
        _ if keyed => "the row's content does not match its HMAC: it was edited, or re-hashed \
                       without the key"
            .into(),
        _ => "the row's content does not match its hash: it was edited".into(),
    }
}

/// The chain's identity and version, from the `meta` table.
pub(crate) struct Meta {
    pub(crate) db_id: String,
    pub(crate) key_id: String,
    pub(crate) keyed_from: i64,
}

pub(crate) fn table_exists(conn: &Connection, name: &str) -> Result<bool, AuditError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// `None` for a database without a chain version (new, empty, or legacy).
pub(crate) fn read_meta(conn: &Connection) -> Result<Option<Meta>, AuditError> {
    if !table_exists(conn, "meta")? {
        return Ok(None);
    }
    let get = |name: &str| -> Result<Option<String>, AuditError> {
        Ok(conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    };
    let Some(chain) = get("chain")? else {
        return Ok(None);
    };
    if chain != CHAIN_V1 {
        return Err(AuditError::Meta(format!(
            "unknown chain version {chain:?} (this build knows {CHAIN_V1:?})"
        )));
    }
    let need = |name: &str| {
        get(name)?.ok_or_else(|| AuditError::Corrupt(format!("the audit meta table lacks {name}")))
    };
    let keyed_from = need("keyed_from")?;
    Ok(Some(Meta {
        db_id: need("db_id")?,
        key_id: need("key_id")?,
        keyed_from: keyed_from
            .parse()
            .map_err(|_| AuditError::Corrupt(format!("keyed_from {keyed_from:?} is not a row")))?,
    }))
}

pub(crate) fn write_meta(conn: &Connection, m: &Meta) -> Result<(), AuditError> {
    for (name, value) in [
        ("chain", CHAIN_V1.to_string()),
        ("db_id", m.db_id.clone()),
        ("key_id", m.key_id.clone()),
        ("keyed_from", m.keyed_from.to_string()),
    ] {
        conn.execute(
            "INSERT INTO meta (name, value) VALUES (?1, ?2)",
            params![name, value],
        )?;
    }
    Ok(())
}

/// The last row's seq and hash (`None`: no rows, or no audit table).
pub(crate) fn last_row(conn: &Connection) -> Result<Option<(i64, Vec<u8>)>, AuditError> {
    if !table_exists(conn, "audit")? {
        return Ok(None);
    }
    Ok(conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Compares the head file with the database (`hash_at(seq)`: that row's hash, if present).
pub(crate) fn head_status(
    head: &HeadRead,
    meta: Option<&Meta>,
    last: Option<&(i64, Vec<u8>)>,
    hash_at: impl FnOnce(i64) -> Result<Option<Vec<u8>>, AuditError>,
) -> Result<HeadStatus, AuditError> {
    let h = match head {
        HeadRead::Missing => return Ok(HeadStatus::Missing),
        HeadRead::Invalid(reason) => {
            return Ok(HeadStatus::Invalid {
                reason: reason.clone(),
            })
        }
        HeadRead::Valid(h) => h,
    };
    let Some(m) = meta.filter(|m| m.db_id == h.db_id) else {
        return Ok(HeadStatus::ForeignDb {
            head_db_id: h.db_id.clone(),
            db_id: meta.map(|m| m.db_id.clone()),
        });
    };
    if m.keyed_from != h.keyed_from {
        return Ok(HeadStatus::Diverged {
            head_seq: h.seq,
            reason: format!(
                "the database says it is keyed from row {}, the head from row {}",
                m.keyed_from, h.keyed_from
            ),
        });
    }
    let last_seq = last.map_or(0, |l| l.0);
    if last_seq < h.seq {
        return Ok(HeadStatus::Truncated {
            head_seq: h.seq,
            last_seq,
        });
    }
    let found = if h.seq == 0 {
        Some(vec![0u8; 32])
    } else {
        hash_at(h.seq)?
    };
    Ok(match found {
        Some(x) if hex(&x) == h.hash => HeadStatus::Matches {
            newer_rows: last_seq - h.seq,
        },
        Some(x) => HeadStatus::Diverged {
            head_seq: h.seq,
            reason: format!("the row's hash is {}, the head says {}", hex(&x), h.hash),
        },
        None => HeadStatus::Diverged {
            head_seq: h.seq,
            reason: "the database has no such row".into(),
        },
    })
}

/// What the head's status at open means for the box (`None`: nothing to record). `before`:
/// the database file as found; `keyed`: it has chain metadata; `last`: its last row.
pub(crate) fn start_finding(
    status: HeadStatus,
    before: DbFile,
    keyed: bool,
    last: Option<&(i64, Vec<u8>)>,
    old_head: Option<Head>,
) -> Option<StartFinding> {
    Some(match status {
        HeadStatus::Matches { .. } => return None,
        // No head is expected for a new or a legacy database, not for a keyed one with rows.
        HeadStatus::Missing => StartFinding::HeadMissing {
            last_seq: last.filter(|_| keyed)?.0,
        },
        HeadStatus::Invalid { reason } => StartFinding::HeadInvalid { reason },
        HeadStatus::ForeignDb { db_id, .. } => StartFinding::ChainRestarted {
            reason: match before {
                DbFile::Missing => RestartReason::DbMissing,
                DbFile::Present if keyed || last.is_some() => RestartReason::ForeignDb { db_id },
                DbFile::Empty | DbFile::Present => RestartReason::DbEmpty,
            },
            moved_to: None,
            old_head,
        },
        HeadStatus::Truncated { head_seq, last_seq } => {
            StartFinding::Truncated { head_seq, last_seq }
        }
        HeadStatus::Diverged { head_seq, reason } => StartFinding::Diverged { head_seq, reason },
    })
}

pub(crate) fn hash_at(conn: &Connection, seq: i64) -> Result<Option<Vec<u8>>, AuditError> {
    Ok(conn
        .query_row("SELECT hash FROM audit WHERE seq = ?1", [seq], |r| r.get(0))
        .optional()?)
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Opens for writing (WAL, `synchronous=FULL`, schema) after `PRAGMA quick_check`;
/// `Ok(Err(why))` when the file is corrupt, not a database, or has damaged chain metadata.
pub(crate) fn open_checked(
    path: &Path,
) -> Result<Result<(Connection, Option<Meta>), String>, AuditError> {
    let attempt = || -> Result<(Connection, Option<Meta>), AuditError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let check: Vec<String> = conn
            .prepare("PRAGMA quick_check(5)")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if check != ["ok"] {
            return Err(AuditError::Corrupt(check.join("; ")));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let meta = read_meta(&conn)?;
        Ok((conn, meta))
    };
    match attempt() {
        Ok(x) => Ok(Ok(x)),
        Err(AuditError::Corrupt(why)) => Ok(Err(why)),
        Err(AuditError::Sqlite(e)) if is_corrupt(&e) => Ok(Err(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Renames `db` and its -wal and -shm to `db.{tag}-{unix_ms}…`; returns the new name of `db`.
pub(crate) fn move_aside(db: &Path, tag: &str) -> Result<PathBuf, AuditError> {
    let dir = db.parent().unwrap_or(Path::new("."));
    let to = format!("{}.{tag}-{}", db.display(), now_ms());
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            std::fs::rename(&from, format!("{to}{suffix}")).map_err(|e| dir_err(dir, e))?;
        }
    }
    sync_dir(dir).map_err(|e| dir_err(dir, e))?;
    Ok(PathBuf::from(to))
}

/// Brings a database made by an earlier version up to [`SCHEMA`]: columns added since.
fn migrate(conn: &Connection) -> Result<(), AuditError> {
    let has_attempts = conn
        .prepare("SELECT 1 FROM pragma_table_info('inbound') WHERE name = 'attempts'")?
        .exists([])?;
    if !has_attempts {
        conn.execute_batch("ALTER TABLE inbound ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")?;
    }
    Ok(())
}
