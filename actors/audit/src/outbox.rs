//! The durable outbox: answers that were generated but could not be delivered (a socket drop
//! mid-stream, WeCom's API down, the access_token refused). Each row holds what is still to
//! send, in order, and where to (the inbound message's origin); the outbox actor retries it with
//! backoff until it is delivered or its deadline passes. Putting an answer here settles its
//! inbound message (`answered`: the model is never asked again) in the same transaction, so a
//! crash between the two can neither lose the answer nor generate it twice.

use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use crate::{append_in, now_ms, AuditError, AuditStore};

/// One undelivered answer ([`AuditStore::outbox_pending`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    /// Outbox id (increasing: older answers first).
    pub id: i64,
    /// The inbound message it answers.
    pub inbound_id: i64,
    /// The conversation key (deliveries within one conversation keep their order).
    pub conversation: String,
    /// Where it goes: the inbound message's origin (JSON, as the session stored it).
    pub origin: Value,
    /// What is still to send, in order (each part within one message's limit).
    pub parts: Vec<String>,
    /// Delivery attempts that failed so far.
    pub attempts: i64,
    /// When it was put here (unix ms).
    pub created_ms: i64,
    /// Not before this (unix ms): the backoff.
    pub next_ms: i64,
    /// Given up after this (unix ms).
    pub deadline_ms: i64,
    /// The last failure, as text.
    pub last_error: String,
}

impl AuditStore {
    /// Keeps an undelivered answer: the outbox row, inbound `inbound_id` settled as answered,
    /// and an audit row `reply_deferred` (`{inbound_id, outbox_id, parts, error}`), in one
    /// transaction. Returns the outbox id.
    ///
    /// # Errors
    /// [`AuditError`]; on error nothing was written.
    pub fn outbox_put(
        &mut self,
        inbound_id: i64,
        conversation: &str,
        origin: &Value,
        parts: &[String],
        error: &str,
        deadline_ms: i64,
    ) -> Result<i64, AuditError> {
        let w = self.w.as_ref().ok_or(AuditError::ReadOnly)?;
        let tx = self.conn.transaction()?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO outbox (inbound_id, conversation, origin, parts, attempts, created_ms,
                                 next_ms, deadline_ms, last_error)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, ?6, ?7)",
            params![
                inbound_id,
                conversation,
                origin.to_string(),
                json!(parts).to_string(),
                now,
                deadline_ms,
                error
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE inbound SET state = 'answered', updated_ms = ?2 WHERE id = ?1",
            params![inbound_id, now],
        )?;
        let (seq, hash) = append_in(
            &tx,
            &w.key,
            "reply_deferred",
            "outbox",
            conversation,
            &json!({"inbound_id": inbound_id, "outbox_id": id, "parts": parts.len(), "error": error}),
        )?;
        tx.commit()?;
        self.anchor(seq, hash);
        Ok(id)
    }

    /// Records progress on outbox row `id`: the parts still to send and, after a failure, the
    /// error and the next attempt's time (`failed`: counts one more attempt).
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn outbox_progress(
        &mut self,
        id: i64,
        parts: &[String],
        failed: Option<(&str, i64)>,
    ) -> Result<(), AuditError> {
        let parts = json!(parts).to_string();
        match failed {
            Some((error, next_ms)) => self.conn.execute(
                "UPDATE outbox SET parts = ?2, attempts = attempts + 1, last_error = ?3,
                                   next_ms = ?4 WHERE id = ?1",
                params![id, parts, error, next_ms],
            )?,
            None => self.conn.execute(
                "UPDATE outbox SET parts = ?2 WHERE id = ?1",
                params![id, parts],
            )?,
        };
        Ok(())
    }

    /// Outbox row `id` is delivered: removed, with an audit row `reply_delivered`
    /// (`{inbound_id, outbox_id, attempts}`).
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn outbox_done(&mut self, id: i64) -> Result<(), AuditError> {
        self.outbox_settle(id, None)
    }

    /// Outbox row `id` is given up (its deadline passed): removed, its inbound message marked
    /// failed, with an audit row `reply_abandoned` (`{inbound_id, outbox_id, attempts, error}`).
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn outbox_abandon(&mut self, id: i64, error: &str) -> Result<(), AuditError> {
        self.outbox_settle(id, Some(error))
    }

    fn outbox_settle(&mut self, id: i64, abandoned: Option<&str>) -> Result<(), AuditError> {
        let w = self.w.as_ref().ok_or(AuditError::ReadOnly)?;
        let tx = self.conn.transaction()?;
        let row: Option<(i64, String, i64)> = tx
            .query_row(
                "DELETE FROM outbox WHERE id = ?1 RETURNING inbound_id, conversation, attempts",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((inbound_id, conversation, attempts)) = row else {
            return Ok(());
        };
        let (kind, detail) = match abandoned {
            None => (
                "reply_delivered",
                json!({"inbound_id": inbound_id, "outbox_id": id, "attempts": attempts}),
            ),
            Some(error) => {
                tx.execute(
                    "UPDATE inbound SET state = 'failed', updated_ms = ?2 WHERE id = ?1",
                    params![inbound_id, now_ms()],
                )?;
                (
                    "reply_abandoned",
                    json!({"inbound_id": inbound_id, "outbox_id": id, "attempts": attempts,
                           "error": error}),
                )
            }
        };
        let (seq, hash) = append_in(&tx, &w.key, kind, "outbox", &conversation, &detail)?;
        tx.commit()?;
        self.anchor(seq, hash);
        Ok(())
    }

    /// Every undelivered answer, oldest first.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn outbox_pending(&self) -> Result<Vec<OutboxItem>, AuditError> {
        let mut st = self.conn.prepare(
            "SELECT id, inbound_id, conversation, origin, parts, attempts, created_ms, next_ms,
                    deadline_ms, last_error
             FROM outbox ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            let origin: String = r.get(3)?;
            let parts: String = r.get(4)?;
            Ok(OutboxItem {
                id: r.get(0)?,
                inbound_id: r.get(1)?,
                conversation: r.get(2)?,
                origin: serde_json::from_str(&origin).unwrap_or(Value::Null),
                parts: serde_json::from_str(&parts).unwrap_or_default(),
                attempts: r.get(5)?,
                created_ms: r.get(6)?,
                next_ms: r.get(7)?,
                deadline_ms: r.get(8)?,
                last_error: r.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
