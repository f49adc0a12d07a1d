//! Alerts for the people who run the box: log events marked `alert = true`, deduplicated and
//! rate-limited, ready to be sent to WeCom group robots (`[[webhook]] alerts = true`).
//!
//! * **Source** — any `tracing` event with the field `alert = true` (the watchdog's health
//!   alerts, a model that fails to load, a supervisor whose restart intensity is exceeded, a
//!   knowledge import that fails, …). [`AlertLayer`] sits beside the log formatter and hands
//!   each such event, as an [`Alert`], to the receiver [`route`] returned; without one, alert
//!   events are only logged. The layer never blocks: when the queue is full the alert is
//!   counted and dropped (the log line stays).
//! * **Deduplication** ([`Gate`]) — alerts with the same [`Alert::key`] (the message and the
//!   [`KEY_FIELDS`] that name *what* failed, not per-message ids) within
//!   [`AlertPolicy::window`] are folded into the first: it goes out at once, the repeats are
//!   counted and, when the window ends, one summary says how many more there were.
//! * **Rate limit** — at most [`AlertPolicy::max_per_hour`] messages in any hour; beyond it
//!   alerts are suppressed and the next message that goes out says how many were.
//!
//! What is sent is the event's message and fields, which follow the logs' rules: never a
//! secret, never a user's message text.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Fields that name what failed: they are part of an alert's deduplication key. Other fields
/// (message ids, sessions, counts, error texts) vary between repeats of the same trouble.
pub const KEY_FIELDS: &[&str] = &[
    "status",
    "bot_id",
    "supervisor",
    "child",
    "check",
    "doc",
    "model",
];

/// One alert event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `ERROR`, `WARN` or `INFO` (a recovery).
    pub level: String,
    /// The event's message.
    pub message: String,
    /// Its other fields, in the order given, `alert` itself left out (values as logged).
    pub fields: Vec<(String, String)>,
    /// The event's target (module path), for the journal reader.
    pub target: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
}

impl Alert {
    /// The deduplication key: the message, then `name=value` of each [`KEY_FIELDS`] field.
    pub fn key(&self) -> String {
        let mut k = self.message.clone();
        for (n, v) in &self.fields {
            if KEY_FIELDS.contains(&n.as_str()) {
                let _ = write!(k, " {n}={v}");
            }
        }
        k
    }
}

static ROUTE: Mutex<Option<mpsc::Sender<Alert>>> = Mutex::new(None);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Routes alert events to the returned receiver from now on (replacing an earlier route);
/// at most `capacity` wait in it.
pub fn route(capacity: usize) -> mpsc::Receiver<Alert> {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    *ROUTE.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    rx
}

/// Alerts dropped because the queue was full or its receiver gone, since the process started.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The `tracing_subscriber` layer that forwards events with `alert = true` to [`route`]'s
/// receiver. Add it beside the formatter, outside its level filter.
#[derive(Debug, Default, Clone, Copy)]
pub struct AlertLayer;

#[derive(Default)]
struct Fields {
    alert: bool,
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_bool(&mut self, field: &Field, value: bool) {
        if field.name() == "alert" {
            self.alert = value;
        } else {
            self.fields.push((field.name().into(), value.to_string()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.into();
        } else {
            self.fields.push((field.name().into(), value.into()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .push((field.name().into(), format!("{value:?}")));
        }
    }
}

impl<S: Subscriber> Layer<S> for AlertLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > Level::INFO {
            return; // debug and trace never alert
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if !f.alert {
            return;
        }
        let guard = ROUTE.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else { return };
        let alert = Alert {
            level: event.metadata().level().to_string(),
            message: f.message,
            fields: f.fields,
            target: event.metadata().target().into(),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        if tx.try_send(alert).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How alerts are deduplicated and rate-limited (`[alerts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertPolicy {
    /// Repeats of one alert within this long are folded into it (`window`, default 10 min).
    pub window: Duration,
    /// Most messages sent in any hour (`max_per_hour`, default 20).
    pub max_per_hour: usize,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy {
            window: Duration::from_secs(600),
            max_per_hour: 20,
        }
    }
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The alert (for a summary: the first of the window).
    pub alert: Alert,
    /// For a summary: how many more times it happened in the window; 0 for a first alert.
    pub repeated: u64,
    /// Other alerts the rate limit suppressed since the last message that went out.
    pub suppressed: u64,
}

impl Outgoing {
    /// The message as WeCom group-robot markdown (/document/path/91770: `**bold**`, `>` quote,
    /// `<font color="warning|comment|info">`): level and message, the fields, where and when.
    pub fn markdown(&self, host: &str) -> String {
        let a = &self.alert;
        let colour = match a.level.as_str() {
            "ERROR" => "warning",
            "WARN" => "comment",
            _ => "info",
        };
        let mut s = format!(
            "**wecom-edge 告警 (alert)** · {host}\n<font color=\"{colour}\">{}</font> {}\n",
            a.level,
            if self.repeated > 0 {
                format!(
                    "{} — again {} time(s) in the last window",
                    a.message, self.repeated
                )
            } else {
                a.message.clone()
            }
        );
        for (n, v) in &a.fields {
            let _ = writeln!(s, "> {n}: {v}");
        }
        let _ = write!(
            s,
            "<font color=\"comment\">{} · {}</font>",
            a.target,
            utc(a.at_ms)
        );
        if self.suppressed > 0 {
            let _ = write!(
                s,
                "\n<font color=\"warning\">{} other alert(s) suppressed by the rate limit; see the journal and `wecom-edge audit`.</font>",
                self.suppressed
            );
        }
        s
    }
}

struct Seen {
    opened: Instant,
    first: Alert,
    repeats: u64,
}

/// Deduplication and rate limiting, over injected time (see the module's docs).
#[derive(Default)]
pub struct Gate {
    policy: AlertPolicy,
    seen: HashMap<String, Seen>,
    sent: Vec<Instant>,
    suppressed: u64,
}

impl Gate {
    /// A gate with `policy`.
    pub fn new(policy: AlertPolicy) -> Gate {
        Gate {
            policy,
            ..Gate::default()
        }
    }

    /// What to send for `alert` arriving at `now`: `None` when it repeats one still in its
    /// window (counted) or the rate limit holds it back (counted as suppressed).
    pub fn admit(&mut self, alert: Alert, now: Instant) -> Option<Outgoing> {
        let key = alert.key();
        if let Some(s) = self.seen.get_mut(&key) {
            if now.duration_since(s.opened) < self.policy.window {
                s.repeats += 1;
                return None;
            }
        }
        if !self.take(now) {
            self.suppressed += 1;
            return None;
        }
        self.seen.insert(
            key,
            Seen {
                opened: now,
                first: alert.clone(),
                repeats: 0,
            },
        );
        Some(Outgoing {
            alert,
            repeated: 0,
            suppressed: std::mem::take(&mut self.suppressed),
        })
    }

    /// The summaries due at `now`: one for each alert whose window ended with repeats (the
    /// window is closed; a later repeat is a new alert). Windows without repeats are forgotten.
    pub fn due(&mut self, now: Instant) -> Vec<Outgoing> {
        let window = self.policy.window;
        let ended: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, s)| now.duration_since(s.opened) >= window)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for k in ended {
            let s = self.seen.remove(&k).expect("listed");
            if s.repeats == 0 {
                continue;
            }
            if !self.take(now) {
                self.suppressed += 1;
                continue;
            }
            out.push(Outgoing {
                alert: s.first,
                repeated: s.repeats,
                suppressed: std::mem::take(&mut self.suppressed),
            });
        }
        out
    }

    /// Everything still counted, for a last message before the process exits: the summaries
    /// of open windows with repeats (rate limit ignored).
    pub fn drain(&mut self) -> Vec<Outgoing> {
        let mut out: Vec<Outgoing> = self
            .seen
            .drain()
            .filter(|(_, s)| s.repeats > 0)
            .map(|(_, s)| Outgoing {
                alert: s.first,
                repeated: s.repeats,
                suppressed: 0,
            })
            .collect();
        if let Some(o) = out.first_mut() {
            o.suppressed = std::mem::take(&mut self.suppressed);
        }
        out
    }

    /// One send from the hour's budget, if any is left.
    fn take(&mut self, now: Instant) -> bool {
        let hour = Duration::from_secs(3600);
        self.sent.retain(|t| now.duration_since(*t) < hour);
        if self.sent.len() >= self.policy.max_per_hour {
            return false;
        }
        self.sent.push(now);
        true
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for milliseconds since the Unix epoch (RFC 3339 through
/// `humantime`, laid out for a reader).
fn utc(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} UTC", s.trim_end_matches('Z').replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn alert(message: &str, fields: &[(&str, &str)]) -> Alert {
        Alert {
            level: "ERROR".into(),
            message: message.into(),
            fields: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            target: "t".into(),
            at_ms: 0,
        }
    }

    #[test]
    fn the_layer_forwards_only_events_marked_alert() {
        let mut rx = route(8);
        let sub = tracing_subscriber::registry().with(AlertLayer);
        tracing::subscriber::with_default(sub, || {
            tracing::error!(error = "x", "not an alert");
            tracing::error!(
                alert = true,
                bot_id = "b1",
                attempts = 3,
                "the bot was kicked"
            );
            tracing::debug!(alert = true, "debug never alerts");
            tracing::info!(alert = true, "recovered");
        });
        let a = rx.try_recv().unwrap();
        assert_eq!(
            (a.level.as_str(), a.message.as_str()),
            ("ERROR", "the bot was kicked")
        );
        assert_eq!(
            a.fields,
            [
                ("bot_id".into(), "b1".into()),
                ("attempts".into(), "3".into())
            ]
        );
        assert_eq!(a.key(), "the bot was kicked bot_id=b1");
        assert_eq!(rx.try_recv().unwrap().message, "recovered");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn repeats_fold_into_one_and_a_summary_follows_the_window() {
        let t0 = Instant::now();
        let mut g = Gate::new(AlertPolicy {
            window: Duration::from_secs(600),
            max_per_hour: 20,
        });
        let kicked = alert("kicked", &[("bot_id", "b1"), ("msgid", "m1")]);
        let first = g.admit(kicked.clone(), t0).unwrap();
        assert_eq!((first.repeated, first.suppressed), (0, 0));
        // The same trouble with another message id: a repeat. Another bot: its own alert.
        let again = alert("kicked", &[("bot_id", "b1"), ("msgid", "m2")]);
        assert!(g
            .admit(again.clone(), t0 + Duration::from_secs(10))
            .is_none());
        assert!(g.admit(again, t0 + Duration::from_secs(20)).is_none());
        assert!(g
            .admit(
                alert("kicked", &[("bot_id", "b2")]),
                t0 + Duration::from_secs(30)
            )
            .is_some());
        assert!(g.due(t0 + Duration::from_secs(599)).is_empty());
        let due = g.due(t0 + Duration::from_secs(600));
        assert_eq!(due.len(), 1, "b2 had no repeats: no summary");
        assert_eq!((due[0].alert.clone(), due[0].repeated), (kicked.clone(), 2));
        assert!(due[0]
            .markdown("box-1")
            .contains("kicked — again 2 time(s) in the last window"));
        // After the window a repeat is a new alert.
        assert!(g.admit(kicked, t0 + Duration::from_secs(601)).is_some());
    }

    #[test]
    fn the_rate_limit_suppresses_and_the_next_message_says_so() {
        let t0 = Instant::now();
        let mut g = Gate::new(AlertPolicy {
            window: Duration::from_secs(600),
            max_per_hour: 2,
        });
        for i in 0..5 {
            let sent = g.admit(alert(&format!("a{i}"), &[]), t0).is_some();
            assert_eq!(sent, i < 2, "alert {i}");
        }
        let later = g
            .admit(alert("a9", &[]), t0 + Duration::from_secs(3600))
            .unwrap();
        assert_eq!(later.suppressed, 3);
        let md = later.markdown("box-1");
        assert!(md.contains("3 other alert(s) suppressed"), "{md}");
        // Summaries left at exit go out regardless of the limit.
        assert!(g
            .admit(alert("a9", &[]), t0 + Duration::from_secs(3601))
            .is_none());
        let left = g.drain();
        assert_eq!((left.len(), left[0].repeated), (1, 1));
    }

    #[test]
    fn markdown_and_time() {
        let mut a = alert("model failed to load", &[("model", "/m.gguf")]);
        a.at_ms = 1_796_601_600_000; // 2026-12-07 00:00:00 UTC
        let md = Outgoing {
            alert: a,
            repeated: 0,
            suppressed: 0,
        }
        .markdown("edge-7");
        assert_eq!(
            md,
            "**wecom-edge 告警 (alert)** · edge-7\n<font color=\"warning\">ERROR</font> model failed to load\n\
             > model: /m.gguf\n<font color=\"comment\">t · 2026-12-07 00:00:00 UTC</font>"
        );
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
