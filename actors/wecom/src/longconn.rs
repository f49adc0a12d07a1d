//! The AI-bot long connection (智能机器人 长连接, /document/path/101463): the LAN box's way in —
//! outbound WebSocket only, no public IP, no crypto.
//!
//! Rules kept (SDK `@wecom/aibot-node-sdk` `src/ws.ts` and 101463):
//! * `aibot_subscribe` with bot_id and secret right after connecting; success is an ack with
//!   `errcode:0` for the same req_id.
//! * JSON `ping` every 30 s; two unacked pings in a row → the link is dead → reconnect.
//! * Reconnect backoff 1 s doubling to 30 s with ±20 % jitter, reset after a successful
//!   subscribe; reconnects never give up (the box is unattended) but every failure is reported.
//! * `disconnected_event` (another connection subscribed this bot) → stop for good and report
//!   [`BotEvent::Kicked`]: reconnecting would fight the other connection.
//! * With [`LongConnConfig::standby`] the client subscribes only once the bot's owner (another
//!   box) has been gone for a while, and hands the bot back when the owner returns
//!   ([`crate::standby`]).
//! * Replies for one req_id go out one at a time, each waiting for its ack (5 s).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::aibot::{self, cmd, Callback, WsFrame};
use crate::api::errcode;
use crate::quota::{self, Pacer, Window};
use crate::split::AIBOT_CONTENT_MAX_BYTES;
use crate::standby::{Owner, OwnerWatch};

/// Long-connection settings.
#[derive(Clone)]
pub struct LongConnConfig {
    /// `wss://openws.work.weixin.qq.com` (or the simulator's `ws://ADDR`).
    pub url: String,
    /// The bot's id.
    pub bot_id: String,
    /// The long-connection secret.
    pub secret: String,
    /// Heartbeat interval (30 s).
    pub heartbeat: Duration,
    /// Unacked pings in a row that declare the link dead (2).
    pub max_missed_pings: u32,
    /// First reconnect delay (1 s).
    pub backoff_base: Duration,
    /// Longest reconnect delay (30 s).
    pub backoff_max: Duration,
    /// How long a frame waits for its ack (5 s); also the subscribe and connect timeout ×2.
    pub ack_timeout: Duration,
    /// Messages per conversation ([`quota::AIBOT_CONVERSATION`]: 30/min, 1000/h); every new
    /// message (a stream's first frame, a proactive message) waits for a slot, in order.
    pub quota: Vec<Window>,
    /// This box is the bot's standby: subscribe only while the owner this watches is gone
    /// ([`crate::standby`]). `None`: this box owns the bot.
    pub standby: Option<OwnerWatch>,
}

impl std::fmt::Debug for LongConnConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongConnConfig")
            .field("url", &self.url)
            .field("bot_id", &self.bot_id)
            .field("standby", &self.standby.as_ref().map(|w| &w.config().owner))
            .finish_non_exhaustive()
    }
}

impl LongConnConfig {
    /// Defaults for `bot_id` + `secret` against WeCom's endpoint.
    pub fn new(bot_id: &str, secret: &str) -> Self {
        LongConnConfig {
            url: aibot::DEFAULT_WS_URL.to_string(),
            bot_id: bot_id.to_string(),
            secret: secret.to_string(),
            heartbeat: Duration::from_secs(30),
            max_missed_pings: 2,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(5),
            quota: quota::AIBOT_CONVERSATION.to_vec(),
            standby: None,
        }
    }
}

/// What the connection reports.
#[derive(Debug, Clone, PartialEq)]
pub enum BotEvent {
    /// Subscribed; the link is live.
    Connected,
    /// A user message (`aibot_msg_callback`); reply with its `req_id`.
    Message {
        /// The callback's req_id (reply with it).
        req_id: String,
        /// The message.
        msg: Callback,
    },
    /// An event (`enter_chat`, `template_card_event`, `feedback_event`).
    Event {
        /// The callback's req_id.
        req_id: String,
        /// The event.
        msg: Callback,
    },
    /// The link went down; a reconnect follows after `retry_in`.
    Disconnected {
        /// Why.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
    /// `aibot_subscribe` was refused (wrong bot_id/secret); retried after backoff.
    AuthFailed {
        /// WeCom's errcode.
        errcode: i64,
        /// WeCom's errmsg.
        errmsg: String,
    },
    /// Another connection took this bot over (`disconnected_event`). The client has stopped and
    /// will not reconnect: raise an alert.
    Kicked,
    /// A standby is not subscribed and watches the owner: sent when it starts watching and
    /// whenever what it sees changes (the owner holds the bot ↔ the owner is absent). Status
    /// only: dropped rather than waited for when the event queue is full.
    Standby {
        /// What the last look at the owner found.
        owner: Owner,
    },
    /// A standby saw the owner absent for `takeover_after` and subscribes now.
    TakingOver {
        /// How long the owner had not been seen holding the bot.
        owner_gone: Duration,
    },
    /// A standby holding the bot was kicked by its owner coming back (the owner was seen
    /// holding the bot afterwards), or found the owner holding it before a reconnect; it is
    /// watching again.
    Yielded,
    /// The client stopped after [`LongConnHandle::shutdown`].
    Stopped,
}

/// A send over the long connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// No live, subscribed connection right now.
    #[error("the long connection is not connected")]
    NotConnected,
    /// No ack within the ack timeout.
    #[error("no ack from WeCom within the timeout")]
    AckTimeout,
    /// The connection closed before the ack arrived.
    #[error("the long connection closed before WeCom acknowledged")]
    Closed,
    /// WeCom acked with an error.
    #[error("WeCom errcode {errcode}: {errmsg}")]
    WeCom {
        /// WeCom's errcode (846608: stream expired; 846605: invalid req_id).
        errcode: i64,
        /// WeCom's errmsg.
        errmsg: String,
    },
    /// Refused before sending.
    #[error("{0}")]
    Invalid(String),
}

impl WsError {
    /// WeCom's errcode, when WeCom answered with one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            WsError::WeCom { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }
}

enum Command {
    Send {
        frame: WsFrame,
        ack: oneshot::Sender<Result<WsFrame, WsError>>,
    },
    Shutdown,
}

/// Handle to a running long connection; cheap to clone.
#[derive(Clone, Debug)]
pub struct LongConnHandle {
    tx: mpsc::Sender<Command>,
    ack_timeout: Duration,
    pacer: Pacer,
    last_pong: LastPong,
}

/// When WeCom last acknowledged a heartbeat `ping` on this connection.
#[derive(Clone, Debug, Default)]
struct LastPong(std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl LastPong {
    fn now(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    fn get(&self) -> Option<std::time::Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts the connection task on the current runtime: it connects, subscribes and keeps the
/// link alive until [`LongConnHandle::shutdown`] or a `disconnected_event`. Events arrive on
/// the returned receiver (capacity 1024; the task waits when it is full, so nothing is lost).
pub fn spawn(config: LongConnConfig) -> (LongConnHandle, mpsc::Receiver<BotEvent>) {
    let (tx, rx) = mpsc::channel(256);
    let (ev_tx, ev_rx) = mpsc::channel(1024);
    let handle = LongConnHandle {
        tx,
        ack_timeout: config.ack_timeout,
        pacer: Pacer::new(&config.quota),
        last_pong: LastPong::default(),
    };
    tokio::spawn(run(config, rx, ev_tx, handle.last_pong.clone()));
    (handle, ev_rx)
}

impl LongConnHandle {
    /// When WeCom last acknowledged a heartbeat `ping` (every [`LongConnConfig::heartbeat`]
    /// while subscribed); `None` before the first.
    pub fn last_ping_ack(&self) -> Option<std::time::Instant> {
        self.last_pong.get()
    }

    /// Sends a command frame and waits for its ack.
    ///
    /// # Errors
    /// [`WsError`]; an ack with a non-zero errcode is [`WsError::WeCom`].
    pub async fn request(
        &self,
        command: &str,
        req_id: &str,
        body: Option<Value>,
    ) -> Result<WsFrame, WsError> {
        let (ack, rx) = oneshot::channel();
        let frame = WsFrame::command(command, req_id, body);
        self.tx
            .send(Command::Send { frame, ack })
            .await
            .map_err(|_| WsError::NotConnected)?;
        let res = timeout(self.ack_timeout, rx)
            .await
            .map_err(|_| WsError::AckTimeout)?
            .map_err(|_| WsError::Closed)?;
        let ack = res?;
        match ack.errcode.unwrap_or(0) {
            0 => Ok(ack),
            code => Err(WsError::WeCom {
                errcode: code,
                errmsg: ack.errmsg.unwrap_or_default(),
            }),
        }
    }

    /// `aibot_send_msg`: a proactive markdown message to a chat (group chatid, or userid for a
    /// single chat the user opened before); waits for a slot in the conversation's quota first.
    ///
    /// # Errors
    /// [`WsError`].
    pub async fn send_markdown(&self, chatid: &str, content: &str) -> Result<(), WsError> {
        check_content(content)?;
        self.pacer.acquire(chatid).await;
        let mut body = aibot::markdown_body(content);
        body["chatid"] = Value::from(chatid);
        self.request(cmd::SEND_MSG, &aibot::new_req_id(cmd::SEND_MSG), Some(body))
            .await
            .map(drop)
    }

    /// `aibot_respond_welcome_msg`: the text answer to an `enter_chat` event (within 5 s).
    ///
    /// # Errors
    /// [`WsError`].
    pub async fn respond_welcome(&self, req_id: &str, text: &str) -> Result<(), WsError> {
        self.request(cmd::RESPOND_WELCOME, req_id, Some(aibot::text_body(text)))
            .await
            .map(drop)
    }

    /// Starts a streamed answer to the callback `req_id`, to be shown in `conversation`
    /// ([`Callback::conversation`]).
    pub fn stream(&self, req_id: &str, conversation: &str) -> StreamReply {
        StreamReply {
            conn: self.clone(),
            req_id: req_id.to_string(),
            stream_id: aibot::new_req_id("stream"),
            conversation: conversation.to_string(),
            opened: false,
            expired: false,
            finished: false,
        }
    }

    /// Stops the connection (no reconnect).
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}

fn check_content(content: &str) -> Result<(), WsError> {
    if content.len() > AIBOT_CONTENT_MAX_BYTES {
        return Err(WsError::Invalid(format!(
            "content is {} bytes; WeCom takes at most {AIBOT_CONTENT_MAX_BYTES}",
            content.len()
        )));
    }
    Ok(())
}

/// One streamed answer: `aibot_respond_msg` frames with the same req_id and stream.id, each
/// carrying the full accumulated content and waiting for its ack; `finish:true` last.
///
/// When WeCom refuses an update because the stream is older than 6 minutes (846608), the reply
/// switches to a proactive `aibot_send_msg` for the final content, so the answer still arrives.
#[derive(Debug)]
pub struct StreamReply {
    conn: LongConnHandle,
    req_id: String,
    stream_id: String,
    conversation: String,
    /// The first frame went out (the stream's one message in the conversation's quota).
    opened: bool,
    expired: bool,
    finished: bool,
}

impl StreamReply {
    /// The stream id (`stream.id`).
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Whether WeCom declared the stream expired (updates go nowhere; `finish` falls back).
    pub fn is_expired(&self) -> bool {
        self.expired
    }

    /// Sends the answer so far (`finish:false`). After expiry this is a no-op.
    ///
    /// # Errors
    /// [`WsError`] (content over 20480 bytes is [`WsError::Invalid`]).
    pub async fn update(&mut self, content: &str) -> Result<(), WsError> {
        self.send(content, false).await
    }

    /// Sends the final answer (`finish:true`); after expiry, sends it as a new message.
    ///
    /// # Errors
    /// [`WsError`].
    pub async fn finish(&mut self, content: &str) -> Result<(), WsError> {
        self.send(content, true).await
    }

    async fn send(&mut self, content: &str, finish: bool) -> Result<(), WsError> {
        check_content(content)?;
        if self.finished {
            return Err(WsError::Invalid("the stream is already finished".into()));
        }
        if self.expired {
            if finish {
                self.finished = true;
                return self.conn.send_markdown(&self.conversation, content).await;
            }
            return Ok(());
        }
        let mut body = aibot::stream_body(&self.stream_id, content, finish);
        if !self.opened {
            self.conn.pacer.acquire(&self.conversation).await;
            self.opened = true;
            // The first frame asks WeCom for the like / dislike buttons; a rating comes back
            // as a feedback_event with this id (the callback's req_id).
            body["stream"]["feedback"] = serde_json::json!({"id": self.req_id});
        }
        match self
            .conn
            .request(cmd::RESPOND_MSG, &self.req_id, Some(body))
            .await
        {
            Ok(_) => {
                self.finished = finish;
                Ok(())
            }
            Err(e) if e.errcode() == Some(errcode::STREAM_EXPIRED) => {
                tracing::warn!(req_id = %self.req_id, "stream expired (846608); the final answer goes as a new message");
                self.expired = true;
                if finish {
                    self.finished = true;
                    self.conn.send_markdown(&self.conversation, content).await
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// Backoff with ±20 % jitter: `base × 2^(n-1)` capped at `max`, n ≥ 1.
fn backoff(cfg: &LongConnConfig, n: u32) -> Duration {
    let d = cfg
        .backoff_base
        .saturating_mul(1 << (n.saturating_sub(1)).min(16))
        .min(cfg.backoff_max);
    let jitter = 0.8 + 0.4 * rand::random::<f64>();
    d.mul_f64(jitter).min(cfg.backoff_max)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum End {
    Reconnect(String),
    Kicked,
    Shutdown,
}

async fn run(
    cfg: LongConnConfig,
    mut cmds: mpsc::Receiver<Command>,
    events: mpsc::Sender<BotEvent>,
    pong: LastPong,
) {
    if let Some(w) = &cfg.standby {
        if !stand_by(&cfg, w, &mut cmds, &events).await {
            let _ = events.send(BotEvent::Stopped).await;
            return;
        }
    }
    let mut failures: u32 = 0;
    loop {
        let end = match connect_and_subscribe(&cfg, &events).await {
            Ok(ws) => {
                failures = 0;
                let _ = events.send(BotEvent::Connected).await;
                tracing::info!(bot_id = %cfg.bot_id, "AI-bot long connection subscribed");
                session(&cfg, ws, &mut cmds, &events, &pong).await
            }
            Err(reason) => End::Reconnect(reason),
        };
        let handed_back = match end {
            End::Shutdown => None,
            End::Kicked => {
                // A standby kicked by its owner coming back hands the bot back; kicked by
                // anyone else it stops, as an owner does, so that the two do not take turns.
                let back = match &cfg.standby {
                    Some(w) => refusing(&mut cmds, w.until_holds()).await,
                    None => Some(false),
                };
                match back {
                    Some(false) => {
                        tracing::error!(bot_id = %cfg.bot_id, "another connection took over this bot (disconnected_event); not reconnecting");
                        let _ = events.send(BotEvent::Kicked).await;
                        drop(events); // the event stream ends: this client is done
                        fail_pending_until_shutdown(cmds).await;
                        return;
                    }
                    other => other,
                }
            }
            End::Reconnect(reason) => {
                failures += 1;
                let retry_in = backoff(&cfg, failures);
                tracing::warn!(bot_id = %cfg.bot_id, %reason, retry_in_ms = retry_in.as_millis() as u64, "long connection down");
                let _ = events
                    .send(BotEvent::Disconnected { reason, retry_in })
                    .await;
                // Wait out the backoff, refusing sends meanwhile. A standby then looks at the
                // owner first: reconnecting while the owner holds the bot would kick it.
                match refusing(&mut cmds, tokio::time::sleep(retry_in)).await {
                    None => None,
                    Some(()) => match &cfg.standby {
                        Some(w) => refusing(&mut cmds, w.look())
                            .await
                            .map(|o| o == Owner::Holds),
                        None => Some(false),
                    },
                }
            }
        };
        match handed_back {
            None => {
                let _ = events.send(BotEvent::Stopped).await;
                return;
            }
            Some(false) => {}
            Some(true) => {
                tracing::info!(bot_id = %cfg.bot_id, "the owner holds this bot again; standing by");
                let _ = events.send(BotEvent::Yielded).await;
                let w = cfg.standby.as_ref().expect("only a standby hands back");
                if !stand_by(&cfg, w, &mut cmds, &events).await {
                    let _ = events.send(BotEvent::Stopped).await;
                    return;
                }
                failures = 0;
            }
        }
    }
}

/// A standby's wait: watches the owner, refusing sends, until it has been gone for
/// `takeover_after`; then reports [`BotEvent::TakingOver`]. False: shut down meanwhile.
async fn stand_by(
    cfg: &LongConnConfig,
    w: &OwnerWatch,
    cmds: &mut mpsc::Receiver<Command>,
    events: &mpsc::Sender<BotEvent>,
) -> bool {
    tracing::info!(bot_id = %cfg.bot_id, owner = %w.config().owner, "standing by for this bot's owner");
    let ev = events.clone();
    let watch = w.until_absent(move |o| {
        match o {
            Owner::Holds => tracing::info!(bot_id = %cfg.bot_id, "standby: the owner holds the bot"),
            Owner::Absent(why) => tracing::warn!(bot_id = %cfg.bot_id, %why, "standby: the owner does not hold the bot"),
        }
        let _ = ev.try_send(BotEvent::Standby { owner: o.clone() });
    });
    let Some(owner_gone) = refusing(cmds, watch).await else {
        return false;
    };
    tracing::warn!(bot_id = %cfg.bot_id, owner_gone_ms = owner_gone.as_millis() as u64, "standby: taking the bot over from its owner");
    let _ = events.send(BotEvent::TakingOver { owner_gone }).await;
    true
}

/// Runs `fut` while answering every send with [`WsError::NotConnected`]; `None` when the
/// client is shut down (or its handle dropped) meanwhile.
async fn refusing<T>(
    cmds: &mut mpsc::Receiver<Command>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            v = &mut fut => return Some(v),
            c = cmds.recv() => match c {
                None | Some(Command::Shutdown) => return None,
                Some(Command::Send { ack, .. }) => {
                    let _ = ack.send(Err(WsError::NotConnected));
                }
            },
        }
    }
}

/// After a kick: answer every later send with NotConnected until the handle is dropped.
async fn fail_pending_until_shutdown(mut cmds: mpsc::Receiver<Command>) {
    while let Some(c) = cmds.recv().await {
        match c {
            Command::Send { ack, .. } => {
                let _ = ack.send(Err(WsError::NotConnected));
            }
            Command::Shutdown => return,
        }
    }
}

async fn connect_and_subscribe(
    cfg: &LongConnConfig,
    events: &mpsc::Sender<BotEvent>,
) -> Result<Ws, String> {
    let (mut ws, _) = timeout(
        cfg.ack_timeout * 2,
        tokio_tungstenite::connect_async(cfg.url.as_str()),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| format!("connect failed: {e}"))?;
    let req_id = aibot::new_req_id(cmd::SUBSCRIBE);
    let body = serde_json::json!({"bot_id": cfg.bot_id, "secret": cfg.secret});
    let frame = WsFrame::command(cmd::SUBSCRIBE, &req_id, Some(body));
    ws.send(Message::Text(
        serde_json::to_string(&frame).expect("frame").into(),
    ))
    .await
    .map_err(|e| format!("sending aibot_subscribe failed: {e}"))?;
    let deadline = Instant::now() + cfg.ack_timeout * 2;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no answer to aibot_subscribe".to_string())?
            .ok_or("closed during aibot_subscribe")?
            .map_err(|e| format!("read failed during aibot_subscribe: {e}"))?;
        let Message::Text(text) = msg else { continue };
        let Ok(f) = serde_json::from_str::<WsFrame>(&text) else {
            continue;
        };
        if f.cmd.is_none() && f.headers.req_id == req_id {
            return match f.errcode.unwrap_or(0) {
                0 => Ok(ws),
                code => {
                    let errmsg = f.errmsg.unwrap_or_default();
                    let _ = events
                        .send(BotEvent::AuthFailed {
                            errcode: code,
                            errmsg: errmsg.clone(),
                        })
                        .await;
                    let _ = ws.close(None).await;
                    Err(format!("aibot_subscribe refused: errcode {code}: {errmsg}"))
                }
            };
        }
    }
}

async fn session(
    cfg: &LongConnConfig,
    mut ws: Ws,
    cmds: &mut mpsc::Receiver<Command>,
    events: &mpsc::Sender<BotEvent>,
    pong: &LastPong,
) -> End {
    // Acks for one req_id come back in the order its frames went out.
    let mut pending: HashMap<String, VecDeque<oneshot::Sender<Result<WsFrame, WsError>>>> =
        HashMap::new();
    let mut missed: u32 = 0;
    let mut heartbeat = tokio::time::interval_at(Instant::now() + cfg.heartbeat, cfg.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        tokio::select! {
            msg = ws.next() => {
                let msg = match msg {
                    None => break End::Reconnect("closed by peer".into()),
                    Some(Err(e)) => break End::Reconnect(format!("read failed: {e}")),
                    Some(Ok(m)) => m,
                };
                let text = match msg {
                    Message::Text(t) => t,
                    Message::Close(_) => break End::Reconnect("closed by peer".into()),
                    _ => continue, // protocol pings are answered by tungstenite
                };
                let frame: WsFrame = match serde_json::from_str(&text) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(error = %e, "unparsable long-connection frame ignored");
                        continue;
                    }
                };
                match frame.cmd.as_deref() {
                    None => {
                        if frame.headers.req_id.starts_with(cmd::PING) {
                            missed = 0;
                            pong.now();
                        } else {
                            let req_id = frame.headers.req_id.clone();
                            if let Some(queue) = pending.get_mut(&req_id) {
                                if let Some(ack) = queue.pop_front() {
                                    let _ = ack.send(Ok(frame));
                                }
                                if queue.is_empty() {
                                    pending.remove(&req_id);
                                }
                            }
                        }
                    }
                    Some(cmd::MSG_CALLBACK) | Some(cmd::EVENT_CALLBACK) => {
                        let req_id = frame.headers.req_id.clone();
                        let Some(msg) = frame.body.and_then(|b| serde_json::from_value::<Callback>(b).ok()) else {
                            tracing::warn!(%req_id, "callback without a readable body ignored");
                            continue;
                        };
                        if msg.event_type() == Some(aibot::DISCONNECTED_EVENT) {
                            break End::Kicked;
                        }
                        let ev = if frame.cmd.as_deref() == Some(cmd::MSG_CALLBACK) {
                            BotEvent::Message { req_id, msg }
                        } else {
                            BotEvent::Event { req_id, msg }
                        };
                        if events.send(ev).await.is_err() {
                            break End::Shutdown;
                        }
                    }
                    Some(other) => tracing::debug!(cmd = other, "unhandled long-connection command"),
                }
            }
            _ = heartbeat.tick() => {
                if missed >= cfg.max_missed_pings {
                    break End::Reconnect(format!("{missed} pings unacknowledged"));
                }
                let f = WsFrame::command(cmd::PING, &aibot::new_req_id(cmd::PING), None);
                if let Err(e) = ws.send(Message::Text(serde_json::to_string(&f).expect("frame").into())).await {
                    break End::Reconnect(format!("ping failed: {e}"));
                }
                missed += 1;
            }
            c = cmds.recv() => match c {
                None | Some(Command::Shutdown) => {
                    let _ = ws.close(None).await;
                    break End::Shutdown;
                }
                Some(Command::Send { frame, ack }) => {
                    let text = serde_json::to_string(&frame).expect("frame");
                    match ws.send(Message::Text(text.into())).await {
                        Ok(()) => {
                            pending.entry(frame.headers.req_id.clone()).or_default().push_back(ack);
                        }
                        Err(e) => {
                            let _ = ack.send(Err(WsError::Closed));
                            break End::Reconnect(format!("write failed: {e}"));
                        }
                    }
                }
            },
        }
    };
    for ack in pending.into_values().flatten() {
        let _ = ack.send(Err(WsError::Closed));
    }
    end
}
