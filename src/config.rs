//! The box's configuration: one TOML file (`/etc/wecom-edge/edge.toml`; `edge.example.toml` in
//! the repository documents every key), checked as a whole so that every problem is reported at
//! once, one line each.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use wecom_edge_actors::console::allow::AllowFrom;
pub use wecom_edge_actors::limiter::Limits;
use wecom_edge_actors::model::llama::CacheType;
use wecom_edge_actors::model::{GenerateParams, SamplingParams};
use wecom_edge_actors::session::{
    Action, ByEndpoint, ContentFilter, FilterSpec, KnowledgeSettings, Language, Persona, Personas,
    ReasoningMode, RegexRule,
};
use wecom_edge_actors::watchdog::alert::AlertPolicy;
use wecom_edge_actors::wecom::crypto;
use wecom_edge_actors::wecom::standby::StandbyConfig;

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
    #[serde(default)]
    persona: RawPersona,
    #[serde(default)]
    filter: RawFilter,
    #[serde(default)]
    knowledge: RawKnowledge,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    upstream: Vec<RawUpstream>,
    openai: Option<RawOpenAi>,
    #[serde(default)]
    console: RawConsole,
}

/// `[console]`: where the admin's web console listens (it is on once a password is set).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    listen: Option<SocketAddr>,
    allow_from: Option<Vec<String>>,
    certificate: Option<PathBuf>,
    key: Option<String>,
}

/// `[console]`, checked. The console itself starts only when `console set-password` stored a
/// password in the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Console {
    /// HTTPS address (default: `admin_listen`'s host, port [`CONSOLE_PORT`]).
    pub listen: SocketAddr,
    /// Client networks that may connect (default: loopback and the private LAN ranges).
    pub allow_from: AllowFrom,
    /// The company's own certificate (PEM, with its chain) and key (PEM), checked to be a
    /// pair; `None`: the box's self-signed one.
    pub certificate: Option<(Vec<u8>, Secret)>,
}

/// The console's default port.
pub const CONSOLE_PORT: u16 = 9443;

/// `[openai]`: the box's OpenAI-compatible API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenAi {
    listen: SocketAddr,
    #[serde(default)]
    api_keys: Vec<RawApiKey>,
    #[serde(default)]
    allow_anonymous: bool,
}

/// An API key: the key (literal, `env:` or `credential:`), or a table with its id and
/// whether the default persona answers it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawApiKey {
    Key(String),
    Table {
        key: String,
        id: Option<String>,
        #[serde(default)]
        persona: bool,
    },
}

/// `[[upstream]]`: an OpenAI-compatible endpoint that can generate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    base_url: String,
    model: String,
    api_key: Option<String>,
    timeout: Option<String>,
    context_length: Option<usize>,
    retries: Option<u32>,
    cooldown: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    users: Vec<String>,
}

/// `[alerts]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    after: Option<String>,
    window: Option<String>,
    max_per_hour: Option<usize>,
}

/// `[knowledge]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKnowledge {
    dir: Option<PathBuf>,
    top_k: Option<usize>,
    max_tokens: Option<usize>,
}

/// `[persona]`, or a bot's or app's own `persona` table (its fields override the default's).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPersona {
    system_prompt: Option<String>,
    system_prompt_file: Option<PathBuf>,
    description: Option<String>,
    welcome: Option<String>,
    language: Option<String>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    max_tokens: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default)]
    block: Vec<PathBuf>,
    #[serde(default)]
    mask: Vec<PathBuf>,
    #[serde(default)]
    flag: Vec<PathBuf>,
    #[serde(default)]
    regex: Vec<RawRegex>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegex {
    id: String,
    pattern: String,
    action: String,
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
    generator: Option<String>,
    fallback: Option<String>,
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
    persona: Option<RawPersona>,
    generator: Option<String>,
    fallback: Option<String>,
    #[serde(default)]
    standby: bool,
    owner: Option<String>,
    takeover_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    corpid: String,
    agentid: i64,
    secret: String,
    token: String,
    encoding_aes_key: String,
    persona: Option<RawPersona>,
    generator: Option<String>,
    fallback: Option<String>,
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
        /// `standby = true`: another box (`owner`) holds this bot's connection; this one
        /// subscribes only after the owner has been gone for `takeover_after`
        /// (`wecom::standby`). `None`: this box owns the bot.
        standby: Option<StandbyConfig>,
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

/// `[alerts]`: what reaches the group robots with `alerts = true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alerts {
    /// How long the box must be ready and not healthy before that is an alert (`after`,
    /// default 30 s): a reconnect that heals sooner stays in the journal.
    pub after: Duration,
    /// Deduplication window and hourly limit (`window`, default 10 min; `max_per_hour`,
    /// default 20).
    pub policy: AlertPolicy,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            after: Duration::from_secs(30),
            policy: AlertPolicy::default(),
        }
    }
}

/// `[[upstream]]`: an OpenAI-compatible endpoint (vLLM, llama-server, Ollama, another box).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its name (`generator = "<name>"`).
    pub name: String,
    /// As the `openai` client takes it: `http://host:port/v1`.
    pub base_url: String,
    /// The `model` sent.
    pub model: String,
    /// Its API key (a credential), if it needs one.
    pub api_key: Option<Secret>,
    /// Bound on the wait for its answer to start and on each gap in it (default 30 s).
    pub timeout: Duration,
    /// Its context length, when configured (else asked of it, else 4096).
    pub context_length: Option<usize>,
    /// Retries after a connect error, a timeout, 429 or 5xx (default 2).
    pub retries: u32,
    /// How long a failed upstream is skipped before one request probes it again (default
    /// 10 s; doubling while it keeps failing).
    pub cooldown: Duration,
}

/// `[openai]`: the OpenAI-compatible API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAi {
    /// Its listener.
    pub listen: SocketAddr,
    /// Its keys: the key, its id (if configured), whether the default persona answers it.
    pub keys: Vec<(Secret, Option<String>, bool)>,
    /// Served without a key (loopback only).
    pub allow_anonymous: bool,
}

/// What generates an endpoint's answers: `generator` (`local` or an upstream's name) and
/// `fallback` (`local`, an upstream's name, or `None` for `"none"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorChoice {
    /// `local` or an `[[upstream]]` name.
    pub generator: String,
    /// Where a failed generation goes instead.
    pub fallback: Option<String>,
}

impl Default for GeneratorChoice {
    /// This box's model, no fallback.
    fn default() -> Self {
        GeneratorChoice {
            generator: LOCAL.into(),
            fallback: None,
        }
    }
}

impl GeneratorChoice {
    /// Whether it needs this box's own model.
    pub fn uses_local(&self) -> bool {
        self.generator == LOCAL || self.fallback.as_deref() == Some(LOCAL)
    }
}

impl std::fmt::Display for GeneratorChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.fallback {
            Some(fb) => write!(f, "{} (fallback {fb})", self.generator),
            None => f.write_str(&self.generator),
        }
    }
}

/// The generator name of this box's own model.
pub const LOCAL: &str = "local";

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
    /// Model file (unused when [`Config::local_model`] is false).
    pub model_path: PathBuf,
    /// Whether any endpoint generates (or falls back) on this box's own model; `false`: no
    /// model is loaded and `[model] path` may be absent.
    pub local_model: bool,
    /// `[[upstream]]` endpoints.
    pub upstreams: Vec<Upstream>,
    /// Each endpoint's generator (`generator`/`fallback` per bot or app, `[model]`'s default).
    pub generators: ByEndpoint<GeneratorChoice>,
    /// The OpenAI-compatible API, when `[openai]` is configured.
    pub openai: Option<OpenAi>,
    /// The admin's web console (`[console]`).
    pub console: Console,
    /// Whether `model_path` is the model imported from the configuration stick
    /// ([`imported_model`]; `[model] path` unset).
    pub model_imported: bool,
    /// `auto`, `cpu`, `cuda` or `vulkan` (`model::device::resolve`).
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
    /// Who answers: the default persona and each bot's or app's own.
    pub personas: Personas,
    /// The content filter's rules (term files resolved against the config's directory).
    pub filter: FilterSpec,
    /// Distinct terms and regexes of `filter`, as loaded by the check.
    pub filter_sizes: (usize, usize),
    /// The company knowledge base's use (`[knowledge]`; the base itself is
    /// `data_dir/knowledge.sqlite3`, its folder resolved against the config's directory).
    pub knowledge: KnowledgeSettings,
    /// When and how often alerts go to the `alerts = true` group robots (`[alerts]`).
    pub alerts: Alerts,
    /// WeCom userids allowed to run `#status all` and `#reload` (`[admin] users`).
    pub admins: Vec<String>,
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
        out.push(format!(
            "generator        {}{}",
            self.generators.default_value(),
            if self.local_model {
                ""
            } else {
                "; no local model"
            }
        ));
        out.push(format!(
            "console          https://{}, from {}, {} certificate (on once `wecom-edge console set-password` stored a password)",
            self.console.listen,
            self.console.allow_from.nets().collect::<Vec<_>>().join(" "),
            if self.console.certificate.is_some() { "the company's" } else { "a self-signed" }
        ));
        if let Some(o) = &self.openai {
            out.push(format!(
                "openai           http://{}/v1, {} API key(s){}",
                o.listen,
                o.keys.len(),
                if o.keys.is_empty() {
                    " (anonymous, loopback)"
                } else {
                    ""
                }
            ));
        }
        for u in &self.upstreams {
            out.push(format!(
                "upstream         {} at {}, model {}, timeout {}, context {}, {} retries{}",
                u.name,
                u.base_url,
                u.model,
                humantime::format_duration(u.timeout),
                u.context_length
                    .map_or("asked of it".to_string(), |n| n.to_string()),
                u.retries,
                if u.api_key.is_some() {
                    ", with an API key"
                } else {
                    ""
                }
            ));
        }
        let d = self.personas.default_value();
        out.push(format!(
            "persona          language {}, system prompt {} chars, max_tokens {}, temperature {}, top_p {}",
            d.language.name(),
            d.system_prompt.chars().count(),
            d.generate.max_tokens,
            d.generate.sampling.temperature,
            d.generate.sampling.top_p
        ));
        let (terms, regexes) = self.filter_sizes;
        out.push(if self.filter.is_empty() {
            "filter           (none)".to_string()
        } else {
            format!(
                "filter           {terms} terms from {} file(s) (block {}, mask {}, flag {}), {regexes} regex(es)",
                self.filter.block.len() + self.filter.mask.len() + self.filter.flag.len(),
                self.filter.block.len(),
                self.filter.mask.len(),
                self.filter.flag.len()
            )
        });
        let k = &self.knowledge;
        out.push(format!(
            "knowledge        {} (folder {}), top_k {}, max_tokens {}",
            self.data_dir
                .join(wecom_edge_actors::audit::knowledge::KB_FILE)
                .display(),
            k.dir
                .as_ref()
                .map_or("(none)".to_string(), |d| d.display().to_string()),
            k.top_k,
            k.max_tokens
        ));
        for b in &self.aibots {
            let mode = match &b.mode {
                AiBotMode::LongConnection { secret, standby } => {
                    let role = match standby {
                        Some(s) => format!(
                            ", standby for {} (takeover after {})",
                            s.owner,
                            humantime::format_duration(s.takeover_after)
                        ),
                        None => String::new(),
                    };
                    format!(
                        "long connection (secret: {} bytes{role})",
                        secret.expose().len()
                    )
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
            let own = if *self.personas.get("aibot", &b.bot_id) != *d {
                ", own persona"
            } else {
                ""
            };
            let gen = self.generators.get("aibot", &b.bot_id);
            let gen = if *gen != *self.generators.default_value() {
                format!(", generator {gen}")
            } else {
                String::new()
            };
            out.push(format!("aibot            {} — {mode}{own}{gen}", b.bot_id));
        }
        for a in &self.apps {
            out.push(format!(
                "app              {} of {} (secret {} bytes, token {} bytes, key {} chars), generator {}",
                a.agentid,
                a.corpid,
                a.secret.expose().len(),
                a.token.expose().len(),
                a.encoding_aes_key.expose().len(),
                self.generators.get("app", &a.agentid.to_string())
            ));
        }
        out.push(format!(
            "admins           {}",
            if self.admins.is_empty() {
                "(none: #status all and #reload are refused)".to_string()
            } else {
                self.admins.join(", ")
            }
        ));
        let a = &self.alerts;
        out.push(format!(
            "alerts           to {} group robot(s), after {} unhealthy, repeats folded for {}, at most {}/hour",
            self.webhooks.iter().filter(|w| w.alerts).count(),
            humantime::format_duration(a.after),
            humantime::format_duration(a.policy.window),
            a.policy.max_per_hour
        ));
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

/// `[[aibot]] standby`, `owner`, `takeover_after`: a standby needs the owner's admin URL; the
/// other two keys mean nothing without `standby = true`.
fn standby(
    at: &str,
    b: &RawAiBot,
    long_connection: bool,
    p: &mut Vec<String>,
) -> Option<StandbyConfig> {
    if !b.standby {
        for (key, set) in [
            ("owner", b.owner.is_some()),
            ("takeover_after", b.takeover_after.is_some()),
        ] {
            if set {
                p.push(format!("{at}.{key} is only for a standby (standby = true)"));
            }
        }
        return None;
    }
    if !long_connection {
        p.push(format!(
            "{at}.standby: only a long-connection bot has a standby (WeCom posts a webhook bot's callbacks to one URL)"
        ));
        return None;
    }
    let Some(owner) = &b.owner else {
        p.push(format!(
            "{at}: a standby needs owner, the owner box's admin URL (e.g. \"http://10.0.0.2:9100\")"
        ));
        return None;
    };
    let mut s = StandbyConfig::new(owner);
    if let Err(e) = s.check_url(&b.bot_id) {
        p.push(format!("{at}.owner: {e}"));
    }
    if let Some(t) = &b.takeover_after {
        s.takeover_after = parse_duration(&format!("{at}.takeover_after"), t, p);
        if s.takeover_after.is_zero() {
            p.push(format!("{at}.takeover_after must be more than 0"));
        }
    }
    Some(s)
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
        Self::parse_with(text, credentials, warnings, config_dir, Purpose::Serve)
    }

    /// Reads `path` for `wecom-edge demo --config`: its persona, filter, knowledge, model, sessions and
    /// limits sections count; it may have no bot or app (the demo's `demo-bot` answers), and
    /// with `[model] path` unset [`Config::model_path`] is empty (the demo's own model).
    ///
    /// # Errors
    /// Every problem found, each prefixed with the path.
    pub fn load_for_demo(path: &Path) -> Result<Config, Vec<String>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        Self::parse_with(&text, None, Vec::new(), path.parent(), Purpose::Demo).map_err(|p| {
            p.into_iter()
                .map(|m| format!("{}: {m}", path.display()))
                .collect()
        })
    }

    fn parse_with(
        text: &str,
        credentials: Option<&Path>,
        warnings: Vec<String>,
        config_dir: Option<&Path>,
        purpose: Purpose,
    ) -> Result<Config, Vec<String>> {
        let demo = purpose == Purpose::Demo;
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
            .unwrap_or_else(|| PathBuf::from(if demo { "" } else { BUILTIN_MODEL }));
        let upstreams = upstream_settings(&raw.upstream, credentials, &mut p);
        let openai = raw
            .openai
            .as_ref()
            .map(|o| openai_settings(o, credentials, &mut p));
        let admin_listen = raw
            .box_
            .admin_listen
            .unwrap_or_else(|| "127.0.0.1:9620".parse().expect("literal"));
        let console = Console {
            listen: raw
                .console
                .listen
                .unwrap_or_else(|| SocketAddr::new(admin_listen.ip(), CONSOLE_PORT)),
            allow_from: match &raw.console.allow_from {
                None => AllowFrom::lan(),
                Some(list) if list.is_empty() => {
                    p.push("console.allow_from is empty: nobody could connect; leave it out for the LAN".into());
                    AllowFrom::lan()
                }
                Some(list) => AllowFrom::parse(list).unwrap_or_else(|e| {
                    p.push(format!("console.allow_from: {e}"));
                    AllowFrom::lan()
                }),
            },
            certificate: console_certificate(&raw.console, config_dir, credentials, &mut p),
        };
        let generators = generator_choices(
            (
                raw.model.generator.as_deref(),
                raw.model.fallback.as_deref(),
            ),
            &raw.aibot,
            &raw.app,
            &upstreams,
            &mut p,
        );
        let local_model = generators.default_value().uses_local()
            || raw
                .aibot
                .iter()
                .map(|b| ("aibot", b.bot_id.clone()))
                .chain(raw.app.iter().map(|a| ("app", a.agentid.to_string())))
                .any(|(c, e)| generators.get(c, &e).uses_local());
        let demo_default = demo && model_path.as_os_str().is_empty();
        if local_model && !demo_default && !model_path.exists() {
            p.push(format!(
                "model.path: {} does not exist",
                model_path.display()
            ));
        }
        let device = raw.model.device.unwrap_or_else(|| "auto".into());
        if !wecom_edge_actors::model::device::CHOICES.contains(&device.as_str()) {
            p.push(format!(
                "model.device: {device:?} is not {}",
                wecom_edge_actors::model::device::CHOICES.join(", ")
            ));
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
            let long_connection =
                b.mode.as_deref().unwrap_or("long_connection") == "long_connection";
            let standby = standby(&at, b, long_connection, &mut p);
            let mode = match b.mode.as_deref().unwrap_or("long_connection") {
                "long_connection" => match &b.secret {
                    Some(s) => AiBotMode::LongConnection {
                        secret: resolve(&format!("{at}.secret"), s, credentials, &mut p),
                        standby,
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
        let base = Persona {
            generate: GenerateParams {
                max_tokens,
                sampling: SamplingParams {
                    temperature,
                    ..Default::default()
                },
            },
            ..Persona::default()
        };
        let default_persona = persona("persona", &raw.persona, &base, config_dir, &mut p);
        let mut personas = Personas::new(Arc::new(default_persona.clone()));
        for b in &raw.aibot {
            if let Some(own) = &b.persona {
                let at = format!("aibot ({}).persona", b.bot_id);
                let own = persona(&at, own, &default_persona, config_dir, &mut p);
                personas = personas.with("aibot", &b.bot_id, Arc::new(own));
            }
        }
        for a in &raw.app {
            if let Some(own) = &a.persona {
                let at = format!("app ({}).persona", a.agentid);
                let own = persona(&at, own, &default_persona, config_dir, &mut p);
                personas = personas.with("app", &a.agentid.to_string(), Arc::new(own));
            }
        }
        let filter = filter_spec(&raw.filter, config_dir, &mut p);
        let knowledge = knowledge_settings(&raw.knowledge, config_dir, &mut p);
        let alerts = alert_settings(&raw.alerts, &mut p);
        let mut admins: Vec<String> = Vec::new();
        for u in &raw.admin.users {
            let u = u.trim();
            if u.is_empty() {
                p.push("admin.users: an empty userid".into());
            } else if !admins.iter().any(|a| a == u) {
                admins.push(u.to_string());
            }
        }
        let filter_sizes = match ContentFilter::load(&filter) {
            Ok(f) => f.sizes(),
            Err(e) => {
                p.push(e.to_string());
                (0, 0)
            }
        };
        if aibots.is_empty() && apps.is_empty() && openai.is_none() && p.is_empty() && !demo {
            p.push("no [[aibot]], [[app]] or [openai]: the box would have nobody to answer".into());
        }
        if needs_callback && raw.box_.callback_listen.is_none() {
            p.push("box.callback_listen is needed by webhook-mode bots and apps".into());
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Config {
            data_dir,
            admin_listen,
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
            local_model,
            upstreams,
            generators,
            openai,
            console,
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
            personas,
            filter,
            filter_sizes,
            knowledge,
            alerts,
            admins,
            warnings,
        })
    }
}

/// `[console] certificate` (a PEM file, relative to the configuration) and `key` (a secret
/// reference, `credential:NAME` on the appliance: the key never sits in the readable
/// configuration directory), read and checked to be a pair.
fn console_certificate(
    raw: &RawConsole,
    config_dir: Option<&Path>,
    credentials: Option<&Path>,
    p: &mut Vec<String>,
) -> Option<(Vec<u8>, Secret)> {
    let (cert, key) = match (&raw.certificate, &raw.key) {
        (None, None) => return None,
        (Some(c), Some(k)) => (c, k),
        _ => {
            p.push("console.certificate and console.key go together (or leave both out for the self-signed certificate)".into());
            return None;
        }
    };
    if !(key.starts_with("credential:") || key.starts_with("env:")) {
        p.push(
            "console.key: give it as \"credential:FILE\" (or env:NAME), not in the configuration"
                .into(),
        );
        return None;
    }
    let key = resolve("console.key", key, credentials, p);
    let path = relative_to(config_dir, cert);
    let pem = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            p.push(format!("console.certificate {}: {e}", path.display()));
            return None;
        }
    };
    if key.expose().is_empty() {
        return None; // resolve said why
    }
    match wecom_edge_actors::console::tls::from_pem(&pem, key.expose().as_bytes()) {
        Ok(_) => Some((pem, key)),
        Err(e) => {
            p.push(format!("console.certificate {}: {e}", path.display()));
            None
        }
    }
}

/// `path` as written, or relative to the config's directory.
fn relative_to(config_dir: Option<&Path>, path: &Path) -> PathBuf {
    match config_dir {
        Some(d) if path.is_relative() => d.join(path),
        _ => path.to_path_buf(),
    }
}

/// A persona: `base` with the fields `raw` sets.
fn persona(
    at: &str,
    raw: &RawPersona,
    base: &Persona,
    config_dir: Option<&Path>,
    p: &mut Vec<String>,
) -> Persona {
    let mut out = base.clone();
    match (&raw.system_prompt, &raw.system_prompt_file) {
        (Some(_), Some(_)) => p.push(format!(
            "{at}: system_prompt and system_prompt_file are both set; keep one"
        )),
        (Some(s), None) => out.system_prompt.clone_from(s),
        (None, Some(f)) => {
            let f = relative_to(config_dir, f);
            match std::fs::read_to_string(&f) {
                Ok(s) => out.system_prompt = s.trim_end().to_string(),
                Err(e) => p.push(format!("{at}.system_prompt_file: {}: {e}", f.display())),
            }
        }
        (None, None) => {}
    }
    if let Some(d) = &raw.description {
        out.description.clone_from(d);
    }
    if let Some(w) = &raw.welcome {
        if w.trim().is_empty() {
            p.push(format!("{at}.welcome is empty"));
        }
        out.welcome.clone_from(w);
    }
    if let Some(l) = &raw.language {
        match Language::parse(l) {
            Some(l) => out.language = l,
            None => p.push(format!("{at}.language: {l:?} is not auto, zh or en")),
        }
    }
    if let Some(t) = raw.temperature {
        if !(0.0..=2.0).contains(&t) {
            p.push(format!("{at}.temperature: {t} is outside 0..=2"));
        }
        out.generate.sampling.temperature = t;
    }
    if let Some(t) = raw.top_p {
        if !(t > 0.0 && t <= 1.0) {
            p.push(format!("{at}.top_p: {t} is outside (0, 1]"));
        }
        out.generate.sampling.top_p = t;
    }
    if let Some(n) = raw.max_tokens {
        if n == 0 {
            p.push(format!("{at}.max_tokens must be at least 1"));
        }
        out.generate.max_tokens = n;
    }
    out
}

/// `[filter]`: term files resolved against the config's directory, regex actions parsed.
fn filter_spec(raw: &RawFilter, config_dir: Option<&Path>, p: &mut Vec<String>) -> FilterSpec {
    let files = |v: &[PathBuf]| v.iter().map(|f| relative_to(config_dir, f)).collect();
    let mut regex = Vec::new();
    for (i, r) in raw.regex.iter().enumerate() {
        let Some(action) = Action::parse(&r.action) else {
            p.push(format!(
                "filter.regex[{i}] ({}).action: {:?} is not block, mask or flag",
                r.id, r.action
            ));
            continue;
        };
        if raw.regex[..i].iter().any(|o| o.id == r.id) {
            p.push(format!("filter.regex[{i}]: id {:?} appears twice", r.id));
        }
        regex.push(RegexRule {
            id: r.id.clone(),
            pattern: r.pattern.clone(),
            action,
        });
    }
    FilterSpec {
        block: files(&raw.block),
        mask: files(&raw.mask),
        flag: files(&raw.flag),
        regex,
    }
}

/// `[knowledge]`: `top_k` 1–20 (default 3), `max_tokens` 32–8192 (default 512), `dir` an
/// existing folder (relative to the config's directory).
fn knowledge_settings(
    raw: &RawKnowledge,
    config_dir: Option<&Path>,
    p: &mut Vec<String>,
) -> KnowledgeSettings {
    let mut k = KnowledgeSettings::default();
    if let Some(n) = raw.top_k {
        if (1..=20).contains(&n) {
            k.top_k = n;
        } else {
            p.push(format!("knowledge.top_k: {n} is not between 1 and 20"));
        }
    }
    if let Some(n) = raw.max_tokens {
        if (32..=8192).contains(&n) {
            k.max_tokens = n;
        } else {
            p.push(format!(
                "knowledge.max_tokens: {n} is not between 32 and 8192"
            ));
        }
    }
    if let Some(d) = &raw.dir {
        let d = relative_to(config_dir, d);
        if !d.is_dir() {
            p.push(format!("knowledge.dir: {} is not a folder", d.display()));
        }
        k.dir = Some(d);
    }
    k
}

/// `[[upstream]]`, checked: unique names other than `local` and `none`, an http(s) base URL.
fn upstream_settings(
    raw: &[RawUpstream],
    credentials: Option<&Path>,
    p: &mut Vec<String>,
) -> Vec<Upstream> {
    let mut out: Vec<Upstream> = Vec::new();
    for (i, u) in raw.iter().enumerate() {
        let at = format!("upstream[{i}] ({})", u.name);
        let name = u.name.trim();
        if name.is_empty() || name == LOCAL || name == "none" {
            p.push(format!(
                "{at}.name: must be set and not \"local\" or \"none\""
            ));
        }
        if out.iter().any(|o| o.name == name) {
            p.push(format!("{at}.name appears twice"));
        }
        let base = u.base_url.trim().trim_end_matches('/');
        match check_base_url(base) {
            Ok(()) => {}
            Err(e) => p.push(format!("{at}.base_url: {e}")),
        }
        if u.model.trim().is_empty() {
            p.push(format!("{at}.model is empty"));
        }
        let timeout = parse_duration(
            &format!("{at}.timeout"),
            u.timeout.as_deref().unwrap_or("30s"),
            p,
        );
        if timeout.is_zero() {
            p.push(format!("{at}.timeout must be more than 0"));
        }
        let cooldown = parse_duration(
            &format!("{at}.cooldown"),
            u.cooldown.as_deref().unwrap_or("10s"),
            p,
        );
        if u.context_length == Some(0) {
            p.push(format!("{at}.context_length must be at least 1"));
        }
        out.push(Upstream {
            name: name.to_string(),
            base_url: base.to_string(),
            model: u.model.clone(),
            api_key: u
                .api_key
                .as_deref()
                .map(|k| resolve(&format!("{at}.api_key"), k, credentials, p)),
            timeout,
            context_length: u.context_length,
            retries: u.retries.unwrap_or(2),
            cooldown,
        });
    }
    out
}

/// `[openai]`, checked: keys unique in value and id; no key only with `allow_anonymous` on a
/// loopback address.
fn openai_settings(raw: &RawOpenAi, credentials: Option<&Path>, p: &mut Vec<String>) -> OpenAi {
    let mut keys: Vec<(Secret, Option<String>, bool)> = Vec::new();
    for (i, k) in raw.api_keys.iter().enumerate() {
        let (key, id, persona) = match k {
            RawApiKey::Key(k) => (k, None, false),
            RawApiKey::Table { key, id, persona } => (key, id.clone(), *persona),
        };
        let at = format!("openai.api_keys[{i}]");
        let secret = resolve(&at, key, credentials, p);
        if secret.expose().len() < 8 && !secret.expose().is_empty() {
            p.push(format!("{at}: an API key needs at least 8 characters"));
        }
        if keys.iter().any(|(s, _, _)| *s == secret) {
            p.push(format!("{at}: the same key appears twice"));
        }
        if let Some(id) = &id {
            if id.trim().is_empty() || id == "anonymous" {
                p.push(format!("{at}.id: must be set and not \"anonymous\""));
            } else if keys.iter().any(|(_, o, _)| o.as_ref() == Some(id)) {
                p.push(format!("{at}.id {id:?} appears twice"));
            }
        }
        keys.push((secret, id, persona));
    }
    if keys.is_empty() {
        if !raw.allow_anonymous {
            p.push("openai.api_keys is empty: configure keys, or allow_anonymous = true on a loopback listen address".into());
        } else if !raw.listen.ip().is_loopback() {
            p.push(format!(
                "openai.allow_anonymous: {} is not a loopback address; an API without keys may only listen on 127.0.0.1 or ::1",
                raw.listen
            ));
        }
    }
    OpenAi {
        listen: raw.listen,
        keys,
        allow_anonymous: raw.allow_anonymous,
    }
}

/// Whether `s` is an `http://` or `https://` URL with a host.
fn check_base_url(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("{s:?} does not start with http:// or https://"))?;
    if rest.split('/').next().unwrap_or("").is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    Ok(())
}

/// One `generator`/`fallback` pair, checked against the upstreams; `inherit` fills what is
/// unset.
fn generator_choice(
    at: &str,
    generator: Option<&str>,
    fallback: Option<&str>,
    inherit: &GeneratorChoice,
    upstreams: &[Upstream],
    p: &mut Vec<String>,
) -> GeneratorChoice {
    let known = |n: &str| n == LOCAL || upstreams.iter().any(|u| u.name == n);
    let generator = generator.map_or_else(|| inherit.generator.clone(), str::to_string);
    if !known(&generator) {
        p.push(format!(
            "{at}.generator: {generator:?} is neither \"local\" nor an [[upstream]] name"
        ));
    }
    let fallback = match fallback {
        None => inherit.fallback.clone().filter(|f| *f != generator),
        Some("none") => None,
        Some(f) => {
            if !known(f) {
                p.push(format!(
                    "{at}.fallback: {f:?} is not \"local\", \"none\" or an [[upstream]] name"
                ));
            } else if f == generator {
                p.push(format!("{at}.fallback: {f:?} is the generator itself"));
            }
            Some(f.to_string())
        }
    };
    GeneratorChoice {
        generator,
        fallback,
    }
}

/// `[model] generator/fallback` and each bot's and app's own.
fn generator_choices(
    model: (Option<&str>, Option<&str>),
    aibots: &[RawAiBot],
    apps: &[RawApp],
    upstreams: &[Upstream],
    p: &mut Vec<String>,
) -> ByEndpoint<GeneratorChoice> {
    let base = GeneratorChoice::default();
    let default = generator_choice("model", model.0, model.1, &base, upstreams, p);
    let mut out = ByEndpoint::new(Arc::new(default.clone()));
    for b in aibots {
        if b.generator.is_some() || b.fallback.is_some() {
            let at = format!("aibot ({})", b.bot_id);
            let c = generator_choice(
                &at,
                b.generator.as_deref(),
                b.fallback.as_deref(),
                &default,
                upstreams,
                p,
            );
            out = out.with("aibot", &b.bot_id, Arc::new(c));
        }
    }
    for a in apps {
        if a.generator.is_some() || a.fallback.is_some() {
            let at = format!("app ({})", a.agentid);
            let c = generator_choice(
                &at,
                a.generator.as_deref(),
                a.fallback.as_deref(),
                &default,
                upstreams,
                p,
            );
            out = out.with("app", &a.agentid.to_string(), Arc::new(c));
        }
    }
    out
}

fn alert_settings(raw: &RawAlerts, p: &mut Vec<String>) -> Alerts {
    let mut a = Alerts::default();
    if let Some(v) = &raw.after {
        a.after = parse_duration("alerts.after", v, p);
    }
    if let Some(v) = &raw.window {
        a.policy.window = parse_duration("alerts.window", v, p);
        if a.policy.window < Duration::from_secs(1) {
            p.push(format!("alerts.window: {v:?} is shorter than 1 s"));
        }
    }
    if let Some(n) = raw.max_per_hour {
        if (1..=600).contains(&n) {
            a.policy.max_per_hour = n;
        } else {
            p.push(format!("alerts.max_per_hour: {n} is not between 1 and 600"));
        }
    }
    a
}

/// What a configuration is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// `serve` and `config check`: complete.
    Serve,
    /// `demo --config`: the sections the demo takes.
    Demo,
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
                secret: Secret("s3cret".into()),
                standby: None,
            }
        );
        assert_eq!(c.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.reasoning, ReasoningMode::Hidden);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.alerts, Alerts::default());
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn every_problem_is_reported_once() {
        let text = format!(
            "{}[sessions]\nscope = \"team\"\nidle_timeout = \"soon\"\nreasoning = \"shown\"\n[limits]\nmax_queued = 0\n\
             [alerts]\nafter = \"later\"\nmax_per_hour = 0\n\
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
            "alerts.after",
            "alerts.max_per_hour",
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

    /// `[console] certificate` + `key`: the company's own certificate, its key only as a
    /// credential; a pair that does not match, a missing half, or a key in the file refused.
    #[test]
    fn the_console_takes_the_company_certificate_with_its_key_as_a_credential() {
        use wecom_edge_actors::console::tls;
        let dir = std::env::temp_dir().join(format!("cfg-console-cert-{}", std::process::id()));
        let (ours, other) = (dir.join("ours"), dir.join("other"));
        let creds = dir.join("creds");
        for d in [&ours, &other, &creds] {
            std::fs::create_dir_all(d).unwrap();
        }
        let (cert, _) = tls::load_or_create(&ours, &["console.corp".into()]).unwrap();
        tls::load_or_create(&other, &["other".into()]).unwrap();
        std::fs::copy(ours.join(tls::CERT_FILE), dir.join("console.pem")).unwrap();
        std::fs::copy(ours.join(tls::KEY_FILE), creds.join("console-key.pem")).unwrap();
        std::fs::copy(other.join(tls::KEY_FILE), creds.join("other-key.pem")).unwrap();
        let parse = |console: &str| {
            Config::parse_in(
                &format!("{}[openai]\nlisten = \"127.0.0.1:8080\"\nallow_anonymous = true\n[console]\n{console}\n", model()),
                Some(&creds),
                vec![],
                Some(&dir),
            )
        };
        let c =
            parse("certificate = \"console.pem\"\nkey = \"credential:console-key.pem\"").unwrap();
        let (pem, key) = c.console.certificate.clone().unwrap();
        let served = tls::from_pem(&pem, key.expose().as_bytes()).unwrap();
        assert_eq!(served.fingerprint, cert.fingerprint);
        assert!(c.summary().contains("the company's certificate"));
        for (body, want) in [
            ("certificate = \"console.pem\"", "go together"),
            (
                "certificate = \"console.pem\"\nkey = \"credential:other-key.pem\"",
                "certificate and key",
            ),
            (
                "certificate = \"console.pem\"\nkey = \"-----BEGIN PRIVATE KEY-----\"",
                "not in the configuration",
            ),
            (
                "certificate = \"missing.pem\"\nkey = \"credential:console-key.pem\"",
                "missing.pem",
            ),
        ] {
            let p = parse(body).unwrap_err();
            assert!(p.len() == 1 && p[0].contains(want), "{body}: {p:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `[console]` (issue 15): the default address follows admin_listen's host; allow_from
    /// defaults to the LAN and refuses what does not parse or allows nobody.
    #[test]
    fn the_console_listens_beside_the_admin_address() {
        let c = Config::parse(
            &format!("[box]\nadmin_listen = \"10.0.0.2:9620\"\n{}[openai]\nlisten = \"127.0.0.1:8080\"\nallow_anonymous = true\n", model()),
            None,
            vec![],
        )
        .unwrap();
        assert_eq!(c.console.listen, "10.0.0.2:9443".parse().unwrap());
        assert!(c.console.allow_from.allows("192.168.3.4".parse().unwrap()));
        assert!(!c.console.allow_from.allows("8.8.8.8".parse().unwrap()));
        assert!(c
            .summary()
            .contains("console          https://10.0.0.2:9443, from 127.0.0.0/8"));
        let c = Config::parse(
            &format!("{}[openai]\nlisten = \"127.0.0.1:8080\"\nallow_anonymous = true\n[console]\nlisten = \"0.0.0.0:8443\"\nallow_from = [\"10.1.0.0/16\"]\n", model()),
            None,
            vec![],
        )
        .unwrap();
        assert_eq!(c.console.listen, "0.0.0.0:8443".parse().unwrap());
        assert!(!c.console.allow_from.allows("10.2.0.1".parse().unwrap()));
        for (body, want) in [
            ("allow_from = []", "console.allow_from is empty"),
            (
                "allow_from = [\"10.0.0.0/40\"]",
                "console.allow_from: \"10.0.0.0/40\"",
            ),
        ] {
            let p = Config::parse(
                &format!("{}[openai]\nlisten = \"127.0.0.1:8080\"\nallow_anonymous = true\n[console]\n{body}\n", model()),
                None,
                vec![],
            )
            .unwrap_err();
            assert!(p.len() == 1 && p[0].contains(want), "{p:?}");
        }
    }

    /// `[[aibot]] standby`, `owner`, `takeover_after` (issue 14 item 3): read, summarised, and
    /// refused where they cannot work.
    #[test]
    fn a_standby_bot_names_its_owner() {
        let text = format!(
            "{}[[aibot]]\nbot_id = \"b\"\nsecret = \"x\"\nstandby = true\n\
             owner = \"http://10.0.0.2:9620/\"\ntakeover_after = \"45s\"\n\
             [[aibot]]\nbot_id = \"c\"\nsecret = \"y\"\nstandby = true\nowner = \"http://10.0.0.2:9620\"\n",
            model()
        );
        let c = Config::parse(&text, None, vec![]).unwrap();
        let AiBotMode::LongConnection { standby, .. } = &c.aibots[0].mode else {
            panic!("long connection");
        };
        let s = standby.as_ref().unwrap();
        assert_eq!(s.owner, "http://10.0.0.2:9620");
        assert_eq!(s.takeover_after, Duration::from_secs(45));
        let AiBotMode::LongConnection { standby, .. } = &c.aibots[1].mode else {
            panic!("long connection");
        };
        assert_eq!(
            standby.as_ref().unwrap().takeover_after,
            Duration::from_secs(30)
        );
        assert!(
            c.summary()
                .contains("standby for http://10.0.0.2:9620 (takeover after 45s)"),
            "{}",
            c.summary()
        );

        let text = format!(
            "{}[[aibot]]\nbot_id = \"a\"\nsecret = \"x\"\nstandby = true\n\
             [[aibot]]\nbot_id = \"b\"\nsecret = \"x\"\nowner = \"http://h:1\"\n\
             [[aibot]]\nbot_id = \"c\"\nsecret = \"x\"\nstandby = true\nowner = \"h:1\"\ntakeover_after = \"0s\"\n\
             [[aibot]]\nbot_id = \"w\"\nmode = \"webhook\"\ntoken = \"t\"\n\
             encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\nstandby = true\nowner = \"http://h:1\"\n\
             [box]\ncallback_listen = \"127.0.0.1:0\"\n",
            model()
        );
        let p = Config::parse(&text, None, vec![]).unwrap_err();
        let want = [
            "aibot[0] (a): a standby needs owner",
            "aibot[1] (b).owner is only for a standby",
            "aibot[2] (c).owner",
            "aibot[2] (c).takeover_after must be more than 0",
            "aibot[3] (w).standby: only a long-connection bot",
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
                secret: Secret("from-credential".into()),
                standby: None,
            }
        );
        // A file of the unit's directory credential, as systemd names it.
        std::fs::write(dir.join("wecom-edge_other"), "from-directory\n").unwrap();
        let c = Config::parse(&text.replace(":bot", ":other"), Some(&dir), vec![]).unwrap();
        assert_eq!(
            c.aibots[0].mode,
            AiBotMode::LongConnection {
                secret: Secret("from-directory".into()),
                standby: None,
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

    #[test]
    fn personas_and_filter_from_files_beside_the_config() {
        let dir = std::env::temp_dir().join(format!("wecom-edge-persona-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("filter")).unwrap();
        std::fs::write(dir.join("persona.txt"), "你是财务部的助手。\n").unwrap();
        std::fs::write(dir.join("filter/block.txt"), "机密\n内部代号\n").unwrap();
        std::fs::write(dir.join("filter/mask.txt"), "工资\n").unwrap();
        let text = format!(
            "{}[persona]\nsystem_prompt_file = \"persona.txt\"\nlanguage = \"zh\"\nwelcome = \"欢迎\"\ntemperature = 0.2\n\
             [filter]\nblock = [\"filter/block.txt\"]\nmask = [\"filter/mask.txt\"]\n\
             regex = [{{ id = \"phone\", pattern = '1[3-9]\\d{{9}}', action = \"mask\" }}]\n\
             [[aibot]]\nbot_id = \"hr\"\nsecret = \"s\"\n[aibot.persona]\ndescription = \"HR 助手\"\nmax_tokens = 64\n\
             [[aibot]]\nbot_id = \"plain\"\nsecret = \"s\"\n",
            model()
        );
        let c = Config::parse_in(&text, None, vec![], Some(&dir)).unwrap();
        let d = c.personas.default_value();
        assert_eq!(d.system_prompt, "你是财务部的助手。");
        assert_eq!(d.language, Language::Chinese);
        assert_eq!(d.welcome, "欢迎");
        assert_eq!(d.generate.sampling.temperature, 0.2);
        assert_eq!(d.generate.max_tokens, 512);
        // The bot's own table overrides the default field by field.
        let hr = c.personas.get("aibot", "hr");
        assert_eq!(hr.description, "HR 助手");
        assert_eq!(hr.generate.max_tokens, 64);
        assert_eq!(hr.system_prompt, d.system_prompt);
        assert_eq!(*c.personas.get("aibot", "plain"), *d);
        assert_eq!(c.filter.block, vec![dir.join("filter/block.txt")]);
        assert_eq!(c.filter_sizes, (3, 1));
        let sum = c.summary();
        assert!(
            sum.contains("3 terms from 2 file(s) (block 1, mask 1, flag 0), 1 regex(es)"),
            "{sum}"
        );
        assert!(
            sum.contains("hr — long connection (secret: 1 bytes), own persona"),
            "{sum}"
        );
        assert!(sum.contains("persona          language zh"), "{sum}");

        // One message per problem.
        let text = format!(
            "{}[persona]\nsystem_prompt = \"a\"\nsystem_prompt_file = \"b\"\nlanguage = \"fr\"\ntop_p = 0\n\
             [filter]\nflag = [\"filter/missing.txt\"]\nregex = [{{ id = \"r\", pattern = \"x\", action = \"drop\" }}]\n\
             [[aibot]]\nbot_id = \"b\"\nsecret = \"s\"\n[aibot.persona]\nwelcome = \"\"\n",
            model()
        );
        let p = Config::parse_in(&text, None, vec![], Some(&dir)).unwrap_err();
        let want = [
            "persona: system_prompt and system_prompt_file are both set",
            "persona.language: \"fr\"",
            "persona.top_p",
            "filter.regex[0] (r).action",
            "missing.txt",
            "aibot (b).persona.welcome is empty",
        ];
        for w in want {
            assert_eq!(
                p.iter().filter(|m| m.contains(w)).count(),
                1,
                "{w} in {p:#?}"
            );
        }
        assert_eq!(p.len(), want.len(), "{p:#?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn upstreams_and_generators_per_endpoint() {
        let up = "[[upstream]]\nname = \"fleet\"\nbase_url = \"http://10.0.0.5:8000/v1/\"\nmodel = \"Qwen/Qwen2.5-7B-Instruct\"\napi_key = \"sk-abc\"\ntimeout = \"45s\"\n";
        // No [model] path needed: everything generates upstream.
        let text = format!(
            "[model]\ngenerator = \"fleet\"\n{up}\
             [[aibot]]\nbot_id = \"a\"\nsecret = \"s\"\n\
             [[aibot]]\nbot_id = \"b\"\nsecret = \"s\"\nfallback = \"none\"\n"
        );
        let c = Config::parse(&text, None, vec![]).unwrap();
        assert!(!c.local_model);
        let u = &c.upstreams[0];
        assert_eq!(u.base_url, "http://10.0.0.5:8000/v1");
        assert_eq!(
            (u.timeout, u.retries, u.cooldown),
            (Duration::from_secs(45), 2, Duration::from_secs(10))
        );
        assert_eq!(c.generators.get("aibot", "a").generator, "fleet");
        let sum = c.summary();
        assert!(
            sum.contains("generator        fleet; no local model"),
            "{sum}"
        );
        assert!(!sum.contains("sk-abc"), "{sum}");

        // A bot falling back on the local model needs the model.
        let text = format!(
            "[model]\npath = \"/nonexistent.gguf\"\ngenerator = \"fleet\"\n{up}\
             [[aibot]]\nbot_id = \"a\"\nsecret = \"s\"\nfallback = \"local\"\n"
        );
        let p = Config::parse(&text, None, vec![]).unwrap_err();
        assert!(
            p.iter()
                .any(|m| m.contains("model.path: /nonexistent.gguf does not exist")),
            "{p:?}"
        );

        // The reverse: local first, the fleet as the fallback, per app.
        let text = format!(
            "{}{up}[[app]]\ncorpid = \"ww1\"\nagentid = 7\nsecret = \"s\"\ntoken = \"t\"\nencoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\nfallback = \"fleet\"\n[box]\ncallback_listen = \"127.0.0.1:0\"\n",
            model()
        );
        let c = Config::parse(&text, None, vec![]).unwrap();
        assert!(c.local_model);
        assert_eq!(
            c.generators.get("app", "7").to_string(),
            "local (fallback fleet)"
        );
        assert_eq!(c.generators.default_value().to_string(), "local");

        // One message per problem.
        let text = format!(
            "{}[[upstream]]\nname = \"local\"\nbase_url = \"10.0.0.5:8000\"\nmodel = \"\"\ntimeout = \"never\"\n\
             [[upstream]]\nname = \"x\"\nbase_url = \"http://x/v1\"\nmodel = \"m\"\n\
             [[upstream]]\nname = \"x\"\nbase_url = \"https:///v1\"\nmodel = \"m\"\n\
             [[aibot]]\nbot_id = \"a\"\nsecret = \"s\"\ngenerator = \"vllm\"\n\
             [[aibot]]\nbot_id = \"b\"\nsecret = \"s\"\ngenerator = \"x\"\nfallback = \"x\"\n",
            model()
        );
        let p = Config::parse(&text, None, vec![]).unwrap_err();
        let want = [
            "upstream[0] (local).name: must be set and not \"local\" or \"none\"",
            "upstream[0] (local).base_url: \"10.0.0.5:8000\" does not start with http:// or https://",
            "upstream[0] (local).model is empty",
            "upstream[0] (local).timeout",
            "upstream[2] (x).name appears twice",
            "upstream[2] (x).base_url: \"https:///v1\" has no host",
            "aibot (a).generator: \"vllm\" is neither",
            "aibot (b).fallback: \"x\" is the generator itself",
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

    #[test]
    fn the_openai_api_needs_keys_or_anonymous_loopback() {
        let ok = format!(
            "{}[openai]\nlisten = \"0.0.0.0:8080\"\napi_keys = [\"sk-0123456789\", {{ key = \"sk-abcdefghij\", id = \"dify\", persona = true }}]\n",
            model()
        );
        let c = Config::parse(&ok, None, vec![]).unwrap();
        let o = c.openai.as_ref().unwrap();
        assert_eq!(o.keys.len(), 2);
        assert_eq!((o.keys[1].1.as_deref(), o.keys[1].2), (Some("dify"), true));
        let sum = c.summary();
        assert!(
            sum.contains("openai           http://0.0.0.0:8080/v1, 2 API key(s)"),
            "{sum}"
        );
        assert!(!sum.contains("sk-0123456789"));
        assert!(Config::parse(
            &format!(
                "{}[openai]\nlisten = \"127.0.0.1:8080\"\nallow_anonymous = true\n",
                model()
            ),
            None,
            vec![]
        )
        .is_ok());
        for (body, want) in [
            ("listen = \"127.0.0.1:8080\"\n", "openai.api_keys is empty"),
            (
                "listen = \"0.0.0.0:8080\"\nallow_anonymous = true\n",
                "is not a loopback address",
            ),
            (
                "listen = \"127.0.0.1:8080\"\napi_keys = [\"short\"]\n",
                "at least 8 characters",
            ),
            (
                "listen = \"127.0.0.1:8080\"\napi_keys = [\"sk-0123456789\", \"sk-0123456789\"]\n",
                "the same key appears twice",
            ),
        ] {
            let p =
                Config::parse(&format!("{}[openai]\n{body}", model()), None, vec![]).unwrap_err();
            assert!(p.len() == 1 && p[0].contains(want), "{body}: {p:?}");
        }
    }
}
