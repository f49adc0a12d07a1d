//! WeCom server API clients: the shared HTTP transport and error model, the access_token cache,
//! and the self-built app's `message/send` and `appchat/send`.
//!
//! Every WeCom API answers HTTP 200 with `{"errcode":N,"errmsg":…}`; clients key on `errcode`
//! only ("errmsg仅作参考"). Sources: 获取access_token /document/path/91039, 发送应用消息
//! /document/path/90236, 应用推送消息到群聊 /document/path/90248, 全局错误码 /document/path/90313.
//!
//! Secrets (corpsecret, access_token, webhook key) travel only in query strings, which never
//! appear in [`ApiError`]'s text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::split;

/// WeCom's API origin.
pub const DEFAULT_API_BASE: &str = "https://qyapi.weixin.qq.com";

/// `errcode` values this crate acts on (/document/path/90313).
pub mod errcode {
    /// 系统繁忙 — retry.
    pub const SYSTEM_BUSY: i64 = -1;
    /// 不合法的secret参数 (on gettoken); on other APIs some stacks report an invalid credential.
    pub const INVALID_CREDENTIAL: i64 = 40001;
    /// 不合法的access_token.
    pub const INVALID_ACCESS_TOKEN: i64 = 40014;
    /// 缺少access_token参数.
    pub const MISSING_ACCESS_TOKEN: i64 = 41001;
    /// access_token已过期.
    pub const ACCESS_TOKEN_EXPIRED: i64 = 42001;
    /// 消息内容大小超过限制.
    pub const CONTENT_TOO_LONG: i64 = 45002;
    /// 接口调用超过限制.
    pub const FREQ_OUT_OF_LIMIT: i64 = 45009;
    /// 接口并发调用超过限制.
    pub const CONCURRENCY_OUT_OF_LIMIT: i64 = 45033;
    /// 不安全的访问IP (egress IP not in the app's 企业可信IP).
    pub const UNTRUSTED_IP: i64 = 60020;
    /// 机器人webhookurl不合法或者机器人已经被移除出群.
    pub const INVALID_WEBHOOK: i64 = 93000;
    /// AI bot: stream message update expired (6 minutes after the first frame).
    pub const STREAM_EXPIRED: i64 = 846608;
}

/// A failed WeCom API call. `Display` names the API path, never its query (secrets).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request did not complete (connect, TLS, timeout). `sent` is false when it never left.
    #[error("{path}: request failed: {source}")]
    Transport {
        /// API path, e.g. `/cgi-bin/message/send`.
        path: String,
        /// Whether the request may have reached WeCom (false: connect failed).
        sent: bool,
        /// The transport error, stripped of its URL.
        #[source]
        source: reqwest::Error,
    },
    /// A non-200 HTTP status (WeCom answers 200 even for errors, so this is a proxy or outage).
    #[error("{path}: HTTP status {status}")]
    Status {
        /// API path.
        path: String,
        /// The status code.
        status: u16,
    },
    /// The body was not the JSON expected.
    #[error("{path}: unreadable response: {detail}")]
    Decode {
        /// API path.
        path: String,
        /// What was wrong.
        detail: String,
    },
    /// WeCom answered with a non-zero errcode.
    #[error("{path}: WeCom errcode {errcode}: {errmsg}{}", hint(*.errcode))]
    WeCom {
        /// API path.
        path: String,
        /// WeCom's errcode.
        errcode: i64,
        /// WeCom's errmsg (reference only).
        errmsg: String,
    },
    /// The request was refused before sending (empty content, bad argument).
    #[error("{0}")]
    Invalid(String),
}

fn hint(code: i64) -> &'static str {
    match code {
        errcode::UNTRUSTED_IP => " (add this box's public egress IP to the app's 企业可信IP)",
        errcode::INVALID_CREDENTIAL => " (check the CorpID and the app Secret)",
        errcode::INVALID_WEBHOOK => {
            " (the robot's webhook key is wrong, or the robot was removed from the group)"
        }
        errcode::STREAM_EXPIRED => " (stream updates stop 6 minutes after the first frame)",
        _ => "",
    }
}

impl ApiError {
    /// WeCom's errcode, when WeCom answered with one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            ApiError::WeCom { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }

    /// Whether retrying the same request can help: −1, 45009, 45033, a connect failure, or a
    /// 5xx. A timeout after the request left is not retried (it may have been delivered).
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::WeCom { errcode, .. } => matches!(
                *errcode,
                errcode::SYSTEM_BUSY
                    | errcode::FREQ_OUT_OF_LIMIT
                    | errcode::CONCURRENCY_OUT_OF_LIMIT
            ),
            ApiError::Transport { sent, .. } => !sent,
            ApiError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// Whether the access_token used was rejected (40014, 42001, 40001): refetch and retry once.
    pub fn is_token_rejected(&self) -> bool {
        matches!(
            self.errcode(),
            Some(
                errcode::INVALID_ACCESS_TOKEN
                    | errcode::ACCESS_TOKEN_EXPIRED
                    | errcode::INVALID_CREDENTIAL
            )
        )
    }
}

/// Backoff for retryable failures: `base × 2^attempt` capped at `max`, at most `retries` retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// First delay.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// 3 retries: 1 s, 2 s, 4 s (WeCom: "系统繁忙 … 重试 ≤3 次").
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(1 << attempt.min(16)).min(self.max)
    }
}

/// HTTP transport to WeCom's API origin (or the simulator's).
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: url::Url,
}

impl Api {
    /// A transport to `base` (e.g. [`DEFAULT_API_BASE`] or `http://127.0.0.1:PORT`), rustls TLS,
    /// 10 s connect and 30 s request timeouts.
    ///
    /// # Errors
    /// [`ApiError::Invalid`] for an unparsable base URL.
    pub fn new(base: &str) -> Result<Self, ApiError> {
        let base = url::Url::parse(base)
            .map_err(|e| ApiError::Invalid(format!("API base URL {base:?}: {e}")))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ApiError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Api { http, base })
    }

    /// The origin this transport talks to.
    pub fn base(&self) -> &url::Url {
        &self.base
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> url::Url {
        let mut u = self.base.clone();
        u.set_path(path);
        u.query_pairs_mut().extend_pairs(query);
        u
    }

    /// `GET path?query` → the JSON body, errcode checked.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ApiError> {
        let req = self.http.get(self.url(path, query));
        self.send(path, req).await
    }

    /// `POST path?query` with a JSON body → the JSON body, errcode checked.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn post(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: &Value,
    ) -> Result<Value, ApiError> {
        let req = self.http.post(self.url(path, query)).json(body);
        self.send(path, req).await
    }

    /// `POST` to an absolute URL (an AI bot's `response_url`), JSON body, errcode checked.
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn post_url(&self, url: &str, body: &Value) -> Result<Value, ApiError> {
        let parsed =
            url::Url::parse(url).map_err(|e| ApiError::Invalid(format!("response_url: {e}")))?;
        let path = parsed.path().to_string();
        self.send(&path, self.http.post(parsed).json(body)).await
    }

    async fn send(&self, path: &str, req: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let transport = |e: reqwest::Error| ApiError::Transport {
            path: path.to_string(),
            sent: !e.is_connect(),
            source: e.without_url(),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            return Err(ApiError::Status {
                path: path.to_string(),
                status: status.as_u16(),
            });
        }
        let bytes = resp.bytes().await.map_err(transport)?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            path: path.to_string(),
            detail: e.to_string(),
        })?;
        match v.get("errcode").and_then(Value::as_i64).unwrap_or(0) {
            0 => Ok(v),
            code => Err(ApiError::WeCom {
                path: path.to_string(),
                errcode: code,
                errmsg: v
                    .get("errmsg")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            }),
        }
    }
}

/// Runs `f` again on retryable errors per `policy`.
pub(crate) async fn with_retries<T, F, Fut>(policy: RetryPolicy, mut f: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if e.is_retryable() && attempt < policy.retries => {
                tracing::warn!(error = %e, attempt, "WeCom API call failed, retrying");
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// The access_token of one app (one CorpID + app Secret), cached, single-flight.
///
/// * One `gettoken` at a time: concurrent callers wait for the fetch in flight
///   ("不能频繁调用gettoken接口").
/// * Refreshed before expiry: a token is reused until 5 minutes (or a tenth of its lifetime,
///   whichever is less) before `expires_in` runs out.
/// * [`AccessToken::invalidate`] drops a token WeCom rejected (40014/42001/40001) unless a newer
///   one already replaced it.
pub struct AccessToken {
    api: Api,
    corpid: String,
    secret: String,
    retry: RetryPolicy,
    cached: Mutex<Option<Cached>>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("corpid", &self.corpid)
            .finish_non_exhaustive()
    }
}

impl AccessToken {
    /// A cache for `corpid` + app `secret` over `api`.
    pub fn new(api: Api, corpid: &str, secret: &str, retry: RetryPolicy) -> Self {
        AccessToken {
            api,
            corpid: corpid.to_string(),
            secret: secret.to_string(),
            retry,
            cached: Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    /// The current token, fetching it when absent or near expiry.
    ///
    /// # Errors
    /// `gettoken`'s [`ApiError`] (40001 wrong secret, 60020 untrusted IP, … after retries of
    /// the retryable ones).
    pub async fn get(&self) -> Result<String, ApiError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        let query = [
            ("corpid", self.corpid.as_str()),
            ("corpsecret", self.secret.as_str()),
        ];
        let v = with_retries(self.retry, || {
            self.fetches.fetch_add(1, Ordering::Relaxed);
            self.api.get("/cgi-bin/gettoken", &query)
        })
        .await?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Decode {
                path: "/cgi-bin/gettoken".into(),
                detail: "no access_token in the answer".into(),
            })?
            .to_string();
        let life = Duration::from_secs(v.get("expires_in").and_then(Value::as_u64).unwrap_or(7200));
        let margin = (life / 10).min(Duration::from_secs(300));
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + life - margin,
        });
        tracing::info!(corpid = %self.corpid, expires_in = life.as_secs(), "access_token fetched");
        Ok(token)
    }

    /// Forgets `stale` if it is still the cached token.
    pub async fn invalidate(&self, stale: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == stale) {
            *cached = None;
        }
    }

    /// How many `gettoken` requests this cache has made.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }
}

/// What `message/send` reported for one part.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sent {
    /// WeCom's msgid (for recall), when given.
    pub msgid: Option<String>,
    /// Recipients WeCom refused (`invaliduser`, `|`-separated), when any.
    pub invaliduser: Option<String>,
}

/// Message format of an app message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppMsgType {
    /// `text`, ≤ 2048 bytes per message.
    Text,
    /// `markdown`, ≤ 2048 bytes per message.
    Markdown,
}

impl AppMsgType {
    fn name(self) -> &'static str {
        match self {
            AppMsgType::Text => "text",
            AppMsgType::Markdown => "markdown",
        }
    }

    /// The most bytes of content one message of this type carries.
    pub fn max_bytes(self) -> usize {
        match self {
            AppMsgType::Text => split::TEXT_MAX_BYTES,
            AppMsgType::Markdown => split::APP_MARKDOWN_MAX_BYTES,
        }
    }
}

/// A self-built app (自建应用): sends as the app with its access_token.
#[derive(Debug, Clone)]
pub struct AppClient {
    api: Api,
    agentid: i64,
    token: Arc<AccessToken>,
    retry: RetryPolicy,
    pacer: crate::quota::Pacer,
}

impl AppClient {
    /// An app client for `agentid` whose token comes from `token` (share one [`AccessToken`]
    /// per app Secret).
    pub fn new(api: Api, agentid: i64, token: Arc<AccessToken>, retry: RetryPolicy) -> Self {
        AppClient {
            api,
            agentid,
            token,
            retry,
            pacer: crate::quota::Pacer::new(&crate::quota::APP_MEMBER),
        }
    }

    /// The same client keeping `windows` per recipient instead of WeCom's 30/min and 1000/h
    /// per member (tests).
    pub fn with_quota(mut self, windows: &[crate::quota::Window]) -> Self {
        self.pacer = crate::quota::Pacer::new(windows);
        self
    }

    /// The token cache.
    pub fn token(&self) -> &AccessToken {
        &self.token
    }

    /// POSTs `body` to `path?access_token=…`: a rejected token is dropped and the call retried
    /// once with a fresh one; retryable errors back off per the [`RetryPolicy`].
    ///
    /// # Errors
    /// [`ApiError`].
    pub async fn call(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        let mut token_retried = false;
        loop {
            let token = self.token.get().await?;
            let query = [("access_token", token.as_str())];
            let res = with_retries(self.retry, || self.api.post(path, &query, body)).await;
            match res {
                Err(e) if e.is_token_rejected() && !token_retried => {
                    tracing::warn!(error = %e, "access_token rejected; fetching a new one");
                    self.token.invalidate(&token).await;
                    token_retried = true;
                }
                other => return other,
            }
        }
    }

    /// `message/send` to users (`touser` = `UserID1|UserID2`, or `@all`), split into ordered
    /// parts of ≤ 2048 bytes; each part is sent after the previous one succeeded, and waits
    /// for a slot in the recipient's quota (WeCom drops the excess silently).
    ///
    /// # Errors
    /// [`ApiError::Invalid`] for empty content; the first part's failure otherwise (later parts
    /// are not sent).
    pub async fn send(
        &self,
        touser: &str,
        kind: AppMsgType,
        content: &str,
    ) -> Result<Vec<Sent>, ApiError> {
        self.send_parts("/cgi-bin/message/send", ("touser", touser), kind, content)
            .await
    }

    /// `appchat/send` to a group chat the app created, split like [`AppClient::send`].
    ///
    /// # Errors
    /// As [`AppClient::send`].
    pub async fn appchat_send(
        &self,
        chatid: &str,
        kind: AppMsgType,
        content: &str,
    ) -> Result<Vec<Sent>, ApiError> {
        self.send_parts("/cgi-bin/appchat/send", ("chatid", chatid), kind, content)
            .await
    }

    async fn send_parts(
        &self,
        path: &str,
        to: (&str, &str),
        kind: AppMsgType,
        content: &str,
    ) -> Result<Vec<Sent>, ApiError> {
        if content.trim().is_empty() {
            return Err(ApiError::Invalid(
                "refusing to send an empty message (WeCom 44004)".into(),
            ));
        }
        let mut sent = Vec::new();
        for part in split::split_message(content, kind.max_bytes()) {
            let mut body = json!({ to.0: to.1, "msgtype": kind.name(), kind.name(): {"content": part}, "safe": 0 });
            if path == "/cgi-bin/message/send" {
                body["agentid"] = json!(self.agentid);
            }
            self.pacer.acquire(&format!("{}:{}", to.0, to.1)).await;
            let v = self.call(path, &body).await?;
            let field = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            sent.push(Sent {
                msgid: field("msgid"),
                invaliduser: field("invaliduser"),
            });
        }
        Ok(sent)
    }
}
