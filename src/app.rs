//! The supervision tree of DESIGN.md, wired from a [`Config`], and its ops tasks.
//!
//! ```text
//! root (one_for_one, 3 restarts / 60 s)
//! ├── ops_sup (one_for_one)        audit (the single SQLite writer) · limiter · outbox
//! ├── model_sup (rest_for_one)     model (loads the GGUF, owns the device and the scheduler)
//! ├── session_sup (one_for_one)    one transient session actor per conversation (dynamic)
//! └── wecom_sup (rest_for_one)     router · one pump per AI-bot long connection
//! ```
//! Children start in this order (the model is loaded before anything is routed to it) and stop
//! in reverse. Every restart is audited (`actor_restarted`) and counted. If the root gives up
//! (its restart intensity is exceeded) [`Running::wait`] returns and the process exits non-zero,
//! so systemd restarts the whole box.
//!
//! Outside the tree, plain tasks: the long connections themselves (they reconnect on their own,
//! forever), the callback HTTP server (a callback is acknowledged only after the router has
//! recorded it in SQLite; otherwise WeCom gets a 503 and retries), the admin HTTP server
//! (`/livez /readyz /metrics`), the systemd notifier and the SQLite write probe.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use serde_json::json;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use wecom_edge_actors::audit::knowledge::Knowledge;
use wecom_edge_actors::audit::{AuditActor, AuditArgs, AuditMsg, AUDIT_ACTOR};
use wecom_edge_actors::limiter::{LimiterActor, LIMITER_ACTOR};
use wecom_edge_actors::model::device::{Device, Fallback, Placement};
use wecom_edge_actors::model::{
    self, ModelActor, ModelArgs, Progress, QuantBackend, SchedulerConfig, MODEL_ACTOR,
};
use wecom_edge_actors::session::{
    Admin, FilterHandle, InboundMsg, KnowledgeBase, Origin, Outbound, OutboxActor, OutboxArgs,
    ReplyTo, RouterActor, RouterArgs, RouterMsg, Scope, SessionContext, SessionSettings,
    OUTBOX_ACTOR, ROUTER_ACTOR, SESSION_SUP,
};
use wecom_edge_actors::supervisor::{
    ChildSpec, Strategy, Supervisor, SupervisorEvent, SupervisorMsg, SupervisorSpec,
};
use wecom_edge_actors::watchdog::{self, Beacon, Health, Metrics, Notifier};
use wecom_edge_actors::wecom::api::{AccessToken, Api, AppClient, RetryPolicy};
use wecom_edge_actors::wecom::callback::{
    AcceptFn, AiBotReply, CallbackServer, Inbound, Rejection,
};
use wecom_edge_actors::wecom::longconn::{self, BotEvent, LongConnConfig, LongConnHandle};
use wecom_edge_actors::wecom::standby::OwnerWatch;
use wecom_edge_actors::wecom::MsgCrypt;

use crate::alerts::Alerter;
use crate::config::{AiBotMode, Config, SessionScope};

/// The box, running.
pub struct Running {
    /// The admin listener's address (`/livez /readyz /metrics`).
    pub admin: SocketAddr,
    /// The callback listener's address, when one is configured.
    pub callbacks: Option<SocketAddr>,
    /// The OpenAI-compatible API's address, when `[openai]` is configured.
    pub openai: Option<SocketAddr>,
    /// The console, when a console password is set.
    pub console: Option<crate::console::Running>,
    /// Health state.
    pub health: Health,
    /// Metrics.
    pub metrics: Metrics,
    root: ActorRef<SupervisorMsg>,
    root_done: JoinHandle<()>,
    conns: Vec<LongConnHandle>,
    tasks: Vec<JoinHandle<()>>,
    alerter: Option<Alerter>,
}

/// How long the last alerts may take to go out when the box stops.
const ALERT_FLUSH: Duration = Duration::from_secs(5);

impl Running {
    /// Waits until the tree ends on its own (root escalation); `Err` says why.
    ///
    /// # Errors
    /// Always: the tree is not supposed to end.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.root_done).await.ok();
        anyhow::bail!("the supervision tree stopped (restart intensity exceeded)")
    }

    /// Stops everything: the tree in reverse start order, then the connections and tasks.
    pub async fn shutdown(self) {
        self.health.set_ready(false);
        self.root.stop(Some("shutdown".into()));
        let _ = tokio::time::timeout(Duration::from_secs(70), self.root_done).await;
        for c in &self.conns {
            c.shutdown().await;
        }
        for t in self.tasks {
            t.abort();
        }
        if let Some(a) = self.alerter {
            a.flush(ALERT_FLUSH).await;
        }
    }
}

struct BeaconProgress(Beacon);

impl Progress for BeaconProgress {
    fn beat(&self) {
        self.0.beat();
    }
    fn idle(&self, idle: bool) {
        self.0.set_idle(idle);
    }
    fn released(&self, caches: usize, bytes: usize) {
        tracing::debug!(caches, bytes, "idle conversations' KV caches released");
    }
}

/// model_sup: the model actor (loads the GGUF, owns the device and the scheduler), on
/// `placement`'s device.
fn model_sup(
    cfg: &Config,
    health: &Health,
    metrics: &Metrics,
    placement: &Placement,
    ev_tx: mpsc::UnboundedSender<SupervisorEvent>,
) -> SupervisorSpec {
    let beacon = health.beacon("model", Duration::from_secs(30));
    let progress: Arc<dyn Progress + Sync> = Arc::new(BeaconProgress(beacon));
    // A conversation's parked KV cache lives as long as its session.
    let scheduler = SchedulerConfig {
        max_batch: 8,
        parked_ttl: cfg.idle_timeout,
        ..Default::default()
    };
    let start = ModelStart {
        path: cfg.model_path.clone(),
        cache_type: cfg.cache_type,
        scheduler,
        progress,
    };
    metrics.set_model_device(placement.current().name());
    let metrics = metrics.clone();
    let on_fallback = Arc::new(move |f: &Fallback| {
        metrics.model_device_fallbacks.inc();
        metrics.set_model_device(Device::Cpu.name());
        tracing::error!(alert = true, from = f.from.name(), why = %f.why,
            "the model left the GPU and runs on the CPU now (slower); restart the service to try the GPU again");
        wecom_edge_actors::audit::record(
            "model_device_fallback",
            "model_sup",
            MODEL_ACTOR,
            json!({"from": f.from.name(), "to": Device::Cpu.name(), "why": f.why}),
        );
    });
    SupervisorSpec::new(Strategy::RestForOne)
        .intensity(5, Duration::from_secs(60))
        .events(ev_tx)
        .child(model_child(placement.clone(), start, on_fallback))
}

/// Starts the OpenAI-compatible API (`[openai]`) on the sessions' context: its models are
/// the default generator (named by the model file, or the upstream), then every other.
async fn start_openai(
    cfg: &Config,
    o: &crate::config::OpenAi,
    ctx: &SessionContext,
    by_name: &ByName,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<SocketAddr> {
    use wecom_edge_actors::openai::{self, auth::ApiKey};
    let listener = tokio::net::TcpListener::bind(o.listen)
        .await
        .with_context(|| format!("openai.listen {}", o.listen))?;
    let addr = listener.local_addr()?;
    let local_id = cfg
        .model_path
        .file_stem()
        .map_or("local".to_string(), |s| s.to_string_lossy().into_owned());
    let id = |name: &str| {
        if name == crate::config::LOCAL {
            local_id.clone()
        } else {
            name.to_string()
        }
    };
    let default = cfg.generators.default_value();
    let mut models = vec![(id(&default.generator), ctx.generators.default_value())];
    let mut names: Vec<&String> = by_name.keys().collect();
    names.sort();
    for n in names {
        let local_unused = n == crate::config::LOCAL && !cfg.local_model;
        if *n != default.generator && !local_unused {
            models.push((id(n), by_name[n].clone()));
        }
    }
    let keys = o
        .keys
        .iter()
        .map(|(k, id, persona)| ApiKey::new(k.expose(), id.as_deref(), *persona))
        .collect();
    let app = openai::router(openai::ApiState {
        ctx: ctx.clone(),
        keys: Arc::new(keys),
        anonymous: o.allow_anonymous,
        models: Arc::new(models),
    });
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }));
    tracing::info!(%addr, keys = o.keys.len(), "OpenAI-compatible API listening");
    Ok(addr)
}

/// The generators by name (`local`, each upstream's).
type ByName = std::collections::HashMap<String, Arc<dyn model::serve::Generator>>;

/// Each endpoint's generator: [`model::serve::local::Local`], an `[[upstream]]`
/// ([`model::serve::upstream::Upstream`], one client and breaker per upstream, shared), or
/// either behind a [`model::serve::failover::Failover`].
fn generators(cfg: &Config) -> anyhow::Result<(wecom_edge_actors::session::Generators, ByName)> {
    use model::serve::{failover::Failover, local::Local, upstream, Generator};
    let mut by_name = ByName::new();
    by_name.insert(crate::config::LOCAL.into(), Arc::new(Local));
    for u in &cfg.upstreams {
        let mut c = upstream::UpstreamConfig::new(&u.name, &u.base_url, &u.model);
        c.api_key = u.api_key.as_ref().map(|k| k.expose().to_string());
        c.timeout = u.timeout;
        c.context_length = u.context_length;
        c.retries = u.retries;
        c.cooldown = u.cooldown;
        let up = upstream::Upstream::new(c).map_err(anyhow::Error::msg)?;
        by_name.insert(u.name.clone(), Arc::new(up));
    }
    let build = |c: &crate::config::GeneratorChoice| -> Arc<dyn Generator> {
        let primary = by_name[&c.generator].clone();
        match &c.fallback {
            Some(f) => Arc::new(Failover::new(primary, by_name[f].clone())),
            None => primary,
        }
    };
    let mut out =
        wecom_edge_actors::session::Generators::new(build(&cfg.generators.default_value()));
    for b in &cfg.aibots {
        out = out.with(
            "aibot",
            &b.bot_id,
            build(&cfg.generators.get("aibot", &b.bot_id)),
        );
    }
    for a in &cfg.apps {
        let id = a.agentid.to_string();
        out = out.with("app", &id, build(&cfg.generators.get("app", &id)));
    }
    Ok((out, by_name))
}

/// Which backend the model runs on ([`model::device::resolve`] of `model.device`).
fn model_device(device: &str) -> anyhow::Result<model::device::Device> {
    model::device::resolve(device).map_err(|e| anyhow::anyhow!("model.{e}"))
}

/// What the model actor starts with, on whichever device.
#[derive(Clone)]
struct ModelStart {
    path: PathBuf,
    cache_type: model::llama::CacheType,
    scheduler: SchedulerConfig,
    progress: Arc<dyn Progress + Sync>,
}

impl ModelStart {
    /// Spawns the model actor on `device`'s backend, linked to `sup`; it answers once the
    /// model is loaded ([`ModelActor`]).
    ///
    /// # Errors
    /// The load failed (the file, the device: a GPU that is gone fails here), or this build
    /// has no backend for `device`.
    async fn spawn(self, device: Device, sup: ActorCell) -> Result<ActorCell, SpawnErr> {
        async fn on<B: QuantBackend>(
            args: ModelArgs<B>,
            sup: ActorCell,
        ) -> Result<ActorCell, SpawnErr>
        where
            B::Device: Send + Sync,
        {
            let actor = ModelActor::<B>::default();
            let (r, _) = Actor::spawn_linked(Some(MODEL_ACTOR.into()), actor, args, sup).await?;
            Ok(r.get_cell())
        }
        macro_rules! on {
            ($b:ty) => {
                on::<$b>(
                    ModelArgs {
                        path: self.path,
                        device: Default::default(),
                        cache_type: self.cache_type,
                        scheduler: self.scheduler,
                        progress: self.progress,
                    },
                    sup,
                )
                .await
            };
        }
        match device {
            Device::Cpu => on!(model::CpuBackend),
            #[cfg(feature = "cuda")]
            Device::Cuda => on!(model::gpu::CudaBackend),
            #[cfg(feature = "vulkan")]
            Device::Vulkan => on!(model::gpu::VulkanBackend),
            #[allow(unreachable_patterns)]
            d => Err(SpawnErr::StartupFailed(
                format!("this build has no {} backend", d.name()).into(),
            )),
        }
    }
}

/// The model actor's child spec: each (re)start asks `placement` for its device ([`Placement::start`]:
/// the restart of an instance that failed on a GPU is on the CPU), and a load that fails on a
/// GPU is tried again on the CPU at once; `on_fallback` is told of each move (it alerts,
/// audits and counts it).
fn model_child(
    placement: Placement,
    start: ModelStart,
    on_fallback: Arc<dyn Fn(&Fallback) + Send + Sync>,
) -> ChildSpec {
    ChildSpec::new(MODEL_ACTOR, move |sup| {
        let (placement, start, on_fallback) =
            (placement.clone(), start.clone(), on_fallback.clone());
        async move {
            let (device, moved) = placement.start();
            if let Some(f) = moved {
                on_fallback(&f);
            }
            match start.clone().spawn(device, sup.clone()).await {
                Err(e) => match placement.load_failed(device, &e.to_string()) {
                    Some(f) => {
                        on_fallback(&f);
                        start.spawn(Device::Cpu, sup).await
                    }
                    None => Err(e),
                },
                started => started,
            }
        }
    })
    .shutdown(wecom_edge_actors::supervisor::Shutdown::Timeout(
        Duration::from_secs(10),
    ))
}

/// Starts the box described by `cfg`; its alerts go to the `alerts = true` robots from the
/// first step, and a start that fails is itself an alert, sent before this returns.
///
/// # Errors
/// A listener that cannot bind, the data directory, the model file, a child that fails to
/// start.
pub async fn start(cfg: &Config) -> anyhow::Result<Running> {
    let api = Api::new(&cfg.api_base).map_err(|e| anyhow::anyhow!("api_base: {e}"))?;
    let alerter = Alerter::spawn(cfg, &api);
    match start_tree(cfg, api).await {
        Ok(mut r) => {
            r.alerter = alerter;
            Ok(r)
        }
        Err(e) => {
            tracing::error!(alert = true, error = %format!("{e:#}"), "the box failed to start");
            if let Some(a) = alerter {
                a.flush(ALERT_FLUSH).await;
            }
            Err(e)
        }
    }
}

async fn start_tree(cfg: &Config, api: Api) -> anyhow::Result<Running> {
    let started = std::time::Instant::now();
    let health = Health::new();
    let metrics = Metrics::new();
    let mut tasks = Vec::new();

    // Admin HTTP first, so /readyz explains the start-up.
    let admin = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("admin listener {}", cfg.admin_listen))?;
    let admin_addr = admin.local_addr()?;
    let app = watchdog::router(health.clone(), metrics.clone());
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(admin, app).await;
    }));
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "NOTIFY_SOCKET unusable; systemd will not be notified");
        None
    });
    let interval = watchdog::watchdog_interval_from_env().unwrap_or(Duration::from_secs(5));
    tasks.push(tokio::spawn(watchdog::run(
        health.clone(),
        notifier,
        interval,
        cfg.alerts.after,
    )));

    if cfg.threads > 0 {
        model::set_cpu_threads(cfg.threads);
    }

    // WeCom connections (outside the tree: they heal themselves).
    let mut outbound = Outbound {
        api: Some(api.clone()),
        ..Default::default()
    };
    let mut conns = Vec::new();
    let mut pumps = Vec::new();
    let links = crate::console::Links::default();
    let mut crypts = Vec::new();
    for bot in &cfg.aibots {
        match &bot.mode {
            AiBotMode::LongConnection { secret, standby } => {
                let mut lc = LongConnConfig::new(&bot.bot_id, secret.expose());
                lc.url = cfg.ws_url.clone();
                if let Some(s) = standby {
                    let watch = OwnerWatch::new(s.clone(), &bot.bot_id)
                        .map_err(|e| anyhow::anyhow!("aibot {}: {e}", bot.bot_id))?;
                    lc.standby = Some(watch);
                    health.set(
                        &format!("standby/{}", bot.bot_id),
                        Err("standing by: the owner not asked yet".into()),
                    );
                } else {
                    health.set(&format!("aibot/{}", bot.bot_id), Err("connecting".into()));
                }
                let (handle, events) = longconn::spawn(lc);
                let state = if standby.is_some() {
                    "standby"
                } else {
                    "connecting"
                };
                links.register(&bot.bot_id, handle.clone(), state);
                outbound.bots.insert(bot.bot_id.clone(), handle.clone());
                conns.push(handle.clone());
                pumps.push((bot.bot_id.clone(), handle, Arc::new(Mutex::new(events))));
            }
            AiBotMode::Webhook {
                token,
                encoding_aes_key,
            } => {
                let c = MsgCrypt::new(token.expose(), encoding_aes_key.expose(), "")
                    .map_err(|e| anyhow::anyhow!("aibot {}: {e}", bot.bot_id))?;
                crypts.push((Some(bot.bot_id.clone()), None, c));
            }
        }
    }
    for app in &cfg.apps {
        let token = Arc::new(AccessToken::new(
            api.clone(),
            &app.corpid,
            app.secret.expose(),
            RetryPolicy::default(),
        ));
        outbound.apps.insert(
            app.agentid,
            AppClient::new(api.clone(), app.agentid, token, RetryPolicy::default()),
        );
        let c = MsgCrypt::new(
            app.token.expose(),
            app.encoding_aes_key.expose(),
            &app.corpid,
        )
        .map_err(|e| anyhow::anyhow!("app {}: {e}", app.agentid))?;
        crypts.push((None, Some(app.agentid), c));
    }
    let outbound = Arc::new(outbound);

    // Callbacks (webhook bots and apps).
    let mut callbacks = None;
    if let Some(listen) = cfg.callback_listen.filter(|_| !crypts.is_empty()) {
        let (rej_tx, mut rej_rx) = mpsc::channel::<Rejection>(1024);
        // Acknowledged only once recorded: the recorder goes through the router to SQLite.
        let (api, out) = (api.clone(), outbound.clone());
        let record: AcceptFn =
            Arc::new(move |inb| Box::pin(record_callback(inb, api.clone(), out.clone())));
        let mut server = CallbackServer::durable(record).rejections(rej_tx);
        for (bot, agent, c) in crypts {
            if let Some(b) = bot {
                let welcome = cfg.personas.get("aibot", &b).welcome.clone();
                server = server.aibot(&b, c).welcome(&b, &welcome);
            } else if let Some(a) = agent {
                server = server.app(a, c);
            }
        }
        let l = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("callback listener {listen}"))?;
        callbacks = Some(l.local_addr()?);
        let r = server.router();
        tasks.push(tokio::spawn(async move {
            // With the peer address: refusals are counted per source.
            let svc = r.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let _ = axum::serve(l, svc).await;
        }));
        tasks.push(tokio::spawn(async move {
            // One row per kind of refusal per interval (a flood cannot fill the disk).
            while let Some(r) = rej_rx.recv().await {
                wecom_edge_actors::audit::record(
                    "callback_rejected",
                    &r.endpoint,
                    "",
                    json!({
                        "code": r.code,
                        "status": r.status,
                        "reason": r.reason,
                        "count": r.count,
                        "peer": r.peer.map(|p| p.to_string()),
                        "first_ms": r.first_ms,
                        "last_ms": r.last_ms,
                    }),
                );
            }
        }));
    }

    // Supervision events → audit + metrics.
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<SupervisorEvent>();
    {
        let metrics = metrics.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = ev_rx.recv().await {
                match ev {
                    SupervisorEvent::Restarted {
                        supervisor,
                        child,
                        reason,
                    } => {
                        metrics.actor_restarts.inc();
                        // Repeats of one child's crash fold into one alert with a count: a
                        // child that keeps crashing says so.
                        tracing::warn!(alert = true, %supervisor, %child, %reason, "an actor crashed and was restarted");
                        wecom_edge_actors::audit::record(
                            "actor_restarted",
                            &supervisor,
                            &child,
                            json!({"reason": reason}),
                        );
                    }
                    SupervisorEvent::Escalated { supervisor, child } => {
                        tracing::error!(alert = true, %supervisor, %child, "restart intensity exceeded: the supervisor stopped its children and escalated");
                        wecom_edge_actors::audit::record(
                            "supervisor_escalated",
                            &supervisor,
                            &child,
                            json!({}),
                        );
                    }
                }
            }
        }));
    }

    // The content filter and the knowledge base; SIGHUP (`systemctl reload`) reads the
    // filter's term files again and mirrors `[knowledge] dir` again.
    let filter = FilterHandle::load(cfg.filter.clone()).context("content filter")?;
    let knowledge = match Knowledge::open(&cfg.data_dir) {
        Ok(k) => Some(KnowledgeBase::new(k, cfg.knowledge.clone())),
        Err(e) => {
            // The box still answers, without the documents.
            tracing::error!(alert = true, error = %e, "the knowledge base cannot be opened; answering without it");
            None
        }
    };
    tasks.push(tokio::spawn(reload_on_hangup(
        filter.clone(),
        knowledge.clone(),
    )));
    let settings = SessionSettings {
        idle_timeout: cfg.idle_timeout,
        max_prompt_tokens: cfg.max_prompt_tokens,
        max_message_tokens: cfg.max_message_tokens,
        reasoning: cfg.reasoning,
        ..Default::default()
    };
    // Free space on the data partition: degraded below 64 MiB, new work refused below 16 MiB.
    let accepting = Arc::new(std::sync::atomic::AtomicBool::new(true));
    tasks.push(tokio::spawn(crate::disk::watch(
        cfg.data_dir.clone(),
        health.clone(),
        accepting.clone(),
    )));
    let placement = if cfg.local_model {
        Some(Placement::new(model_device(&cfg.device)?))
    } else {
        None
    };
    let admin = admin_commands(
        cfg,
        &health,
        &metrics,
        &filter,
        knowledge.as_ref(),
        placement.clone(),
    );
    let (generators, by_name) = generators(cfg)?;
    let mut openai_addr = None;
    let ctx = SessionContext {
        settings,
        outbound: outbound.clone(),
        metrics: metrics.clone(),
        personas: cfg.personas.clone(),
        filter: filter.clone(),
        knowledge,
        accepting,
        admin,
        generators,
    };
    if let Some(o) = &cfg.openai {
        let addr = start_openai(cfg, o, &ctx, &by_name, &mut tasks).await?;
        openai_addr = Some(addr);
    }

    let outbox_args = OutboxArgs {
        outbound: outbound.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
    };
    // ops_sup: audit, limiter, outbox (undelivered answers, retried until delivered or given up).
    let audit_args = AuditArgs {
        dir: cfg.data_dir.clone(),
        key: wecom_edge_actors::audit::AuditKey::default_path(&cfg.data_dir),
        on_write_error: {
            let m = metrics.clone();
            Arc::new(move || {
                m.sqlite_write_errors.inc();
            })
        },
    };
    let limits = cfg.limits;
    let ops = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(60))
        .events(ev_tx.clone())
        .child(ChildSpec::new(AUDIT_ACTOR, move |sup| {
            let a = audit_args.clone();
            async move {
                let (r, _) =
                    Actor::spawn_linked(Some(AUDIT_ACTOR.into()), AuditActor, a, sup).await?;
                Ok(r.get_cell())
            }
        }))
        .child(ChildSpec::new(LIMITER_ACTOR, move |sup| async move {
            let (r, _) =
                Actor::spawn_linked(Some(LIMITER_ACTOR.into()), LimiterActor, limits, sup).await?;
            Ok(r.get_cell())
        }))
        .child(ChildSpec::new(OUTBOX_ACTOR, move |sup| {
            let a = outbox_args.clone();
            async move {
                let (r, _) =
                    Actor::spawn_linked(Some(OUTBOX_ACTOR.into()), OutboxActor, a, sup).await?;
                Ok(r.get_cell())
            }
        }));

    // model_sup (only when an endpoint generates, or falls back, on this box's model).
    let model_sup = placement
        .as_ref()
        .map(|p| model_sup(cfg, &health, &metrics, p, ev_tx.clone()));

    // session_sup: dynamic children only.
    let sessions = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(20, Duration::from_secs(10))
        .events(ev_tx.clone());
    let session_sup = ChildSpec::new(SESSION_SUP, move |sup| {
        let spec = sessions.clone();
        async move {
            let (r, _) = Actor::spawn_linked(
                Some(SESSION_SUP.into()),
                Supervisor {
                    name: SESSION_SUP.into(),
                },
                spec,
                sup,
            )
            .await?;
            Ok(r.get_cell())
        }
    });

    // wecom_sup: router, then the pumps that feed it.
    let scope = match cfg.scope {
        SessionScope::User => Scope::User,
        SessionScope::Group => Scope::Group,
    };
    let console_ctx = ctx.clone();
    let router_args = RouterArgs { ctx, scope };
    let mut wecom = SupervisorSpec::new(Strategy::RestForOne)
        .intensity(10, Duration::from_secs(60))
        .events(ev_tx.clone())
        .child(ChildSpec::new(ROUTER_ACTOR, move |sup| {
            let a = router_args.clone();
            async move {
                let (r, _) =
                    Actor::spawn_linked(Some(ROUTER_ACTOR.into()), RouterActor, a, sup).await?;
                Ok(r.get_cell())
            }
        }));
    for (bot_id, handle, events) in pumps {
        let args = BotPumpArgs {
            welcome: cfg.personas.get("aibot", &bot_id).welcome.clone(),
            bot_id: bot_id.clone(),
            handle,
            events,
            health: health.clone(),
            metrics: metrics.clone(),
            links: links.clone(),
        };
        wecom = wecom.child(ChildSpec::new(&format!("aibot/{bot_id}"), move |sup| {
            let a = args.clone();
            async move {
                let (r, _) = Actor::spawn_linked(None, BotPump, a, sup).await?;
                Ok(r.get_cell())
            }
        }));
    }

    let mut root_spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(3, Duration::from_secs(60))
        .events(ev_tx)
        .child(ChildSpec::supervisor("ops_sup", ops));
    if let Some(m) = model_sup {
        root_spec = root_spec.child(ChildSpec::supervisor("model_sup", m));
    }
    let root_spec = root_spec
        .child(session_sup)
        .child(ChildSpec::supervisor("wecom_sup", wecom));
    let (root, root_handle) = Actor::spawn(
        None,
        Supervisor {
            name: "root".into(),
        },
        root_spec,
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the supervision tree: {e}"))?;
    let root_done = tokio::spawn(async move {
        let _ = root_handle.await;
    });

    // SQLite write probe (a real write), and what the audit store found when it opened: a
    // truncated, replaced or corrupt trail stays an alert (the `audit_chain` readiness check)
    // for the life of the process — a restarted audit actor opens cleanly and finds nothing.
    {
        let health = health.clone();
        tasks.push(tokio::spawn(async move {
            let mut chain_alert: Option<String> = None;
            loop {
                let r = match ractor::registry::where_is(AUDIT_ACTOR.into()) {
                    Some(c) => {
                        let a: ActorRef<AuditMsg> = c.into();
                        if let Ok(found) = ractor::call!(a, AuditMsg::Findings) {
                            let alerts: Vec<String> = found
                                .iter()
                                .filter(|f| f.is_alert())
                                .map(|f| f.to_string())
                                .collect();
                            if !alerts.is_empty() && chain_alert.is_none() {
                                chain_alert = Some(alerts.join("; "));
                            }
                        }
                        write_probe_on(&a).await
                    }
                    None => Err("the audit actor is restarting".into()),
                };
                health.set("sqlite", r.map_err(|e| format!("not writable: {e}")));
                health.set("audit_chain", chain_alert.clone().map_or(Ok(()), Err));
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }));
    }
    wecom_edge_actors::audit::record(
        "config_loaded",
        "root",
        "",
        json!({
            "aibots": cfg.aibots.len(),
            "apps": cfg.apps.len(),
            "webhooks": cfg.webhooks.len(),
            "model": cfg.local_model.then(|| cfg.model_path.display().to_string()),
            "generator": cfg.generators.default_value().to_string(),
            "upstreams": cfg.upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            "model_imported": cfg.model_imported,
        }),
    );
    // A box that cannot record what it is told must not say READY (a read-only or full data
    // partition at start): the same real write the watchdog probes with, once, now.
    if let Err(e) = write_probe().await {
        root.stop(Some("the data directory is not writable".into()));
        anyhow::bail!(
            "the data directory {} cannot be written ({e}); not starting",
            cfg.data_dir.display()
        );
    }
    let parts = crate::console::Parts {
        cfg,
        health: &health,
        metrics: &metrics,
        started,
        links: &links,
        ctx: console_ctx,
        placement: placement.clone(),
    };
    let console = crate::console::start(parts, &mut tasks).await;
    health.set_ready(true);
    tracing::info!(admin = %admin_addr, "wecom-edge is up");
    Ok(Running {
        admin: admin_addr,
        openai: openai_addr,
        console,
        callbacks,
        health,
        metrics,
        root,
        root_done,
        conns,
        tasks,
        alerter: None,
    })
}

/// `[admin] users` and what their `#status all` and `#reload` run.
fn admin_commands(
    cfg: &Config,
    health: &Health,
    metrics: &Metrics,
    filter: &FilterHandle,
    knowledge: Option<&KnowledgeBase>,
    placement: Option<Placement>,
) -> Admin {
    let started = std::time::Instant::now();
    let (health, metrics, f) = (health.clone(), metrics.clone(), filter.clone());
    let kb = knowledge.cloned();
    let model_file = cfg
        .model_path
        .file_name()
        .map_or(String::new(), |f| f.to_string_lossy().into_owned());
    let status = move || {
        let failures = health.failures();
        let mut lines = vec![format!(
            "wecom-edge {} · up {} · {}",
            env!("CARGO_PKG_VERSION"),
            humantime::format_duration(Duration::from_secs(started.elapsed().as_secs())),
            if failures.is_empty() {
                "healthy".to_string()
            } else {
                format!("degraded: {}", failures.join("; "))
            }
        )];
        let checks: Vec<String> = health
            .snapshot()
            .into_iter()
            .map(|(name, _, failing)| format!("{name} {}", if failing { "FAILING" } else { "ok" }))
            .collect();
        lines.push(format!("checks: {}", checks.join(" · ")));
        lines.push(match &placement {
            Some(p) => format!("model: {} on {}", model_file, p.describe()),
            None => "model: none on this box (upstream generators only)".to_string(),
        });
        let (terms, regexes) = f.current().sizes();
        lines.push(format!(
            "outbox: {} answer(s) waiting · filter: {terms} term(s), {regexes} regex(es) · knowledge: {}",
            metrics.outbox_pending.get(),
            kb.as_ref().map_or("not configured".to_string(), |k| match k.documents() {
                Ok(n) => format!("{n} document(s)"),
                Err(e) => format!("unreadable ({e})"),
            })
        ));
        lines.join("\n")
    };
    let (f, kb) = (filter.clone(), knowledge.cloned());
    let reload = move || {
        let (f, kb) = (f.clone(), kb.clone());
        Box::pin(async move { reload(&f, kb.as_ref()).await })
            as std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>
    };
    Admin::new(cfg.admins.iter().cloned())
        .with_status(Arc::new(status))
        .with_reload(Arc::new(reload))
}

/// Mirrors `[knowledge] dir` once the audit actor runs, then at each SIGHUP does what
/// [`reload`] does.
async fn reload_on_hangup(filter: FilterHandle, knowledge: Option<KnowledgeBase>) {
    use tokio::signal::unix::{signal, SignalKind};
    // Caught before anything else: an uncaught SIGHUP would end the process.
    let hup = signal(SignalKind::hangup());
    if let Some(kb) = &knowledge {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while ractor::registry::where_is(AUDIT_ACTOR.into()).is_none()
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sync_knowledge(kb).await;
    }
    let Ok(mut hup) = hup else {
        tracing::warn!("SIGHUP cannot be caught; the content filter reloads only at restart");
        return;
    };
    while hup.recv().await.is_some() {
        reload(&filter, knowledge.as_ref()).await;
    }
}

/// SIGHUP's and `#reload`'s work: mirrors `[knowledge] dir` again ([`sync_knowledge`]), then
/// reloads the content filter's term files (a failed reload keeps the rules in force). Every
/// outcome is audited (`filter_reloaded` with the sizes, `filter_reload_failed` with the
/// reason; [`sync_knowledge`]'s rows). Returns a summary for `#reload`'s answer.
async fn reload(filter: &FilterHandle, knowledge: Option<&KnowledgeBase>) -> String {
    let mut out = Vec::new();
    if let Some(kb) = knowledge {
        if let Some(s) = sync_knowledge(kb).await {
            out.push(s);
        }
    }
    match filter.reload() {
        Ok((terms, regexes)) => {
            tracing::info!(terms, regexes, "content filter reloaded");
            wecom_edge_actors::audit::record(
                "filter_reloaded",
                "filter",
                "",
                json!({"terms": terms, "regexes": regexes}),
            );
            out.insert(
                0,
                format!(
                    "过滤规则已重新加载 (filter reloaded): {terms} term(s), {regexes} regex(es)"
                ),
            );
        }
        Err(e) => {
            tracing::error!(alert = true, error = %e, "content filter reload failed; the rules in force stay");
            wecom_edge_actors::audit::record(
                "filter_reload_failed",
                "filter",
                "",
                json!({"error": e.to_string()}),
            );
            out.insert(
                0,
                format!("⚠️ 过滤规则未能重新加载，原规则继续生效 (filter reload failed, the rules in force stay): {e}"),
            );
        }
    }
    out.join("\n")
}

/// Mirrors `[knowledge] dir` into the knowledge base (nothing when no folder is configured):
/// `knowledge_synced` with what was added, updated and removed, `knowledge_import_failed`
/// for each file that could not be read (an alert), `knowledge_sync_failed` when the folder
/// or the store failed. Returns a one-line summary (`None`: no folder).
async fn sync_knowledge(kb: &KnowledgeBase) -> Option<String> {
    let kb = kb.clone();
    let outcome = tokio::task::spawn_blocking(move || kb.sync()).await.ok()?;
    let audit = wecom_edge_actors::audit::record;
    match outcome? {
        Ok(r) => {
            for (doc, error) in &r.failed {
                tracing::error!(
                    alert = true,
                    doc,
                    error,
                    "a knowledge document could not be imported"
                );
                audit(
                    "knowledge_import_failed",
                    "knowledge",
                    doc,
                    json!({"error": error}),
                );
            }
            tracing::info!(
                added = r.added.len(),
                updated = r.updated.len(),
                removed = r.removed.len(),
                failed = r.failed.len(),
                "knowledge folder mirrored"
            );
            audit(
                "knowledge_synced",
                "knowledge",
                "",
                json!({"added": r.added, "updated": r.updated, "removed": r.removed,
                       "unchanged": r.unchanged, "failed": r.failed.len()}),
            );
            Some(format!(
                "知识库已同步 (knowledge folder mirrored): {} added, {} updated, {} removed, {} unchanged, {} failed",
                r.added.len(),
                r.updated.len(),
                r.removed.len(),
                r.unchanged,
                r.failed.len()
            ))
        }
        Err(e) => {
            tracing::error!(alert = true, error = %e, "the knowledge folder could not be mirrored");
            audit(
                "knowledge_sync_failed",
                "knowledge",
                "",
                json!({"error": e.to_string()}),
            );
            Some(format!(
                "⚠️ 知识库未能同步 (the knowledge folder could not be mirrored): {e}"
            ))
        }
    }
}

/// One real write through the audit actor ([`AuditMsg::Probe`]).
async fn write_probe() -> Result<(), String> {
    match ractor::registry::where_is(AUDIT_ACTOR.into()) {
        Some(c) => write_probe_on(&c.into()).await,
        None => Err("the audit actor is not running".into()),
    }
}

async fn write_probe_on(a: &ActorRef<AuditMsg>) -> Result<(), String> {
    match ractor::call!(a, AuditMsg::Probe) {
        Ok(r) => r,
        Err(e) => Err(e.to_string()),
    }
}

/// Feeds one AI bot's long-connection events to the router; keeps the bot's health.
struct BotPump;

#[derive(Clone)]
struct BotPumpArgs {
    bot_id: String,
    /// The persona's answer to `enter_chat`.
    welcome: String,
    handle: LongConnHandle,
    events: Arc<Mutex<mpsc::Receiver<BotEvent>>>,
    health: Health,
    metrics: Metrics,
    /// What the console shows of this bot's link.
    links: crate::console::Links,
}

impl BotPumpArgs {
    /// A standby's role change (`takeover`, `yielded`): counted in
    /// `standby_events{bot_id,event}` and audited as `standby_{event}` with `detail`.
    fn standby_event(&self, event: &str, mut detail: serde_json::Value) {
        self.metrics
            .standby_events
            .get_or_create(&vec![
                ("bot_id".into(), self.bot_id.clone()),
                ("event".into(), event.into()),
            ])
            .inc();
        detail["endpoint"] = json!(self.bot_id);
        wecom_edge_actors::audit::record(
            &format!("standby_{event}"),
            "wecom",
            &self.bot_id,
            detail,
        );
    }
}

struct PumpState(JoinHandle<()>);

impl Drop for PumpState {
    fn drop(&mut self) {
        // Releases the receiver for the next incarnation; undelivered events stay queued.
        self.0.abort();
    }
}

fn to_router(m: InboundMsg) -> Result<(), ActorProcessingErr> {
    let cell =
        ractor::registry::where_is(ROUTER_ACTOR.into()).ok_or("the router is not running")?;
    let r: ActorRef<RouterMsg> = cell.into();
    r.send_message(RouterMsg::Inbound(Box::new(m)))
        .map_err(|e| format!("router: {e}").into())
}

impl Actor for BotPump {
    type Msg = String;
    type State = PumpState;
    type Arguments = BotPumpArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<String>,
        a: BotPumpArgs,
    ) -> Result<PumpState, ActorProcessingErr> {
        let task = tokio::spawn(async move {
            let mut events = a.events.lock().await;
            let name = format!("aibot/{}", a.bot_id);
            let standby = format!("standby/{}", a.bot_id);
            let mut connected_before = false;
            while let Some(ev) = events.recv().await {
                match ev {
                    BotEvent::Connected => {
                        if connected_before {
                            a.metrics.websocket_reconnects.inc();
                            a.links.reconnected(&a.bot_id);
                        }
                        connected_before = true;
                        a.health.set(&name, Ok(()));
                        a.links.set(&a.bot_id, "connected", true);
                    }
                    BotEvent::Message { req_id, msg } => {
                        let Some(text) = msg.question() else {
                            let to = ReplyTo::LongConnection {
                                conn: a.handle.clone(),
                                req_id,
                                conversation: msg.conversation().to_string(),
                            };
                            let u = Unsupported::new("aibot", &a.bot_id, &msg.msgid, &msg.msgtype);
                            u.answer(to, AIBOT_TEXT_ONLY).await;
                            continue;
                        };
                        let origin = Origin::aibot(&a.bot_id, &msg, text, Some(req_id.clone()));
                        let reply = ReplyTo::LongConnection {
                            conn: a.handle.clone(),
                            req_id,
                            conversation: msg.conversation().to_string(),
                        };
                        let m = InboundMsg {
                            msgid: msg.msgid.clone(),
                            origin,
                            reply,
                            received: std::time::Instant::now(),
                            accepted: None,
                        };
                        if let Err(e) = to_router(m) {
                            // The router restarts under wecom_sup; this pump restarts with it.
                            let _ = myself.send_message(e.to_string());
                            return;
                        }
                    }
                    BotEvent::Event { req_id, msg } => match msg.event_type() {
                        Some("enter_chat") => {
                            let _ = a.handle.respond_welcome(&req_id, &a.welcome).await;
                        }
                        // A rating of an answer: its feedback id is the answered callback's
                        // req_id (set on the stream's first frame).
                        Some("feedback_event") => {
                            if let Some((id, kind, reasons)) = msg.feedback() {
                                a.metrics
                                    .feedback
                                    .get_or_create(&vec![("type".into(), kind.into())])
                                    .inc();
                                wecom_edge_actors::audit::record(
                                    "feedback",
                                    "wecom",
                                    &id,
                                    json!({"endpoint": a.bot_id, "req_id": id, "type": kind,
                                           "reasons": reasons, "userid": msg.from.userid}),
                                );
                            }
                        }
                        Some(kind @ "template_card_event") => {
                            let card = msg.extra.get("event").and_then(|e| e.get(kind));
                            wecom_edge_actors::audit::record(
                                kind,
                                "wecom",
                                &msg.msgid,
                                json!({"endpoint": a.bot_id, "userid": msg.from.userid,
                                       "event_key": card.and_then(|c| c.get("event_key")),
                                       "task_id": card.and_then(|c| c.get("task_id"))}),
                            );
                        }
                        _ => {}
                    },
                    BotEvent::Disconnected { reason, .. } => {
                        a.health.set(&name, Err(format!("disconnected: {reason}")));
                        a.links
                            .set(&a.bot_id, format!("disconnected: {reason}"), false);
                    }
                    BotEvent::AuthFailed { errcode, errmsg } => {
                        a.health
                            .set(&name, Err(format!("subscribe refused: {errcode} {errmsg}")));
                        a.links.set(
                            &a.bot_id,
                            format!("subscribe refused: {errcode} {errmsg}"),
                            false,
                        );
                    }
                    BotEvent::Kicked => {
                        a.health
                            .set(&name, Err("another connection took this bot over".into()));
                        a.links.set(
                            &a.bot_id,
                            "kicked: another connection took this bot over",
                            false,
                        );
                    }
                    // A standby box: `aibot/{bot_id}` exists only while this box holds (or
                    // is taking) the bot, so that `/readyz/aibot/{bot_id}` means "holds it"
                    // on every box; `standby/{bot_id}` passes while it stands by.
                    // (What the standby sees of the owner is logged by the connection.)
                    BotEvent::Standby { .. } => {
                        a.health.remove(&name);
                        a.health.set(&standby, Ok(()));
                        a.links
                            .set(&a.bot_id, "standby: the owner holds the bot", true);
                    }
                    BotEvent::TakingOver { owner_gone } => {
                        a.health.remove(&standby);
                        a.health
                            .set(&name, Err("taking over from the owner".into()));
                        a.links.set(&a.bot_id, "taking over from the owner", false);
                        let owner_gone_ms = owner_gone.as_millis() as u64;
                        tracing::warn!(alert = true, bot_id = %a.bot_id, owner_gone_ms, "standby: the bot's owner is gone; this box takes the bot over");
                        a.standby_event("takeover", json!({"owner_gone_ms": owner_gone_ms}));
                    }
                    BotEvent::Yielded => {
                        connected_before = false; // the next subscribe is a takeover
                        a.health.remove(&name);
                        a.health.set(&standby, Ok(()));
                        a.links
                            .set(&a.bot_id, "standby: the owner holds the bot", true);
                        tracing::warn!(alert = true, bot_id = %a.bot_id, "standby: the bot's owner is back; this box stands by again");
                        a.standby_event("yielded", json!({}));
                    }
                    BotEvent::Stopped => return,
                }
            }
        });
        Ok(PumpState(task))
    }

    async fn handle(
        &self,
        _myself: ActorRef<String>,
        why: String,
        _st: &mut PumpState,
    ) -> Result<(), ActorProcessingErr> {
        Err(why.into())
    }
}

/// What an AI bot answers to a message without text (image, file, video).
const AIBOT_TEXT_ONLY: &str = "抱歉，我目前只能读文字消息（语音会按转写的文字回答）。\
    (Sorry, I can only read text messages; voice is answered from its transcript.)";
/// What an app answers to a message without text (image, voice, video, location, link).
const APP_TEXT_ONLY: &str = "抱歉，我目前只能读文字消息。(Sorry, I can only read text messages.)";

/// A message the text model cannot read: answered with a notice and audited
/// (`message_unsupported`), never handed to the model.
struct Unsupported {
    channel: &'static str,
    endpoint: String,
    msgid: String,
    msgtype: String,
}

impl Unsupported {
    fn new(channel: &'static str, endpoint: &str, msgid: &str, msgtype: &str) -> Self {
        Unsupported {
            channel,
            endpoint: endpoint.into(),
            msgid: msgid.into(),
            msgtype: msgtype.into(),
        }
    }

    /// Sends `notice` to `to` and audits the message.
    async fn answer(self, to: ReplyTo, notice: &str) {
        wecom_edge_actors::audit::record(
            "message_unsupported",
            "wecom",
            &self.msgid,
            json!({"channel": self.channel, "endpoint": self.endpoint,
                   "msgtype": self.msgtype, "msgid": self.msgid}),
        );
        if let Err(e) = wecom_edge_actors::session::Replier::new(to)
            .finish(notice)
            .await
        {
            tracing::warn!(channel = self.channel, msgid = %self.msgid, error = %e, "the text-only notice was not delivered");
        }
    }
}

/// What the box does with an accepted callback.
enum Callback {
    /// A question for the router.
    Route(InboundMsg),
    /// A message without text: the notice goes to `ReplyTo`.
    Unsupported(Unsupported, ReplyTo, &'static str),
    /// Nothing to answer (events; an AI-bot stream refresh).
    Ignore,
}

/// What to do with an accepted callback.
fn callback_message(inb: Inbound, api: &Api, outbound: &Outbound) -> Callback {
    let received = std::time::Instant::now();
    match inb {
        Inbound::AiBot { bot_id, msg, reply } => {
            let AiBotReply::Webhook {
                stream,
                response_url,
            } = reply
            else {
                return Callback::Ignore;
            };
            let reply = ReplyTo::Webhook {
                stream,
                response_url,
                api: Some(api.clone()),
            };
            let Some(text) = msg.question() else {
                let u = Unsupported::new("aibot", &bot_id, &msg.msgid, &msg.msgtype);
                return Callback::Unsupported(u, reply, AIBOT_TEXT_ONLY);
            };
            Callback::Route(InboundMsg {
                msgid: msg.msgid.clone(),
                origin: Origin::aibot(&bot_id, &msg, text, None),
                reply,
                received,
                accepted: None,
            })
        }
        Inbound::App { agentid, msg } => {
            if msg.msg_type == "event" {
                return Callback::Ignore;
            }
            if msg.msg_type != "text" {
                let origin = Origin {
                    channel: "app".into(),
                    endpoint: agentid.to_string(),
                    user: msg.from.clone(),
                    chat: None,
                    text: String::new(),
                    req_id: None,
                };
                let u = Unsupported::new("app", &origin.endpoint, &msg.dedupe_key(), &msg.msg_type);
                return Callback::Unsupported(
                    u,
                    ReplyTo::for_origin(&origin, outbound),
                    APP_TEXT_ONLY,
                );
            }
            let origin = Origin {
                channel: "app".into(),
                endpoint: agentid.to_string(),
                user: msg.from.clone(),
                chat: None,
                // A text message without <Content> is an empty one: answered with the help.
                text: msg.content.clone().unwrap_or_default(),
                req_id: None,
            };
            Callback::Route(InboundMsg {
                msgid: msg.dedupe_key(),
                reply: ReplyTo::for_origin(&origin, outbound),
                origin,
                received,
                accepted: None,
            })
        }
    }
}

/// Hands a callback to the router and waits until it is recorded in SQLite; a message
/// without text is answered with the notice, off the acknowledgement's path.
async fn record_callback(inb: Inbound, api: Api, outbound: Arc<Outbound>) -> bool {
    let mut m = match callback_message(inb, &api, &outbound) {
        Callback::Route(m) => m,
        Callback::Unsupported(u, to, notice) => {
            tokio::spawn(u.answer(to, notice));
            return true;
        }
        Callback::Ignore => return true, // nothing to answer, nothing to lose
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    m.accepted = Some(tx);
    if to_router(m).is_err() {
        return false;
    }
    rx.await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wecom_edge_actors::model::ModelMsg;

    /// A GPU the model cannot load on — here Vulkan in a build without it, as a GPU that is
    /// gone fails the load — moves the model to the CPU at once; a later crash restarts it
    /// there, with no second move.
    #[cfg(not(feature = "vulkan"))]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_model_that_cannot_load_on_the_gpu_runs_on_the_cpu() {
        let placement = Placement::new(Device::Vulkan);
        let moves = Arc::new(std::sync::Mutex::new(Vec::<Fallback>::new()));
        let start = ModelStart {
            path: concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/synthetic/qwen2-q4_k_m.gguf"
            )
            .into(),
            cache_type: Default::default(),
            scheduler: SchedulerConfig::default(),
            progress: Arc::new(()),
        };
        let seen = moves.clone();
        let on_fallback = Arc::new(move |f: &Fallback| seen.lock().unwrap().push(f.clone()));
        let spec = SupervisorSpec::new(Strategy::OneForOne)
            .intensity(5, Duration::from_secs(60))
            .child(model_child(placement.clone(), start, on_fallback));
        let (sup, done) = Actor::spawn(
            None,
            Supervisor {
                name: "model_sup".into(),
            },
            spec,
        )
        .await
        .expect("the model starts on the CPU");
        let model = || -> ActorRef<ModelMsg> {
            ractor::registry::where_is(MODEL_ACTOR.into())
                .expect("the model actor is registered")
                .into()
        };
        let info = ractor::call!(model(), ModelMsg::Info).unwrap();
        assert!(info.context_length > 0);
        assert_eq!(placement.current(), Device::Cpu);
        {
            let m = moves.lock().unwrap();
            assert_eq!(m.len(), 1, "{m:?}");
            assert_eq!(m[0].from, Device::Vulkan);
            assert!(m[0].why.contains("no vulkan backend"), "{}", m[0].why);
        }
        assert!(placement.describe().starts_with("cpu (vulkan failed: "));

        // The CPU instance crashes: restarted on the CPU, nothing more to report.
        let first = model().get_id();
        model().kill();
        let mut restarted = None;
        for _ in 0..200 {
            if let Some(c) = ractor::registry::where_is(MODEL_ACTOR.into()) {
                if c.get_id() != first {
                    restarted = Some(c);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let again: ActorRef<ModelMsg> = restarted.expect("the model restarted").into();
        ractor::call!(again, ModelMsg::Info).unwrap();
        assert_eq!(moves.lock().unwrap().len(), 1);
        assert_eq!(placement.current(), Device::Cpu);
        sup.stop(None);
        done.await.unwrap();
    }
}
