//! The box's configuration: one TOML file (`/etc/wecom-edge/edge.toml`; `edge.example.toml` in
//! the repository documents every key), checked as a whole so that every problem is reported at
//! once, one line each.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
pub use wecom_edge_actors::limiter::Limits;
use wecom_edge_actors::model::llama::CacheType;
use wecom_edge_actors::session::ReasoningMode;
use wecom_edge_actors::wecom::crypto;

/// The default path on the box.
pub const DEFAULT_CONFIG: &str = "/etc/wecom-edge/edge.toml";

/// The model `[model] path` defaults to when nothing was imported: SmolLM2-135M-Instruct Q4_1,
/// installed by image/build.
pub const BUILTIN_MODEL: &str = "/usr/share/wecom-edge/models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The model imported from a configuration stick's `models/` directory, beside the
/// configuration file in `config_dir`: `models/active.gguf`, a symbolic link that
/// systemd/wecom-edge-config-import points at the checked copy (`models/previous.gguf` keeps
/// the one before it, for rollback). Used where `[model] path` is unset.
pub fn imported_model(config_dir: &Path) -> PathBuf {
    config_dir.join("models").join("active.gguf")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(rename = "box", default)]
    box_: RawBox,
    #[serde(default)]
    model: RawModel,
    #[serde(default)]
    sessions: RawSessions,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    aibot: Vec<RawAiBot>,
    #[serde(default)]
    app: Vec<RawApp>,
    #[serde(default)]
    webhook: Vec<RawWebhook>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBox {
    data_dir: Option<PathBuf>,
    admin_listen: Option<SocketAddr>,
    callback_listen: Option<SocketAddr>,
    api_base: Option<String>,
    ws_url: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawModel {
    path: Option<PathBuf>,
    device: Option<String>,
    threads: Option<usize>,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    cache_type: Option<String>,
    max_prompt_tokens: Option<usize>,
    max_message_tokens: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    scope: Option<String>,
    idle_timeout: Option<String>,
    reasoning: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAiBot {
    bot_id: String,
    #[serde(default)]
    mode: Option<String>,
    secret: Option<String>,
    token: Option<String>,
    encoding_aes_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    corpid: String,
    agentid: i64,
    secret: String,
    token: String,
    encoding_aes_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    name: String,
    key: String,
    #[serde(default)]
    alerts: bool,
}

/// A secret's value; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// How an AI bot receives messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AiBotMode {
    /// The long connection, authenticated with the bot secret.
    LongConnection {
        /// Long-connection secret.
        secret: Secret,
    },
    /// Encrypted webhook callbacks.
    Webhook {
        /// Callback Token.
        token: Secret,
        /// Callback EncodingAESKey.
        encoding_aes_key: Secret,
    },
}

/// One AI bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiBot {
    /// The bot id.
    pub bot_id: String,
    /// How it receives.
    pub mode: AiBotMode,
}

/// One self-built app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// CorpID.
    pub corpid: String,
    /// AgentID.
    pub agentid: i64,
    /// App Secret.
    pub secret: Secret,
    /// Callback Token.
    pub token: Secret,
    /// Callback EncodingAESKey.
    pub encoding_aes_key: Secret,
}

/// One group robot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// A name for logs.
    pub name: String,
    /// The webhook key.
    pub key: Secret,
    /// Whether alerts go to it.
    pub alerts: bool,
}

/// Whose context a message joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionScope {
    /// Each member of a group on their own.
    User,
    /// One context per group chat.
    Group,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (SQLite).
    pub data_dir: PathBuf,
    /// Health/metrics listener.
    pub admin_listen: SocketAddr,
    /// Callback listener, when any webhook bot or app needs one.
    pub callback_listen: Option<SocketAddr>,
    /// WeCom API origin.
    pub api_base: String,
    /// Long-connection endpoint.
    pub ws_url: String,
    /// Model file.
    pub model_path: PathBuf,
    /// Whether `model_path` is the model imported from the configuration stick
    /// ([`imported_model`]; `[model] path` unset).
    pub model_imported: bool,
    /// `auto`, `cpu` or `cuda`.
    pub device: String,
    /// CPU threads (0 = all).
    pub threads: usize,
    /// Longest answer in tokens.
    pub max_tokens: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// KV cache element type (`f16`, llama.cpp's default, or `f32`).
    pub cache_type: CacheType,
    /// Most tokens of one turn's prompt (system prompt, history, question); older history is
    /// left out to stay within it.
    pub max_prompt_tokens: usize,
    /// Most tokens of one message; a longer one is answered with a polite refusal.
    pub max_message_tokens: usize,
    /// Session scope.
    pub scope: SessionScope,
    /// Idle session timeout.
    pub idle_timeout: Duration,
    /// How a reasoning model's `<think>` part is shown.
    pub reasoning: ReasoningMode,
    /// Admission limits.
    pub limits: Limits,
    /// AI bots.
    pub aibots: Vec<AiBot>,
    /// Self-built apps.
    pub apps: Vec<App>,
    /// Group robots.
    pub webhooks: Vec<Webhook>,
    /// Non-fatal findings (e.g. a group-readable file).
    pub warnings: Vec<String>,
}

impl Config {
    /// The effective configuration, one setting per line, secrets left out.
    pub fn summary(&self) -> String {
        let mut out = vec![
            format!("data_dir         {}", self.data_dir.display()),
            format!("admin_listen     {}", self.admin_listen),
            format!(
                "callback_listen  {}",
                self.callback_listen
                    .map_or("(none)".into(), |a| a.to_string())
            ),
            format!("api_base         {}", self.api_base),
            format!("ws_url           {}", self.ws_url),
            format!(
                "model            {}{} on {} ({} threads), max_tokens {}, temperature {}, {} KV cache",
                self.model_path.display(),
                if self.model_imported {
                    " (imported)"
                } else {
                    ""
                },
                self.device,
                if self.threads == 0 {
                    "all".to_string()
                } else {
                    self.threads.to_string()
                },
                self.max_tokens,
                self.temperature,
                self.cache_type.name()
            ),
            format!(
                "prompt budget    {} tokens per turn, {} per message",
                self.max_prompt_tokens, self.max_message_tokens
            ),
            format!(
                "sessions         per {}, idle after {}, reasoning {}",
                match self.scope {
                    SessionScope::User => "user",
                    SessionScope::Group => "group",
                },
                humantime::format_duration(self.idle_timeout),
                match self.reasoning {
                    ReasoningMode::Hidden => "hidden",
                    ReasoningMode::Quoted => "quoted",
                }
            ),
            format!(
                "limits           {}/min per user, {}/min per chat, {} at once, {} waiting \
                 (≤ {} s)",
                self.limits.per_user_per_minute,
                self.limits.per_chat_per_minute,
                self.limits.max_active,
                self.limits.max_queued,
                self.limits.max_wait_seconds
            ),
        ];
        for b in &self.aibots {
            let mode = match &b.mode {
                AiBotMode::LongConnection { secret } => {
                    format!("long connection (secret: {} bytes)", secret.expose().len())
                }
                AiBotMode::Webhook {
                    token,
                    encoding_aes_key,
                } => format!(
                    "webhook (token: {} bytes, EncodingAESKey: {} chars)",
                    token.expose().len(),
                    encoding_aes_key.expose().len()
                ),
            };
            out.push(format!("aibot            {} — {mode}", b.bot_id));
        }
        for a in &self.apps {
            out.push(format!(
                "app              {} of {} (secret {} bytes, token {} bytes, key {} chars)",
                a.agentid,
                a.corpid,
                a.secret.expose().len(),
                a.token.expose().len(),
                a.encoding_aes_key.expose().len()
            ));
        }
        for w in &self.webhooks {
            out.push(format!(
                "group robot      {}{} (key {} bytes)",
                w.name,
                if w.alerts { ", alerts" } else { "" },
                w.key.expose().len()
            ));
        }
        out.join("\n")
    }
}

/// The credential ID under which `systemd/wecom-edge.service` loads the directory
/// `/etc/wecom-edge/credentials` (`LoadCredential=wecom-edge:/etc/wecom-edge/credentials`);
/// systemd names each file in it `wecom-edge_{file}` (systemd.exec(5), LoadCredential=).
pub const CREDENTIAL_DIR_ID: &str = "wecom-edge";

/// Resolves a secret reference: `env:NAME`, `credential:NAME` (the file `NAME`, else
/// `wecom-edge_NAME`, in `$CREDENTIALS_DIRECTORY`), or the literal value.
fn resolve(what: &str, v: &str, credentials: Option<&Path>, problems: &mut Vec<String>) -> Secret {
    let value = if let Some(name) = v.strip_prefix("env:") {
        match std::env::var(name) {
            Ok(s) if !s.is_empty() => Some(s),
            _ => {
                problems.push(format!("{what}: environment variable {name} is not set"));
                None
            }
        }
    } else if let Some(name) = v.strip_prefix("credential:") {
        match credentials {
            None => {
                problems.push(format!(
                    "{what}: credential {name:?} requested but $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)"
                ));
                None
            }
            Some(dir) => match std::fs::read_to_string(dir.join(name)).or_else(|e| {
                // The unit loads /etc/wecom-edge/credentials as one directory credential,
                // which systemd exposes file by file as `wecom-edge_{file}`.
                std::fs::read_to_string(dir.join(format!("{CREDENTIAL_DIR_ID}_{name}")))
                    .map_err(|_| e)
            }) {
                Ok(s) => Some(s.trim_end_matches(['\n', '\r']).to_string()),
                Err(e) => {
                    problems.push(format!("{what}: credential {name:?}: {e}"));
                    None
                }
            },
        }
    } else if v.is_empty() {
        problems.push(format!("{what} is empty"));
        None
    } else {
        Some(v.to_string())
    };
    Secret(value.unwrap_or_default())
}

fn parse_duration(what: &str, v: &str, problems: &mut Vec<String>) -> Duration {
    humantime::parse_duration(v).unwrap_or_else(|e| {
        problems.push(format!(
            "{what}: {v:?} is not a duration like 10m or 90s ({e})"
        ));
        Duration::from_secs(600)
    })
}

impl Config {
    /// Reads and validates `path`. `credentials` is systemd's `$CREDENTIALS_DIRECTORY`.
    ///
    /// # Errors
    /// Every problem found, one message each.
    pub fn load(path: &Path, credentials: Option<&Path>) -> Result<Config, Vec<String>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        let mut warnings = Vec::new();
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                // Under DynamicUser= the file must be world-readable; that is fine as long as
                // the secrets live in credentials (LoadCredential=) or the environment.
                if mode & 0o077 != 0 && text.lines().any(is_literal_secret) {
                    warnings.push(format!(
                        "{} is readable by {} (mode {mode:03o}) and may hold secrets: chmod 600 it, or move secrets to env:/credential: references",
                        path.display(),
                        if mode & 0o007 != 0 { "everyone" } else { "its group" }
                    ));
                }
            }
        }
        Self::parse_in(&text, credentials, warnings, path.parent()).map_err(|p| {
            p.into_iter()
                .map(|m| format!("{}: {m}", path.display()))
                .collect()
        })
    }

    /// Validates TOML text (as if it had no directory: no imported model is looked for).
    ///
    /// # Errors
    /// Every problem found.
    pub fn parse(
        text: &str,
        credentials: Option<&Path>,
        warnings: Vec<String>,
    ) -> Result<Config, Vec<String>> {
        Self::parse_in(text, credentials, warnings, None)
    }

    /// Validates TOML text read from a file in `config_dir`: with `[model] path` unset the
    /// model is [`imported_model`]`(config_dir)` where that exists, else the built-in
    /// [`BUILTIN_MODEL`].
    ///
    /// # Errors
    /// Every problem found.
    pub fn parse_in(
        text: &str,
        credentials: Option<&Path>,
        warnings: Vec<String>,
        config_dir: Option<&Path>,
    ) -> Result<Config, Vec<String>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| vec![syntax_error(text, &e)])?;
        let mut p = Vec::new();
        let state_dir = std::env::var_os("STATE_DIRECTORY").map(PathBuf::from);
        let data_dir = raw
            .box_
            .data_dir
            .or(state_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/wecom-edge"));
        let imported = config_dir
            .map(imported_model)
            .filter(|_| raw.model.path.is_none())
            .filter(|p| p.exists());
        let model_imported = imported.is_some();
        let model_path = raw
            .model
            .path
            .or(imported)
            .unwrap_or_else(|| PathBuf::from(BUILTIN_MODEL));
        if !model_path.exists() {
            p.push(format!(
                "model.path: {} does not exist",
                model_path.display()
            ));
        }
        let device = raw.model.device.unwrap_or_else(|| "auto".into());
        if !matches!(device.as_str(), "auto" | "cpu" | "cuda") {
            p.push(format!("model.device: {device:?} is not auto, cpu or cuda"));
        }
        let max_tokens = raw.model.max_tokens.unwrap_or(512);
        if max_tokens == 0 {
            p.push("model.max_tokens must be at least 1".into());
        }
        let max_prompt_tokens = raw.model.max_prompt_tokens.unwrap_or(2048);
        let max_message_tokens = raw.model.max_message_tokens.unwrap_or(1536);
        if max_message_tokens == 0 || max_message_tokens > max_prompt_tokens {
            p.push(format!(
                "model.max_message_tokens: {max_message_tokens} must be between 1 and model.max_prompt_tokens ({max_prompt_tokens})"
            ));
        }
        let cache_type = match raw.model.cache_type.as_deref().map(CacheType::parse) {
            None => CacheType::default(),
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                p.push(format!("model.cache_type: {e}"));
                CacheType::default()
            }
        };
        let temperature = raw.model.temperature.unwrap_or(0.7);
        if !(0.0..=2.0).contains(&temperature) {
            p.push(format!("model.temperature: {temperature} is outside 0..=2"));
        }
        let scope = match raw.sessions.scope.as_deref().unwrap_or("user") {
            "user" => SessionScope::User,
            "group" => SessionScope::Group,
            other => {
                p.push(format!(
                    "sessions.scope: {other:?} is not \"user\" or \"group\""
                ));
                SessionScope::User
            }
        };
        let reasoning = match raw.sessions.reasoning.as_deref() {
            None | Some("hidden") => ReasoningMode::Hidden,
            Some("quoted") => ReasoningMode::Quoted,
            Some(other) => {
                p.push(format!(
                    "sessions.reasoning: \"{other}\" is not one of \"hidden\", \"quoted\""
                ));
                ReasoningMode::Hidden
            }
        };
        let idle_timeout = parse_duration(
            "sessions.idle_timeout",
            raw.sessions.idle_timeout.as_deref().unwrap_or("10m"),
            &mut p,
        );
        let l = &raw.limits;
        for (k, v) in [
            ("limits.per_user_per_minute", l.per_user_per_minute),
            ("limits.per_chat_per_minute", l.per_chat_per_minute),
            ("limits.max_queued", l.max_queued),
            ("limits.max_active", l.max_active),
            ("limits.max_wait_seconds", l.max_wait_seconds),
        ] {
            if v == 0 {
                p.push(format!("{k} must be at least 1"));
            }
        }

        let mut aibots = Vec::new();
        let mut needs_callback = false;
        for (i, b) in raw.aibot.iter().enumerate() {
            let at = format!("aibot[{i}] ({})", b.bot_id);
            if b.bot_id.trim().is_empty() {
                p.push(format!("aibot[{i}].bot_id is empty"));
            }
            if raw.aibot[..i].iter().any(|o| o.bot_id == b.bot_id) {
                p.push(format!(
                    "{at}: bot_id appears twice (WeCom allows one connection per bot)"
                ));
            }
            let mode = match b.mode.as_deref().unwrap_or("long_connection") {
                "long_connection" => match &b.secret {
                    Some(s) => AiBotMode::LongConnection {
                        secret: resolve(&format!("{at}.secret"), s, credentials, &mut p),
                    },
                    None => {
                        p.push(format!("{at}: a long-connection bot needs secret"));
                        continue;
                    }
                },
                "webhook" => {
                    needs_callback = true;
                    match (&b.token, &b.encoding_aes_key) {
                        (Some(t), Some(k)) => {
                            let token = resolve(&format!("{at}.token"), t, credentials, &mut p);
                            let key =
                                resolve(&format!("{at}.encoding_aes_key"), k, credentials, &mut p);
                            check_key(&format!("{at}.encoding_aes_key"), &key, &mut p);
                            AiBotMode::Webhook {
                                token,
                                encoding_aes_key: key,
                            }
                        }
                        _ => {
                            p.push(format!(
                                "{at}: a webhook bot needs token and encoding_aes_key"
                            ));
                            continue;
                        }
                    }
                }
                other => {
                    p.push(format!(
                        "{at}.mode: {other:?} is not long_connection or webhook"
                    ));
                    continue;
                }
            };
            aibots.push(AiBot {
                bot_id: b.bot_id.clone(),
                mode,
            });
        }
        let mut apps = Vec::new();
        for (i, a) in raw.app.iter().enumerate() {
            needs_callback = true;
            let at = format!("app[{i}] ({})", a.agentid);
            if raw.app[..i]
                .iter()
                .any(|o| o.agentid == a.agentid && o.corpid == a.corpid)
            {
                p.push(format!("{at}: agentid appears twice"));
            }
            let key = resolve(
                &format!("{at}.encoding_aes_key"),
                &a.encoding_aes_key,
                credentials,
                &mut p,
            );
            check_key(&format!("{at}.encoding_aes_key"), &key, &mut p);
            apps.push(App {
                corpid: a.corpid.clone(),
                agentid: a.agentid,
                secret: resolve(&format!("{at}.secret"), &a.secret, credentials, &mut p),
                token: resolve(&format!("{at}.token"), &a.token, credentials, &mut p),
                encoding_aes_key: key,
            });
        }
        let webhooks = raw
            .webhook
            .iter()
            .enumerate()
            .map(|(i, w)| Webhook {
                name: w.name.clone(),
                key: resolve(
                    &format!("webhook[{i}] ({}).key", w.name),
                    &w.key,
                    credentials,
                    &mut p,
                ),
                alerts: w.alerts,
            })
            .collect();
        if aibots.is_empty() && apps.is_empty() && p.is_empty() {
            p.push("no [[aibot]] or [[app]]: the box would have nobody to answer".into());
        }
        if needs_callback && raw.box_.callback_listen.is_none() {
            p.push("box.callback_listen is needed by webhook-mode bots and apps".into());
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Config {
            data_dir,
            admin_listen: raw
                .box_
                .admin_listen
                .unwrap_or_else(|| "127.0.0.1:9620".parse().expect("literal")),
            callback_listen: raw.box_.callback_listen,
            api_base: raw
                .box_
                .api_base
                .unwrap_or_else(|| wecom_edge_actors::wecom::api::DEFAULT_API_BASE.into()),
            ws_url: raw
                .box_
                .ws_url
                .unwrap_or_else(|| wecom_edge_actors::wecom::aibot::DEFAULT_WS_URL.into()),
            model_path,
            model_imported,
            device,
            threads: raw.model.threads.unwrap_or(0),
            max_tokens,
            temperature,
            cache_type,
            max_prompt_tokens,
            max_message_tokens,
            scope,
            idle_timeout,
            reasoning,
            limits: raw.limits,
            aibots,
            apps,
            webhooks,
            warnings,
        })
    }
}

/// Whether a config line writes a secret literally (not as an env:/credential: reference).
/// A TOML error as one line without the source text: `line L, column C: message`, with every
/// quoted value in the message replaced by `"…"`.
///
/// toml's own `Display` quotes the offending line of the file, and serde's messages quote the
/// value (`invalid type: string "…"`); either may be a literal secret, and config errors reach
/// the journal and, through the config import, the console.
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map(|s| {
        let before = &text[..s.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {column}: ")
    });
    let msg = redact_quoted(e.message().trim());
    format!("{}{}", at.unwrap_or_default(), msg.replace('\n', " "))
}

/// `s` with the contents of every `"…"` run replaced by `…` (serde quotes values with `"`,
/// in Debug form; backticked key names, which serde uses for fields, are kept).
fn redact_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut open: Option<char> = None;
    for c in s.chars() {
        match open {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '"' {
                    open = Some(c);
                }
            }
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out
}

fn is_literal_secret(line: &str) -> bool {
    let Some((k, v)) = line.split_once('=') else {
        return false;
    };
    let k = k.trim();
    let v = v.trim().trim_matches('"');
    !k.starts_with('#')
        && matches!(k, "secret" | "token" | "encoding_aes_key" | "key")
        && !v.starts_with("env:")
        && !v.starts_with("credential:")
}

fn check_key(what: &str, key: &Secret, p: &mut Vec<String>) {
    if !key.expose().is_empty() {
        if let Err(e) = crypto::decode_encoding_aes_key(key.expose()) {
            p.push(format!("{what}: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> String {
        let m = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"); // any existing file
        format!("[model]\npath = \"{m}\"\n")
    }

    #[test]
    fn the_example_parses_with_its_credential_as_the_unit_loads_it() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/edge.example.toml"))
                .unwrap();
        let text = text.replace(
            "# path = \"/usr/share/wecom-edge/models/SmolLM2-135M-Instruct.Q4_1.gguf\"",
            &format!(
                "path = \"{}\"",
                concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")
            ),
        );
        // As LoadCredential=wecom-edge:/etc/wecom-edge/credentials exposes the file.
        let creds = std::env::temp_dir().join(format!("wecom-edge-example-{}", std::process::id()));
        std::fs::create_dir_all(&creds).unwrap();
        std::fs::write(creds.join("wecom-edge_aibot-secret"), "s3cret\n").unwrap();
        let quoted = text.replace("reasoning = \"hidden\"", "reasoning = \"quoted\"");
        let c = Config::parse(&quoted, Some(&creds), vec![]).unwrap();
        assert_eq!(c.reasoning, ReasoningMode::Quoted);
        let c = Config::parse(&text, Some(&creds), vec![]).unwrap();
        std::fs::remove_dir_all(&creds).unwrap();
        assert_eq!(c.aibots.len(), 1);
        assert_eq!(
            c.aibots[0].mode,
            AiBotMode::LongConnection {
                secret: Secret("s3cret".into())
            }
        );
        assert_eq!(c.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.reasoning, ReasoningMode::Hidden);
        assert_eq!(c.limits, Limits::default());
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn every_problem_is_reported_once() {
        let text = format!(
            "{}[sessions]\nscope = \"team\"\nidle_timeout = \"soon\"\nreasoning = \"shown\"\n[limits]\nmax_queued = 0\n\
             [[aibot]]\nbot_id = \"b\"\nsecret = \"env:WECOM_EDGE_TEST_UNSET_VAR\"\n\
             [[aibot]]\nbot_id = \"b\"\nsecret = \"x\"\n\
             [[aibot]]\nbot_id = \"w\"\nmode = \"webhook\"\ntoken = \"t\"\nencoding_aes_key = \"short\"\n\
             [[app]]\ncorpid = \"ww1\"\nagentid = 2\nsecret = \"credential:app-secret\"\ntoken = \"t\"\nencoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n",
            model()
        );
        let p = Config::parse(&text, None, vec![]).unwrap_err();
        let want = [
            "sessions.scope",
            "sessions.idle_timeout",
            "sessions.reasoning",
            "limits.max_queued",
            "WECOM_EDGE_TEST_UNSET_VAR is not set",
            "bot_id appears twice",
            "aibot[2] (w).encoding_aes_key",
            "CREDENTIALS_DIRECTORY",
            "box.callback_listen",
        ];
        for w in want {
            assert_eq!(
                p.iter().filter(|m| m.contains(w)).count(),
                1,
                "{w} in {p:#?}"
            );
        }
        assert_eq!(p.len(), want.len(), "{p:#?}");
    }

    /// A syntax error, a type error and an unknown key next to a literal secret: the error
    /// names the place, never the value (issue 11 item 9).
    #[test]
    fn config_errors_never_print_values() {
        let secret = "Sup3r-Secret-Value";
        for (text, want) in [
            (
                format!("[[aibot]]\nbot_id = \"b\"\nsecret = \"{secret}\n"),
                "line 3",
            ),
            (
                format!(
                    "[[aibot]]\nbot_id = \"b\"\nsecret = \"{secret}\"\nsecrett = \"{secret}\"\n"
                ),
                "secrett",
            ),
            (format!("[model]\nmax_tokens = \"{secret}\"\n"), "line 2"),
            (format!("[box]\ndata_dir = 5 {secret}\n"), "line 2"),
        ] {
            let e = Config::parse(&text, None, vec![]).unwrap_err();
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(e[0].contains(want), "{want} in {e:?}");
            assert!(!e[0].contains("Sup3r"), "value printed: {e:?}");
        }
        assert_eq!(redact_quoted(r#"a "x" b `k` "open"#), "a \"…\" b `k` \"…");
    }

    #[test]
    fn unknown_keys_and_credentials() {
        let e = Config::parse("[box]\ndata_dri = \"/x\"\n", None, vec![]).unwrap_err();
        assert!(e[0].contains("data_dri"), "{e:?}");
        let dir = std::env::temp_dir().join(format!("wecom-edge-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("bot"), "from-credential\n").unwrap();
        let text = format!(
            "{}[[aibot]]\nbot_id = \"b\"\nsecret = \"credential:bot\"\n",
            model()
        );
        let c = Config::parse(&text, Some(&dir), vec![]).unwrap();
        assert_eq!(
            c.aibots[0].mode,
            AiBotMode::LongConnection {
                secret: Secret("from-credential".into())
            }
        );
        // A file of the unit's directory credential, as systemd names it.
        std::fs::write(dir.join("wecom-edge_other"), "from-directory\n").unwrap();
        let c = Config::parse(&text.replace(":bot", ":other"), Some(&dir), vec![]).unwrap();
        assert_eq!(
            c.aibots[0].mode,
            AiBotMode::LongConnection {
                secret: Secret("from-directory".into())
            }
        );
        let e = Config::parse(&text.replace(":bot", ":absent"), Some(&dir), vec![]).unwrap_err();
        assert!(e[0].contains("\"absent\""), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `[model] path` unset: the imported `models/active.gguf` beside the configuration when
    /// there is one; an explicit path always wins.
    #[test]
    fn an_unset_model_path_takes_the_imported_model() {
        let dir = std::env::temp_dir().join(format!("wecom-edge-import-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("models")).unwrap();
        let bot = "[[aibot]]\nbot_id = \"b\"\nsecret = \"s\"\n";
        let text = &format!("[model]\nthreads = 1\n{bot}");
        let e = Config::parse_in(text, None, vec![], Some(&dir)).err();
        if !Path::new(BUILTIN_MODEL).exists() {
            let e = e.expect("no model anywhere");
            assert!(e.iter().any(|m| m.contains(BUILTIN_MODEL)), "{e:?}");
        }
        let real = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        std::os::unix::fs::symlink(real, dir.join("models/active.gguf")).unwrap();
        let c = Config::parse_in(text, None, vec![], Some(&dir)).unwrap();
        assert_eq!(c.model_path, imported_model(&dir));
        assert!(c.model_imported);
        assert!(
            c.summary().contains("active.gguf (imported)"),
            "{}",
            c.summary()
        );
        let c = Config::parse_in(&format!("{}{bot}", model()), None, vec![], Some(&dir)).unwrap();
        assert_eq!(c.model_path, Path::new(real));
        assert!(!c.model_imported);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
