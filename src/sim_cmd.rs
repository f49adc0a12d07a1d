//! `wecom-edge sim`: the WeCom simulator as a standalone server.

use std::net::SocketAddr;

use clap::Args;
use wecom_edge_actors::wecom::sim::{self, AiBotSpec, AiBotWebhookSpec, AppSpec, SimConfig};

/// The AI bot `wecom-edge sim` serves when no bot, app or webhook is named.
pub const DEMO_BOT: &str = "demo-bot:demo-secret";

#[derive(Args)]
pub struct SimArgs {
    /// Address to listen on: the API at http://ADDR/cgi-bin/…, the AI-bot long connection at
    /// ws://ADDR, the control API at http://ADDR/sim/….
    #[arg(long, default_value = "127.0.0.1:8620")]
    listen: SocketAddr,
    /// A long-connection AI bot, BOT_ID:SECRET (repeatable).
    #[arg(long = "aibot", value_name = "BOT_ID:SECRET")]
    aibots: Vec<AiBotSpec>,
    /// A webhook-mode AI bot, BOT_ID:TOKEN:ENCODING_AES_KEY (repeatable); set its callback URL
    /// with PUT /sim/aibot/{bot_id}/callback.
    #[arg(long = "aibot-webhook", value_name = "BOT_ID:TOKEN:ENCODING_AES_KEY")]
    aibot_webhooks: Vec<AiBotWebhookSpec>,
    /// A self-built app, CORPID:AGENTID:SECRET:TOKEN:ENCODING_AES_KEY (repeatable); set its
    /// callback URL with PUT /sim/app/{agentid}/callback.
    #[arg(
        long = "app",
        value_name = "CORPID:AGENTID:SECRET:TOKEN:ENCODING_AES_KEY"
    )]
    apps: Vec<AppSpec>,
    /// A group robot webhook key (repeatable).
    #[arg(long = "webhook", value_name = "KEY")]
    webhooks: Vec<String>,
}

pub fn run(a: SimArgs) -> anyhow::Result<()> {
    let mut cfg = SimConfig {
        aibots: a.aibots,
        aibot_webhooks: a.aibot_webhooks,
        apps: a.apps,
        webhooks: a.webhooks,
        ..Default::default()
    };
    if cfg.aibots.is_empty()
        && cfg.aibot_webhooks.is_empty()
        && cfg.apps.is_empty()
        && cfg.webhooks.is_empty()
    {
        cfg.aibots
            .push(DEMO_BOT.parse().map_err(anyhow::Error::msg)?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let h = sim::start(cfg.clone(), a.listen).await?;
        println!("WeCom simulator on {}", h.base_url());
        println!("  AI-bot long connection: {}", h.ws_url());
        for b in &cfg.aibots {
            println!("  aibot {} (long connection)", b.bot_id);
        }
        for b in &cfg.aibot_webhooks {
            println!(
                "  aibot {} (webhook; PUT /sim/aibot/{}/callback)",
                b.bot_id, b.bot_id
            );
        }
        for app in &cfg.apps {
            println!(
                "  app {} of {} (PUT /sim/app/{}/callback)",
                app.agentid, app.corpid, app.agentid
            );
        }
        println!("  webhooks: {}", cfg.webhooks.len());
        println!(
            "  control API: {}/sim/…  (see `wecom-edge sim --help` and README)",
            h.base_url()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        h.stop().await;
        anyhow::Ok(())
    })
}
