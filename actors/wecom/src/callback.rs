//! The box's callback HTTP endpoints: self-built app (XML) and AI bot in webhook mode (JSON).
//!
//! * `GET  /wecom/app/{agentid}` and `/wecom/aibot/{bot_id}` — URL verification: answered with
//!   the decrypted echostr only (no quotes, BOM or newline), well inside WeCom's 1 s.
//! * `POST` the same paths — verified (constant-time signature, timestamp window), decrypted,
//!   parsed, handed to the inbound queue and acknowledged at once; the answer is sent later
//!   (/document/path/90238: answer within 5 s or WeCom retries three times).
//! * AI-bot webhook: the first answer to a message opens a stream; WeCom's stream-refresh
//!   callbacks are answered from the answer in progress ([`WebhookStream`]); a redelivered
//!   message gets the same stream (/document/path/100719, 101031).
//!
//! Rejections: HTTP 403 for a bad signature or stale timestamp, 400 for a body that does not
//! decrypt or parse (or a msgid over [`MAX_MSGID`] bytes), 413 over 1 MiB, 503 when the message
//! cannot be recorded (WeCom retries); each is counted with its WXBizMsgCrypt code and the
//! client's address and reported per kind and interval for the audit trail
//! ([`crate::rejections`]: a flood of forged POSTs is one row a minute, not one per POST).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::aibot::{self, Callback};
use crate::api::{Api, ApiError};
use crate::crypto::{CryptError, MsgCrypt};
pub use crate::rejections::Rejection;
use crate::rejections::{Rejections, DEFAULT_INTERVAL};
use crate::xml;

/// Largest callback body accepted (bytes).
pub const MAX_BODY: usize = 1 << 20;

/// Longest msgid accepted (bytes). WeCom's are 20-digit numbers or ~32-character ids; a longer
/// one is refused (400) rather than copied into the dedupe table and the audit trail.
pub const MAX_MSGID: usize = 128;

/// The msgid as the box stores it (dedupe table, inbound row, audit rows): as sent when it is
/// at most [`MAX_MSGID`] bytes, else `sha1:` and the hex SHA-1 of it — a fixed 45 bytes, the same
/// for a redelivery of the same message, so dedupe still works and an over-long id (the long
/// connection cannot refuse one) is never copied into several rows.
pub fn msgid_key(msgid: &str) -> std::borrow::Cow<'_, str> {
    use sha1::{Digest, Sha1};
    if msgid.len() <= MAX_MSGID {
        return msgid.into();
    }
    format!(
        "sha1:{}",
        crate::crypto::hex(&Sha1::digest(msgid.as_bytes()))
    )
    .into()
}

/// The client's address, when the listener was served with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
struct Peer(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// The body, at most [`MAX_BODY`] bytes; a bigger one is refused (413) and counted.
async fn read_body(
    srv: &CallbackServer,
    endpoint: &str,
    peer: Option<IpAddr>,
    body: Body,
) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        srv.reject(
            endpoint.to_string(),
            peer,
            StatusCode::PAYLOAD_TOO_LARGE,
            CryptError::IllegalBuffer("body over 1 MiB").code(),
            "body over 1 MiB".into(),
        )
    })
}

/// A decrypted self-built-app callback (接收消息与事件, /document/path/90238). Values keep WeCom's
/// field names in `fields`; the common ones are lifted out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMessage {
    /// `FromUserName`: the member's UserID.
    pub from: String,
    /// `CreateTime` (unix seconds).
    pub create_time: u64,
    /// `MsgType`: text, image, voice, video, location, link, event.
    pub msg_type: String,
    /// `MsgId` as sent (a 64-bit integer, kept as text so nothing is lost); absent on events.
    pub msg_id: Option<String>,
    /// `Content` of a text message.
    pub content: Option<String>,
    /// `Event` of an event.
    pub event: Option<String>,
    /// Every leaf element, by name.
    pub fields: BTreeMap<String, String>,
}

impl AppMessage {
    /// Parses the decrypted XML.
    ///
    /// # Errors
    /// [`CryptError::Parse`] (−40002) for malformed XML or a missing `FromUserName`/`MsgType`.
    pub fn parse(xml_bytes: &[u8]) -> Result<Self, CryptError> {
        let fields = xml::parse_flat(xml_bytes).map_err(|e| CryptError::Parse(e.to_string()))?;
        let need = |k: &str| {
            fields
                .get(k)
                .cloned()
                .ok_or_else(|| CryptError::Parse(format!("message has no <{k}>")))
        };
        Ok(AppMessage {
            from: need("FromUserName")?,
            msg_type: need("MsgType")?,
            create_time: fields
                .get("CreateTime")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
            msg_id: fields
                .get("MsgId")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            content: fields.get("Content").cloned(),
            event: fields.get("Event").cloned(),
            fields,
        })
    }

    /// `MsgId` as a u64, when it is one.
    pub fn msg_id_u64(&self) -> Option<u64> {
        self.msg_id.as_deref()?.parse().ok()
    }

    /// The dedupe key: MsgId; without one (events, and the odd message), WeCom's
    /// FromUserName + CreateTime, plus a digest of the message's fields — so two different
    /// messages from one member in the same second stay two, while WeCom's retry of the same
    /// callback (identical fields) is still recognised.
    pub fn dedupe_key(&self) -> String {
        use sha1::{Digest, Sha1};
        match &self.msg_id {
            Some(id) => msgid_key(id).into_owned(),
            None => {
                let mut h = Sha1::new();
                for (k, v) in &self.fields {
                    h.update((k.len() as u64).to_be_bytes());
                    h.update(k.as_bytes());
                    h.update((v.len() as u64).to_be_bytes());
                    h.update(v.as_bytes());
                }
                let d = h.finalize();
                format!(
                    "{}:{}:{}",
                    self.from,
                    self.create_time,
                    crate::crypto::hex(&d[..8])
                )
            }
        }
    }
}

/// The answer in progress for one AI-bot webhook stream; WeCom's refresh callbacks read it.
#[derive(Debug, Clone)]
pub struct WebhookStream {
    id: String,
    state: Arc<Mutex<StreamState>>,
}

#[derive(Debug, Default)]
struct StreamState {
    content: String,
    finished: bool,
}

impl WebhookStream {
    /// The stream id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Replaces the answer so far (full accumulated content, ≤ 20480 bytes — longer is cut at a
    /// character boundary) and whether it is final.
    pub fn set(&self, content: &str, finished: bool) {
        let kept = crate::split::prefix_bytes(content, crate::split::AIBOT_CONTENT_MAX_BYTES);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.content = kept.to_string();
        s.finished = finished;
    }

    fn reply(&self) -> Value {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        aibot::stream_body(&self.id, &s.content, s.finished)
    }
}

/// An AI bot's one-shot `response_url` (valid 1 h, one call, plaintext JSON; /document/path/101138).
#[derive(Debug, Clone)]
pub struct ResponseUrl(Arc<Mutex<Option<String>>>);

impl ResponseUrl {
    /// Posts a markdown answer; the URL is spent afterwards even if the call fails.
    ///
    /// # Errors
    /// [`ApiError::Invalid`] when already used; the call's [`ApiError`].
    pub async fn send_markdown(&self, api: &Api, content: &str) -> Result<(), ApiError> {
        let url = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| {
                ApiError::Invalid("response_url already used (one call per URL)".into())
            })?;
        api.post_url(&url, &aibot::markdown_body(content))
            .await
            .map(drop)
    }
}

/// How an inbound AI-bot message is answered.
#[derive(Debug, Clone)]
pub enum AiBotReply {
    /// A webhook event, already answered in the HTTP response (welcome text or empty).
    Passive,
    /// Long connection: `aibot_respond_msg` with this req_id.
    LongConnection {
        /// The callback's req_id.
        req_id: String,
    },
    /// Webhook: the stream WeCom polls, and the one-shot response_url.
    Webhook {
        /// The stream opened by the first answer.
        stream: WebhookStream,
        /// The response_url, when WeCom sent one.
        response_url: Option<ResponseUrl>,
    },
}

/// A message accepted from WeCom, ready for the box.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// From an AI bot.
    AiBot {
        /// The bot's id.
        bot_id: String,
        /// The decrypted callback.
        msg: Callback,
        /// How to answer.
        reply: AiBotReply,
    },
    /// From a self-built app.
    App {
        /// The app's AgentID.
        agentid: i64,
        /// The decrypted message.
        msg: AppMessage,
    },
}

/// Records an accepted message durably; `true` once it is stored (or known as a duplicate).
pub type AcceptFn = Arc<
    dyn Fn(Inbound) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

/// How long a callback waits for [`CallbackServer::durable`]'s recorder (WeCom waits 5 s).
pub const DURABLE_TIMEOUT: Duration = Duration::from_secs(4);

#[derive(Clone)]
enum Sink {
    Queue(mpsc::Sender<Inbound>),
    Durable(AcceptFn),
}

/// Callback endpoints and where accepted messages go.
#[derive(Clone)]
pub struct CallbackServer {
    apps: Arc<HashMap<i64, MsgCrypt>>,
    bots: Arc<HashMap<String, MsgCrypt>>,
    /// Where accepted messages go: the queue, or the durable recorder.
    inbound: Sink,
    rejections: Option<Rejections>,
    streams: Arc<Mutex<HashMap<String, (WebhookStream, Instant)>>>,
    by_msgid: Arc<Mutex<HashMap<String, String>>>,
    max_skew: Duration,
    welcome: Arc<HashMap<String, String>>,
}

impl CallbackServer {
    /// A server handing accepted messages to `inbound`.
    pub fn new(inbound: mpsc::Sender<Inbound>) -> Self {
        CallbackServer {
            apps: Arc::default(),
            bots: Arc::default(),
            inbound: Sink::Queue(inbound),
            rejections: None,
            streams: Arc::default(),
            by_msgid: Arc::default(),
            max_skew: Duration::from_secs(600),
            welcome: Arc::default(),
        }
    }

    /// Adds a self-built app endpoint at `/wecom/app/{agentid}` (crypt receiveid = CorpID).
    pub fn app(mut self, agentid: i64, crypt: MsgCrypt) -> Self {
        Arc::make_mut(&mut self.apps).insert(agentid, crypt);
        self
    }

    /// Adds an AI-bot webhook endpoint at `/wecom/aibot/{bot_id}` (crypt receiveid = "").
    pub fn aibot(mut self, bot_id: &str, crypt: MsgCrypt) -> Self {
        Arc::make_mut(&mut self.bots).insert(bot_id.to_string(), crypt);
        self
    }

    /// A server handing accepted messages to `record`, acknowledged only once it says they are
    /// stored (within [`DURABLE_TIMEOUT`]); otherwise WeCom gets a 503 and retries.
    pub fn durable(record: AcceptFn) -> Self {
        let (tx, _) = mpsc::channel(1);
        CallbackServer {
            inbound: Sink::Durable(record),
            ..Self::new(tx)
        }
    }

    /// Where refusals are reported: per kind, once a minute ([`DEFAULT_INTERVAL`]).
    ///
    /// # Panics
    /// Outside a tokio runtime (the reporting task runs on it).
    pub fn rejections(self, tx: mpsc::Sender<Rejection>) -> Self {
        self.rejections_every(tx, DEFAULT_INTERVAL)
    }

    /// As [`CallbackServer::rejections`], reporting every `interval`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn rejections_every(mut self, tx: mpsc::Sender<Rejection>, interval: Duration) -> Self {
        self.rejections = Some(Rejections::new(tx, interval));
        self
    }

    /// Callbacks whose timestamp is further than this from now are refused (default 10 min).
    pub fn max_skew(mut self, d: Duration) -> Self {
        self.max_skew = d;
        self
    }

    /// Text answered to AI bot `bot_id`'s `enter_chat` event (a user opening the chat); a bot
    /// without one answers the event with an empty body.
    pub fn welcome(mut self, bot_id: &str, text: &str) -> Self {
        Arc::make_mut(&mut self.welcome).insert(bot_id.to_string(), text.to_string());
        self
    }

    /// The axum router (mount it on the box's callback listener).
    pub fn router(self) -> Router {
        Router::new()
            .route("/wecom/app/{agentid}", get(app_verify).post(app_post))
            .route("/wecom/aibot/{bot_id}", get(bot_verify).post(bot_post))
            // The handlers read the body themselves, so a 413 is counted like every refusal.
            .layer(DefaultBodyLimit::disable())
            .with_state(self)
    }

    fn reject(
        &self,
        endpoint: String,
        peer: Option<IpAddr>,
        status: StatusCode,
        code: i32,
        reason: String,
    ) -> Response {
        match &self.rejections {
            Some(r) => r.record(&endpoint, peer, status.as_u16(), code, &reason),
            None => {
                tracing::debug!(%endpoint, code, status = status.as_u16(), %reason, "callback rejected")
            }
        }
        (status, "").into_response()
    }

    fn reject_crypt(&self, endpoint: String, peer: Option<IpAddr>, e: CryptError) -> Response {
        let status = match e {
            CryptError::ValidateSignature => StatusCode::FORBIDDEN,
            CryptError::IllegalBuffer(_) if e.to_string().contains("1 MiB") => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        self.reject(endpoint, peer, status, e.code(), e.to_string())
    }

    /// Checks the query's timestamp against the clock.
    fn check_time(&self, q: &Q) -> Result<(), String> {
        let ts: u64 = q
            .timestamp
            .parse()
            .map_err(|_| "timestamp is not a number".to_string())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if now.abs_diff(ts) > self.max_skew.as_secs() {
            return Err(format!(
                "timestamp {ts} is {} s away from now",
                now.abs_diff(ts)
            ));
        }
        Ok(())
    }

    async fn verify(
        &self,
        endpoint: String,
        peer: Option<IpAddr>,
        crypt: Option<&MsgCrypt>,
        q: Q,
    ) -> Response {
        let Some(crypt) = crypt else {
            return self.reject(
                endpoint,
                peer,
                StatusCode::NOT_FOUND,
                0,
                "no such endpoint".into(),
            );
        };
        let Some(echostr) = q.echostr.as_deref() else {
            return self.reject(
                endpoint,
                peer,
                StatusCode::BAD_REQUEST,
                -40002,
                "GET without echostr".into(),
            );
        };
        match crypt.verify_url(&q.msg_signature, &q.timestamp, &q.nonce, echostr) {
            Ok(plain) => (StatusCode::OK, plain).into_response(),
            Err(e) => self.reject_crypt(endpoint, peer, e),
        }
    }

    #[allow(clippy::result_large_err)] // the rejection is the HTTP answer itself
    fn decrypt(
        &self,
        endpoint: &str,
        peer: Option<IpAddr>,
        crypt: Option<&MsgCrypt>,
        q: &Q,
        body: &[u8],
    ) -> Result<Vec<u8>, Response> {
        let Some(crypt) = crypt else {
            return Err(self.reject(
                endpoint.into(),
                peer,
                StatusCode::NOT_FOUND,
                0,
                "no such endpoint".into(),
            ));
        };
        if let Err(reason) = self.check_time(q) {
            return Err(self.reject(endpoint.into(), peer, StatusCode::FORBIDDEN, -40001, reason));
        }
        crypt
            .decrypt_body(&q.msg_signature, &q.timestamp, &q.nonce, body)
            .map(|d| d.msg)
            .map_err(|e| self.reject_crypt(endpoint.into(), peer, e))
    }

    #[allow(clippy::result_large_err)] // the rejection is the HTTP answer itself
    async fn accept(
        &self,
        endpoint: String,
        peer: Option<IpAddr>,
        inbound: Inbound,
    ) -> Result<(), Response> {
        let refused = match &self.inbound {
            Sink::Durable(record) => {
                match tokio::time::timeout(DURABLE_TIMEOUT, record(inbound)).await {
                    Ok(true) => return Ok(()),
                    _ => "the message could not be recorded; WeCom will retry",
                }
            }
            Sink::Queue(tx) => match tx.try_send(inbound) {
                Ok(()) => return Ok(()),
                Err(_) => "inbound queue full; WeCom will retry",
            },
        };
        Err(self.reject(
            endpoint,
            peer,
            StatusCode::SERVICE_UNAVAILABLE,
            0,
            refused.into(),
        ))
    }

    /// The stream for a message: the existing one on redelivery, else a new one.
    fn stream_for(&self, msgid: &str) -> (WebhookStream, bool) {
        let mut by_msgid = self.by_msgid.lock().unwrap_or_else(|p| p.into_inner());
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        // Streams live 6 minutes in WeCom; keep them a little longer, then forget.
        streams.retain(|_, (_, t)| t.elapsed() < Duration::from_secs(420));
        by_msgid.retain(|_, sid| streams.contains_key(sid));
        if let Some((s, _)) = by_msgid.get(msgid).and_then(|sid| streams.get(sid)) {
            return (s.clone(), false);
        }
        let s = WebhookStream {
            id: aibot::new_req_id("stream"),
            state: Arc::default(),
        };
        streams.insert(s.id.clone(), (s.clone(), Instant::now()));
        by_msgid.insert(msgid.to_string(), s.id.clone());
        (s, true)
    }
}

#[derive(serde::Deserialize)]
struct Q {
    #[serde(default)]
    msg_signature: String,
    #[serde(default)]
    timestamp: String,
    #[serde(default)]
    nonce: String,
    echostr: Option<String>,
}

async fn app_verify(
    State(srv): State<CallbackServer>,
    Peer(peer): Peer,
    Path(agentid): Path<i64>,
    Query(q): Query<Q>,
) -> Response {
    let crypt = srv.apps.get(&agentid).cloned();
    srv.verify(format!("app/{agentid}"), peer, crypt.as_ref(), q)
        .await
}

async fn bot_verify(
    State(srv): State<CallbackServer>,
    Peer(peer): Peer,
    Path(bot_id): Path<String>,
    Query(q): Query<Q>,
) -> Response {
    let crypt = srv.bots.get(&bot_id).cloned();
    srv.verify(format!("aibot/{bot_id}"), peer, crypt.as_ref(), q)
        .await
}

async fn app_post(
    State(srv): State<CallbackServer>,
    Peer(peer): Peer,
    Path(agentid): Path<i64>,
    Query(q): Query<Q>,
    body: Body,
) -> Response {
    let endpoint = format!("app/{agentid}");
    let body = match read_body(&srv, &endpoint, peer, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let crypt = srv.apps.get(&agentid).cloned();
    let plain = match srv.decrypt(&endpoint, peer, crypt.as_ref(), &q, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let msg = match AppMessage::parse(&plain) {
        Ok(m) => m,
        Err(e) => return srv.reject_crypt(endpoint, peer, e),
    };
    if msg.msg_id.as_ref().is_some_and(|m| m.len() > MAX_MSGID) {
        return srv.reject(
            endpoint,
            peer,
            StatusCode::BAD_REQUEST,
            -40002,
            format!("MsgId longer than {MAX_MSGID} bytes"),
        );
    }
    match srv
        .accept(endpoint, peer, Inbound::App { agentid, msg })
        .await
    {
        // Acknowledge at once with an empty 200; the answer goes out through message/send.
        Ok(()) => (StatusCode::OK, "").into_response(),
        Err(r) => r,
    }
}

async fn bot_post(
    State(srv): State<CallbackServer>,
    Peer(peer): Peer,
    Path(bot_id): Path<String>,
    Query(q): Query<Q>,
    body: Body,
) -> Response {
    let endpoint = format!("aibot/{bot_id}");
    let body = match read_body(&srv, &endpoint, peer, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let crypt = srv.bots.get(&bot_id).cloned();
    let plain = match srv.decrypt(&endpoint, peer, crypt.as_ref(), &q, &body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let crypt = crypt.expect("decrypt checked the endpoint");
    let msg: Callback = match serde_json::from_slice(&plain) {
        Ok(m) => m,
        Err(e) => {
            return srv.reject(
                endpoint,
                peer,
                StatusCode::BAD_REQUEST,
                -40002,
                format!("callback JSON: {e}"),
            )
        }
    };
    if msg.msgid.len() > MAX_MSGID {
        return srv.reject(
            endpoint,
            peer,
            StatusCode::BAD_REQUEST,
            -40002,
            format!("msgid longer than {MAX_MSGID} bytes"),
        );
    }
    let answer = |v: Value| {
        let body = crypt.encrypt_json_reply(v.to_string().as_bytes(), &q.timestamp, &q.nonce);
        ([("content-type", "text/plain")], body).into_response()
    };
    // Stream refresh: answer from the answer in progress.
    if let Some(sid) = msg.stream_id() {
        let stream = srv
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sid)
            .map(|(s, _)| s.clone());
        return match stream {
            Some(s) => answer(s.reply()),
            None => answer(aibot::stream_body(sid, "", true)),
        };
    }
    if msg.msgtype == "event" {
        let welcome = (msg.event_type() == Some("enter_chat"))
            .then(|| srv.welcome.get(&bot_id).cloned())
            .flatten();
        let _ = srv
            .accept(
                endpoint,
                peer,
                Inbound::AiBot {
                    bot_id,
                    msg,
                    reply: AiBotReply::Passive,
                },
            )
            .await;
        return match welcome {
            Some(text) => answer(aibot::text_body(&text)),
            None => (StatusCode::OK, "").into_response(),
        };
    }
    let msgid = msg.msgid.clone();
    let (stream, new) = srv.stream_for(&msgid);
    if new {
        let response_url = msg
            .response_url
            .clone()
            .map(|u| ResponseUrl(Arc::new(Mutex::new(Some(u)))));
        let inbound = Inbound::AiBot {
            bot_id,
            msg,
            reply: AiBotReply::Webhook {
                stream: stream.clone(),
                response_url,
            },
        };
        if let Err(r) = srv.accept(endpoint, peer, inbound).await {
            // Not accepted: forget the stream so WeCom's retry is taken as new.
            srv.by_msgid
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&msgid);
            srv.streams
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(stream.id());
            return r;
        }
    }
    // Open (or re-show) the stream; WeCom polls it with refresh callbacks.
    answer(stream.reply())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_messages_of_each_type_parse() {
        let text = AppMessage::parse(
            b"<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName>zhangsan</FromUserName><CreateTime>1409659813</CreateTime><MsgType>text</MsgType><Content><![CDATA[a <b> & c]]></Content><MsgId>18446744073709551615</MsgId><AgentID>218</AgentID></xml>",
        )
        .unwrap();
        assert_eq!(text.from, "zhangsan");
        assert_eq!(text.content.as_deref(), Some("a <b> & c"));
        assert_eq!(
            text.msg_id_u64(),
            Some(u64::MAX),
            "MsgId beyond 2^53 kept whole"
        );
        assert_eq!(text.dedupe_key(), "18446744073709551615");

        let image = AppMessage::parse(
            b"<xml><FromUserName><![CDATA[u]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[http://x/y.png]]></PicUrl><MediaId><![CDATA[m1]]></MediaId><MsgId>7</MsgId></xml>",
        )
        .unwrap();
        assert_eq!(image.msg_type, "image");
        assert_eq!(image.fields["MediaId"], "m1");

        let voice = AppMessage::parse(
            b"<xml><FromUserName>u</FromUserName><CreateTime>2</CreateTime><MsgType>voice</MsgType><MediaId>v1</MediaId><Format>amr</Format><MsgId>8</MsgId></xml>",
        )
        .unwrap();
        assert_eq!(voice.fields["Format"], "amr");

        let event = AppMessage::parse(
            b"<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>1408091189</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event><EventKey><![CDATA[]]></EventKey><AgentID>1</AgentID></xml>",
        )
        .unwrap();
        assert_eq!(event.event.as_deref(), Some("enter_agent"));
        assert_eq!(event.msg_id, None);
        let key = event.dedupe_key();
        assert!(
            key.starts_with("FromUser:1408091189:")
                && key.len() == "FromUser:1408091189:".len() + 16,
            "events dedupe on FromUserName + CreateTime + a digest: {key}"
        );
        // The same callback again (WeCom's retry) has the same key.
        let again = AppMessage::parse(
            b"<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[FromUser]]></FromUserName><CreateTime>1408091189</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event><EventKey><![CDATA[]]></EventKey><AgentID>1</AgentID></xml>",
        )
        .unwrap();
        assert_eq!(again.dedupe_key(), key);
        // Two messages without MsgId from one member in the same second stay two (issue 11
        // item 12).
        let one = |text: &str| {
            AppMessage::parse(
                format!("<xml><FromUserName>u</FromUserName><CreateTime>5</CreateTime><MsgType>text</MsgType><Content>{text}</Content></xml>").as_bytes(),
            )
            .unwrap()
            .dedupe_key()
        };
        assert_ne!(one("first"), one("second"));
        // An over-long msgid is stored as a fixed-size digest, the same for a redelivery.
        let long = "9".repeat(1 << 20);
        assert_eq!(msgid_key(&long).len(), 45);
        assert_eq!(msgid_key(&long), msgid_key(&long.clone()));
        assert_eq!(msgid_key("123"), "123");

        let e = AppMessage::parse(b"<xml><MsgType>text</MsgType></xml>").unwrap_err();
        assert_eq!(e.code(), -40002);
    }
}
