//! The admin's web console in the running box (`actors/console`): started when
//! `wecom-edge console set-password` stored a password in the data directory, on
//! `[console] listen` over HTTPS with the box's self-signed certificate, its fingerprint in
//! the journal. [`BoxConsole`] is what its pages read and steer: health and metrics, each
//! bot's link ([`Links`]), the audit store (read-only, per request), the knowledge base, the
//! content filter, the model files, and "Try it" through the sessions' turn pipeline (as
//! channel `console`, user = the client's address).
//!
//! Its events become audit rows (`console_*`, the client address as subject; never a
//! password, a session id or a question's text); a lock-out is also an alert.
//!
//! A console that cannot start (a password file others can read, a port in use) is logged
//! and alerted; the box runs on without it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wecom_edge_actors::audit::{AuditKey, AuditRow, AuditStore};
use wecom_edge_actors::console::backend::{
    AuditEntry, AuditPage, AuditQuery, Backend, Bot, Conversations, Document, ExportFormat,
    FilterTest, FilterView, ModelFile, TryEvent,
};
use wecom_edge_actors::console::pages::{Overview, Sample};
use wecom_edge_actors::console::server::{self, ConsoleEvent, ConsoleState};
use wecom_edge_actors::console::{password, tls};
use wecom_edge_actors::model::gguf::GgufFile;
use wecom_edge_actors::model::inspect::ModelReport;
use wecom_edge_actors::session::reply::ApiEvent;
use wecom_edge_actors::session::turn::{ApiTurn, TurnCtx};
use wecom_edge_actors::session::SessionContext;
use wecom_edge_actors::watchdog::{Health, Metrics};
use wecom_edge_actors::wecom::longconn::LongConnHandle;

use crate::config::Config;

/// The load chart's resolution: one sample every 10 s, an hour of them.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const SAMPLES: usize = 360;

/// The file in the data directory that asks the appliance to switch models (its content: the
/// model's file name); `wecom-edge-model-switch.path` watches for it.
pub const SWITCH_REQUEST: &str = "model-switch.request";

/// Context the Model page's KV-cache figure is for (`model inspect`'s default).
const INSPECT_CTX: usize = 4096;

/// Each AI bot's long connection as its pump last saw it (state, since when, reconnects),
/// with its handle (for the last acknowledged ping). Cheap to clone.
#[derive(Clone, Default)]
pub struct Links(Arc<Mutex<HashMap<String, Link>>>);

struct Link {
    state: String,
    ok: bool,
    since: Instant,
    reconnects: u64,
    handle: LongConnHandle,
}

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tracks `bot_id`'s connection, `connecting` until its pump says otherwise.
    pub fn register(&self, bot_id: &str, handle: LongConnHandle, state: &str) {
        self.lock().insert(
            bot_id.to_string(),
            Link {
                state: state.into(),
                ok: false,
                since: Instant::now(),
                reconnects: 0,
                handle,
            },
        );
    }

    /// `bot_id`'s connection is now `state` (`ok`: a healthy one); `since` restarts when the
    /// state changes.
    pub fn set(&self, bot_id: &str, state: impl Into<String>, ok: bool) {
        if let Some(l) = self.lock().get_mut(bot_id) {
            let state = state.into();
            if l.state != state {
                l.since = Instant::now();
            }
            (l.state, l.ok) = (state, ok);
        }
    }

    /// `bot_id` subscribed again after a drop.
    pub fn reconnected(&self, bot_id: &str) {
        if let Some(l) = self.lock().get_mut(bot_id) {
            l.reconnects += 1;
        }
    }
}

/// The last hour of load, one [`Sample`] every [`SAMPLE_EVERY`].
#[derive(Clone, Default)]
struct Samples(Arc<Mutex<VecDeque<Sample>>>);

impl Samples {
    /// Samples `metrics` until the task is dropped: tokens/s over each interval, the queue at
    /// its end.
    async fn run(self, metrics: Metrics) {
        let mut tokens = metrics.tokens.get();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tick.tick().await;
            let now_tokens = metrics.tokens.get();
            let dt = last.elapsed().as_secs_f64().max(1e-3);
            last = Instant::now();
            let s = Sample {
                tokens_per_s: now_tokens.saturating_sub(tokens) as f64 / dt,
                queue: metrics.queue_depth.get(),
            };
            tokens = now_tokens;
            let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() == SAMPLES {
                q.pop_front();
            }
            q.push_back(s);
        }
    }

    fn get(&self) -> Vec<Sample> {
        let q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().copied().collect()
    }
}

/// What the box shows its console ([`Backend`]).
pub struct BoxConsole {
    health: Health,
    metrics: Metrics,
    started: Instant,
    samples: Samples,
    links: Links,
    ctx: SessionContext,
    data_dir: PathBuf,
    version: String,
    model: String,
    placement: Option<wecom_edge_actors::model::device::Placement>,
    /// The loaded model file (a local model).
    model_path: Option<PathBuf>,
    /// The imported models' folder (the configuration stick's `models/`).
    imported: Option<PathBuf>,
    cache_type: wecom_edge_actors::model::llama::CacheType,
    /// (kind, id) of every endpoint, in the configuration's order.
    endpoints: Vec<(&'static str, String)>,
    /// The `Try it` request ids.
    asked: AtomicU64,
}

/// Local midnight is UTC on the box (the appliance runs in UTC): the start of today, unix ms.
fn midnight_ms() -> i64 {
    let now = wecom_edge_actors::audit::now_ms();
    now - now.rem_euclid(86_400_000)
}

fn entry(r: AuditRow) -> AuditEntry {
    AuditEntry {
        seq: r.seq,
        ts_ms: r.ts_ms,
        kind: r.kind,
        actor: r.actor,
        subject: r.subject,
        detail: r.detail.to_string(),
    }
}

impl BoxConsole {
    fn store(&self) -> Result<AuditStore, String> {
        AuditStore::open_read_only(&self.data_dir).map_err(|e| e.to_string())
    }

    fn rows(store: &AuditStore, q: &AuditQuery) -> Result<Vec<AuditRow>, String> {
        store
            .query(q.kind.as_deref(), q.since_ms, q.until_ms, q.limit)
            .map_err(|e| e.to_string())
    }

    /// The model `models/previous.gguf` names (the one a switch goes back to).
    fn previous_model(&self) -> Option<String> {
        let link = std::fs::read_link(self.imported.as_ref()?.join("previous.gguf")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    fn report(&self, path: &Path) -> String {
        match GgufFile::open(path) {
            Ok(g) => ModelReport::from_gguf(&g, INSPECT_CTX, self.cache_type).to_text(),
            Err(e) => format!("cannot be read: {e}"),
        }
    }
}

impl Backend for BoxConsole {
    fn overview(&self) -> Overview {
        Overview {
            ready: self.health.is_ready() && self.health.failures().is_empty(),
            health: self.health.failures(),
            version: self.version.clone(),
            model: self.model.clone(),
            device: self
                .placement
                .as_ref()
                .map_or_else(|| "upstream".to_string(), |p| p.describe()),
            uptime: self.started.elapsed(),
            history: self.samples.get(),
            sample_every: SAMPLE_EVERY,
        }
    }

    fn bots(&self) -> Vec<Bot> {
        let today: HashMap<String, u64> = self
            .store()
            .and_then(|s| s.inbound_counts(midnight_ms()).map_err(|e| e.to_string()))
            .unwrap_or_default()
            .into_iter()
            .map(|(c, n, _)| (c, n))
            .collect();
        let links = self.links.lock();
        self.endpoints
            .iter()
            .map(|(kind, id)| {
                let messages_today =
                    |channel: &str| today.get(&format!("{channel}/{id}")).copied().unwrap_or(0);
                match (*kind, links.get(id)) {
                    ("aibot", Some(l)) => Bot {
                        kind: "AI bot (long connection)".into(),
                        id: id.clone(),
                        state: l.state.clone(),
                        ok: l.ok,
                        since: Some(l.since.elapsed()),
                        last_ping: l.handle.last_ping_ack().map(|t| t.elapsed()),
                        reconnects: Some(l.reconnects),
                        messages_today: messages_today("aibot"),
                    },
                    ("aibot", None) => Bot {
                        kind: "AI bot (webhook)".into(),
                        id: id.clone(),
                        state: "receives callbacks".into(),
                        ok: true,
                        messages_today: messages_today("aibot"),
                        ..Bot::default()
                    },
                    ("app", _) => Bot {
                        kind: "app".into(),
                        id: id.clone(),
                        state: "receives callbacks".into(),
                        ok: true,
                        messages_today: messages_today("app"),
                        ..Bot::default()
                    },
                    _ => Bot {
                        kind: "robot webhook".into(),
                        id: id.clone(),
                        state: "sends only".into(),
                        ok: true,
                        ..Bot::default()
                    },
                }
            })
            .collect()
    }

    fn conversations(&self) -> Result<Conversations, String> {
        let today = self
            .store()?
            .inbound_counts(midnight_ms())
            .map_err(|e| e.to_string())?;
        let mut active: Vec<String> = ractor::registry::registered()
            .into_iter()
            .filter_map(|n| n.strip_prefix("session:").map(str::to_string))
            .collect();
        active.sort();
        Ok(Conversations {
            today,
            active,
            outbox_pending: self.metrics.outbox_pending.get(),
        })
    }

    fn audit(&self, q: &AuditQuery) -> Result<AuditPage, String> {
        let store = self.store()?;
        let rows = Self::rows(&store, q)?.into_iter().map(entry).collect();
        let kinds = store.kinds().map_err(|e| e.to_string())?;
        Ok(AuditPage { rows, kinds })
    }

    fn verify(&self) -> Result<String, String> {
        let key = AuditKey::load(&AuditKey::default_path(&self.data_dir))
            .map_err(|e| format!("the audit key: {e}"))?;
        let v = AuditStore::verify_dir(&self.data_dir, &key).map_err(|e| e.to_string())?;
        if v.is_intact() {
            Ok(v.summary())
        } else {
            Err(v.problems().join("; "))
        }
    }

    fn export(&self, q: &AuditQuery, format: ExportFormat) -> Result<(Vec<u8>, usize), String> {
        let mut rows = Self::rows(&self.store()?, q)?;
        rows.reverse(); // chain order, as `wecom-edge audit export` writes them
        let mut out = Vec::new();
        match format {
            ExportFormat::Jsonl => {
                for r in &rows {
                    out.extend(serde_json::to_vec(r).map_err(|e| e.to_string())?);
                    out.push(b'\n');
                }
            }
            ExportFormat::Csv => {
                wecom_edge_actors::audit::write_csv(&mut out, &rows).map_err(|e| e.to_string())?
            }
        }
        Ok((out, rows.len()))
    }

    fn knowledge(&self) -> Option<Result<Vec<Document>, String>> {
        let kb = self.ctx.knowledge.as_ref()?;
        Some(
            kb.list()
                .map(|docs| {
                    docs.into_iter()
                        .map(|d| Document {
                            doc: d.doc,
                            title: d.title,
                            chunks: d.chunks,
                            bytes: d.bytes,
                            source: d.source,
                        })
                        .collect()
                })
                .map_err(|e| e.to_string()),
        )
    }

    fn knowledge_add(&self, name: &str, bytes: &[u8]) -> Result<String, String> {
        use wecom_edge_actors::audit::knowledge::Added;
        let kb = self.ctx.knowledge.as_ref().ok_or("no knowledge base")?;
        let a = kb.add_upload(name, bytes).map_err(|e| e.to_string())?;
        let what = match a {
            Added::New(_) => "Added",
            Added::Updated(_) => "Updated",
            Added::Unchanged(_) => "Unchanged:",
        };
        let d = a.document();
        Ok(format!(
            "{what} {} («{}», {} chunks).",
            d.doc, d.title, d.chunks
        ))
    }

    fn knowledge_remove(&self, name: &str) -> Result<(), String> {
        let kb = self.ctx.knowledge.as_ref().ok_or("no knowledge base")?;
        kb.remove(name).map_err(|e| e.to_string())
    }

    fn filter(&self) -> Option<FilterView> {
        let f = self.ctx.filter.current();
        let (terms, regexes) = f.sizes();
        (!f.is_empty()).then_some(FilterView { terms, regexes })
    }

    fn filter_test(&self, phrase: &str) -> FilterTest {
        let f = self.ctx.filter.current();
        let verdict = f.check(phrase);
        let hits = verdict
            .hits
            .iter()
            .map(|h| {
                let matched = phrase.get(h.span.clone()).unwrap_or("").to_string();
                (h.rule.to_string(), h.action.name().to_string(), matched)
            })
            .collect();
        FilterTest {
            masked: verdict.masked(phrase),
            hits,
        }
    }

    fn models(&self) -> Vec<ModelFile> {
        let Some(loaded) = &self.model_path else {
            return Vec::new();
        };
        let loaded_real = std::fs::canonicalize(loaded).unwrap_or_else(|_| loaded.clone());
        let name = |p: &Path| {
            p.file_name()
                .map_or(String::new(), |f| f.to_string_lossy().into_owned())
        };
        let mut out = vec![ModelFile {
            name: name(&loaded_real),
            loaded: true,
            switchable: false,
            report: self.report(loaded),
        }];
        if let Some(dir) = &self.imported {
            let mut others: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "gguf")
                        && !p.is_symlink()
                        && std::fs::canonicalize(p).ok().as_ref() != Some(&loaded_real)
                })
                .collect();
            others.sort();
            let previous = self.previous_model();
            for p in others {
                let n = name(&p);
                out.push(ModelFile {
                    switchable: previous.as_deref() == Some(n.as_str()),
                    name: n,
                    loaded: false,
                    report: self.report(&p),
                });
            }
        }
        out
    }

    fn switch_model(&self, name: &str) -> Result<String, String> {
        // Only the model the listing offers as switchable (the previous one, a plain file,
        // not the one loaded), checked without reading any GGUF; the root helper checks it
        // again (systemd/wecom-edge-config-import --switch).
        let loaded = self
            .model_path
            .as_ref()
            .and_then(|p| std::fs::canonicalize(p).ok());
        let offered = self.previous_model().as_deref() == Some(name)
            && self.imported.as_ref().is_some_and(|d| {
                let p = d.join(name);
                p.is_file() && !p.is_symlink() && std::fs::canonicalize(&p).ok() != loaded
            });
        if !offered {
            return Err(format!("{name} is not a model this box can switch to"));
        }
        let tmp = self.data_dir.join(format!(".{SWITCH_REQUEST}.new"));
        std::fs::write(&tmp, format!("{name}\n"))
            .and_then(|()| std::fs::rename(&tmp, self.data_dir.join(SWITCH_REQUEST)))
            .map_err(|e| format!("the switch request could not be written: {e}"))?;
        Ok(format!(
            "Switching to {name}: the box checks it (it loads, scores a text, generates a token) and then restarts on it, in a minute or so. If the check fails, nothing changes and the journal says why."
        ))
    }

    fn ask(&self, who: &str, question: &str) -> mpsc::UnboundedReceiver<TryEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, mut turn_rx) = mpsc::unbounded_channel();
        let n = self.asked.fetch_add(1, Ordering::Relaxed);
        let persona = self.ctx.personas.default_value();
        let turn = TurnCtx::api(
            self.ctx.clone(),
            ApiTurn {
                channel: "console",
                key_id: "console".into(),
                user: Some(who.to_string()),
                request_id: format!("try-{}-{n}", wecom_edge_actors::audit::now_ms()),
                system: Some(persona.system_message()),
                history: Vec::new(),
                question: question.to_string(),
                persona,
                events,
                cancel: Arc::new(AtomicBool::new(false)),
            },
        );
        tokio::spawn(turn.run());
        tokio::spawn(async move {
            while let Some(e) = turn_rx.recv().await {
                let e = match e {
                    ApiEvent::Text(t) => TryEvent::Text(t),
                    ApiEvent::Final(t) => TryEvent::Final(t),
                    ApiEvent::Usage(_) | ApiEvent::Stopped(_) => continue,
                };
                if tx.send(e).is_err() {
                    return;
                }
            }
        });
        rx
    }
}

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

fn record(e: ConsoleEvent) {
    let (kind, from, detail) = match e {
        ConsoleEvent::LoggedIn { from } => ("console_login".to_string(), from, json!({})),
        ConsoleEvent::LoginFailed { from, left } => {
            ("console_login_failed".into(), from, json!({"left": left}))
        }
        ConsoleEvent::Locked {
            from,
            retry_after,
            everyone,
        } => {
            tracing::warn!(alert = true, %from, everyone, retry_after_s = retry_after.as_secs(), "console: too many wrong passwords; logins locked");
            (
                "console_locked".into(),
                from,
                json!({"retry_after_s": retry_after.as_secs(), "everyone": everyone}),
            )
        }
        ConsoleEvent::LockedOut { from } => ("console_locked_out".into(), from, json!({})),
        ConsoleEvent::LoggedOut { from } => ("console_logout".into(), from, json!({})),
        ConsoleEvent::Forbidden { from, path } => {
            ("console_forbidden".into(), from, json!({"path": path}))
        }
        ConsoleEvent::Action {
            from,
            action,
            ok,
            mut detail,
        } => {
            detail["ok"] = json!(ok);
            (format!("console_{action}"), from, detail)
        }
    };
    wecom_edge_actors::audit::record(&kind, "console", &from.to_string(), detail);
}

/// What the running box hands the console.
pub struct Parts<'a> {
    /// The configuration.
    pub cfg: &'a Config,
    /// Health checks.
    pub health: &'a Health,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// When the box started.
    pub started: Instant,
    /// The AI bots' links.
    pub links: &'a Links,
    /// The sessions' context ("Try it" runs its turns on it).
    pub ctx: SessionContext,
    /// Where the local model runs now (`None`: no local model, the box answers through
    /// upstreams).
    pub placement: Option<wecom_edge_actors::model::device::Placement>,
}

/// The file the appliance's login screen (tty1) shows: the console's URL and certificate
/// fingerprint. The image links `/etc/issue.d/50-wecom-edge-console.issue` to it; agetty(8)
/// expands `\4` to the box's IPv4 address.
pub const ISSUE_FILE: &str = "console.issue";

/// Writes [`ISSUE_FILE`] in `data_dir` (a failure is only logged: it is a convenience).
fn write_issue(data_dir: &Path, addr: SocketAddr, fingerprint: &str) {
    let host = if addr.ip().is_unspecified() {
        "\\4".to_string()
    } else {
        addr.ip().to_string()
    };
    let text = format!(
        "Web console: https://{host}:{}/\nIts certificate's SHA-256 fingerprint (check it when the browser warns):\n  {fingerprint}\n\n",
        addr.port()
    );
    let path = data_dir.join(ISSUE_FILE);
    let tmp = data_dir.join(format!(".{ISSUE_FILE}.new"));
    let r = std::fs::write(&tmp, text).and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, &path)
    });
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), error = %e, "console: the login screen's note could not be written");
    }
}

/// The running console.
#[derive(Debug, Clone)]
pub struct Running {
    /// Its HTTPS address.
    pub addr: SocketAddr,
    /// Its certificate's SHA-256 fingerprint (`AB:CD:…`).
    pub fingerprint: String,
}

impl Running {
    /// The URLs an admin can type: the listen address's, or, where it listens on every
    /// address, one per IPv4 address of this machine's interfaces (loopback last). Where the
    /// interfaces cannot be listed (the unit's `RestrictAddressFamilies=` leaves out netlink),
    /// the address this machine would send from towards the LAN; without one, a placeholder.
    pub fn urls(&self) -> Vec<String> {
        let port = self.addr.port();
        if !self.addr.ip().is_unspecified() {
            return vec![format!("https://{}/", self.addr)];
        }
        let mut ips: Vec<std::net::Ipv4Addr> = nix::ifaddrs::getifaddrs()
            .into_iter()
            .flatten()
            .filter_map(|i| i.address?.as_sockaddr_in().map(|a| a.ip()))
            .collect();
        if ips.iter().all(|ip| ip.is_loopback()) {
            ips.extend(outward_ipv4());
        }
        if ips.iter().all(|ip| ip.is_loopback()) {
            // No LAN address yet (DHCP still going): the login screen's note shows the
            // address once it is there (agetty's `\4`).
            return vec![format!("https://<the box's LAN address>:{port}/")];
        }
        ips.sort_by_key(|ip| (ip.is_loopback(), *ip));
        ips.dedup();
        ips.into_iter()
            .map(|ip| format!("https://{ip}:{port}/"))
            .collect()
    }
}

/// The source address of this machine's route towards the LAN: a UDP socket "connected" (no
/// packet is sent) to TEST-NET-1 (the default route), else to an address in each private
/// range; the first that has a route.
fn outward_ipv4() -> Option<std::net::Ipv4Addr> {
    [
        "192.0.2.1:9",
        "10.254.254.254:9",
        "172.31.254.254:9",
        "192.168.254.254:9",
    ]
    .iter()
    .find_map(|to| {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
        s.connect(to).ok()?;
        match s.local_addr().ok()?.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
            _ => None,
        }
    })
}

/// Starts the console when a password is set. Problems are logged and alerted (`None`),
/// never fatal to the box.
pub async fn start(p: Parts<'_>, tasks: &mut Vec<JoinHandle<()>>) -> Option<Running> {
    let cfg = p.cfg;
    let c = &cfg.console;
    // The data directory's (`console set-password`), else the appliance's credential
    // (imported from the configuration stick's `console-password`).
    let from_credentials = || match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(d) => password::load_file(PathBuf::from(d).join(password::CREDENTIAL)),
        None => Ok(None),
    };
    let stored = match password::load(&cfg.data_dir).and_then(|p| match p {
        Some(p) => Ok(Some(p)),
        None => from_credentials(),
    }) {
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
    let cert = match &c.certificate {
        // The company's own (checked by the configuration already).
        Some((pem, key)) => tls::from_pem(pem, key.expose().as_bytes()).map(|c| (c, false)),
        None => tls::load_or_create(&cfg.data_dir, &cert_names(c.listen)),
    };
    let cert = match cert {
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
    write_issue(&cfg.data_dir, addr, &cert.fingerprint);
    let samples = Samples::default();
    tasks.push(tokio::spawn(samples.clone().run(p.metrics.clone())));
    let model = if cfg.local_model {
        cfg.model_path
            .file_name()
            .map_or("(none)".into(), |f| f.to_string_lossy().into_owned())
    } else {
        format!("upstream {}", cfg.generators.default_value())
    };
    let mut endpoints: Vec<(&'static str, String)> = Vec::new();
    // A webhook AI bot is not in `links`: it is shown as receiving callbacks.
    endpoints.extend(cfg.aibots.iter().map(|b| ("aibot", b.bot_id.clone())));
    endpoints.extend(cfg.apps.iter().map(|a| ("app", a.agentid.to_string())));
    endpoints.extend(cfg.webhooks.iter().map(|w| ("robot", w.name.clone())));
    let backend = BoxConsole {
        health: p.health.clone(),
        metrics: p.metrics.clone(),
        started: p.started,
        samples,
        links: p.links.clone(),
        ctx: p.ctx,
        data_dir: cfg.data_dir.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        model,
        placement: p.placement,
        model_path: cfg.local_model.then(|| cfg.model_path.clone()),
        imported: cfg
            .model_imported
            .then(|| cfg.model_path.parent().map(Path::to_path_buf))
            .flatten(),
        cache_type: cfg.cache_type,
        endpoints,
        asked: AtomicU64::new(0),
    };
    let state = ConsoleState::new(
        stored,
        &cert.fingerprint,
        Arc::new(backend),
        Arc::new(record),
    );
    tracing::info!(url = %format!("https://{addr}"), fingerprint = %cert.fingerprint, "console on");
    tasks.push(tokio::spawn(server::serve(
        listener,
        tls,
        c.allow_from.clone(),
        server::router(state),
    )));
    Some(Running {
        addr,
        fingerprint: cert.fingerprint.clone(),
    })
}
