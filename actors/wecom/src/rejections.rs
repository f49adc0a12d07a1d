//! Refused callbacks, counted instead of written one by one.
//!
//! A callback endpoint is reachable by anyone on the network, and every refusal must be
//! audited; but a row and a log line per forged POST lets an unauthenticated flood fill the
//! data partition (686 wrong-signature POSTs a second made 7.5 MB of audit and 3.1 MB of log in
//! 20 s). So refusals are aggregated per **(endpoint, peer address, HTTP status, WXBizMsgCrypt
//! code)** over an interval ([`DEFAULT_INTERVAL`]): the first refusal of a kind in an interval
//! is logged and reported at once (a [`Rejection`] with `count` 1), the rest are counted, and
//! at the end of the interval each kind with more is reported once with that count — at most
//! two audit rows and two log lines per kind per interval, however many requests came. The
//! number of kinds per interval is bounded ([`MAX_KINDS`]: an attacker varying the path or the
//! source lands in one `overflow` kind), and so is every text kept ([`MAX_REASON`] bytes).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::split::prefix_bytes;

/// How long refusals are counted before they are reported.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Most distinct kinds counted in one interval; the rest are counted as one `overflow` kind.
pub const MAX_KINDS: usize = 64;

/// Most bytes of an endpoint name or a reason kept (longer ones are cut at a char boundary).
pub const MAX_REASON: usize = 200;

/// Refused callbacks of one kind within one interval, for the audit trail (no secrets, no
/// message content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `app/{agentid}` or `aibot/{bot_id}` (cut to [`MAX_REASON`] bytes), or `overflow`.
    pub endpoint: String,
    /// The client's address, when the listener knows it.
    pub peer: Option<IpAddr>,
    /// WXBizMsgCrypt code (−40001 …), or 0 for a non-crypto refusal.
    pub code: i32,
    /// HTTP status answered.
    pub status: u16,
    /// Why (the last refusal's reason, cut to [`MAX_REASON`] bytes).
    pub reason: String,
    /// How many refusals this report stands for (≥ 1): 1 for the first of its kind in an
    /// interval (reported at once), then those that followed it in the interval.
    pub count: u64,
    /// The first and the last of them (unix ms).
    pub first_ms: i64,
    /// See `first_ms`.
    pub last_ms: i64,
}

type Kind = (String, Option<IpAddr>, u16, i32);

#[derive(Default)]
struct Window {
    kinds: HashMap<Kind, Rejection>,
}

/// The counter shared by a callback server's handlers. Cheap to clone.
#[derive(Clone)]
pub struct Rejections {
    window: Arc<Mutex<Window>>,
    tx: mpsc::Sender<Rejection>,
    interval: Duration,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Rejections {
    /// Counts refusals and sends each interval's kinds to `tx`. A flusher task runs on the
    /// current tokio runtime for as long as a clone of this value lives.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(tx: mpsc::Sender<Rejection>, interval: Duration) -> Self {
        let r = Rejections {
            window: Arc::default(),
            tx,
            interval: interval.max(Duration::from_millis(1)),
        };
        let weak = Arc::downgrade(&r.window);
        let (tx, interval) = (r.tx.clone(), r.interval);
        tokio::spawn(flusher(weak, tx, interval));
        r
    }

    /// The reporting interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Counts one refusal; logs it when it is the first of its kind in this interval.
    pub fn record(
        &self,
        endpoint: &str,
        peer: Option<IpAddr>,
        status: u16,
        code: i32,
        reason: &str,
    ) {
        let now = now_ms();
        let endpoint = prefix_bytes(endpoint, MAX_REASON);
        let reason = prefix_bytes(reason, MAX_REASON);
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let mut key: Kind = (endpoint.to_string(), peer, status, code);
        if !w.kinds.contains_key(&key) && w.kinds.len() >= MAX_KINDS {
            key = ("overflow".into(), None, 0, 0);
        }
        match w.kinds.get_mut(&key) {
            Some(r) => {
                if r.count == 0 {
                    r.first_ms = now;
                }
                r.count += 1;
                r.last_ms = now;
                r.reason.clear();
                r.reason.push_str(reason);
            }
            None => {
                tracing::warn!(
                    %endpoint,
                    peer = ?peer,
                    code,
                    status,
                    %reason,
                    "callback rejected (further ones of this kind are counted for {:?})",
                    self.interval
                );
                let r = Rejection {
                    endpoint: key.0.clone(),
                    peer: key.1,
                    code: key.3,
                    status: key.2,
                    reason: reason.to_string(),
                    count: 1,
                    first_ms: now,
                    last_ms: now,
                };
                let _ = self.tx.try_send(r.clone());
                // The followers of this one, reported at the end of the interval.
                w.kinds.insert(key, Rejection { count: 0, ..r });
            }
        }
    }

    /// Reports what was counted so far now (tests, shutdown).
    pub fn flush(&self) {
        flush(&self.window, &self.tx);
    }
}

fn flush(window: &Mutex<Window>, tx: &mpsc::Sender<Rejection>) {
    let kinds = std::mem::take(&mut window.lock().unwrap_or_else(|p| p.into_inner()).kinds);
    let mut kinds: Vec<Rejection> = kinds.into_values().collect();
    kinds.sort_by_key(|r| r.first_ms);
    for r in kinds.into_iter().filter(|r| r.count > 0) {
        tracing::warn!(
            endpoint = %r.endpoint,
            peer = ?r.peer,
            code = r.code,
            status = r.status,
            count = r.count,
            "more callbacks rejected"
        );
        // A full channel (the audit writer far behind: its capacity should exceed MAX_KINDS)
        // drops the report, never blocks a handler; the log line above stays.
        let _ = tx.try_send(r);
    }
}

async fn flusher(window: Weak<Mutex<Window>>, tx: mpsc::Sender<Rejection>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(w) = window.upgrade() else {
            return;
        };
        flush(&w, &tx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_becomes_one_report_per_kind() {
        let (tx, mut rx) = mpsc::channel(4 * MAX_KINDS);
        let r = Rejections::new(tx, Duration::from_secs(3600));
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        for i in 0..5000 {
            r.record("app/1", Some(a), 403, -40001, &format!("bad signature {i}"));
        }
        r.record("app/1", None, 413, -40005, "body over 1 MiB");
        // An attacker varying the path cannot grow the table.
        for i in 0..1000 {
            r.record(&format!("aibot/x{i}"), Some(a), 404, 0, "no such endpoint");
        }
        r.record(&"y".repeat(10_000), None, 400, 0, &"z".repeat(10_000));
        r.flush();
        let mut got = Vec::new();
        while let Ok(x) = rx.try_recv() {
            got.push(x);
        }
        assert!(got.len() <= 2 * (MAX_KINDS + 1), "{}", got.len());
        // The first forged POST at once, the other 4999 in one report.
        let forged: Vec<&Rejection> = got.iter().filter(|x| x.status == 403).collect();
        assert_eq!(forged.len(), 2);
        assert_eq!((forged[0].count, forged[0].code), (1, -40001));
        assert_eq!(forged[0].reason, "bad signature 0");
        assert_eq!((forged[1].count, forged[1].code), (4999, -40001));
        assert_eq!(forged[1].reason, "bad signature 4999");
        assert!(got.iter().any(|x| x.status == 413 && x.count == 1));
        let total: u64 = got.iter().map(|x| x.count).sum();
        assert_eq!(total, 5000 + 1 + 1000 + 1, "every refusal is counted");
        assert!(got.iter().any(|x| x.endpoint == "overflow"));
        assert!(got
            .iter()
            .all(|x| x.endpoint.len() <= MAX_REASON && x.reason.len() <= MAX_REASON));
    }
}
