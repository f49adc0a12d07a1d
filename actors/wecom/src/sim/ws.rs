//! The simulator's AI-bot long-connection server (`ws://ADDR/`) and its control endpoints.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{driver, not_found, wecom_error, Conn, Sim};
use crate::aibot::{self, cmd, WsFrame};
use crate::split::AIBOT_CONTENT_MAX_BYTES;

/// What the connection's writer sends.
pub(super) enum Out {
    Frame(WsFrame),
    Close,
}

/// `GET /`: the long connection (WebSocket upgrade), or a short description for a browser.
pub(super) async fn root(
    State(sim): State<Sim>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => ws.on_upgrade(move |socket| serve(sim, socket)),
        Err(_) => Json(json!({
            "service": "wecom-edge WeCom simulator",
            "long_connection": "connect a WebSocket to this address (as wss://openws.work.weixin.qq.com)",
            "api": "/cgi-bin/…",
            "control": "/sim/…"
        }))
        .into_response(),
    }
}

fn ack_of(frame: &WsFrame, errcode: i64) -> WsFrame {
    if errcode == 0 {
        WsFrame::ack(&frame.headers.req_id, 0, "ok")
    } else {
        let e = wecom_error(errcode);
        WsFrame::ack(
            &frame.headers.req_id,
            errcode,
            e["errmsg"].as_str().unwrap_or(""),
        )
    }
}

async fn serve(sim: Sim, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Frame(f) => {
                    let text = serde_json::to_string(&f).expect("frame serializes");
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Out::Close => {
                    let _ = sink.send(Message::Close(None)).await;
                    let _ = sink.close().await;
                    break;
                }
            }
        }
    });
    let conn_id = {
        let mut s = sim.lock();
        s.next_conn += 1;
        s.next_conn
    };
    let mut bot: Option<String> = None;
    while let Some(Ok(msg)) = stream.next().await {
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => break,
            _ => continue, // protocol pings are answered by the WebSocket layer
        };
        let Ok(frame) = serde_json::from_str::<WsFrame>(&text) else {
            tracing::warn!("simulator: unparsable frame from a bot");
            continue;
        };
        let reply = handle_frame(&sim, conn_id, &tx, &mut bot, &frame);
        match reply {
            Some(r) => {
                let close = r.errcode == Some(853000);
                let _ = tx.send(Out::Frame(r));
                if close {
                    let _ = tx.send(Out::Close);
                    break;
                }
            }
            None => continue,
        }
    }
    if let Some(b) = bot {
        let mut s = sim.lock();
        if let Some(state) = s.bots.get_mut(&b) {
            if state.conn.as_ref().is_some_and(|c| c.id == conn_id) {
                state.conn = None;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Handles one frame from a bot; returns the ack to send (None: no answer, e.g. muted ping).
fn handle_frame(
    sim: &Sim,
    conn_id: u64,
    tx: &mpsc::UnboundedSender<Out>,
    bot: &mut Option<String>,
    frame: &WsFrame,
) -> Option<WsFrame> {
    let mut s = sim.lock();
    let stream_expiry = s.cfg.stream_expiry;
    let per_minute = s.cfg.aibot_per_minute;
    let command = frame.cmd.as_deref().unwrap_or("");
    if command == cmd::SUBSCRIBE {
        let body = frame.body.clone().unwrap_or_default();
        let id = body.get("bot_id").and_then(Value::as_str).unwrap_or("");
        let secret = body.get("secret").and_then(Value::as_str).unwrap_or("");
        let Some(state) = s
            .bots
            .get_mut(id)
            .filter(|b| b.secret.as_deref() == Some(secret))
        else {
            return Some(ack_of(frame, 853000));
        };
        state.subscribes += 1;
        state.connections += 1;
        if let Some(old) = state.conn.take() {
            if old.id != conn_id {
                // One connection per bot: the newer one wins, the older is told and closed.
                let ev = json!({
                    "msgid": aibot::new_req_id("evt"),
                    "create_time": unix_now(),
                    "aibotid": id,
                    "msgtype": "event",
                    "event": {"eventtype": aibot::DISCONNECTED_EVENT, aibot::DISCONNECTED_EVENT: {}},
                });
                let _ = old.tx.send(Out::Frame(WsFrame::command(
                    cmd::EVENT_CALLBACK,
                    &aibot::new_req_id("aibot_event_callback"),
                    Some(ev),
                )));
                let _ = old.tx.send(Out::Close);
            }
        }
        state.conn = Some(Conn {
            id: conn_id,
            tx: tx.clone(),
        });
        *bot = Some(id.to_string());
        return Some(ack_of(frame, 0));
    }
    let Some(id) = bot.clone() else {
        // Anything before a successful subscribe.
        return Some(ack_of(frame, 853000));
    };
    let state = s.bots.get_mut(&id).expect("subscribed bot exists");
    match command {
        cmd::PING => {
            state.pings += 1;
            state.ack_pings.then(|| ack_of(frame, 0))
        }
        cmd::RESPOND_MSG | cmd::RESPOND_WELCOME | cmd::RESPOND_UPDATE => {
            let req_id = frame.headers.req_id.clone();
            let fault = s.take_fault(command);
            let state = s.bots.get_mut(&id).expect("subscribed bot exists");
            let code = match state.issued.get(&req_id).cloned() {
                _ if fault.is_some() => fault.unwrap_or_default(),
                None => 846605,
                Some(conversation) => {
                    let new_message = opens_message(state, &req_id, frame.body.as_ref());
                    let quota_key = format!("aibot:{id}:{conversation}");
                    if new_message && !s.within_quota(quota_key, per_minute) {
                        s.quota_refused += 1;
                        45009
                    } else {
                        let state = s.bots.get_mut(&id).expect("subscribed bot exists");
                        check_reply(state, &req_id, frame.body.as_ref(), stream_expiry)
                    }
                }
            };
            let state = s.bots.get_mut(&id).expect("subscribed bot exists");
            let whole = serde_json::to_value(frame).expect("frame serializes");
            state.replies.entry(req_id).or_default().push((whole, code));
            Some(ack_of(frame, code))
        }
        cmd::SEND_MSG => {
            let body = frame.body.clone().unwrap_or_default();
            let code = if let Some(code) = s.take_fault(command) {
                code
            } else if body
                .get("chatid")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                40058
            } else {
                let chatid = body["chatid"].as_str().unwrap_or_default();
                if s.within_quota(format!("aibot:{id}:{chatid}"), per_minute) {
                    0
                } else {
                    s.quota_refused += 1;
                    45009
                }
            };
            if code == 0 {
                s.outbox
                    .push(json!({"api": cmd::SEND_MSG, "bot_id": id, "body": body}));
            }
            Some(ack_of(frame, code))
        }
        _ => Some(ack_of(frame, 846605)),
    }
}

/// Whether a reply is a new message in the conversation (for its quota): anything but a
/// further frame of a stream already opened.
fn opens_message(state: &super::BotState, req_id: &str, body: Option<&Value>) -> bool {
    let sid = body
        .filter(|b| b.get("msgtype").and_then(Value::as_str) == Some("stream"))
        .and_then(|b| b.get("stream")?.get("id")?.as_str());
    match sid {
        Some(sid) => !state
            .streams
            .contains_key(&(req_id.to_string(), sid.to_string())),
        None => true,
    }
}

/// Validates one reply body: stream content size and the 6-minute stream window.
fn check_reply(
    state: &mut super::BotState,
    req_id: &str,
    body: Option<&Value>,
    expiry: std::time::Duration,
) -> i64 {
    let Some(body) = body else { return 40058 };
    let msgtype = body.get("msgtype").and_then(Value::as_str).unwrap_or("");
    if msgtype == "stream" {
        let stream = body.get("stream").cloned().unwrap_or_default();
        let Some(sid) = stream.get("id").and_then(Value::as_str) else {
            return 40058;
        };
        let content = stream.get("content").and_then(Value::as_str).unwrap_or("");
        if content.len() > AIBOT_CONTENT_MAX_BYTES {
            return 40058;
        }
        let first = *state
            .streams
            .entry((req_id.to_string(), sid.to_string()))
            .or_insert_with(Instant::now);
        if first.elapsed() > expiry {
            return 846608;
        }
        0
    } else if matches!(
        msgtype,
        "text" | "markdown" | "template_card" | "file" | "image" | "voice" | "video"
    ) || body.get("response_type").is_some()
    {
        0
    } else {
        40008
    }
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `POST /sim/aibot/{bot_id}/messages` body: a text message (`text`), or any message type
/// with its fields as WeCom sends them (`msgtype` plus e.g. `voice`, `mixed`, `image`, `file`,
/// and an optional `quote`; AI-bot 接收消息, path/100719).
#[derive(Deserialize)]
pub(super) struct PushMessage {
    #[serde(default = "single")]
    chattype: String,
    chatid: Option<String>,
    userid: String,
    #[serde(default = "text")]
    msgtype: String,
    #[serde(default)]
    text: String,
    msgid: Option<String>,
    /// The message type's own fields (`voice`, `mixed`, `image`, …) and `quote`, verbatim.
    #[serde(flatten)]
    fields: serde_json::Map<String, Value>,
}

fn text() -> String {
    "text".into()
}

fn single() -> String {
    "single".into()
}

fn new_msgid() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 18]>())
}

/// Pushes a callback to the bot's live connection, or drives its webhook.
async fn push(
    sim: &Sim,
    bot_id: &str,
    command: &'static str,
    body: Value,
) -> (StatusCode, Json<Value>) {
    let msgid = body["msgid"].as_str().unwrap_or_default().to_string();
    let webhook = {
        let s = sim.lock();
        match s.bots.get(bot_id) {
            None => return not_found("no such bot"),
            Some(b) => b.webhook.is_some(),
        }
    };
    if webhook {
        return driver::aibot_webhook_callback(sim, bot_id, body).await;
    }
    let req_id = aibot::new_req_id(command);
    let mut s = sim.lock();
    let state = s.bots.get_mut(bot_id).expect("checked above");
    let Some(conn) = &state.conn else {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": format!("bot {bot_id} has no live long connection")})),
        );
    };
    let conversation = body
        .get("chatid")
        .and_then(Value::as_str)
        .filter(|_| body.get("chattype").and_then(Value::as_str) == Some("group"))
        .or_else(|| body.get("from")?.get("userid")?.as_str())
        .unwrap_or_default()
        .to_string();
    let frame = WsFrame::command(command, &req_id, Some(body));
    if conn.tx.send(Out::Frame(frame)).is_err() {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "the connection just closed"})),
        );
    }
    state.issued.insert(req_id.clone(), conversation);
    (
        StatusCode::OK,
        Json(json!({"msgid": msgid, "req_id": req_id})),
    )
}

pub(super) async fn push_message(
    State(sim): State<Sim>,
    Path(bot_id): Path<String>,
    Json(m): Json<PushMessage>,
) -> (StatusCode, Json<Value>) {
    if m.chattype != "single" && m.chattype != "group" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "chattype is single or group"})),
        );
    }
    let mut body = json!({
        "msgid": m.msgid.unwrap_or_else(new_msgid),
        "aibotid": bot_id,
        "chattype": m.chattype,
        "from": {"userid": m.userid},
        "msgtype": m.msgtype,
    });
    if m.msgtype == "text" {
        body["text"] = json!({"content": m.text});
    }
    for (k, v) in m.fields {
        body[k] = v;
    }
    if m.chattype == "group" {
        body["chatid"] = json!(m.chatid.unwrap_or_else(|| "simgroup".into()));
    }
    push(&sim, &bot_id, cmd::MSG_CALLBACK, body).await
}

/// `POST /sim/aibot/{bot_id}/events` body.
#[derive(Deserialize)]
pub(super) struct PushEvent {
    eventtype: String,
    #[serde(default = "single")]
    chattype: String,
    chatid: Option<String>,
    userid: String,
    /// The event's own fields (`event.<eventtype>`, e.g. a feedback_event's `id`, `type`).
    #[serde(default)]
    fields: serde_json::Map<String, Value>,
}

pub(super) async fn push_event(
    State(sim): State<Sim>,
    Path(bot_id): Path<String>,
    Json(e): Json<PushEvent>,
) -> (StatusCode, Json<Value>) {
    let mut body = json!({
        "msgid": new_msgid(),
        "create_time": unix_now(),
        "aibotid": bot_id,
        "chattype": e.chattype,
        "from": {"userid": e.userid},
        "msgtype": "event",
        "event": {"eventtype": e.eventtype, e.eventtype.clone(): e.fields},
    });
    if let Some(c) = e.chatid {
        body["chatid"] = json!(c);
    }
    push(&sim, &bot_id, cmd::EVENT_CALLBACK, body).await
}

pub(super) async fn replies(
    State(sim): State<Sim>,
    Path(bot_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let s = sim.lock();
    let Some(state) = s.bots.get(&bot_id) else {
        return not_found("no such bot");
    };
    let req_id = q.get("req_id").cloned().unwrap_or_default();
    let got = state.replies.get(&req_id).cloned().unwrap_or_default();
    let frames: Vec<Value> = got.iter().map(|(f, _)| f.clone()).collect();
    let acks: Vec<i64> = got.iter().map(|(_, c)| *c).collect();
    (
        StatusCode::OK,
        Json(json!({"frames": frames, "acks": acks})),
    )
}

pub(super) async fn bot_status(
    State(sim): State<Sim>,
    Path(bot_id): Path<String>,
) -> (StatusCode, Json<Value>) {
    let s = sim.lock();
    let Some(b) = s.bots.get(&bot_id) else {
        return not_found("no such bot");
    };
    (
        StatusCode::OK,
        Json(json!({
            "connected": b.conn.is_some(),
            "mode": if b.webhook.is_some() { "webhook" } else { "long_connection" },
            "connections": b.connections,
            "subscribes": b.subscribes,
            "pings": b.pings,
            "callback_url": b.webhook.as_ref().and_then(|(_, u)| u.clone()),
        })),
    )
}

pub(super) async fn drop_conn(
    State(sim): State<Sim>,
    Path(bot_id): Path<String>,
) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock();
    let Some(b) = s.bots.get_mut(&bot_id) else {
        return not_found("no such bot");
    };
    let dropped = match b.conn.take() {
        Some(c) => {
            let _ = c.tx.send(Out::Close);
            true
        }
        None => false,
    };
    (StatusCode::OK, Json(json!({"dropped": dropped})))
}

#[derive(Deserialize)]
pub(super) struct Acks {
    ping: bool,
}

pub(super) async fn set_acks(
    State(sim): State<Sim>,
    Path(bot_id): Path<String>,
    Json(a): Json<Acks>,
) -> (StatusCode, Json<Value>) {
    let mut s = sim.lock();
    let Some(b) = s.bots.get_mut(&bot_id) else {
        return not_found("no such bot");
    };
    b.ack_pings = a.ping;
    (StatusCode::OK, Json(json!({"ping": a.ping})))
}
