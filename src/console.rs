//! The admin's web console in the running box (`actors/console`): started when
//! `wecom-edge console set-password` stored a password in the data directory, on
//! `[console] listen` over HTTPS with the box's self-signed certificate, its fingerprint in
//! the journal. Its events become audit rows (`console_*`, the client address as subject;
//! never a password or a session id); a lock-out is also an alert.
//!
//! A console that cannot start (a password file others can read, a port in use) is logged
//! and alerted; the box runs on without it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::task::JoinHandle;
use wecom_edge_actors::console::pages::Overview;
use wecom_edge_actors::console::server::{self, ConsoleEvent, ConsoleState};
use wecom_edge_actors::console::{password, tls};
use wecom_edge_actors::watchdog::Health;

use crate::config::Config;

/// The names the certificate is made for: `localhost`, `wecom-edge`, the host name, and the
/// listen address when it is a specific one.
fn cert_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "wecom-edge".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names
}

/// What the box tells the Overview page.
fn overview(cfg: &Config, health: Health, started: Instant) -> impl Fn() -> Overview {
    let model = if cfg.local_model {
        cfg.model_path
            .file_name()
            .map_or("(none)".into(), |f| f.to_string_lossy().into_owned())
    } else {
        format!("upstream {}", cfg.generators.default_value())
    };
    let device = cfg.device.clone();
    move || Overview {
        ready: health.is_ready() && health.failures().is_empty(),
        health: health.failures(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        model: model.clone(),
        device: device.clone(),
        uptime: started.elapsed(),
    }
}

fn record(e: ConsoleEvent) {
    let (kind, from, detail) = match e {
        ConsoleEvent::LoggedIn { from } => ("console_login", from, json!({})),
        ConsoleEvent::LoginFailed { from, left } => {
            ("console_login_failed", from, json!({"left": left}))
        }
        ConsoleEvent::Locked {
            from,
            retry_after,
            everyone,
        } => {
            tracing::warn!(alert = true, %from, everyone, retry_after_s = retry_after.as_secs(), "console: too many wrong passwords; logins locked");
            (
                "console_locked",
                from,
                json!({"retry_after_s": retry_after.as_secs(), "everyone": everyone}),
            )
        }
        ConsoleEvent::LockedOut { from } => ("console_locked_out", from, json!({})),
        ConsoleEvent::LoggedOut { from } => ("console_logout", from, json!({})),
        ConsoleEvent::Forbidden { from, path } => {
            ("console_forbidden", from, json!({"path": path}))
        }
    };
    wecom_edge_actors::audit::record(kind, "console", &from.to_string(), detail);
}

/// Starts the console when a password is set; its address. Problems are logged and alerted
/// (`None`), never fatal to the box.
pub async fn start(
    cfg: &Config,
    health: &Health,
    started: Instant,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Option<SocketAddr> {
    let c = &cfg.console;
    let stored = match password::load(&cfg.data_dir) {
        Ok(Some(p)) => p,
        Ok(None) => {
            tracing::info!("console off: no password set (wecom-edge console set-password)");
            return None;
        }
        Err(e) => {
            tracing::error!(alert = true, error = %e, "console off");
            return None;
        }
    };
    let cert = match tls::load_or_create(&cfg.data_dir, &cert_names(c.listen)) {
        Ok((cert, created)) => {
            if created {
                tracing::info!(fingerprint = %cert.fingerprint, "console: made its self-signed certificate");
            }
            cert
        }
        Err(e) => {
            tracing::error!(alert = true, error = %e, "console off: its certificate");
            return None;
        }
    };
    let tls = match tls::server_config(&cert) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(alert = true, error = %e, "console off: TLS");
            return None;
        }
    };
    let listener = match tokio::net::TcpListener::bind(c.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(alert = true, listen = %c.listen, error = %e, "console off: cannot listen");
            return None;
        }
    };
    let addr = listener.local_addr().ok()?;
    let state = ConsoleState::new(
        stored,
        &cert.fingerprint,
        Arc::new(overview(cfg, health.clone(), started)),
        Arc::new(record),
    );
    tracing::info!(url = %format!("https://{addr}"), fingerprint = %cert.fingerprint, "console on");
    tasks.push(tokio::spawn(server::serve(
        listener,
        tls,
        c.allow_from.clone(),
        server::router(state),
    )));
    Some(addr)
}
