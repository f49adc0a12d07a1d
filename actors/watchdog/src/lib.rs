//! Keeping the box honest about its health.
//!
//! * [`Health`] — named predicates the parts of the box keep current, of two kinds:
//!   - **liveness**: this process's own actors are alive and making progress — a [`Beacon`]
//!     that must beat within its deadline unless it says it is idle (the model scheduler: "made
//!     progress or is idle"), or a state set with [`Health::set_liveness`];
//!   - **readiness**: the world the box depends on — a long connection, SQLite being writable,
//!     free disk space ([`Health::set`]). A failing readiness check makes the box *degraded*:
//!     `/readyz` answers 503 with the reasons and `/metrics` shows it, but the watchdog keeps
//!     being petted, because restarting the process cures none of these (a WeCom outage heals
//!     by reconnecting, a kicked bot must stay down, a full disk stays full).
//! * [`Notifier`] — systemd's notify protocol over `$NOTIFY_SOCKET` (sd_notify(3)): `READY=1`,
//!   `WATCHDOG=1`, `STATUS=…`, `STOPPING=1`; abstract (`@…`) and path sockets.
//! * [`run`] — the watchdog loop: pets systemd's watchdog (half of `$WATCHDOG_USEC`) only while
//!   every liveness check passes (`WATCHDOG=1` means "this process is alive and making
//!   progress"), keeps `STATUS=` saying `healthy`, `degraded: …` or `unhealthy: …`, logs each
//!   change, and raises an alert (`alert = true`) when the box has been unhealthy for a while
//!   and when it recovers.
//! * [`alert`] — alert events deduplicated and rate-limited for the group robots.
//! * [`router`] — `GET /livez` (the process answers), `GET /readyz` (200 once ready and healthy,
//!   else 503 with one reason per line), `GET /readyz/{check}` (one check, as Kubernetes'
//!   `/readyz/<check>`: 200, 503 with its reason, 404 when there is no such check; a standby
//!   box asks its owner's `/readyz/aibot/{bot_id}`), `GET /metrics` (OpenMetrics text of
//!   [`Metrics`]).
#![warn(missing_docs)]

pub mod alert;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A liveness signal with a deadline: healthy while it beat within `deadline` or is idle.
#[derive(Debug, Clone)]
pub struct Beacon {
    inner: Arc<Mutex<(Instant, bool)>>,
    deadline: Duration,
}

impl Beacon {
    /// Records progress.
    pub fn beat(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g = (Instant::now(), g.1);
    }

    /// Declares the component idle (nothing to make progress on) or busy again.
    pub fn set_idle(&self, idle: bool) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *g = (Instant::now(), idle);
    }

    fn failing(&self) -> Option<String> {
        let (last, idle) = *self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // A stable text (not the growing age), so STATUS= changes only when health does.
        (!idle && last.elapsed() > self.deadline)
            .then(|| format!("no progress within {:.1} s", self.deadline.as_secs_f64()))
    }
}

/// What a failing check means for the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// The process itself is stuck: systemd's watchdog must not be petted.
    Liveness,
    /// Something the box depends on is down: `/readyz` 503, the watchdog still petted.
    Readiness,
}

impl CheckKind {
    fn label(self) -> &'static str {
        match self {
            CheckKind::Liveness => "liveness",
            CheckKind::Readiness => "readiness",
        }
    }
}

enum Check {
    State(CheckKind, Result<(), String>),
    Beacon(Beacon),
}

impl Check {
    fn kind(&self) -> CheckKind {
        match self {
            Check::State(k, _) => *k,
            Check::Beacon(_) => CheckKind::Liveness,
        }
    }

    fn failing(&self) -> Option<String> {
        match self {
            Check::State(_, Ok(())) => None,
            Check::State(_, Err(r)) => Some(r.clone()),
            Check::Beacon(b) => b.failing(),
        }
    }
}

/// The box's health: named checks plus the ready flag. Cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<String, Check>>>,
    ready: Arc<AtomicBool>,
    /// Wakes [`run`] when readiness changes, so `READY=1` does not wait for the next tick
    /// (which is 15 s away under `WatchdogSec=30`).
    changed: Arc<tokio::sync::Notify>,
}

impl Health {
    /// An empty health (not ready, no checks).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a readiness check (e.g. `aibot/demo-bot` connected, `sqlite` writable): failing
    /// makes the box degraded, never stops the watchdog.
    pub fn set(&self, name: &str, state: Result<(), String>) {
        self.set_kind(name, CheckKind::Readiness, state);
    }

    /// Sets a liveness check: failing stops `WATCHDOG=1` (systemd restarts the process).
    pub fn set_liveness(&self, name: &str, state: Result<(), String>) {
        self.set_kind(name, CheckKind::Liveness, state);
    }

    fn set_kind(&self, name: &str, kind: CheckKind, state: Result<(), String>) {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.insert(name.to_string(), Check::State(kind, state));
        drop(checks);
        // A change of health is reported (STATUS=, the alert line) without waiting a tick.
        self.changed.notify_one();
    }

    /// Registers a liveness beacon with its deadline (starts idle) and returns it.
    pub fn beacon(&self, name: &str, deadline: Duration) -> Beacon {
        let b = Beacon {
            inner: Arc::new(Mutex::new((Instant::now(), true))),
            deadline,
        };
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Check::Beacon(b.clone()));
        b
    }

    /// Removes a check (a component that was configured away).
    pub fn remove(&self, name: &str) {
        self.checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Marks the box ready (model loaded, tree up); `READY=1` follows.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// Whether the box said it is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// One check: `None` when there is no check of that name, else `Err(reason)` while it
    /// fails.
    pub fn check(&self, name: &str) -> Option<Result<(), String>> {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks.get(name).map(|c| c.failing().map_or(Ok(()), Err))
    }

    /// Every failing check (liveness and readiness) as `name: reason`, sorted by name; empty
    /// when healthy.
    pub fn failures(&self) -> Vec<String> {
        self.failing(None)
    }

    /// The failing liveness checks as `name: reason`: non-empty means the process is stuck.
    pub fn liveness_failures(&self) -> Vec<String> {
        self.failing(Some(CheckKind::Liveness))
    }

    fn failing(&self, only: Option<CheckKind>) -> Vec<String> {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks
            .iter()
            .filter(|(_, c)| only.is_none_or(|k| c.kind() == k))
            .filter_map(|(name, c)| Some(format!("{name}: {}", c.failing()?)))
            .collect()
    }

    /// Each check as `(name, kind, failing)`, sorted by name (for `/metrics`).
    pub fn snapshot(&self) -> Vec<(String, CheckKind, bool)> {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        checks
            .iter()
            .map(|(name, c)| (name.clone(), c.kind(), c.failing().is_some()))
            .collect()
    }
}

/// systemd's notify socket (sd_notify(3)).
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (`/path` or `@abstract`); `None` when not run by systemd with
    /// `Type=notify`.
    ///
    /// # Errors
    /// The socket could not be created or the address is invalid.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(None),
            Some(p) => Self::new(&p.to_string_lossy()).map(Some),
        }
    }

    /// For an explicit socket address (`/path` or `@abstract`).
    ///
    /// # Errors
    /// As [`Notifier::from_env`].
    pub fn new(path: &str) -> io::Result<Notifier> {
        let addr = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?
        } else {
            std::os::unix::net::SocketAddr::from_pathname(path)?
        };
        Ok(Notifier {
            sock: UnixDatagram::unbound()?,
            addr,
        })
    }

    /// Sends newline-separated `KEY=VALUE` assignments.
    ///
    /// # Errors
    /// The datagram could not be sent.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(drop)
    }
}

/// The watchdog interval systemd asks for: half of `$WATCHDOG_USEC` when `$WATCHDOG_PID` is
/// unset or this process.
pub fn watchdog_interval_from_env() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The watchdog loop: every `interval` and at once when health changes, sends `READY=1` the
/// first time the box is ready, `WATCHDOG=1` only while ready and every liveness check passes,
/// and a `STATUS=` line (`starting`, `healthy`, `degraded: …`, `unhealthy: …`) whenever the
/// summary changes, with a log line. A box that has been ready and not healthy for
/// `alert_after` raises an alert (`alert = true`, `status`; again when the status changes
/// while not healthy), and one more when it is healthy again: a reconnect that heals within
/// `alert_after` stays in the log. Runs until the task is dropped.
pub async fn run(
    health: Health,
    notifier: Option<Notifier>,
    interval: Duration,
    alert_after: Duration,
) {
    let mut said_ready = false;
    let mut last_status = String::new();
    let mut bad_since: Option<Instant> = None;
    let mut alerted: Option<String> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = health.changed.notified() => {}
        }
        let failures = health.failures();
        let stuck = health.liveness_failures();
        let ready = health.is_ready();
        let status = if !ready {
            "starting".to_string()
        } else if !stuck.is_empty() {
            format!("unhealthy: {}", failures.join("; "))
        } else if !failures.is_empty() {
            format!("degraded: {}", failures.join("; "))
        } else {
            "healthy".to_string()
        };
        let mut msg = Vec::new();
        if ready && !said_ready {
            msg.push("READY=1".to_string());
            said_ready = true;
        }
        if ready && stuck.is_empty() {
            msg.push("WATCHDOG=1".to_string());
        }
        if status != last_status {
            if !failures.is_empty() {
                tracing::warn!(%status, "health changed");
            } else {
                tracing::info!(%status, "health changed");
            }
            msg.push(format!("STATUS={status}"));
            last_status = status.clone();
        }
        let bad = ready && !failures.is_empty();
        if bad {
            let since = *bad_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= alert_after && alerted.as_ref() != Some(&status) {
                tracing::warn!(
                    alert = true,
                    %status,
                    for_s = since.elapsed().as_secs(),
                    "the box is not healthy"
                );
                alerted = Some(status);
            }
        } else {
            bad_since = None;
            if ready && alerted.take().is_some() {
                tracing::info!(alert = true, "the box is healthy again");
            }
        }
        if let (Some(n), false) = (&notifier, msg.is_empty()) {
            if let Err(e) = n.notify(&msg.join("\n")) {
                tracing::warn!(error = %e, "sd_notify failed");
            }
        }
    }
}

/// The box's metrics, `wecom_edge_*`. No per-user labels.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Inbound messages accepted.
    pub messages_received: Counter,
    /// Redeliveries and retries dropped by msgid.
    pub messages_duplicated: Counter,
    /// Questions refused by the rate limiter.
    pub messages_rate_limited: Counter,
    /// Generations finished.
    pub generations: Counter,
    /// Tokens generated.
    pub tokens: Counter,
    /// Time from a message's arrival to its first streamed frame (s).
    pub time_to_first_token_seconds: Histogram,
    /// Whole generation time (s).
    pub generation_seconds: Histogram,
    /// Generations queued or running.
    pub queue_depth: Gauge,
    /// Actor restarts by supervisors.
    pub actor_restarts: Counter,
    /// Long-connection reconnects.
    pub websocket_reconnects: Counter,
    /// SQLite writes that failed.
    pub sqlite_write_errors: Counter,
    /// Answers generated and not yet delivered (the durable outbox).
    pub outbox_pending: Gauge,
    /// Deferred answers delivered by the outbox.
    pub outbox_delivered: Counter,
    /// Deferred answers given up at their deadline.
    pub outbox_abandoned: Counter,
    /// 1 while a health check fails, 0 while it passes, by `check` and `kind`
    /// (`liveness` / `readiness`); kept current from [`Health`] at each scrape.
    pub health_check_failing: Family<Vec<(String, String)>, Gauge>,
    /// Users' ratings of answers (AI-bot `feedback_event`), by `type`: `accurate`,
    /// `inaccurate`, `cancelled`.
    pub feedback: Family<Vec<(String, String)>, Counter>,
    /// Content-filter decisions, by `stage` (`in`, `out`) and `action` (`block`, `mask`,
    /// `flag`): one per turn and stage that matched a rule of that action.
    pub filter_decisions: Family<Vec<(String, String)>, Counter>,
    /// Turns ended by a stage that panicked (the user got a notice; the session goes on).
    pub turns_failed: Counter,
    /// Generations moved to a fallback generator, by `from` and `to` (generator names).
    pub generation_failovers: Family<Vec<(String, String)>, Counter>,
    /// A standby box's role changes for an AI bot, by `bot_id` and `event`: `takeover` (the
    /// owner was gone; this box subscribed), `yielded` (the owner came back).
    pub standby_events: Family<Vec<(String, String)>, Counter>,
    /// 1 for the device the local model runs on now, 0 for one it left, by `device` (`cpu`,
    /// `cuda`, `vulkan`); set with [`Metrics::set_model_device`].
    pub model_device: Family<Vec<(String, String)>, Gauge>,
    /// Moves of the model from a failed GPU to the CPU.
    pub model_device_fallbacks: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered under `wecom_edge_`.
    pub fn new() -> Self {
        let mut reg = Registry::with_prefix("wecom_edge");
        let c = |reg: &mut Registry, name: &str, help: &str| {
            let m = Counter::default();
            reg.register(name, help, m.clone());
            m
        };
        let messages_received = c(&mut reg, "messages_received", "Inbound messages accepted");
        let messages_duplicated = c(
            &mut reg,
            "messages_duplicated",
            "Redeliveries and retries dropped by msgid",
        );
        let messages_rate_limited = c(
            &mut reg,
            "messages_rate_limited",
            "Questions refused by the rate limiter",
        );
        let generations = c(&mut reg, "generations", "Generations finished");
        let tokens = c(&mut reg, "tokens", "Tokens generated");
        let actor_restarts = c(&mut reg, "actor_restarts", "Actor restarts by supervisors");
        let websocket_reconnects = c(
            &mut reg,
            "websocket_reconnects",
            "AI-bot long-connection reconnects",
        );
        let sqlite_write_errors = c(&mut reg, "sqlite_write_errors", "SQLite writes that failed");
        let outbox_delivered = c(
            &mut reg,
            "outbox_delivered",
            "Deferred answers delivered by the outbox",
        );
        let outbox_abandoned = c(
            &mut reg,
            "outbox_abandoned",
            "Deferred answers given up at their deadline",
        );
        let outbox_pending = Gauge::default();
        reg.register(
            "outbox_pending",
            "Answers generated and not yet delivered",
            outbox_pending.clone(),
        );
        let time_to_first_token_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 10));
        reg.register(
            "time_to_first_token_seconds",
            "Time from a message's arrival to its first streamed frame",
            time_to_first_token_seconds.clone(),
        );
        let generation_seconds = Histogram::new(exponential_buckets(0.25, 2.0, 10));
        reg.register(
            "generation_seconds",
            "Whole generation time",
            generation_seconds.clone(),
        );
        let health_check_failing = Family::<Vec<(String, String)>, Gauge>::default();
        reg.register(
            "health_check_failing",
            "1 while the health check fails (kind: liveness stops the watchdog, readiness degrades)",
            health_check_failing.clone(),
        );
        let feedback = Family::<Vec<(String, String)>, Counter>::default();
        reg.register(
            "feedback",
            "Users' ratings of answers (the like / dislike under an AI-bot answer)",
            feedback.clone(),
        );
        let filter_decisions = Family::<Vec<(String, String)>, Counter>::default();
        reg.register(
            "filter_decisions",
            "Content-filter decisions by stage (in, out) and action (block, mask, flag)",
            filter_decisions.clone(),
        );
        let turns_failed = c(
            &mut reg,
            "turns_failed",
            "Turns ended by a failing stage (the user got a notice)",
        );
        let generation_failovers = Family::<Vec<(String, String)>, Counter>::default();
        reg.register(
            "generation_failovers",
            "Generations moved to a fallback generator, by from and to",
            generation_failovers.clone(),
        );
        let standby_events = Family::<Vec<(String, String)>, Counter>::default();
        reg.register(
            "standby_events",
            "A standby box's takeovers of an AI bot and hand-backs to its owner, by bot_id and event",
            standby_events.clone(),
        );
        let model_device = Family::<Vec<(String, String)>, Gauge>::default();
        reg.register(
            "model_device",
            "1 for the device the local model runs on (cpu, cuda, vulkan), 0 for one it left",
            model_device.clone(),
        );
        let model_device_fallbacks = c(
            &mut reg,
            "model_device_fallbacks",
            "Moves of the local model from a failed GPU to the CPU",
        );
        let queue_depth = Gauge::default();
        reg.register(
            "queue_depth",
            "Generations queued or running",
            queue_depth.clone(),
        );
        Metrics {
            registry: Arc::new(reg),
            messages_received,
            messages_duplicated,
            messages_rate_limited,
            generations,
            tokens,
            time_to_first_token_seconds,
            generation_seconds,
            queue_depth,
            actor_restarts,
            websocket_reconnects,
            sqlite_write_errors,
            outbox_pending,
            outbox_delivered,
            outbox_abandoned,
            health_check_failing,
            feedback,
            filter_decisions,
            turns_failed,
            generation_failovers,
            standby_events,
            model_device,
            model_device_fallbacks,
        }
    }

    /// Marks `device` as the one the local model runs on (1), every other one seen as left (0).
    pub fn set_model_device(&self, device: &str) {
        for d in ["cpu", "cuda", "vulkan"] {
            let labels = vec![("device".to_string(), d.to_string())];
            if d == device {
                self.model_device.get_or_create(&labels).set(1);
            } else if self.model_device.get(&labels).is_some() {
                self.model_device.get_or_create(&labels).set(0);
            }
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }
}

#[derive(Clone)]
struct AdminState {
    health: Health,
    metrics: Metrics,
}

/// `/livez`, `/readyz`, `/metrics` for the admin listener.
pub fn router(health: Health, metrics: Metrics) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/readyz/{*check}", get(readyz_check))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { health, metrics })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let mut reasons = s.health.failures();
    if !s.health.is_ready() {
        reasons.insert(
            0,
            "starting: the model is loading or the tree is not up yet".into(),
        );
    } else if !reasons.is_empty() && s.health.liveness_failures().is_empty() {
        reasons.insert(
            0,
            "degraded: the process is alive; these need attention".into(),
        );
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n") + "\n")
    }
}

async fn readyz_check(
    State(s): State<AdminState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> impl IntoResponse {
    match s.health.check(&name) {
        Some(Ok(())) => (StatusCode::OK, "ok\n".to_string()),
        Some(Err(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{name}: {reason}\n"),
        ),
        None => (StatusCode::NOT_FOUND, format!("no check named {name:?}\n")),
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    for (name, kind, failing) in s.health.snapshot() {
        let labels = vec![
            ("check".to_string(), name),
            ("kind".to_string(), kind.label().to_string()),
        ];
        s.metrics
            .health_check_failing
            .get_or_create(&labels)
            .set(i64::from(failing));
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}
