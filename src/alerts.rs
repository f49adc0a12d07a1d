//! Alerts to the group robots with `alerts = true` (`[[webhook]]`): the box's alert events
//! ([`wecom_edge_actors::watchdog::alert`]) through its [`Gate`] (repeats folded, at most
//! `[alerts] max_per_hour`), as markdown to every such robot, each message audited
//! (`alert_sent`: level, message, fields, repeats, suppressed, and per robot whether it took
//! it). Alerts that arrive while the box stops, and the summaries of open windows, go out
//! before the process exits ([`Alerter::flush`]).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use wecom_edge_actors::watchdog::alert::{self, Alert, Gate, Outgoing};
use wecom_edge_actors::wecom::api::{Api, RetryPolicy};
use wecom_edge_actors::wecom::robot::{RobotMessage, RobotWebhook};

use crate::config::Config;

/// How often summaries of ended windows are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// The longest one robot send may take (its retries included).
const SEND_TIMEOUT: Duration = Duration::from_secs(15);

/// The running alert dispatcher.
pub struct Alerter {
    stop: Option<oneshot::Sender<Duration>>,
    task: JoinHandle<()>,
}

impl Alerter {
    /// Routes alert events to the configured robots; `None` (alerts only logged) when no
    /// `[[webhook]]` has `alerts = true`.
    pub fn spawn(cfg: &Config, api: &Api) -> Option<Alerter> {
        let robots: Vec<(String, RobotWebhook)> = cfg
            .webhooks
            .iter()
            .filter(|w| w.alerts)
            .map(|w| {
                let robot = RobotWebhook::new(api.clone(), w.key.expose(), RetryPolicy::default());
                (w.name.clone(), robot)
            })
            .collect();
        if robots.is_empty() {
            return None;
        }
        let rx = alert::route(256);
        let (stop, stop_rx) = oneshot::channel();
        let gate = Gate::new(cfg.alerts.policy);
        let task = tokio::spawn(run(rx, stop_rx, gate, robots, host()));
        Some(Alerter {
            stop: Some(stop),
            task,
        })
    }

    /// Sends what is still queued and the summaries of open windows, within `deadline`, and
    /// stops.
    pub async fn flush(mut self, deadline: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(deadline);
        }
        let _ = tokio::time::timeout(deadline + Duration::from_secs(1), &mut self.task).await;
        self.task.abort();
    }
}

/// The box's host name, for the reader of a robot's group with several boxes.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wecom-edge".into())
}

async fn run(
    mut rx: mpsc::Receiver<Alert>,
    mut stop: oneshot::Receiver<Duration>,
    mut gate: Gate,
    robots: Vec<(String, RobotWebhook)>,
    host: String,
) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = loop {
        tokio::select! {
            a = rx.recv() => match a {
                Some(a) => {
                    if let Some(o) = gate.admit(a, Instant::now()) {
                        send(&robots, &host, &o).await;
                    }
                }
                None => return,
            },
            _ = sweep.tick() => {
                for o in gate.due(Instant::now()) {
                    send(&robots, &host, &o).await;
                }
            }
            d = &mut stop => break d.unwrap_or(Duration::ZERO),
        }
    };
    let last = async {
        let mut out = Vec::new();
        while let Ok(a) = rx.try_recv() {
            out.extend(gate.admit(a, Instant::now()));
        }
        out.extend(gate.drain());
        for o in &out {
            send(&robots, &host, o).await;
        }
    };
    let _ = tokio::time::timeout(deadline, last).await;
}

/// One message to every robot; one audit row saying who took it.
async fn send(robots: &[(String, RobotWebhook)], host: &str, o: &Outgoing) {
    let msg = RobotMessage::Markdown(o.markdown(host));
    let mut results = Vec::new();
    for (name, robot) in robots {
        let r = match tokio::time::timeout(SEND_TIMEOUT, robot.send(&msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", SEND_TIMEOUT.as_secs())),
        };
        if let Err(e) = &r {
            // Not an alert itself: that would loop.
            tracing::warn!(robot = %name, error = %e, "an alert could not be sent");
        }
        results.push(json!({"webhook": name, "ok": r.is_ok(), "error": r.err()}));
    }
    let a = &o.alert;
    let fields: serde_json::Map<String, serde_json::Value> = a
        .fields
        .iter()
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect();
    wecom_edge_actors::audit::record(
        "alert_sent",
        "alerts",
        &a.message,
        json!({"level": a.level, "message": a.message, "fields": fields, "target": a.target,
               "at_ms": a.at_ms, "repeated": o.repeated, "suppressed": o.suppressed,
               "webhooks": results}),
    );
}
