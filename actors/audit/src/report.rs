//! What verify and open report: [`Verification`] and [`StartFinding`].

use std::path::PathBuf;

use serde::Serialize;

use crate::{Broken, Head, HeadStatus};

/// The audit row kinds that record a start finding ([`StartFinding::kind`] except
/// `chain_keyed`); [`AuditStore::verify`] lists such rows as [`Verification::incidents`].
pub const INCIDENT_KINDS: &[&str] = &[
    "audit_chain_restarted",
    "audit_truncated_detected",
    "audit_head_mismatch",
    "audit_head_missing",
    "audit_head_invalid",
];

/// A row recording an earlier start finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    /// Its seq.
    pub seq: i64,
    /// Its kind (one of [`INCIDENT_KINDS`]).
    pub kind: String,
}

/// What [`AuditStore::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Rows that verify, counted from row 1 up to the first broken one (all rows when `broken`
    /// is `None`).
    pub rows: i64,
    /// The first row that does not verify.
    pub broken: Option<Broken>,
    /// The first HMAC-keyed row; `None` for a legacy database (plain SHA-256 only, no `meta`).
    pub keyed_from: Option<i64>,
    /// The head file against the database.
    pub head: HeadStatus,
    /// Rows (among those verified) that record earlier start findings, oldest first.
    pub incidents: Vec<Incident>,
}

impl Verification {
    /// No row breaks and the head file matches. A legacy database without a head file counts as
    /// intact (a weaker guarantee: see [`Verification::summary`]); a keyed one does not.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
            && match self.head {
                HeadStatus::Matches { .. } => true,
                HeadStatus::Missing => self.keyed_from.is_none(),
                _ => false,
            }
    }

    /// One line per break: the broken row, then the head's disagreement; empty when intact.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(b) = &self.broken {
            out.push(format!("audit chain broken at row {}: {}", b.seq, b.reason));
        }
        let head_ok = match self.head {
            HeadStatus::Matches { .. } => true,
            HeadStatus::Missing => self.keyed_from.is_none(),
            _ => false,
        };
        if !head_ok {
            out.push(self.head.to_string());
        }
        out
    }

    /// The line for an intact trail: `audit chain intact: N rows`, with a note in parentheses
    /// for a legacy (unkeyed, unanchored) chain, legacy rows before the keyed ones, or rows
    /// newer than the head.
    pub fn summary(&self) -> String {
        let mut notes = Vec::new();
        match self.keyed_from {
            None => notes.push(
                "legacy SHA-256 chain, not keyed and not anchored: the service keys it at its next start"
                    .to_string(),
            ),
            Some(k) if k > 1 => notes.push(format!(
                "rows 1-{} legacy SHA-256, keyed from row {k}",
                k - 1
            )),
            Some(_) => {}
        }
        if let HeadStatus::Matches { newer_rows } = self.head {
            if newer_rows > 0 {
                notes.push(format!("{newer_rows} rows newer than the head file"));
            }
        }
        let mut s = format!("audit chain intact: {} rows", self.rows);
        if !notes.is_empty() {
            s.push_str(&format!(" ({})", notes.join("; ")));
        }
        s
    }

    /// `Ok(rows)` when intact, else the problems joined with `; ` (for tests and `expect`).
    ///
    /// # Errors
    /// The problems, as above.
    pub fn intact(&self) -> Result<i64, String> {
        if self.is_intact() {
            Ok(self.rows)
        } else {
            Err(self.problems().join("; "))
        }
    }
}

/// Why [`AuditStore::open`] started a new chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartReason {
    /// The head file names a database, and there was no database file.
    DbMissing,
    /// The head file names a database, and the file was empty (e.g. truncated to zero bytes).
    DbEmpty,
    /// The head file names another database than this one.
    ForeignDb {
        /// This database's id (`None`: a legacy database without one).
        db_id: Option<String>,
    },
    /// SQLite called the file corrupt or not a database; it was moved aside.
    Corrupt {
        /// SQLite's words.
        error: String,
    },
    /// The database was keyed with another key; it was moved aside.
    KeyChanged {
        /// The key id the database names.
        db_key_id: String,
    },
}

/// What [`AuditStore::open`] found wrong (or changed) at start. Each is also an audit row
/// ([`StartFinding::kind`], detail = this value as JSON) and an error-level log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum StartFinding {
    /// A new chain started where the head file says one existed (`audit_chain_restarted`).
    ChainRestarted {
        /// Why.
        reason: RestartReason,
        /// Where the old database went (corrupt, or keyed with another key).
        moved_to: Option<PathBuf>,
        /// The old head, when it verified.
        old_head: Option<Head>,
    },
    /// The database ends before the head's row: rows were removed from the end, or lost with a
    /// cut WAL (`audit_truncated_detected`).
    Truncated {
        /// The row the head names.
        head_seq: i64,
        /// The database's last row then.
        last_seq: i64,
    },
    /// The head's row has another hash, or the chain metadata changed (`audit_head_mismatch`).
    Diverged {
        /// The row the head names.
        head_seq: i64,
        /// What differs.
        reason: String,
    },
    /// No head file although the database has keyed rows (`audit_head_missing`).
    HeadMissing {
        /// The database's last row.
        last_seq: i64,
    },
    /// The head file is unreadable or does not verify with the key (`audit_head_invalid`).
    HeadInvalid {
        /// Why.
        reason: String,
    },
    /// A legacy (plain SHA-256) chain is keyed from the next row on (`chain_keyed`; expected
    /// once after the upgrade, not an alert).
    LegacyKeyed {
        /// Rows in the legacy chain.
        legacy_rows: i64,
    },
}

impl StartFinding {
    /// The audit row kind that records it.
    pub fn kind(&self) -> &'static str {
        match self {
            StartFinding::ChainRestarted { .. } => "audit_chain_restarted",
            StartFinding::Truncated { .. } => "audit_truncated_detected",
            StartFinding::Diverged { .. } => "audit_head_mismatch",
            StartFinding::HeadMissing { .. } => "audit_head_missing",
            StartFinding::HeadInvalid { .. } => "audit_head_invalid",
            StartFinding::LegacyKeyed { .. } => "chain_keyed",
        }
    }

    /// Whether the box should raise it (health, alert): all but [`StartFinding::LegacyKeyed`].
    pub fn is_alert(&self) -> bool {
        !matches!(self, StartFinding::LegacyKeyed { .. })
    }
}

impl std::fmt::Display for StartFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartFinding::ChainRestarted {
                reason,
                moved_to,
                old_head,
            } => {
                let why = match reason {
                    RestartReason::DbMissing => "the database file was missing".to_string(),
                    RestartReason::DbEmpty => "the database file was empty".to_string(),
                    RestartReason::ForeignDb { db_id } => format!(
                        "the database is not the one the head names (it is {})",
                        db_id.as_deref().unwrap_or("an unkeyed one")
                    ),
                    RestartReason::Corrupt { error } => format!("the database was corrupt ({error})"),
                    RestartReason::KeyChanged { db_key_id } => {
                        format!("the database was keyed with another key ({db_key_id})")
                    }
                };
                write!(f, "audit chain restarted: {why}")?;
                if let Some(p) = moved_to {
                    write!(f, "; moved aside to {}", p.display())?;
                }
                if let Some(h) = old_head {
                    write!(f, "; the old head was row {} ({}) of database {}", h.seq, h.hash, h.db_id)?;
                }
                Ok(())
            }
            StartFinding::Truncated { head_seq, last_seq } => write!(
                f,
                "audit trail truncated: the head names row {head_seq}, the database ended at row {last_seq}"
            ),
            StartFinding::Diverged { head_seq, reason } => {
                write!(f, "audit head mismatch at row {head_seq}: {reason}")
            }
            StartFinding::HeadMissing { last_seq } => write!(
                f,
                "audit head file missing with {last_seq} rows in the database"
            ),
            StartFinding::HeadInvalid { reason } => write!(f, "audit head file invalid: {reason}"),
            StartFinding::LegacyKeyed { legacy_rows } => write!(
                f,
                "legacy SHA-256 audit chain ({legacy_rows} rows) keyed from row {}",
                legacy_rows + 1
            ),
        }
    }
}
