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
//! Then the load test of issue 11: `PIPELINE_LOAD_USERS` (50) users, each in their own chat,
//! ask `PIPELINE_LOAD_QUESTIONS` (3) questions each in turn, all at once, under the box's
//! default limits (8 generation slots, the fair queue). Prints answered, refused (busy or rate)
//! and lost (no final frame within 10 minutes), p50/p95 of the time to the first frame (the
//! "queued, N ahead" frame counts: it is what the user sees) and to the first answer text, the
//! most questions any one user had refused, and the process's RSS before (after the model
//! loaded), at its peak (VmHWM) and once idle again (sessions stopped, parked KV caches
//! released: the bench's idle timeout is 2 s).
//!
//! Then (phase `stages`) the same 1-user and 8-user runs with the turn's optional stages on: a
//! content filter of 5,000 mask terms and one regex (in and out, streamed hold-back) and a
//! knowledge base whose documents match every question (retrieval adds up to 3 excerpts to each
//! prompt, within 512 tokens); printed beside the plain runs (issue 13: with both on, aggregate
//! ≥ 3× one user's tok/s and first frame p95 < 1 s with 8 users).
//!
//! Then (phase `shared`, issue 14) WeCom chats and OpenAI API clients share the model: 8 users
//! through the simulator and 8 clients streaming `/v1/chat/completions` (the box's `[openai]`,
//! anonymous on loopback), all at once, 4 questions each in turn; prints each side's first-token
//! p50/p95 (WeCom: the first frame; API: the first content chunk) and the aggregate tok/s.
//!
//! Then (phase `upstream`, issue 14) the upstream path's added latency per answer: llama.cpp's
//! server (llama-cpp-python, installed by scripts/fetch-llama-server.sh; the phase says it is
//! skipped without it) with the default model on loopback (one thread: the other core is the
//! box's and the client's), asked `PIPELINE_UPSTREAM_ANSWERS` (12) questions directly and through a box whose only generator is that server (the box's
//! `/v1/chat/completions`: limiter, filter, knowledge, the upstream generator, audit, SSE back),
//! one at a time, the same request (temperature 0, seed, `max_tokens`) each way. Before every
//! measured request a one-token request with another prompt resets llama.cpp's prompt-prefix
//! reuse, so neither side starts from the other's prompt. Prints p50/p95 of the time to the
//! first content chunk and to `[DONE]` for both, and p50/p95 of the per-answer difference.
//!
//! Frames are observed by polling the simulator's control API every 25 ms (100 ms in the load
//! test), so the latencies carry up to that much observation delay. Environment: `PIPELINE_USERS` (8),
//! `PIPELINE_QUESTIONS` (4), `PIPELINE_MAX_TOKENS` (96); `PIPELINE_PHASES` (`scaling,stages,load,shared,upstream`).

#[path = "../tests/common/llama_server.rs"]
mod llama_server;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wecom_edge::app;
use wecom_edge::config::Limits;
use wecom_edge::demo::{self, DemoOptions, DEMO_BOT_ID};
use wecom_edge_actors::session::{Action, FilterSpec, KnowledgeSettings, RegexRule};
use wecom_edge_actors::wecom::sim;

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
    /// The first frame with answer text (not the queued notice); `None`: refused or lost.
    first_text: Option<Duration>,
    finished: Duration,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Answered,
    Refused,
    Lost,
}

const QUEUED_PREFIX: &str = "⏳";

fn outcome_of(text: &str) -> Outcome {
    if text.contains("(I am busy") || text.contains("please try again in") {
        Outcome::Refused
    } else {
        Outcome::Answered
    }
}

/// One user asking `n` questions in turn in their own group.
async fn user(
    http: reqwest::Client,
    sim: String,
    u: usize,
    n: usize,
    poll: Duration,
) -> Vec<Sample> {
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
        let mut first_text = None;
        loop {
            let f = demo::frames(&http, &sim, &req_id).await.unwrap();
            if first.is_none() && !f.is_empty() {
                first = Some(t0.elapsed());
            }
            if first_text.is_none() && f.iter().any(|(c, _)| !c.starts_with(QUEUED_PREFIX)) {
                first_text = Some(t0.elapsed());
            }
            let done = f.last().filter(|(_, fin)| *fin).map(|(c, _)| outcome_of(c));
            let lost = t0.elapsed() > Duration::from_secs(600);
            if done.is_some() || lost {
                let outcome = done.unwrap_or(Outcome::Lost);
                out.push(Sample {
                    first_frame: first.unwrap_or_else(|| t0.elapsed()),
                    first_text: first_text.filter(|_| outcome == Outcome::Answered),
                    finished: t0.elapsed(),
                    outcome,
                });
                break;
            }
            tokio::time::sleep(poll).await;
        }
    }
    out
}

/// One API client asking `n` questions in turn, streaming.
async fn api_client(http: reqwest::Client, url: String, u: usize, n: usize) -> Vec<Sample> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    for q in 0..n {
        let t0 = Instant::now();
        let r = http
            .post(&url)
            .json(&json!({"model": "any", "stream": true, "temperature": 0,
                          "messages": [{"role": "user", "content": QUESTIONS[(u + q + 1) % QUESTIONS.len()]}]}))
            .send()
            .await
            .unwrap();
        let ok = r.status().is_success();
        let mut body = r.bytes_stream();
        let mut first = None;
        let mut seen = String::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if first.is_none()
                && seen.contains("\"content\":\"")
                && seen.matches("data: ").count() > 1
            {
                first = Some(t0.elapsed());
            }
        }
        let answered = ok && seen.contains("data: [DONE]");
        out.push(Sample {
            first_frame: first.unwrap_or_else(|| t0.elapsed()),
            first_text: first,
            finished: t0.elapsed(),
            outcome: if answered {
                Outcome::Answered
            } else {
                Outcome::Lost
            },
        });
    }
    out
}

/// One streamed chat completion: time to the first content chunk, time to `[DONE]`, the text.
async fn timed_completion(http: &reqwest::Client, url: &str, body: &Value) -> (f64, f64, String) {
    use futures_util::StreamExt;
    let t0 = Instant::now();
    let r = http.post(url).json(body).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    let mut stream = r.bytes_stream();
    let (mut buf, mut text, mut first) = (String::new(), String::new(), None);
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                return (first.unwrap_or(f64::NAN), t0.elapsed().as_secs_f64(), text);
            }
            let v: Value = serde_json::from_str(data).unwrap();
            if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
                if !c.is_empty() {
                    first.get_or_insert(t0.elapsed().as_secs_f64());
                    text.push_str(c);
                }
            }
        }
    }
    panic!("{url}: the stream ended without [DONE]");
}

/// Phase `upstream`: llama.cpp's server directly vs through the box (see the module docs).
async fn upstream_overhead(answers: usize, max_tokens: usize) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(python) = llama_server::python(root) else {
        println!("upstream: skipped: llama.cpp's server is not installed (scripts/fetch-llama-server.sh)");
        return;
    };
    let model = root
        .join("models")
        .join(wecom_edge_actors::model::DEFAULT_MODEL_FILE);
    let (_server, base) = llama_server::start(&python, &model).await;
    let http = reqwest::Client::new();

    let dir =
        std::env::temp_dir().join(format!("wecom-edge-bench-upstream-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[box]\ndata_dir = \"{}\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [model]\ngenerator = \"llama\"\nfallback = \"none\"\nmax_tokens = {max_tokens}\n\
         [openai]\nlisten = \"127.0.0.1:0\"\nallow_anonymous = true\n\
         [limits]\nper_user_per_minute = 1000\nper_chat_per_minute = 1000\n\
         [[upstream]]\nname = \"llama\"\nbase_url = \"{base}\"\nmodel = \"smollm2\"\n\
         context_length = 4096\nretries = 0\ntimeout = \"60s\"\n",
        dir.display()
    );
    let cfg = wecom_edge::config::Config::parse(&text, None, Vec::new()).unwrap();
    let running = app::start(&cfg).await.unwrap();
    let through = format!("http://{}/v1/chat/completions", running.openai.unwrap());
    let direct = format!("{base}/chat/completions");
    let request = |q: &str, max: usize| {
        json!({"model": "smollm2", "stream": true, "temperature": 0, "seed": 7,
               "max_tokens": max, "messages": [{"role": "user", "content": q}]})
    };
    let reset = request("Say one word.", 1);
    // One answer each way first: both paths warm (connections, the box's first turn).
    timed_completion(&http, &direct, &request(QUESTIONS[0], max_tokens)).await;
    timed_completion(&http, &through, &request(QUESTIONS[0], max_tokens)).await;
    let (mut d_first, mut d_done, mut b_first, mut b_done) = (vec![], vec![], vec![], vec![]);
    let (mut add_first, mut add_done, mut same) = (vec![], vec![], 0);
    for i in 0..answers {
        let body = request(QUESTIONS[i % QUESTIONS.len()], max_tokens);
        timed_completion(&http, &direct, &reset).await;
        let d = timed_completion(&http, &direct, &body).await;
        timed_completion(&http, &direct, &reset).await;
        let b = timed_completion(&http, &through, &body).await;
        same += usize::from(d.2 == b.2);
        add_first.push(b.0 - d.0);
        add_done.push(b.1 - d.1);
        d_first.push(d.0);
        d_done.push(d.1);
        b_first.push(b.0);
        b_done.push(b.1);
    }
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let ms = |v: &mut Vec<f64>, p| pct(v, p) * 1000.0;
    println!(
        "upstream: llama.cpp direct: first token p50 {:.0} ms p95 {:.0} ms, answer p50 {:.0} ms p95 {:.0} ms",
        ms(&mut d_first, 0.5), ms(&mut d_first, 0.95), ms(&mut d_done, 0.5), ms(&mut d_done, 0.95)
    );
    println!(
        "upstream: through the box: first token p50 {:.0} ms p95 {:.0} ms, answer p50 {:.0} ms p95 {:.0} ms",
        ms(&mut b_first, 0.5), ms(&mut b_first, 0.95), ms(&mut b_done, 0.5), ms(&mut b_done, 0.95)
    );
    println!(
        "upstream: added per answer: first token p50 {:+.1} ms p95 {:+.1} ms, whole answer p50 {:+.1} ms p95 {:+.1} ms \
         ({answers} answers of <= {max_tokens} tokens, {same} identical to llama.cpp's)",
        ms(&mut add_first, 0.5), ms(&mut add_first, 0.95), ms(&mut add_done, 0.5), ms(&mut add_done, 0.95)
    );
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Resident set size now and at its peak (VmRSS, VmHWM), MiB.
fn rss_mib() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Run {
    tps: f64,
    samples: Vec<Sample>,
    /// The API clients' answers (phase `shared`).
    api_samples: Vec<Sample>,
    /// RSS after the model loaded, at the peak, and idle again (MiB).
    rss: (f64, f64, f64),
}

/// Writes the `stages` phase's filter terms and documents under `dir`; the settings for them.
fn stages(dir: &std::path::Path) -> (FilterSpec, KnowledgeSettings) {
    // Terms that do not occur in the answers (the work is the matching, not the masking):
    // 5,000 two- to four-character CJK words and made-up English code names.
    let mut terms = String::new();
    for i in 0..5000u32 {
        if i % 2 == 0 {
            let a = char::from_u32(0x4E00 + (i * 7919) % 20000).unwrap();
            let b = char::from_u32(0x4E00 + (i * 104_729) % 20000).unwrap();
            let c = char::from_u32(0x4E00 + (i * 1_299_709) % 20000).unwrap();
            terms.push_str(&format!("{a}{b}{c}\n"));
        } else {
            terms.push_str(&format!("project-zx{i:05}\n"));
        }
    }
    let mask = dir.join("mask.txt");
    std::fs::write(&mask, terms).unwrap();
    let kdir = dir.join("knowledge");
    std::fs::create_dir_all(&kdir).unwrap();
    for (name, text) in [
        ("indexes.md", "# Database indexes\n\nA database index is a sorted structure over one or more columns that lets queries find rows without scanning the table. Index the columns used in WHERE and JOIN clauses; composite indexes follow the leftmost-prefix rule.\n"),
        ("email.md", "# Writing emails\n\nClear emails state the request in the first sentence, keep one topic per email, and end with the action and the deadline. Tips: short subject lines, bullet points, and a named owner.\n"),
        ("firewall.md", "# Firewalls\n\nA firewall filters network traffic between zones by rules on addresses, ports and protocols. The office firewall blocks inbound connections except VPN and allows outbound web traffic.\n"),
        ("sky.md", "# Why the sky is blue\n\nSunlight is scattered by air molecules; shorter blue wavelengths scatter much more than red (Rayleigh scattering), so the sky looks blue.\n"),
    ] {
        std::fs::write(kdir.join(name), text).unwrap();
    }
    let filter = FilterSpec {
        mask: vec![mask],
        regex: vec![RegexRule {
            id: "card".into(),
            pattern: r"\b\d{16}\b".into(),
            action: Action::Mask,
        }],
        ..FilterSpec::default()
    };
    let knowledge = KnowledgeSettings {
        dir: Some(kdir),
        ..KnowledgeSettings::default()
    };
    (filter, knowledge)
}

async fn run(
    users: usize,
    questions: usize,
    max_tokens: usize,
    load: bool,
    with_stages: bool,
    api_users: usize,
) -> Run {
    let dir = std::env::temp_dir().join(format!("wecom-edge-bench-{}-{users}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sim = sim::start(demo::sim_config(), any).await.unwrap();
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
        base: None,
    };
    let mut cfg = demo::config(&opts, &sim);
    if with_stages {
        (cfg.filter, cfg.knowledge) = stages(&dir);
    }
    if load {
        // The box's defaults, but sessions idle (and their caches released) after 2 s.
        cfg.idle_timeout = Duration::from_secs(2);
    } else {
        cfg.limits = Limits {
            per_user_per_minute: 1000,
            per_chat_per_minute: 1000,
            ..Limits::default()
        };
    }
    if api_users > 0 {
        cfg.openai = Some(wecom_edge::config::OpenAi {
            listen: any,
            keys: Vec::new(),
            allow_anonymous: true,
        });
    }
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
    if with_stages {
        // The folder is mirrored once the audit actor runs: wait for its four documents.
        let kb = wecom_edge_actors::audit::knowledge::Knowledge::open(&dir).unwrap();
        while kb.len().unwrap_or(0) < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // 50 pollers at 25 ms would be 2000 HTTP requests a second on the box's own 2 cores.
    let poll = Duration::from_millis(if load { 100 } else { 25 });
    let rss_base = rss_mib().0;
    let tokens0 = running.metrics.tokens.get();
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..users)
        .map(|u| tokio::spawn(user(http.clone(), base.clone(), u, questions, poll)))
        .collect();
    let api_tasks: Vec<_> = (0..api_users)
        .map(|u| {
            let url = format!("http://{}/v1/chat/completions", running.openai.unwrap());
            tokio::spawn(api_client(http.clone(), url, u, questions))
        })
        .collect();
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    let mut api_samples = Vec::new();
    for t in api_tasks {
        api_samples.extend(t.await.unwrap());
    }
    let wall = t0.elapsed().as_secs_f64();
    let tokens = running.metrics.tokens.get() - tokens0;
    let peak = rss_mib().1;
    // Idle: every session stops after 2 s and the scheduler drops its parked cache then.
    tokio::time::sleep(Duration::from_secs(if load { 5 } else { 0 })).await;
    let idle = rss_mib().0;
    running.shutdown().await;
    sim.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Run {
        tps: tokens as f64 / wall,
        samples,
        api_samples,
        rss: (rss_base, peak, idle),
    }
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

fn report_load(users: usize, questions: usize, r: &Run) {
    let n = |o: Outcome| r.samples.iter().filter(|s| s.outcome == o).count();
    let mut ff: Vec<f64> = r
        .samples
        .iter()
        .map(|s| s.first_frame.as_secs_f64())
        .collect();
    let mut ft: Vec<f64> = r
        .samples
        .iter()
        .filter_map(|s| s.first_text.map(|d| d.as_secs_f64()))
        .collect();
    if ft.is_empty() {
        ft.push(f64::NAN);
    }
    let per_user_max_refused = r
        .samples
        .chunks(questions)
        .map(|c| c.iter().filter(|s| s.outcome == Outcome::Refused).count())
        .max()
        .unwrap_or(0);
    println!(
        "load {users} users x {questions}: {} answered, {} refused, {} lost (most refused for one \
         user: {per_user_max_refused}); first frame p50 {:.2} s p95 {:.2} s; first answer text \
         p50 {:.2} s p95 {:.2} s; {:.1} generated tok/s",
        n(Outcome::Answered),
        n(Outcome::Refused),
        n(Outcome::Lost),
        pct(&mut ff, 0.5),
        pct(&mut ff, 0.95),
        pct(&mut ft, 0.5),
        pct(&mut ft, 0.95),
        r.tps,
    );
    println!(
        "load RSS: {:.0} MiB after the model loaded, peak {:.0} MiB, {:.0} MiB idle again",
        r.rss.0, r.rss.1, r.rss.2
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
    let phases = std::env::var("PIPELINE_PHASES")
        .unwrap_or_else(|_| "scaling,stages,load,shared,upstream".into());
    rt.block_on(async {
        for (phase, with_stages, label) in [
            ("scaling", false, ""),
            ("stages", true, " (filter + knowledge)"),
        ] {
            if !phases.split(',').any(|p| p == phase) {
                continue;
            }
            let single = run(1, questions, max_tokens, false, with_stages, 0).await;
            report(&format!("1 user{label}"), single.tps, &single.samples);
            let multi = run(users, questions, max_tokens, false, with_stages, 0).await;
            report(&format!("{users} users{label}"), multi.tps, &multi.samples);
            println!(
                "aggregate/single{label}: {:.2}x ({:.1} / {:.1} tok/s; target >= 3x)",
                multi.tps / single.tps,
                multi.tps,
                single.tps
            );
        }
        if phases.split(',').any(|p| p == "load") {
            let users = env("PIPELINE_LOAD_USERS", 50);
            let questions = env("PIPELINE_LOAD_QUESTIONS", 3);
            let r = run(users, questions, max_tokens, true, false, 0).await;
            report_load(users, questions, &r);
        }
        if phases.split(',').any(|p| p == "shared") {
            let r = run(users, questions, max_tokens, false, false, users).await;
            report(&format!("shared: {users} WeCom users"), r.tps, &r.samples);
            report(
                &format!("shared: {users} API clients"),
                r.tps,
                &r.api_samples,
            );
            let lost = r
                .api_samples
                .iter()
                .filter(|s| s.outcome != Outcome::Answered)
                .count();
            println!(
                "shared: {:.1} generated tok/s for {} answers ({lost} API answers incomplete)",
                r.tps,
                r.samples.len() + r.api_samples.len()
            );
        }
        if phases.split(',').any(|p| p == "upstream") {
            upstream_overhead(env("PIPELINE_UPSTREAM_ANSWERS", 12), max_tokens).await;
        }
    });
}
