//! A WeCom simulator on loopback: the API origin (`/cgi-bin/…`), the AI-bot long-connection
//! WebSocket at the root path (`ws://ADDR`), a callback driver that signs, encrypts and POSTs
//! to the box like WeCom does, and a JSON control API (`/sim/…`) through which tests and people
//! act as WeCom users.
//!
//! Behaviour follows the protocol facts in `wecom-protocol.md` §9 (sources there): every error
//! is HTTP 200 with `{"errcode","errmsg"}` in WeCom's exact errmsg shape; access_tokens live
//! 7200 s and are reused until they expire; group robots get 20 messages a minute and byte
//! limits; the long connection acks every frame by echoing req_id, kicks the older connection
//! of a bot with `disconnected_event`, and refuses stream updates 6 minutes after a stream
//! started (846608).
//!
//! Control API (JSON):
//! * `POST /sim/aibot/{bot_id}/messages` `{"chattype","chatid"?,"userid","text","msgid"?}` →
//!   `{"msgid","req_id"}` — pushes `aibot_msg_callback` (or drives the webhook callback); other
//!   message types with `"msgtype"` and their fields as WeCom sends them (`"voice":{"content"}`,
//!   `"mixed":{"msg_item":[…]}`, `"image":{"url"}`, …), any of them with a `"quote"`.
//! * `POST /sim/aibot/{bot_id}/events` `{"eventtype","chattype"?,"chatid"?,"userid","fields"?}` →
//!   `{"msgid","req_id"}` (`fields`: the event's own object, e.g. a feedback_event's `id`, `type`).
//! * `GET /sim/aibot/{bot_id}/replies?req_id=` → `{"frames":[…],"acks":[…]}` (whole frames, in order).
//! * `GET /sim/aibot/{bot_id}` → `{"connected","connections","subscribes","pings","mode"}`.
//! * `POST /sim/aibot/{bot_id}/drop` — drops the live socket (network failure).
//! * `POST /sim/aibot/{bot_id}/acks` `{"ping":bool}` — stop/resume acking pings (zombie link).
//! * `PUT /sim/aibot/{bot_id}/callback`, `PUT /sim/app/{agentid}/callback` `{"url"}` — saves a
//!   callback URL after WeCom's GET verification; → `{"verified":bool,"detail"}`.
//! * `POST /sim/app/{agentid}/messages` `{"from","text","msgid"?,"msgtype"?}` →
//!   `{"msgid","delivered","attempts"}` (`msgtype` `image`, `voice`, … sends a media message).
//! * `GET /sim/app/{agentid}` → `{"gettoken_calls","token_valid"}`.
//! * `POST /sim/faults` `{"path","errcode","times"}` — the next `times` calls of `path` fail.
//!   `path` is an API path (`/cgi-bin/message/send`) or a long-connection command
//!   (`aibot_send_msg`, `aibot_respond_msg`): its ack carries `errcode`.
//! * `POST /sim/config` `{"stream_expiry_ms"?,"callback_timeout_ms"?,"refresh_interval_ms"?}`.
//! * `GET /sim/outbox` → `{"messages":[…]}`: message/send, appchat/send, webhook sends,
//!   response_url posts and `aibot_send_msg`, in arrival order.

mod driver;
mod ws;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::crypto::{self, MsgCrypt};

/// A long-connection AI bot the simulator knows: `BOT_ID:SECRET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiBotSpec {
    /// The bot id (`aibotid`).
    pub bot_id: String,
    /// The long-connection secret.
    pub secret: String,
}

/// A webhook-mode AI bot: `BOT_ID:TOKEN:ENCODING_AES_KEY` (callback URL set later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiBotWebhookSpec {
    /// The bot id.
    pub bot_id: String,
    /// Callback Token.
    pub token: String,
    /// Callback EncodingAESKey.
    pub encoding_aes_key: String,
}

/// A self-built app: `CORPID:AGENTID:SECRET:TOKEN:ENCODING_AES_KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    /// CorpID (the receiveid of its callbacks).
    pub corpid: String,
    /// AgentID.
    pub agentid: i64,
    /// App Secret (gettoken's corpsecret).
    pub secret: String,
    /// Callback Token.
    pub token: String,
    /// Callback EncodingAESKey.
    pub encoding_aes_key: String,
}

fn split_spec(s: &str, n: usize, what: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = s.splitn(n, ':').map(str::to_string).collect();
    if parts.len() != n || parts.iter().any(String::is_empty) {
        return Err(format!(
            "{what}: expected {n} non-empty ':'-separated fields"
        ));
    }
    Ok(parts)
}

impl std::str::FromStr for AiBotSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = split_spec(s, 2, "--aibot BOT_ID:SECRET")?;
        Ok(AiBotSpec {
            bot_id: p[0].clone(),
            secret: p[1].clone(),
        })
    }
}

impl std::str::FromStr for AiBotWebhookSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = split_spec(s, 3, "--aibot-webhook BOT_ID:TOKEN:ENCODING_AES_KEY")?;
        crypto::decode_encoding_aes_key(&p[2]).map_err(|e| e.to_string())?;
        Ok(AiBotWebhookSpec {
            bot_id: p[0].clone(),
            token: p[1].clone(),
            encoding_aes_key: p[2].clone(),
        })
    }
}

impl std::str::FromStr for AppSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = split_spec(s, 5, "--app CORPID:AGENTID:SECRET:TOKEN:ENCODING_AES_KEY")?;
        let agentid = p[1]
            .parse()
            .map_err(|_| format!("--app: AGENTID {:?} is not an integer", p[1]))?;
        crypto::decode_encoding_aes_key(&p[4]).map_err(|e| e.to_string())?;
        Ok(AppSpec {
            corpid: p[0].clone(),
            agentid,
            secret: p[2].clone(),
            token: p[3].clone(),
            encoding_aes_key: p[4].clone(),
        })
    }
}

/// Simulator configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Long-connection AI bots.
    pub aibots: Vec<AiBotSpec>,
    /// Webhook-mode AI bots.
    pub aibot_webhooks: Vec<AiBotWebhookSpec>,
    /// Self-built apps.
    pub apps: Vec<AppSpec>,
    /// Group robot webhook keys.
    pub webhooks: Vec<String>,
    /// access_token lifetime (7200 s).
    pub token_ttl: Duration,
    /// Stream updates are refused this long after a stream's first frame (6 min).
    pub stream_expiry: Duration,
    /// The callback driver gives up on an answer after this long and retries (5 s).
    pub callback_timeout: Duration,
    /// Interval between AI-bot webhook stream-refresh callbacks (1 s; WeCom's is undocumented).
    pub refresh_interval: Duration,
    /// Group robot messages per quota window (20).
    pub webhook_per_minute: usize,
    /// AI-bot messages per conversation per quota window (30; a stream counts once, at its
    /// first frame); the excess is refused with 45009.
    pub aibot_per_minute: usize,
    /// App messages per recipient per quota window (30); the excess is dropped silently, as
    /// WeCom does, and counted in `GET /sim/quota`.
    pub app_per_minute: usize,
    /// The quota window (60 s; tests shorten it).
    pub quota_window: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            aibots: Vec::new(),
            aibot_webhooks: Vec::new(),
            apps: Vec::new(),
            webhooks: Vec::new(),
            token_ttl: Duration::from_secs(7200),
            stream_expiry: Duration::from_secs(360),
            callback_timeout: Duration::from_secs(5),
            refresh_interval: Duration::from_secs(1),
            webhook_per_minute: 20,
            aibot_per_minute: 30,
            app_per_minute: 30,
            quota_window: Duration::from_secs(60),
        }
    }
}

/// A live long connection as the simulator sees it.
struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<ws::Out>,
}

#[derive(Default)]
struct BotState {
    secret: Option<String>,
    webhook: Option<(MsgCrypt, Option<String>)>,
    conn: Option<Conn>,
    connections: u64,
    subscribes: u64,
    pings: u64,
    ack_pings: bool,
    /// req_id → frames the bot sent for it, with the errcode each was acked with.
    replies: HashMap<String, Vec<(Value, i64)>>,
    /// req_ids WeCom issued (callbacks) that replies may use → their conversation (the group's
    /// chatid, or the sender's userid).
    issued: HashMap<String, String>,
    /// (req_id, stream id) → when its first frame arrived.
    streams: HashMap<(String, String), Instant>,
}

struct AppState {
    spec: AppSpec,
    crypt: MsgCrypt,
    token: Option<(String, Instant)>,
    gettoken_calls: u64,
    callback_url: Option<String>,
}

struct Fault {
    path: String,
    errcode: i64,
    remaining: u32,
}

struct Inner {
    cfg: SimConfig,
    base_url: String,
    bots: HashMap<String, BotState>,
    apps: HashMap<i64, AppState>,
    webhook_keys: HashSet<String>,
    /// Quota key (`robot:KEY`, `aibot:BOT:CONVERSATION`, `app:AGENT:TO`) → recent sends.
    sends: HashMap<String, VecDeque<Instant>>,
    /// Messages refused (45009) or dropped for exceeding a quota.
    quota_refused: u64,
    quota_dropped: u64,
    response_codes: HashMap<String, (String, Instant, bool)>,
    faults: Vec<Fault>,
    outbox: Vec<Value>,
    next_conn: u64,
}

/// Shared simulator state.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
}

impl Sim {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// WeCom's error body: `errmsg` as `"<msg>, hint: [<id>], from ip: <ip>, more info at …?e=N"`.
pub fn wecom_error(errcode: i64) -> Value {
    let msg = match errcode {
        -1 => "system is busy",
        40001 => "invalid credential",
        40008 => "invalid message type",
        40013 => "invalid corpid",
        40014 => "invalid access_token",
        40058 => "invalid parameter",
        41001 => "access_token missing",
        42001 => "access_token expired",
        44004 => "empty content",
        45002 => "content size out of limit",
        45009 => "api freq out of limit",
        60020 => "not allow to access from your ip",
        86003 => "chatid not exist",
        93000 => "invalid webhook url",
        846605 => "invalid req_id",
        846608 => "stream message update expired",
        853000 => "invalid bot_id or secret",
        _ => "error",
    };
    let hint: u64 = rand::random::<u64>() % 10_000_000_000_000_000_000;
    json!({
        "errcode": errcode,
        "errmsg": format!("{msg}, hint: [{hint}], from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}")
    })
}

fn ok(extra: Value) -> Json<Value> {
    let mut v = json!({"errcode": 0, "errmsg": "ok"});
    if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
    }
    Json(v)
}

fn err(code: i64) -> Json<Value> {
    Json(wecom_error(code))
}

/// A running simulator.
pub struct SimHandle {
    /// The address it listens on (`http://ADDR` for the API, `ws://ADDR` for the long connection).
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    join: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://ADDR`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.join).await;
    }

    /// Waits until the server ends (it ends only through [`SimHandle::stop`] or a fatal error).
    pub async fn wait(self) {
        let _ = self.join.await;
    }
}

/// Binds `listen` and serves the simulator on the current tokio runtime.
///
/// # Errors
/// Binding failed.
pub async fn start(cfg: SimConfig, listen: SocketAddr) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let mut bots = HashMap::new();
    for b in &cfg.aibots {
        bots.insert(
            b.bot_id.clone(),
            BotState {
                secret: Some(b.secret.clone()),
                ack_pings: true,
                ..Default::default()
            },
        );
    }
    for b in &cfg.aibot_webhooks {
        let crypt = MsgCrypt::new(&b.token, &b.encoding_aes_key, "")
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        bots.insert(
            b.bot_id.clone(),
            BotState {
                webhook: Some((crypt, None)),
                ack_pings: true,
                ..Default::default()
            },
        );
    }
    let mut apps = HashMap::new();
    for a in &cfg.apps {
        let crypt = MsgCrypt::new(&a.token, &a.encoding_aes_key, &a.corpid)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        apps.insert(
            a.agentid,
            AppState {
                spec: a.clone(),
                crypt,
                token: None,
                gettoken_calls: 0,
                callback_url: None,
            },
        );
    }
    let inner = Inner {
        webhook_keys: cfg.webhooks.iter().cloned().collect(),
        cfg,
        base_url: format!("http://{addr}"),
        bots,
        apps,
        sends: HashMap::new(),
        quota_refused: 0,
        quota_dropped: 0,
        response_codes: HashMap::new(),
        faults: Vec::new(),
        outbox: Vec::new(),
        next_conn: 0,
    };
    let sim = Sim {
        inner: Arc::new(Mutex::new(inner)),
        http: reqwest::Client::builder()
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?,
    };
    let app = router(sim);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let join = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "simulator server failed");
        }
    });
    tracing::info!(%addr, "WeCom simulator listening");
    Ok(SimHandle {
        addr,
        shutdown: Some(tx),
        join,
    })
}

fn router(sim: Sim) -> Router {
    Router::new()
        .route("/", get(ws::root))
        .route("/cgi-bin/gettoken", get(gettoken))
        .route("/cgi-bin/message/send", post(message_send))
        .route("/cgi-bin/appchat/send", post(appchat_send))
        .route("/cgi-bin/webhook/send", post(webhook_send))
        .route("/cgi-bin/aibot/response", post(aibot_response))
        .route("/sim/faults", post(add_fault))
        .route("/sim/config", post(set_config))
        .route("/sim/outbox", get(outbox))
        .route("/sim/quota", get(quota))
        .route("/sim/aibot/{bot_id}", get(ws::bot_status))
        .route("/sim/aibot/{bot_id}/messages", post(ws::push_message))
        .route("/sim/aibot/{bot_id}/events", post(ws::push_event))
        .route("/sim/aibot/{bot_id}/replies", get(ws::replies))
        .route("/sim/aibot/{bot_id}/drop", post(ws::drop_conn))
        .route("/sim/aibot/{bot_id}/acks", post(ws::set_acks))
        .route(
            "/sim/aibot/{bot_id}/callback",
            put(driver::set_aibot_callback),
        )
        .route("/sim/app/{agentid}", get(app_status))
        .route("/sim/app/{agentid}/callback", put(driver::set_app_callback))
        .route("/sim/app/{agentid}/messages", post(driver::app_message))
        .with_state(sim)
}

impl Inner {
    /// Counts one message for quota `key` (at most `max` per window) unless it would exceed
    /// it; `false`: over the quota (nothing counted).
    fn within_quota(&mut self, key: String, max: usize) -> bool {
        let now = Instant::now();
        let window = self.cfg.quota_window;
        let log = self.sends.entry(key).or_default();
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            log.pop_front();
        }
        if log.len() >= max {
            return false;
        }
        log.push_back(now);
        true
    }

    /// Consumes a matching injected fault.
    fn take_fault(&mut self, path: &str) -> Option<i64> {
        let f = self
            .faults
            .iter_mut()
            .find(|f| f.path == path && f.remaining > 0)?;
        f.remaining -= 1;
        let code = f.errcode;
        if matches!(code, 40014 | 42001) {
            // A forced token error also makes the token really invalid, so a client that
            // retries with the same token fails again.
            for a in self.apps.values_mut() {
                a.token = None;
            }
        }
        Some(code)
    }

    /// Checks `access_token`: 41001 missing, 42001 expired, 40014 unknown.
    fn check_token(&mut self, token: Option<&String>) -> Result<i64, i64> {
        let token = token.filter(|t| !t.is_empty()).ok_or(41001)?;
        let now = Instant::now();
        for (id, a) in &self.apps {
            if let Some((t, exp)) = &a.token {
                if t == token {
                    return if now < *exp { Ok(*id) } else { Err(42001) };
                }
            }
        }
        Err(40014)
    }
}

async fn gettoken(State(sim): State<Sim>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
    let mut s = sim.lock();
    if let Some(code) = s.take_fault("/cgi-bin/gettoken") {
        return err(code);
    }
    let ttl = s.cfg.token_ttl;
    let corpid = q.get("corpid").cloned().unwrap_or_default();
    let secret = q.get("corpsecret").cloned().unwrap_or_default();
    if !s.apps.values().any(|a| a.spec.corpid == corpid) {
        return err(40013);
    }
    let Some(app) = s
        .apps
        .values_mut()
        .find(|a| a.spec.corpid == corpid && a.spec.secret == secret)
    else {
        return err(40001);
    };
    app.gettoken_calls += 1;
    let now = Instant::now();
    let (token, exp) = match &app.token {
        Some((t, exp)) if now < *exp => (t.clone(), *exp),
        _ => {
            let t: String = (0..64)
                .map(|_| {
                    char::from(
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                            [rand::random::<u8>() as usize % 64],
                    )
                })
                .collect();
            app.token = Some((t.clone(), now + ttl));
            (t, now + ttl)
        }
    };
    ok(json!({"access_token": token, "expires_in": exp.saturating_duration_since(now).as_secs()}))
}

/// Truncates to ≤ `max` bytes on a character boundary ("超过将截断").
fn truncate_bytes(s: &str, max: usize) -> (String, bool) {
    let kept = crate::split::prefix_bytes(s, max);
    (kept.to_string(), kept.len() < s.len())
}

fn app_send(
    sim: &Sim,
    api: &str,
    q: &HashMap<String, String>,
    body: Value,
    needs: &str,
) -> Json<Value> {
    let mut s = sim.lock();
    if let Some(code) = s.take_fault(api) {
        return err(code);
    }
    let agent = match s.check_token(q.get("access_token")) {
        Ok(a) => a,
        Err(code) => return err(code),
    };
    if body
        .get(needs)
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return err(if needs == "chatid" { 86003 } else { 40058 });
    }
    let msgtype = body.get("msgtype").and_then(Value::as_str).unwrap_or("");
    let Some(content) = body
        .get(msgtype)
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
    else {
        return err(40008);
    };
    if !matches!(msgtype, "text" | "markdown") {
        return err(40008);
    }
    if content.is_empty() {
        return err(44004);
    }
    let (kept, truncated) = truncate_bytes(content, 2048);
    let to = body.get(needs).and_then(Value::as_str).unwrap_or("");
    let per_minute = s.cfg.app_per_minute;
    if !s.within_quota(format!("app:{agent}:{needs}:{to}"), per_minute) {
        // WeCom drops the excess without an error (/document/path/90236).
        s.quota_dropped += 1;
        let msgid = format!("sim{}", rand::random::<u32>());
        return ok(
            json!({"invaliduser": "", "invalidparty": "", "invalidtag": "", "msgid": msgid}),
        );
    }
    let mut delivered = body.clone();
    delivered[msgtype]["content"] = json!(kept);
    s.outbox
        .push(json!({"api": api, "agentid": agent, "body": delivered, "truncated": truncated}));
    let msgid = format!("sim{}", rand::random::<u32>());
    ok(json!({"invaliduser": "", "invalidparty": "", "invalidtag": "", "msgid": msgid}))
}

async fn message_send(
    State(sim): State<Sim>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    app_send(&sim, "/cgi-bin/message/send", &q, body, "touser")
}

async fn appchat_send(
    State(sim): State<Sim>,
    Query(q): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Json<Value> {
    app_send(&sim, "/cgi-bin/appchat/send", &q, body, "chatid")
}

async fn webhook_send(
    State(sim): State<Sim>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Json<Value> {
    let mut s = sim.lock();
    if let Some(code) = s.take_fault("/cgi-bin/webhook/send") {
        return err(code);
    }
    let key = q.get("key").cloned().unwrap_or_default();
    if !s.webhook_keys.contains(&key) {
        return err(93000);
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return err(40058);
    };
    let msgtype = body
        .get("msgtype")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let limit = match msgtype.as_str() {
        "text" => 2048,
        "markdown" | "markdown_v2" => 4096,
        "image" | "news" | "file" | "voice" | "template_card" => usize::MAX,
        _ => return err(40008),
    };
    if limit != usize::MAX {
        let content = body
            .get(&msgtype)
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if content.is_empty() {
            return err(44004);
        }
        if content.len() > limit {
            return err(45002);
        }
    }
    let per_minute = s.cfg.webhook_per_minute;
    if !s.within_quota(format!("robot:{key}"), per_minute) {
        s.quota_refused += 1;
        return err(45009);
    }
    s.outbox
        .push(json!({"api": "/cgi-bin/webhook/send", "key": key, "body": body}));
    ok(json!({}))
}

async fn aibot_response(
    State(sim): State<Sim>,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Json<Value> {
    let mut s = sim.lock();
    let code = q.get("response_code").cloned().unwrap_or_default();
    let bot = match s.response_codes.get_mut(&code) {
        Some((bot, created, used)) if !*used && created.elapsed() < Duration::from_secs(3600) => {
            *used = true;
            bot.clone()
        }
        _ => return err(40058),
    };
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return err(40058);
    };
    match body.get("msgtype").and_then(Value::as_str) {
        Some("markdown") | Some("template_card") => {}
        _ => return err(40008),
    }
    s.outbox
        .push(json!({"api": "/cgi-bin/aibot/response", "bot_id": bot, "body": body}));
    ok(json!({}))
}

#[derive(Deserialize)]
struct FaultReq {
    path: String,
    errcode: i64,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

async fn add_fault(State(sim): State<Sim>, Json(f): Json<FaultReq>) -> Json<Value> {
    sim.lock().faults.push(Fault {
        path: f.path,
        errcode: f.errcode,
        remaining: f.times,
    });
    Json(json!({"ok": true}))
}

#[derive(Deserialize)]
struct ConfigReq {
    stream_expiry_ms: Option<u64>,
    callback_timeout_ms: Option<u64>,
    refresh_interval_ms: Option<u64>,
    quota_window_ms: Option<u64>,
    aibot_per_minute: Option<usize>,
    app_per_minute: Option<usize>,
    webhook_per_minute: Option<usize>,
}

async fn set_config(State(sim): State<Sim>, Json(c): Json<ConfigReq>) -> Json<Value> {
    let mut s = sim.lock();
    if let Some(ms) = c.stream_expiry_ms {
        s.cfg.stream_expiry = Duration::from_millis(ms);
    }
    if let Some(ms) = c.callback_timeout_ms {
        s.cfg.callback_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = c.refresh_interval_ms {
        s.cfg.refresh_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = c.quota_window_ms {
        s.cfg.quota_window = Duration::from_millis(ms);
    }
    if let Some(n) = c.aibot_per_minute {
        s.cfg.aibot_per_minute = n;
    }
    if let Some(n) = c.app_per_minute {
        s.cfg.app_per_minute = n;
    }
    if let Some(n) = c.webhook_per_minute {
        s.cfg.webhook_per_minute = n;
    }
    Json(json!({"ok": true}))
}

/// `GET /sim/quota`: messages refused with 45009 (AI bots, robots) and dropped silently
/// (apps) for exceeding WeCom's outbound quotas.
async fn quota(State(sim): State<Sim>) -> Json<Value> {
    let s = sim.lock();
    Json(json!({"refused": s.quota_refused, "dropped": s.quota_dropped}))
}

async fn outbox(State(sim): State<Sim>) -> Json<Value> {
    Json(json!({"messages": sim.lock().outbox}))
}

async fn app_status(
    State(sim): State<Sim>,
    Path(agentid): Path<i64>,
) -> (axum::http::StatusCode, Json<Value>) {
    let s = sim.lock();
    match s.apps.get(&agentid) {
        Some(a) => (
            axum::http::StatusCode::OK,
            Json(json!({
                "gettoken_calls": a.gettoken_calls,
                "token_valid": a.token.as_ref().is_some_and(|(_, exp)| Instant::now() < *exp),
                "callback_url": a.callback_url,
            })),
        ),
        None => not_found("no such app"),
    }
}

fn not_found(what: &str) -> (axum::http::StatusCode, Json<Value>) {
    (
        axum::http::StatusCode::NOT_FOUND,
        Json(json!({"error": what})),
    )
}
