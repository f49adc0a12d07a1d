//! Where an answer goes, and how it gets there.
//!
//! * AI bot, long connection — a stream (`aibot_respond_msg` with the callback's req_id): the
//!   full text so far in each update, `finish:true` last (/document/path/101463). If the stream
//!   cannot be used (a req_id from before a restart, the link down), the final answer goes as a
//!   proactive `aibot_send_msg` to the chat instead.
//! * AI bot, webhook — the stream WeCom polls, and the one-shot response_url for what does not
//!   fit (/document/path/101138).
//! * Self-built app — `message/send` or `appchat/send` (no streaming; the final answer only).
//! * The box's OpenAI-compatible API — [`ApiEvent`]s to the HTTP handler that runs the turn
//!   (the answer so far at every step, its counts, why it stopped, the final text); status
//!   notices ("queued", "regenerating") are not part of an API answer. Stateless: no history
//!   is kept, no inbound row exists, nothing goes to the outbox.
//!
//! Answers longer than one message (20480 bytes for AI bots) end the stream with the first part
//! and continue as new messages, in order.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;
use wecom_edge_model::GenStats;
use wecom_edge_wecom::aibot::Callback;
use wecom_edge_wecom::api::{Api, AppClient, AppMsgType};
use wecom_edge_wecom::callback::{ResponseUrl, WebhookStream};
use wecom_edge_wecom::longconn::{LongConnHandle, StreamReply};
use wecom_edge_wecom::split::{prefix_bytes, split_message, AIBOT_CONTENT_MAX_BYTES};

/// The box's outbound connections, by endpoint.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    /// AI-bot long connections by bot id.
    pub bots: HashMap<String, LongConnHandle>,
    /// Self-built apps by AgentID.
    pub apps: HashMap<i64, AppClient>,
    /// The API transport (response_url posts).
    pub api: Option<Api>,
}

/// What the box needs to answer an accepted message, also after a restart (stored with the
/// inbound row as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// `aibot` or `app`.
    pub channel: String,
    /// Bot id or AgentID.
    pub endpoint: String,
    /// The sender's userid.
    pub user: String,
    /// Group chat id (`None`: a single chat).
    pub chat: Option<String>,
    /// The text as received (mentions included).
    pub text: String,
    /// Long connection: the callback's req_id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_id: Option<String>,
}

impl Origin {
    /// An AI bot's message (`text` as [`Callback::text`] gives it; `req_id` over the long
    /// connection). `chat` is set for group chats only.
    pub fn aibot(bot_id: &str, msg: &Callback, text: String, req_id: Option<String>) -> Origin {
        Origin {
            channel: "aibot".into(),
            endpoint: bot_id.to_string(),
            user: msg.from.userid.clone(),
            chat: msg.chatid.clone().filter(|_| msg.chattype == "group"),
            text,
            req_id,
        }
    }

    /// Where a proactive message to this conversation goes (the group, or the user).
    pub fn chat_or_user(&self) -> &str {
        self.chat.as_deref().unwrap_or(&self.user)
    }
}

/// How one answer is delivered.
#[derive(Debug, Clone)]
pub enum ReplyTo {
    /// AI bot over the long connection.
    LongConnection {
        /// The bot's connection.
        conn: LongConnHandle,
        /// The callback's req_id.
        req_id: String,
        /// Chat (group chatid or userid) for proactive messages.
        conversation: String,
    },
    /// AI bot over webhook callbacks.
    Webhook {
        /// The stream WeCom polls.
        stream: WebhookStream,
        /// The one-shot URL for continuations.
        response_url: Option<ResponseUrl>,
        /// Transport for the URL.
        api: Option<Api>,
    },
    /// Self-built app.
    App {
        /// The app's client.
        client: AppClient,
        /// The member.
        touser: String,
        /// The app's group chat, if the message came from one.
        chatid: Option<String>,
    },
    /// The HTTP handler of an OpenAI API request.
    Api {
        /// Its events.
        events: UnboundedSender<ApiEvent>,
    },
    /// Nowhere (the endpoint is no longer configured): the answer is only audited.
    Nowhere,
}

/// What an API turn tells its HTTP handler, in order: `Text` any number of times, `Usage`
/// when the generator finished, `Stopped` when a stage ended the turn early, `Final` last.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiEvent {
    /// The answer so far (filtered; each one extends the one before).
    Text(String),
    /// The generation's counts and stop reason.
    Usage(GenStats),
    /// A stage ended the turn: its reason (`blocked_in`, `rate_limited`, … see
    /// [`crate::turn::Stop`]); the final text is then the notice.
    Stopped(&'static str),
    /// The final text.
    Final(String),
}

impl ReplyTo {
    /// The way back for a stored origin (after a restart: no webhook stream survives one).
    pub fn for_origin(o: &Origin, out: &Outbound) -> ReplyTo {
        match o.channel.as_str() {
            "aibot" => match (out.bots.get(&o.endpoint), &o.req_id) {
                (Some(conn), Some(req_id)) => ReplyTo::LongConnection {
                    conn: conn.clone(),
                    req_id: req_id.clone(),
                    conversation: o.chat_or_user().to_string(),
                },
                _ => ReplyTo::Nowhere,
            },
            "app" => match o
                .endpoint
                .parse()
                .ok()
                .and_then(|id: i64| out.apps.get(&id))
            {
                Some(client) => ReplyTo::App {
                    client: client.clone(),
                    touser: o.user.clone(),
                    chatid: o.chat.clone(),
                },
                None => ReplyTo::Nowhere,
            },
            _ => ReplyTo::Nowhere,
        }
    }
}

/// One answer in progress.
#[derive(Debug)]
pub struct Replier {
    to: ReplyTo,
    stream: Option<StreamReply>,
    /// The stream failed for a reason other than expiry: the final answer goes proactively.
    broken: bool,
    frames: usize,
}

impl Replier {
    /// An answer to `to`.
    pub fn new(to: ReplyTo) -> Self {
        Replier {
            to,
            stream: None,
            broken: false,
            frames: 0,
        }
    }

    /// Whether this channel shows partial answers.
    pub fn streams(&self) -> bool {
        matches!(
            self.to,
            ReplyTo::LongConnection { .. } | ReplyTo::Webhook { .. } | ReplyTo::Api { .. }
        )
    }

    /// Whether the answer is stateless (an API request: no history, no inbound row).
    pub fn stateless(&self) -> bool {
        matches!(self.to, ReplyTo::Api { .. })
    }

    /// The least time between two updates: `throttle` where each one is a message edit, none
    /// for the API (every delta goes out as it comes).
    pub fn throttle(&self, throttle: std::time::Duration) -> std::time::Duration {
        if self.stateless() {
            std::time::Duration::ZERO
        } else {
            throttle
        }
    }

    /// Shows a status notice in place of the answer ("queued", "regenerating"); nothing on
    /// the API, whose answer carries only the answer.
    ///
    /// # Errors
    /// As [`Replier::update`].
    pub async fn notice(&mut self, text: &str) -> Result<(), String> {
        if self.stateless() {
            return Ok(());
        }
        self.update(text).await
    }

    /// Reports a finished generation's counts (to the API; elsewhere they are only audited).
    pub fn report(&self, stats: &GenStats) {
        if let ReplyTo::Api { events } = &self.to {
            let _ = events.send(ApiEvent::Usage(*stats));
        }
    }

    /// Reports why a stage ended the turn (to the API, which answers with a status for it).
    pub fn stopped(&self, reason: &'static str) {
        if let ReplyTo::Api { events } = &self.to {
            let _ = events.send(ApiEvent::Stopped(reason));
        }
    }

    /// Frames sent so far (updates and finals).
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Shows the answer so far (a no-op where nothing streams).
    ///
    /// # Errors
    /// The transport's error, as text (the stream is then given up; `finish` still delivers).
    pub async fn update(&mut self, text: &str) -> Result<(), String> {
        let shown = prefix_bytes(text, AIBOT_CONTENT_MAX_BYTES);
        match &self.to {
            ReplyTo::LongConnection {
                conn,
                req_id,
                conversation,
            } => {
                if self.broken || shown.is_empty() {
                    return Ok(());
                }
                let s = self
                    .stream
                    .get_or_insert_with(|| conn.stream(req_id, conversation));
                match s.update(shown).await {
                    Ok(()) => {
                        self.frames += 1;
                        Ok(())
                    }
                    Err(e) => {
                        self.broken = true;
                        Err(e.to_string())
                    }
                }
            }
            ReplyTo::Webhook { stream, .. } => {
                stream.set(shown, false);
                self.frames += 1;
                Ok(())
            }
            ReplyTo::Api { events } => {
                self.frames += 1;
                events
                    .send(ApiEvent::Text(text.to_string()))
                    .map_err(|_| "the API client went away".to_string())
            }
            ReplyTo::App { .. } | ReplyTo::Nowhere => Ok(()),
        }
    }

    /// Delivers the whole answer: the stream's final frame (or a proactive message), then any
    /// continuation parts in order.
    ///
    /// # Errors
    /// [`Undelivered`]: the first failed send, and the parts not delivered (in order, each
    /// within one message's limit) when the outbox can still send them proactively.
    pub async fn finish(&mut self, text: &str) -> Result<(), Undelivered> {
        let text = if text.trim().is_empty() && !self.stateless() {
            "…"
        } else {
            text
        };
        match self.to.clone() {
            ReplyTo::LongConnection {
                conn,
                req_id,
                conversation,
            } => {
                let parts = split_message(text, AIBOT_CONTENT_MAX_BYTES);
                let streamed = if self.broken {
                    Err(String::new())
                } else {
                    let s = self
                        .stream
                        .get_or_insert_with(|| conn.stream(&req_id, &conversation));
                    s.finish(&parts[0]).await.map_err(|e| e.to_string())
                };
                let mut from = 0;
                if streamed.is_ok() {
                    self.frames += 1;
                    from = 1;
                } else if let Err(e) = &streamed {
                    if !e.is_empty() {
                        tracing::warn!(%req_id, error = %e, "stream reply failed; sending the answer as a new message");
                    }
                }
                for (i, part) in parts.iter().enumerate().skip(from) {
                    if let Err(e) = conn.send_markdown(&conversation, part).await {
                        return Err(Undelivered {
                            error: e.to_string(),
                            parts: parts[i..].to_vec(),
                        });
                    }
                    self.frames += 1;
                }
                Ok(())
            }
            ReplyTo::Webhook {
                stream,
                response_url,
                api,
            } => {
                let parts = split_message(text, AIBOT_CONTENT_MAX_BYTES);
                stream.set(&parts[0], true);
                self.frames += 1;
                if parts.len() > 1 {
                    let (Some(url), Some(api)) = (response_url, api) else {
                        return Err(Undelivered::lost(
                            "the answer was cut: no response_url for the rest",
                        ));
                    };
                    // One call per URL: the rest goes as one markdown message, cut to fit.
                    let rest = parts[1..].join("\n");
                    url.send_markdown(&api, prefix_bytes(&rest, AIBOT_CONTENT_MAX_BYTES))
                        .await
                        .map_err(|e| Undelivered::lost(e.to_string()))?;
                    self.frames += 1;
                }
                Ok(())
            }
            ReplyTo::App {
                client,
                touser,
                chatid,
            } => {
                let parts = split_message(text, AppMsgType::Text.max_bytes());
                for (i, part) in parts.iter().enumerate() {
                    let sent = match &chatid {
                        Some(c) => client.appchat_send(c, AppMsgType::Text, part).await,
                        None => client.send(&touser, AppMsgType::Text, part).await,
                    };
                    match sent {
                        Ok(s) => self.frames += s.len(),
                        Err(e) => {
                            return Err(Undelivered {
                                error: e.to_string(),
                                parts: parts[i..].to_vec(),
                            })
                        }
                    }
                }
                Ok(())
            }
            ReplyTo::Api { events } => {
                self.frames += 1;
                events
                    .send(ApiEvent::Final(text.to_string()))
                    .map_err(|_| Undelivered::lost("the API client went away"))
            }
            ReplyTo::Nowhere => Err(Undelivered::lost(
                "no configured endpoint to answer through",
            )),
        }
    }
}

/// An answer [`Replier::finish`] could not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    /// The failure, as text.
    pub error: String,
    /// What is still to send, in order; empty when nothing can send it later (a webhook
    /// stream's one-shot response_url, no configured endpoint).
    pub parts: Vec<String>,
}

impl Undelivered {
    fn lost(error: impl Into<String>) -> Self {
        Undelivered {
            error: error.into(),
            parts: Vec::new(),
        }
    }
}

impl std::fmt::Display for Undelivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

/// Sends one outbox part proactively to the conversation `o` came from: `aibot_send_msg` over
/// the bot's long connection (/document/path/101463), or the app's `message/send` /
/// `appchat/send` (/document/path/90236, /90248).
///
/// # Errors
/// The transport's error, as text (the endpoint no longer configured is one too).
pub async fn send_proactive(out: &Outbound, o: &Origin, part: &str) -> Result<(), String> {
    match o.channel.as_str() {
        "aibot" => match out.bots.get(&o.endpoint) {
            Some(conn) => conn
                .send_markdown(o.chat_or_user(), part)
                .await
                .map_err(|e| e.to_string()),
            None => Err(format!("bot {} has no long connection", o.endpoint)),
        },
        "app" => match o
            .endpoint
            .parse()
            .ok()
            .and_then(|id: i64| out.apps.get(&id))
        {
            Some(client) => match &o.chat {
                Some(c) => client.appchat_send(c, AppMsgType::Text, part).await,
                None => client.send(&o.user, AppMsgType::Text, part).await,
            }
            .map(drop)
            .map_err(|e| e.to_string()),
            None => Err(format!("app {} is not configured", o.endpoint)),
        },
        other => Err(format!("unknown channel {other:?}")),
    }
}
