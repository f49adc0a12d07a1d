//! `wecom-edge demo`: the simulator with the AI bot `demo-bot`, and the box wired to it over the
//! long connection — the whole product on one machine, no WeCom account needed.
//!
//! Interactive mode plays a WeCom user in a group: each line typed is posted to the simulator's
//! control API as an @-message, and the answer is printed as WeCom renders the stream (the text
//! grows with each frame; the last frame has `finish:true`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use wecom_edge_actors::model::{GenerateParams, SamplingParams};
use wecom_edge_actors::session::{FilterSpec, Persona, Personas};
use wecom_edge_actors::wecom::sim::{self, AiBotSpec, SimConfig, SimHandle};

use crate::app::{self, Running};
use crate::config::{AiBot, AiBotMode, Config, Limits, Secret, SessionScope, Webhook};

/// The demo bot's id.
pub const DEMO_BOT_ID: &str = "demo-bot";
/// The demo bot's long-connection secret (the simulator's, not a real one).
pub const DEMO_BOT_SECRET: &str = "demo-secret";
/// The webhook key of the demo's group robot `demo-alerts` (`alerts = true`): the box's alerts
/// land in the simulator's outbox (`GET /sim/outbox`).
pub const DEMO_ALERTS_KEY: &str = "demo-alerts-key";
/// The group the interactive user writes in.
pub const DEMO_GROUP: &str = "demo-group";

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The simulator's listen address.
    pub sim_listen: SocketAddr,
    /// The box's admin listen address.
    pub admin_listen: SocketAddr,
    /// State directory.
    pub data_dir: PathBuf,
    /// GGUF model.
    pub model: PathBuf,
    /// `auto`, `cpu`, `cuda` or `vulkan`.
    pub device: String,
    /// CPU threads (0: all).
    pub threads: usize,
    /// Longest answer, tokens.
    pub max_tokens: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// `demo --config FILE`: the persona, filter, knowledge, model, sessions and limits sections of
    /// FILE ([`Config::load_for_demo`], its model path already settled); `max_tokens` and
    /// `temperature` above are then unused (FILE's own apply).
    pub base: Option<Config>,
}

/// The simulator and the box, running.
pub struct Demo {
    /// The simulator.
    pub sim: SimHandle,
    /// The box.
    pub running: Running,
}

/// The configuration the demo runs the box with: `o.base`'s sections (if any) with the
/// simulator's `demo-bot` as the only bot.
pub fn config(o: &DemoOptions, sim: &SimHandle) -> Config {
    let bots = vec![AiBot {
        bot_id: DEMO_BOT_ID.into(),
        mode: AiBotMode::LongConnection {
            secret: Secret::new(DEMO_BOT_SECRET),
            standby: None,
        },
    }];
    if let Some(base) = &o.base {
        let mut c = base.clone();
        c.data_dir.clone_from(&o.data_dir);
        c.admin_listen = o.admin_listen;
        c.callback_listen = None;
        c.api_base = sim.base_url();
        c.ws_url = sim.ws_url();
        if c.model_path.as_os_str().is_empty() {
            c.model_path.clone_from(&o.model);
        }
        c.aibots = bots;
        c.apps = Vec::new();
        c.webhooks = demo_webhooks();
        return c;
    }
    let persona = Persona {
        generate: GenerateParams {
            max_tokens: o.max_tokens,
            sampling: SamplingParams {
                temperature: o.temperature,
                ..Default::default()
            },
        },
        ..Persona::default()
    };
    Config {
        data_dir: o.data_dir.clone(),
        admin_listen: o.admin_listen,
        callback_listen: None,
        api_base: sim.base_url(),
        ws_url: sim.ws_url(),
        model_path: o.model.clone(),
        model_imported: false,
        local_model: true,
        upstreams: Vec::new(),
        generators: Default::default(),
        openai: None,
        console: crate::config::Console {
            listen: std::net::SocketAddr::new(o.admin_listen.ip(), crate::config::CONSOLE_PORT),
            allow_from: wecom_edge_actors::console::allow::AllowFrom::lan(),
            certificate: None,
        },
        device: o.device.clone(),
        threads: o.threads,
        max_tokens: o.max_tokens,
        temperature: o.temperature,
        cache_type: Default::default(),
        reasoning: Default::default(),
        max_prompt_tokens: 2048,
        max_message_tokens: 1536,
        scope: SessionScope::User,
        idle_timeout: Duration::from_secs(600),
        limits: Limits::default(),
        aibots: bots,
        apps: Vec::new(),
        webhooks: demo_webhooks(),
        personas: Personas::new(std::sync::Arc::new(persona)),
        filter: FilterSpec::default(),
        filter_sizes: (0, 0),
        knowledge: Default::default(),
        alerts: Default::default(),
        admins: Vec::new(),
        warnings: Vec::new(),
    }
}

/// The demo's only group robot: `demo-alerts`, which gets the alerts.
fn demo_webhooks() -> Vec<Webhook> {
    vec![Webhook {
        name: "demo-alerts".into(),
        key: Secret::new(DEMO_ALERTS_KEY),
        alerts: true,
    }]
}

/// Starts the simulator, then the box connected to it.
///
/// # Errors
/// As [`app::start`]; the simulator's listener.
pub async fn start(o: &DemoOptions) -> anyhow::Result<Demo> {
    std::fs::create_dir_all(&o.data_dir)
        .with_context(|| format!("data directory {}", o.data_dir.display()))?;
    let sim = sim::start(sim_config(), o.sim_listen)
        .await
        .with_context(|| format!("simulator listener {}", o.sim_listen))?;
    let cfg = config(o, &sim);
    let running = app::start(&cfg).await?;
    Ok(Demo { sim, running })
}

/// The simulator the demo's box talks to: the AI bot `demo-bot` (long connection) and the
/// alert robot `demo-alerts`.
pub fn sim_config() -> SimConfig {
    SimConfig {
        aibots: vec![AiBotSpec {
            bot_id: DEMO_BOT_ID.into(),
            secret: DEMO_BOT_SECRET.into(),
        }],
        webhooks: vec![DEMO_ALERTS_KEY.into()],
        ..Default::default()
    }
}

/// Posts `text` as `userid` in the demo group; returns the req_id the answer streams under.
///
/// # Errors
/// HTTP failures; the simulator's refusal (e.g. the box is not connected).
pub async fn say(
    http: &reqwest::Client,
    sim: &str,
    userid: &str,
    text: &str,
) -> anyhow::Result<String> {
    let r: Value = http
        .post(format!("{sim}/sim/aibot/{DEMO_BOT_ID}/messages"))
        .json(
            &json!({"chattype": "group", "chatid": DEMO_GROUP, "userid": userid,
                      "text": format!("@{DEMO_BOT_ID} {text}")}),
        )
        .send()
        .await?
        .json()
        .await?;
    r["req_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("simulator: {r}"))
}

/// The stream frames the box sent for `req_id` so far: `(content, finish)` each.
///
/// # Errors
/// HTTP failures.
pub async fn frames(
    http: &reqwest::Client,
    sim: &str,
    req_id: &str,
) -> anyhow::Result<Vec<(String, bool)>> {
    let r: Value = http
        .get(format!("{sim}/sim/aibot/{DEMO_BOT_ID}/replies"))
        .query(&[("req_id", req_id)])
        .send()
        .await?
        .json()
        .await?;
    Ok(r["frames"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    let s = &f["body"]["stream"];
                    (
                        s["content"].as_str().unwrap_or_default().to_string(),
                        s["finish"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The interactive loop: stdin lines become group messages; answers stream to stdout.
///
/// # Errors
/// Terminal I/O.
pub async fn interact(sim: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut out = tokio::io::stdout();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    out.write_all(
        format!(
            "You are `you` in the WeCom group `{DEMO_GROUP}`; the bot is @{DEMO_BOT_ID}. \
             Type a question (#help, #reset, #status work too); Ctrl-D ends.\n> "
        )
        .as_bytes(),
    )
    .await?;
    out.flush().await?;
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            out.write_all(b"> ").await?;
            out.flush().await?;
            continue;
        }
        let req_id = match say(&http, sim, "you", line).await {
            Ok(r) => r,
            Err(e) => {
                out.write_all(format!("(not sent: {e})\n> ").as_bytes())
                    .await?;
                out.flush().await?;
                continue;
            }
        };
        out.write_all(format!("@{DEMO_BOT_ID}: ").as_bytes())
            .await?;
        let mut printed = 0usize;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            let fs = frames(&http, sim, &req_id).await.unwrap_or_default();
            if let Some((content, finish)) = fs.last() {
                // Each frame holds the whole answer so far; print what is new.
                if content.len() > printed && content.is_char_boundary(printed) {
                    out.write_all(&content.as_bytes()[printed..]).await?;
                    out.flush().await?;
                    printed = content.len();
                }
                if *finish {
                    break;
                }
            }
            if tokio::time::Instant::now() > deadline {
                out.write_all(b" (no final frame within 10 min)").await?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        out.write_all(b"\n> ").await?;
        out.flush().await?;
    }
    Ok(())
}

/// Where the data directory is for a demo: the given one, else a fresh temporary directory.
pub fn data_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(d) => Ok(d),
        None => {
            let d = std::env::temp_dir().join(format!("wecom-edge-demo-{}", std::process::id()));
            std::fs::create_dir_all(&d)?;
            Ok(d)
        }
    }
}
