//! Group robot (群机器人 / 消息推送) webhook sender: send-only, keyed by the webhook key.
//!
//! `POST /cgi-bin/webhook/send?key=KEY` with text (≤ 2048 bytes, `mentioned_list`), markdown
//! (≤ 4096) or markdown_v2 (≤ 4096) (/document/path/91770). Each robot may send 20 messages a
//! minute; this client keeps that limit itself (sliding 60 s window, callers wait in order),
//! retries 45009 and −1 with backoff, and surfaces 93000 (bad key / robot removed) at once.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::api::{Api, ApiError, RetryPolicy};
use crate::quota::{Pacer, Window};
use crate::split;

/// Messages per robot per minute (/document/path/91770 消息发送频率限制).
pub const ROBOT_MESSAGES_PER_MINUTE: usize = 20;

/// Group-robot message format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RobotMessage {
    /// `text` with optional `mentioned_list` (userids; `"@all"` for everyone).
    Text {
        /// The text.
        content: String,
        /// Userids to @-mention.
        mentioned_list: Vec<String>,
    },
    /// `markdown` (font colours, `<@userid>`).
    Markdown(String),
    /// `markdown_v2` (tables, lists, code; no colours or mentions).
    MarkdownV2(String),
}

impl RobotMessage {
    fn parts(&self) -> Vec<Value> {
        match self {
            RobotMessage::Text {
                content,
                mentioned_list,
            } => split::split_message(content, split::TEXT_MAX_BYTES)
                .into_iter()
                .enumerate()
                .map(|(i, part)| {
                    let mut text = json!({ "content": part });
                    // Mention once, on the first part.
                    if i == 0 && !mentioned_list.is_empty() {
                        text["mentioned_list"] = json!(mentioned_list);
                    }
                    json!({"msgtype": "text", "text": text})
                })
                .collect(),
            RobotMessage::Markdown(c) => split::split_message(c, split::ROBOT_MARKDOWN_MAX_BYTES)
                .into_iter()
                .map(|part| json!({"msgtype": "markdown", "markdown": {"content": part}}))
                .collect(),
            RobotMessage::MarkdownV2(c) => split::split_message(c, split::ROBOT_MARKDOWN_MAX_BYTES)
                .into_iter()
                .map(|part| json!({"msgtype": "markdown_v2", "markdown_v2": {"content": part}}))
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            RobotMessage::Text { content, .. }
            | RobotMessage::Markdown(content)
            | RobotMessage::MarkdownV2(content) => content.trim().is_empty(),
        }
    }
}

/// One group robot's webhook.
pub struct RobotWebhook {
    api: Api,
    key: String,
    retry: RetryPolicy,
    pacer: Pacer,
    /// Held for a whole message, so parts of two messages never interleave.
    order: Mutex<()>,
}

impl std::fmt::Debug for RobotWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobotWebhook").finish_non_exhaustive()
    }
}

impl RobotWebhook {
    /// A sender for webhook `key` over `api`, 20 messages per 60 s.
    pub fn new(api: Api, key: &str, retry: RetryPolicy) -> Self {
        Self::with_rate(
            api,
            key,
            retry,
            ROBOT_MESSAGES_PER_MINUTE,
            Duration::from_secs(60),
        )
    }

    /// A sender with its own rate (tests use a short window).
    pub fn with_rate(
        api: Api,
        key: &str,
        retry: RetryPolicy,
        per_window: usize,
        window: Duration,
    ) -> Self {
        RobotWebhook {
            api,
            key: key.to_string(),
            retry,
            pacer: Pacer::new(&[Window::new(per_window, window)]),
            order: Mutex::new(()),
        }
    }

    /// Sends `msg`, split into ordered parts; each part waits for a free slot in the rate
    /// window (callers are served in order) and is retried on 45009/−1.
    ///
    /// # Errors
    /// [`ApiError::Invalid`] for empty content; [`ApiError::WeCom`] with 93000 for a bad key or
    /// removed robot (not retried); the last error after retries otherwise.
    pub async fn send(&self, msg: &RobotMessage) -> Result<(), ApiError> {
        if msg.is_empty() {
            return Err(ApiError::Invalid(
                "refusing to send an empty message (WeCom 44004)".into(),
            ));
        }
        let _order = self.order.lock().await;
        for body in msg.parts() {
            let mut attempt = 0;
            loop {
                self.pacer.acquire(&self.key).await;
                let r = self
                    .api
                    .post("/cgi-bin/webhook/send", &[("key", &self.key)], &body)
                    .await;
                match r {
                    Ok(_) => break,
                    Err(e) if e.is_retryable() && attempt < self.retry.retries => {
                        tracing::warn!(error = %e, attempt, "robot webhook send failed, retrying");
                        tokio::time::sleep(self.retry.delay(attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
