//! `cargo bench --bench pipeline`: the whole box under load — simulator → long connection →
//! router → sessions → limiter → continuous-batching scheduler → streamed replies.
//!
//! First one user asks 4 questions in turn (the single-stream baseline), then 8 users ask 4
//! questions each at the same time (each user asks the next question once the previous answer
//! is finished). Prints the aggregate generated tokens per second, the ratio to the single
//! stream's, and p50/p95 of the time from posting a message to its first streamed frame and to
//! its final frame. Targets (issue 4): ratio ≥ 3 with 8 users; first frame p95 < 1.5 s on the
//! 2-core CI machine.
//!
//! Frames are observed by polling the simulator's control API every 25 ms, so the latencies
//! carry up to 25 ms of observation delay. Environment: `PIPELINE_USERS` (8),
//! `PIPELINE_QUESTIONS` (4), `PIPELINE_MAX_TOKENS` (96).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wecom_edge::app;
use wecom_edge::config::Limits;
use wecom_edge::demo::{self, DemoOptions, DEMO_BOT_ID, DEMO_BOT_SECRET};
use wecom_edge_actors::wecom::sim::{self, AiBotSpec, SimConfig};

const QUESTIONS: [&str; 4] = [
    "What is a database index?",
    "Give me three tips for writing clear emails.",
    "Explain what a firewall does.",
    "Why is the sky blue?",
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Sample {
    first_frame: Duration,
    finished: Duration,
}

/// One user asking `n` questions in turn in their own group.
async fn user(http: reqwest::Client, sim: String, u: usize, n: usize) -> Vec<Sample> {
    let mut out = Vec::new();
    for q in 0..n {
        let t0 = Instant::now();
        let r: Value = http
            .post(format!("{sim}/sim/aibot/{DEMO_BOT_ID}/messages"))
            .json(&json!({"chattype": "group", "chatid": format!("bench-{u}"),
                          "userid": format!("user{u}"),
                          "text": format!("@{DEMO_BOT_ID} {}", QUESTIONS[(u + q) % QUESTIONS.len()])}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let req_id = r["req_id"].as_str().expect("req_id").to_string();
        let mut first = None;
        loop {
            let f = demo::frames(&http, &sim, &req_id).await.unwrap();
            if first.is_none() && !f.is_empty() {
                first = Some(t0.elapsed());
            }
            if f.last().is_some_and(|(_, fin)| *fin) {
                out.push(Sample {
                    first_frame: first.unwrap_or_else(|| t0.elapsed()),
                    finished: t0.elapsed(),
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    out
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

async fn run(users: usize, questions: usize, max_tokens: usize) -> (f64, Vec<Sample>) {
    let dir = std::env::temp_dir().join(format!("wecom-edge-bench-{}-{users}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = sim::start(
        SimConfig {
            aibots: vec![AiBotSpec {
                bot_id: DEMO_BOT_ID.into(),
                secret: DEMO_BOT_SECRET.into(),
            }],
            ..Default::default()
        },
        any,
    )
    .await
    .unwrap();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(wecom_edge_actors::model::DEFAULT_MODEL_FILE);
    let opts = DemoOptions {
        sim_listen: any,
        admin_listen: any,
        data_dir: dir.clone(),
        model,
        device: "auto".into(),
        threads: 0,
        max_tokens,
        temperature: 0.0,
    };
    let mut cfg = demo::config(&opts, &sim);
    cfg.limits = Limits {
        per_user_per_minute: 1000,
        per_chat_per_minute: 1000,
        ..Limits::default()
    };
    let running = app::start(&cfg).await.unwrap();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    loop {
        let s: Value = http
            .get(format!("{base}/sim/aibot/{DEMO_BOT_ID}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["connected"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tokens0 = running.metrics.tokens.get();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..users)
        .map(|u| tokio::spawn(user(http.clone(), base.clone(), u, questions)))
        .collect();
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    let wall = t0.elapsed().as_secs_f64();
    let tokens = running.metrics.tokens.get() - tokens0;
    running.shutdown().await;
    sim.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    (tokens as f64 / wall, samples)
}

fn report(label: &str, tps: f64, samples: &[Sample]) {
    let mut ff: Vec<f64> = samples
        .iter()
        .map(|s| s.first_frame.as_secs_f64())
        .collect();
    let mut fin: Vec<f64> = samples.iter().map(|s| s.finished.as_secs_f64()).collect();
    println!(
        "{label}: {n} answers, {tps:.1} generated tok/s; first frame p50 {:.3} s p95 {:.3} s; \
         finished p50 {:.3} s p95 {:.3} s",
        pct(&mut ff, 0.5),
        pct(&mut ff, 0.95),
        pct(&mut fin, 0.5),
        pct(&mut fin, 0.95),
        n = samples.len(),
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let users = env("PIPELINE_USERS", 8);
    let questions = env("PIPELINE_QUESTIONS", 4);
    let max_tokens = env("PIPELINE_MAX_TOKENS", 96);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (single, s1) = run(1, questions, max_tokens).await;
        report("1 user", single, &s1);
        let (multi, sn) = run(users, questions, max_tokens).await;
        report(&format!("{users} users"), multi, &sn);
        println!(
            "aggregate/single: {:.2}x ({multi:.1} / {single:.1} tok/s; target >= 3x)",
            multi / single
        );
    });
}
