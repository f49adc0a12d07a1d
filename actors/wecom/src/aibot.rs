//! 智能机器人 (AI bot) message shapes, shared by the long connection, the webhook callback and
//! the simulator.
//!
//! Sources: 接收消息 /document/path/100719, 接收事件 /101027, 被动回复 /101031, 长连接 /101463,
//! and Tencent's Node SDK `@wecom/aibot-node-sdk` (`src/types/api.ts`, `src/ws.ts`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The long-connection endpoint (SDK `DEFAULT_WS_URL`).
pub const DEFAULT_WS_URL: &str = "wss://openws.work.weixin.qq.com";

/// Long-connection commands (SDK `WsCmd`).
pub mod cmd {
    /// bot → WeCom: authenticate with bot_id + secret.
    pub const SUBSCRIBE: &str = "aibot_subscribe";
    /// bot → WeCom: heartbeat.
    pub const PING: &str = "ping";
    /// WeCom → bot: a user message.
    pub const MSG_CALLBACK: &str = "aibot_msg_callback";
    /// WeCom → bot: an event (enter_chat, template_card_event, feedback_event, disconnected_event).
    pub const EVENT_CALLBACK: &str = "aibot_event_callback";
    /// bot → WeCom: reply to a callback (same req_id).
    pub const RESPOND_MSG: &str = "aibot_respond_msg";
    /// bot → WeCom: welcome reply to enter_chat (same req_id, ≤ 5 s).
    pub const RESPOND_WELCOME: &str = "aibot_respond_welcome_msg";
    /// bot → WeCom: replace a template card.
    pub const RESPOND_UPDATE: &str = "aibot_respond_update_msg";
    /// bot → WeCom: proactive message.
    pub const SEND_MSG: &str = "aibot_send_msg";
}

/// The event WeCom sends to the old connection when another connection subscribed the same bot.
pub const DISCONNECTED_EVENT: &str = "disconnected_event";

/// Frame request headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Headers {
    /// Request id: new for bot-initiated commands, the callback's for replies.
    pub req_id: String,
}

/// One long-connection text frame: a command `{"cmd","headers","body"}` or an ack
/// `{"headers","errcode","errmsg"}` (SDK `WsFrame`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WsFrame {
    /// The command; absent on acks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Headers (req_id).
    #[serde(default)]
    pub headers: Headers,
    /// The command's body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Ack status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errcode: Option<i64>,
    /// Ack message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errmsg: Option<String>,
}

impl WsFrame {
    /// A command frame.
    pub fn command(cmd: &str, req_id: &str, body: Option<Value>) -> Self {
        WsFrame {
            cmd: Some(cmd.to_string()),
            headers: Headers {
                req_id: req_id.to_string(),
            },
            body,
            ..Default::default()
        }
    }

    /// An ack for `req_id`.
    pub fn ack(req_id: &str, errcode: i64, errmsg: &str) -> Self {
        WsFrame {
            headers: Headers {
                req_id: req_id.to_string(),
            },
            errcode: Some(errcode),
            errmsg: Some(errmsg.to_string()),
            ..Default::default()
        }
    }
}

/// A request id in the SDK's format: `{prefix}_{unix ms}_{8 hex}`.
pub fn new_req_id(prefix: &str) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}_{ms}_{:08x}", rand::random::<u32>())
}

/// The sender of a callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct From {
    /// The member's userid.
    #[serde(default)]
    pub userid: String,
    /// Only for external users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpid: Option<String>,
}

/// A decrypted AI-bot callback: a message, a stream refresh or an event (100719, 101027).
/// Unknown fields are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    /// Message id; dedupe key (WeCom may deliver a message twice).
    #[serde(default)]
    pub msgid: String,
    /// The bot's id.
    #[serde(default)]
    pub aibotid: String,
    /// Group chat id (group chats only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chatid: Option<String>,
    /// `single` or `group`.
    #[serde(default)]
    pub chattype: String,
    /// Sender.
    #[serde(default)]
    pub from: From,
    /// Webhook mode: the one-shot URL for a later reply (valid 1 h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_url: Option<String>,
    /// `text`, `image`, `mixed`, `voice`, `file`, `video`, `stream` (refresh) or `event`.
    #[serde(default)]
    pub msgtype: String,
    /// Everything else (`text`, `stream`, `event`, `quote`, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Callback {
    /// The user's text: `text.content`, voice ASR `voice.content`, or the text items of `mixed`
    /// (`None` for image, file and video messages, and for events).
    ///
    /// Source: AI-bot 接收消息 (work.weixin.qq.com/api/doc/path/100719), the message types.
    pub fn text(&self) -> Option<String> {
        item_text(&self.msgtype, &self.extra)
    }

    /// The quoted message of a reply (引用, the optional `quote` field: msgtype text, image,
    /// mixed, voice or file) as text: its text, or `[图片]` / `[文件]` for media.
    pub fn quoted(&self) -> Option<String> {
        let q = self.extra.get("quote")?.as_object()?;
        let msgtype = q.get("msgtype")?.as_str()?;
        item_text(msgtype, q).or_else(|| match msgtype {
            "image" => Some("[图片]".into()),
            "file" => Some("[文件]".into()),
            "video" => Some("[视频]".into()),
            _ => None,
        })
    }

    /// What the model is asked: [`Callback::text`], after the quoted message (when the user
    /// replied to one) as a Markdown quote block, so the question is read in its context.
    pub fn question(&self) -> Option<String> {
        let text = self.text()?;
        Some(match self.quoted() {
            Some(q) => {
                let block: Vec<String> = q.lines().map(|l| format!("> {l}")).collect();
                format!("{}\n\n{text}", block.join("\n"))
            }
            None => text,
        })
    }

    /// The event type of an event callback (`enter_chat`, `disconnected_event`, …).
    pub fn event_type(&self) -> Option<&str> {
        self.extra.get("event")?.get("eventtype")?.as_str()
    }

    /// A `feedback_event`'s rating: the feedback id the answer carried and `accurate` (type 1),
    /// `inaccurate` (2) or `cancelled` (3), with the number of reasons given (path/101027).
    pub fn feedback(&self) -> Option<(String, &'static str, usize)> {
        let f = self.extra.get("event")?.get("feedback_event")?;
        let kind = match f.get("type")?.as_i64()? {
            1 => "accurate",
            2 => "inaccurate",
            3 => "cancelled",
            _ => return None,
        };
        let reasons = f
            .get("inaccurate_reason_list")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        Some((f.get("id")?.as_str()?.to_string(), kind, reasons))
    }

    /// The stream id of a webhook stream-refresh callback.
    pub fn stream_id(&self) -> Option<&str> {
        (self.msgtype == "stream").then(|| self.extra.get("stream")?.get("id")?.as_str())?
    }

    /// Where a proactive message to this conversation goes: the chatid of a group, the sender's
    /// userid in a single chat.
    pub fn conversation(&self) -> &str {
        match &self.chatid {
            Some(c) if self.chattype == "group" => c,
            _ => &self.from.userid,
        }
    }
}

/// The text of a message of type `msgtype` whose fields are `obj` (`"<msgtype>": {…}`, as a
/// callback or its `quote` carries them): `text.content`, `voice.content`, or the text items
/// of `mixed` joined by newlines.
fn item_text(msgtype: &str, obj: &Map<String, Value>) -> Option<String> {
    let content = |k: &str| obj.get(k)?.get("content")?.as_str().map(str::to_string);
    match msgtype {
        "text" => content("text"),
        "voice" => content("voice"),
        "mixed" => {
            let items = obj.get("mixed")?.get("msg_item")?.as_array()?;
            let texts: Vec<&str> = items
                .iter()
                .filter(|i| i.get("msgtype").and_then(Value::as_str) == Some("text"))
                .filter_map(|i| i.get("text")?.get("content")?.as_str())
                .collect();
            (!texts.is_empty()).then(|| texts.join("\n"))
        }
        _ => None,
    }
}

/// The body of a stream reply: `{"msgtype":"stream","stream":{"id","finish","content"}}`;
/// `content` is the full accumulated answer (≤ 20480 bytes).
pub fn stream_body(stream_id: &str, content: &str, finish: bool) -> Value {
    json!({"msgtype": "stream", "stream": {"id": stream_id, "finish": finish, "content": content}})
}

/// The body of a markdown message (proactive `aibot_send_msg` or `response_url`).
pub fn markdown_body(content: &str) -> Value {
    json!({"msgtype": "markdown", "markdown": {"content": content}})
}

/// The body of a text welcome reply.
pub fn text_body(content: &str) -> Value {
    json!({"msgtype": "text", "text": {"content": content}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn callback(v: Value) -> Callback {
        serde_json::from_value(v).unwrap()
    }

    /// The shapes of AI-bot 接收消息 (path/100719): text, voice (its ASR text), mixed (its
    /// text items), media (none), and a quote as context before the question.
    #[test]
    fn every_message_type_gives_its_text_and_the_quote_its_context() {
        let text = callback(json!({"msgtype": "text", "text": {"content": "hello"}}));
        assert_eq!(text.question().as_deref(), Some("hello"));
        let voice = callback(json!({"msgtype": "voice", "voice": {"content": "明天开会吗"}}));
        assert_eq!(voice.question().as_deref(), Some("明天开会吗"));
        let mixed = callback(json!({"msgtype": "mixed", "mixed": {"msg_item": [
            {"msgtype": "text", "text": {"content": "看这张图"}},
            {"msgtype": "image", "image": {"url": "https://x/1"}},
            {"msgtype": "text", "text": {"content": "是什么？"}}]}}));
        assert_eq!(mixed.question().as_deref(), Some("看这张图\n是什么？"));
        for media in ["image", "file", "video"] {
            let m = callback(json!({"msgtype": media, media: {"url": "https://x/1"}}));
            assert_eq!(m.question(), None, "{media}");
        }
        let quoted = callback(
            json!({"msgtype": "text", "text": {"content": "@bot 总结一下"},
            "quote": {"msgtype": "text", "text": {"content": "这是今日的测试情况\n全部通过"}}}),
        );
        assert_eq!(
            quoted.question().as_deref(),
            Some("> 这是今日的测试情况\n> 全部通过\n\n@bot 总结一下")
        );
        let quoted_image = callback(json!({"msgtype": "text", "text": {"content": "这是什么"},
            "quote": {"msgtype": "image", "image": {"url": "https://x/1"}}}));
        assert_eq!(
            quoted_image.question().as_deref(),
            Some("> [图片]\n\n这是什么")
        );
    }

    /// feedback_event (path/101027): the id the answer carried and its rating.
    #[test]
    fn feedback_events_give_their_id_and_rating() {
        let f = |t: i64| {
            callback(
                json!({"msgtype": "event", "event": {"eventtype": "feedback_event",
                "feedback_event": {"id": "req-1", "type": t, "content": "x",
                                   "inaccurate_reason_list": [1, 3]}}}),
            )
            .feedback()
        };
        assert_eq!(f(1), Some(("req-1".into(), "accurate", 2)));
        assert_eq!(f(2).unwrap().1, "inaccurate");
        assert_eq!(f(3).unwrap().1, "cancelled");
        assert_eq!(f(9), None);
    }
}
