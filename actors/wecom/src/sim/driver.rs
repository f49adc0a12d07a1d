//! The simulator's callback driver: WeCom → box over HTTP, signed and encrypted.
//!
//! Delivery follows 接收消息与事件 (/document/path/90238): the box must answer 200 within 5 s;
//! a slow or failed answer is retried with the identical request, three more times.

use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{not_found, ws::unix_now, Sim};
use crate::crypto::{self, MsgCrypt};
use crate::xml::escape_cdata;

/// Retries after the first delivery attempt.
const RETRIES: usize = 3;

/// One delivery attempt's outcome.
struct Attempt {
    status: Option<u16>,
    error: Option<String>,
    ms: u64,
}

impl Attempt {
    fn to_json(&self) -> Value {
        json!({"status": self.status, "error": self.error, "ms": self.ms})
    }
}

/// POSTs `body` to `url?msg_signature&timestamp&nonce`, retrying like WeCom; returns the
/// attempts and the successful answer's body.
async fn deliver(
    sim: &Sim,
    url: &str,
    query: &[(&str, &str)],
    body: String,
    json_body: bool,
) -> (Vec<Attempt>, Option<Vec<u8>>) {
    let timeout = sim.lock().cfg.callback_timeout;
    let mut attempts = Vec::new();
    for _ in 0..=RETRIES {
        let t0 = Instant::now();
        let req = sim
            .http
            .post(url)
            .query(query)
            .timeout(timeout)
            .header(
                "content-type",
                if json_body {
                    "application/json"
                } else {
                    "text/xml"
                },
            )
            .body(body.clone());
        let res = match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                match r.bytes().await {
                    Ok(b) if status == 200 => Ok((status, Some(b.to_vec()))),
                    Ok(_) => Ok((status, None)),
                    Err(e) => Err(e.without_url().to_string()),
                }
            }
            Err(e) => Err(e.without_url().to_string()),
        };
        let ms = t0.elapsed().as_millis() as u64;
        match res {
            Ok((status, Some(answer))) => {
                attempts.push(Attempt {
                    status: Some(status),
                    error: None,
                    ms,
                });
                return (attempts, Some(answer));
            }
            Ok((status, None)) => attempts.push(Attempt {
                status: Some(status),
                error: None,
                ms,
            }),
            Err(e) => attempts.push(Attempt {
                status: None,
                error: Some(e),
                ms,
            }),
        }
    }
    (attempts, None)
}

/// WeCom's URL verification: GET with an encrypted echostr; the answer must be the plaintext,
/// exactly, within 1 s.
async fn verify_url(sim: &Sim, crypt: &MsgCrypt, url: &str) -> Result<(), String> {
    let plain = format!("{}", rand::random::<u64>());
    let echostr = crypt.encrypt(plain.as_bytes());
    let ts = unix_now().to_string();
    let nonce = crypto::random_nonce();
    let sig = crypt.signature(&ts, &nonce, &echostr);
    let r = sim
        .http
        .get(url)
        .query(&[
            ("msg_signature", sig.as_str()),
            ("timestamp", &ts),
            ("nonce", &nonce),
            ("echostr", &echostr),
        ])
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .map_err(|e| format!("GET verification failed: {}", e.without_url()))?;
    let status = r.status().as_u16();
    let body = r.bytes().await.map_err(|e| e.without_url().to_string())?;
    if status != 200 {
        return Err(format!("GET verification answered HTTP {status}"));
    }
    if body.as_ref() != plain.as_bytes() {
        return Err(format!(
            "GET verification answered {:?}, expected exactly the decrypted echostr {plain:?}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
pub(super) struct CallbackUrl {
    url: String,
}

pub(super) async fn set_app_callback(
    State(sim): State<Sim>,
    Path(agentid): Path<i64>,
    Json(c): Json<CallbackUrl>,
) -> (StatusCode, Json<Value>) {
    let Some(crypt) = sim.lock().apps.get(&agentid).map(|a| a.crypt.clone()) else {
        return not_found("no such app");
    };
    let res = verify_url(&sim, &crypt, &c.url).await;
    if res.is_ok() {
        if let Some(a) = sim.lock().apps.get_mut(&agentid) {
            a.callback_url = Some(c.url.clone());
        }
    }
    (
        StatusCode::OK,
        Json(json!({"verified": res.is_ok(), "detail": res.err()})),
    )
}

pub(super) async fn set_aibot_callback(
    State(sim): State<Sim>,
    Path(bot_id): Path<String>,
    Json(c): Json<CallbackUrl>,
) -> (StatusCode, Json<Value>) {
    let crypt = match sim.lock().bots.get(&bot_id) {
        None => return not_found("no such bot"),
        Some(b) => match &b.webhook {
            Some((crypt, _)) => crypt.clone(),
            None => {
                return (
                    StatusCode::CONFLICT,
                    Json(json!({"error": "this bot uses the long connection"})),
                )
            }
        },
    };
    let res = verify_url(&sim, &crypt, &c.url).await;
    if res.is_ok() {
        if let Some(b) = sim.lock().bots.get_mut(&bot_id) {
            if let Some((_, url)) = &mut b.webhook {
                *url = Some(c.url.clone());
            }
        }
    }
    (
        StatusCode::OK,
        Json(json!({"verified": res.is_ok(), "detail": res.err()})),
    )
}

#[derive(Deserialize)]
pub(super) struct AppMessage {
    from: String,
    #[serde(default)]
    text: String,
    msgid: Option<u64>,
    /// `text` (default), or `image`, `voice`, `video`, `location`, `link`: sent with a
    /// `MediaId` (and `PicUrl` for an image) instead of `Content`.
    msgtype: Option<String>,
}

/// `POST /sim/app/{agentid}/messages`: a member writes to the app; delivered as WeCom would.
pub(super) async fn app_message(
    State(sim): State<Sim>,
    Path(agentid): Path<i64>,
    Json(m): Json<AppMessage>,
) -> (StatusCode, Json<Value>) {
    let (crypt, corpid, url) = {
        let s = sim.lock();
        let Some(a) = s.apps.get(&agentid) else {
            return not_found("no such app");
        };
        let Some(url) = a.callback_url.clone() else {
            return (
                StatusCode::CONFLICT,
                Json(
                    json!({"error": "no callback URL saved: PUT /sim/app/{agentid}/callback first"}),
                ),
            );
        };
        (a.crypt.clone(), a.spec.corpid.clone(), url)
    };
    let msgid = m.msgid.unwrap_or_else(|| rand::random::<u64>() >> 1);
    let now = unix_now();
    let msgtype = m.msgtype.as_deref().unwrap_or("text");
    let payload = match msgtype {
        "text" => format!("<Content><![CDATA[{}]]></Content>", escape_cdata(&m.text)),
        "image" => format!(
            "<PicUrl><![CDATA[https://sim.invalid/pic/{msgid}.jpg]]></PicUrl>\n<MediaId><![CDATA[sim-media-{msgid}]]></MediaId>"
        ),
        _ => format!("<MediaId><![CDATA[sim-media-{msgid}]]></MediaId>"),
    };
    let plain = format!(
        "<xml><ToUserName><![CDATA[{corpid}]]></ToUserName>\n<FromUserName><![CDATA[{}]]></FromUserName>\n<CreateTime>{now}</CreateTime>\n<MsgType><![CDATA[{}]]></MsgType>\n{payload}\n<MsgId>{msgid}</MsgId>\n<AgentID>{agentid}</AgentID>\n</xml>",
        escape_cdata(&m.from),
        escape_cdata(msgtype)
    );
    let encrypt = crypt.encrypt(plain.as_bytes());
    let ts = now.to_string();
    let nonce = crypto::random_nonce();
    let sig = crypt.signature(&ts, &nonce, &encrypt);
    let body = format!(
        "<xml><ToUserName><![CDATA[{corpid}]]></ToUserName><AgentID><![CDATA[{agentid}]]></AgentID><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    );
    let query = [
        ("msg_signature", sig.as_str()),
        ("timestamp", &ts),
        ("nonce", &nonce),
    ];
    let (attempts, answer) = deliver(&sim, &url, &query, body, false).await;
    (
        StatusCode::OK,
        Json(json!({
            "msgid": msgid.to_string(),
            "delivered": answer.is_some(),
            "attempts": attempts.iter().map(Attempt::to_json).collect::<Vec<_>>(),
        })),
    )
}

/// Drives one AI-bot webhook callback: POST the encrypted JSON, record the (encrypted) answer as
/// a reply frame, and keep sending stream-refresh callbacks until `finish:true` or expiry.
pub(super) async fn aibot_webhook_callback(
    sim: &Sim,
    bot_id: &str,
    mut body: Value,
) -> (StatusCode, Json<Value>) {
    let (crypt, url, base, expiry, interval) = {
        let s = sim.lock();
        let b = s.bots.get(bot_id).expect("caller checked");
        let (crypt, url) = b.webhook.clone().expect("webhook bot");
        (
            crypt,
            url,
            s.base_url.clone(),
            s.cfg.stream_expiry,
            s.cfg.refresh_interval,
        )
    };
    let Some(url) = url else {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "no callback URL saved: PUT /sim/aibot/{bot_id}/callback first"})),
        );
    };
    let msgid = body["msgid"].as_str().unwrap_or_default().to_string();
    // The webhook has no req_id; the simulator names each delivery for `/replies`.
    let req_id = crate::aibot::new_req_id("webhook");
    if body["msgtype"] != "event" {
        let code = format!("{:032x}", rand::random::<u128>());
        body["response_url"] = json!(format!(
            "{base}/cgi-bin/aibot/response?response_code={code}"
        ));
        sim.lock()
            .response_codes
            .insert(code, (bot_id.to_string(), Instant::now(), false));
    }
    let (attempts, answer) = post_json_callback(sim, &crypt, &url, &body).await;
    let first = answer.and_then(|a| record_answer(sim, bot_id, &req_id, &crypt, &a));
    // A started, unfinished stream: WeCom polls with stream-refresh callbacks.
    if let Some(stream_id) = first.as_ref().and_then(unfinished_stream) {
        let sim = sim.clone();
        let bot = bot_id.to_string();
        let template = body.clone();
        let req = req_id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            while started.elapsed() < expiry {
                tokio::time::sleep(interval).await;
                let mut refresh = template.clone();
                refresh["msgid"] = json!(format!("{:032x}", rand::random::<u128>()));
                refresh["msgtype"] = json!("stream");
                refresh["stream"] = json!({"id": stream_id});
                if let Some(m) = refresh.as_object_mut() {
                    m.remove("text");
                    m.remove("response_url");
                }
                let (_, answer) = post_json_callback(&sim, &crypt, &url, &refresh).await;
                let reply = answer.and_then(|a| record_answer(&sim, &bot, &req, &crypt, &a));
                if reply
                    .as_ref()
                    .is_some_and(|r| unfinished_stream(r).is_none())
                {
                    break;
                }
            }
        });
    }
    (
        StatusCode::OK,
        Json(json!({
            "msgid": msgid,
            "req_id": req_id,
            "delivered": !attempts.is_empty() && attempts.last().is_some_and(|a| a.status == Some(200)),
            "attempts": attempts.iter().map(Attempt::to_json).collect::<Vec<_>>(),
        })),
    )
}

fn unfinished_stream(reply: &Value) -> Option<String> {
    let s = reply.get("stream")?;
    if s.get("finish").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    s.get("id").and_then(Value::as_str).map(str::to_string)
}

async fn post_json_callback(
    sim: &Sim,
    crypt: &MsgCrypt,
    url: &str,
    body: &Value,
) -> (Vec<Attempt>, Option<Vec<u8>>) {
    let encrypt = crypt.encrypt(body.to_string().as_bytes());
    let ts = unix_now().to_string();
    let nonce = crypto::random_nonce();
    let sig = crypt.signature(&ts, &nonce, &encrypt);
    let query = [
        ("msg_signature", sig.as_str()),
        ("timestamp", &ts),
        ("nonce", &nonce),
    ];
    deliver(
        sim,
        url,
        &query,
        json!({ "encrypt": encrypt }).to_string(),
        true,
    )
    .await
}

/// Decrypts a passive reply (empty = no reply) and records it under `req_id`.
fn record_answer(
    sim: &Sim,
    bot_id: &str,
    req_id: &str,
    crypt: &MsgCrypt,
    answer: &[u8],
) -> Option<Value> {
    if answer.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let env: Value = serde_json::from_slice(answer).ok()?;
    let (enc, sig) = (env["encrypt"].as_str()?, env["msgsignature"].as_str()?);
    let ts = match &env["timestamp"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return None,
    };
    let nonce = env["nonce"].as_str()?;
    let code = match crypt.verify_url(sig, &ts, nonce, enc) {
        Ok(_) => 0,
        Err(e) => e.code() as i64,
    };
    let reply: Value = crypt
        .decrypt(enc)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .unwrap_or(Value::Null);
    let mut s = sim.lock();
    let b = s.bots.get_mut(bot_id)?;
    let frame = json!({"headers": {"req_id": req_id}, "body": reply});
    b.replies
        .entry(req_id.to_string())
        .or_default()
        .push((frame, code));
    (code == 0).then_some(reply)
}
