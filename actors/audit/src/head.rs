//! The head file: the chain's last committed row, anchored outside the database and MAC'd with
//! the key, so rows removed from the end, or a replaced database, show.

use std::io::Write;
use std::path::Path;

use hmac::Mac;
use serde::{Deserialize, Serialize};

use crate::{hex, sync_dir, AuditKey};

/// The head file's name in the data directory.
pub const HEAD_FILE: &str = "audit.head";

const VERSION: u32 = 1;
/// Domain separation: a head MAC is never a row MAC.
const TAG: &[u8] = b"wecom-edge audit head v1";

/// The chain's head: what [`HEAD_FILE`] holds (as one JSON object with `v` and `mac`) after
/// every committed append, and what the writer logs periodically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The database's random identity (`meta.db_id`, 32 hex digits).
    pub db_id: String,
    /// The id of the key that keys the chain ([`AuditKey::id`]).
    pub key_id: String,
    /// The first HMAC-keyed row (1, unless the database began with the legacy SHA-256 chain).
    pub keyed_from: i64,
    /// The last committed row; 0 for an empty chain. Rows are numbered from 1 without gaps, so
    /// this is also the row count.
    pub seq: i64,
    /// That row's hash, 64 hex digits (zeros when `seq` is 0).
    pub hash: String,
}

#[derive(Serialize, Deserialize)]
struct HeadFile {
    v: u32,
    #[serde(flatten)]
    head: Head,
    mac: String,
}

impl Head {
    fn mac(&self, key: &AuditKey) -> String {
        let mut m = key.mac();
        m.update(TAG);
        for f in [&self.db_id, &self.key_id, &self.hash] {
            m.update(&(f.len() as u64).to_be_bytes());
            m.update(f.as_bytes());
        }
        m.update(&self.keyed_from.to_be_bytes());
        m.update(&self.seq.to_be_bytes());
        hex(&m.finalize().into_bytes())
    }
}

/// The head file as found.
pub(crate) enum HeadRead {
    Missing,
    Invalid(String),
    Valid(Head),
}

pub(crate) fn read(dir: &Path, key: &AuditKey) -> HeadRead {
    let path = dir.join(HEAD_FILE);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HeadRead::Missing,
        Err(e) => return HeadRead::Invalid(format!("{} cannot be read: {e}", path.display())),
    };
    let f: HeadFile = match serde_json::from_slice(&data) {
        Ok(f) => f,
        Err(e) => return HeadRead::Invalid(format!("{} is not a head file: {e}", path.display())),
    };
    if f.v != VERSION {
        return HeadRead::Invalid(format!("head file version {} is not {VERSION}", f.v));
    }
    if f.head.key_id != key.id() {
        return HeadRead::Invalid(format!(
            "the head file was made with key {}, not this key {}",
            f.head.key_id,
            key.id()
        ));
    }
    if f.head.mac(key) != f.mac {
        return HeadRead::Invalid("the head file's MAC does not verify: forged or damaged".into());
    }
    HeadRead::Valid(f.head)
}

/// Writes `dir/audit.head` atomically: a temporary file, fsynced, renamed over the old one; the
/// directory fsynced when `sync` (the rename's durability; a lost rename leaves an older head,
/// which verifies as "behind", never as a break).
pub(crate) fn write(dir: &Path, key: &AuditKey, head: &Head, sync: bool) -> std::io::Result<()> {
    let body = serde_json::to_vec(&HeadFile {
        v: VERSION,
        head: head.clone(),
        mac: head.mac(key),
    })?;
    let tmp = dir.join(format!("{HEAD_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&body)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(HEAD_FILE))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// How the head file compares with the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HeadStatus {
    /// The head verifies and the database holds its row; `newer_rows` rows follow it (committed
    /// while the head was being replaced, or just before a crash: they are keyed like the rest).
    Matches {
        /// Rows after the head's row.
        newer_rows: i64,
    },
    /// The database ends before the head's row: rows were removed from the end (or lost).
    Truncated {
        /// The row the head names.
        head_seq: i64,
        /// The database's last row (0: none).
        last_seq: i64,
    },
    /// The database has the head's row but not the head's hash (a rewritten chain), or its
    /// chain metadata differs from the head's.
    Diverged {
        /// The row the head names.
        head_seq: i64,
        /// What differs.
        reason: String,
    },
    /// The head names another database: this one was deleted, emptied, or replaced.
    ForeignDb {
        /// The database the head names.
        head_db_id: String,
        /// This database's id; `None` when it is missing, empty, or a legacy (unkeyed) one.
        db_id: Option<String>,
    },
    /// There is no head file.
    Missing,
    /// The head file cannot be read, or its MAC does not verify with this key.
    Invalid {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for HeadStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadStatus::Matches { newer_rows } => {
                write!(f, "the head file matches ({newer_rows} newer rows)")
            }
            HeadStatus::Truncated { head_seq, last_seq } => write!(
                f,
                "audit trail truncated: the head file names row {head_seq}, the database ends at \
                 row {last_seq} ({} rows missing at the end)",
                head_seq - last_seq
            ),
            HeadStatus::Diverged { head_seq, reason } => {
                write!(f, "audit head mismatch at row {head_seq}: {reason}")
            }
            HeadStatus::ForeignDb { head_db_id, db_id } => write!(
                f,
                "audit database deleted or replaced: the head file names database {head_db_id}, \
                 this one is {}",
                db_id.as_deref().unwrap_or("missing, empty or unkeyed")
            ),
            HeadStatus::Missing => write!(
                f,
                "audit head file missing: the end of the trail is not anchored (rows removed \
                 from the end would not show)"
            ),
            HeadStatus::Invalid { reason } => write!(f, "audit head file invalid: {reason}"),
        }
    }
}
