//! The box generating on an upstream (issue 14 item 1): `wecom-edge demo --config FILE`
//! with `[[upstream]]` and `[model] generator`/`fallback`, a scripted OpenAI-compatible
//! endpoint on loopback, the real local model as the fallback, the simulator.
//!
//! * an answer generated upstream reaches the user; `generation_started` names the upstream;
//!   the request carried the configured model and API key (from `env:`), and the turn's
//!   persona as its system message;
//! * the upstream breaking mid-answer: the local model answers instead, the user sees one
//!   whole answer; the failover is audited (`generation_failover`, with `restart`), counted
//!   (`generation_failovers_total`) and alerted (the demo's alert robot);
//! * with the upstream's breaker open the next question goes straight to the local model;
//! * every bot on an upstream with no fallback: no model is loaded at all (`[model] path`
//!   need not exist) and the box answers.

mod common;

use std::time::Duration;

use common::upstream::{endpoint, Answer};
use common::{audit_rows, until, TempDir};

fn config(dir: &std::path::Path, url: &str, fallback: &str, model: &str) -> std::path::PathBuf {
    let path = dir.join("edge.toml");
    std::fs::write(
        &path,
        format!(
            "[model]\npath = \"{model}\"\ngenerator = \"fleet\"\nfallback = \"{fallback}\"\n\n\
             [persona]\nsystem_prompt = \"你是测试助手。\"\n\n\
             [[upstream]]\nname = \"fleet\"\nbase_url = \"{url}\"\nmodel = \"qwen2.5-7b\"\n\
             api_key = \"env:FLEET_KEY\"\ntimeout = \"5s\"\nretries = 1\ncooldown = \"5m\"\ncontext_length = 8192\n"
        ),
    )
    .unwrap();
    path
}

fn rows(dir: &std::path::Path, kind: &str, msgid: &str) -> Vec<wecom_edge_actors::audit::AuditRow> {
    audit_rows(dir)
        .into_iter()
        .filter(|r| r.kind == kind && r.detail["msgid"] == msgid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_upstream_and_falls_back_on_the_local_model() {
    let dir = TempDir::new("box-upstream");
    let (script, url) = endpoint(vec![
        Answer::Text(vec!["巴黎", "是法国的首都。"]),
        Answer::Cut(vec!["答到"]),
    ])
    .await;
    let model = common::model_path();
    let cfg = config(&dir.0, &url, "local", model.to_str().unwrap());
    let (_child, info) = common::start_demo(
        &dir.0.join("data"),
        &["--config", cfg.to_str().unwrap()],
        |c| {
            c.env("FLEET_KEY", "sk-fleet-secret");
        },
    )
    .await;
    let http = reqwest::Client::new();
    let sim = info["sim"].as_str().unwrap().to_string();
    let admin = info["admin"].as_str().unwrap().to_string();
    let data = dir.0.join("data");
    common::bot_connected(&http, &sim, Duration::from_secs(30)).await;
    let ask = |msgid: &'static str, q: &'static str| {
        let (http, sim) = (http.clone(), sim.clone());
        async move {
            common::ask(
                &http,
                &sim,
                ("g-up", "alice"),
                msgid,
                q,
                Duration::from_secs(90),
            )
            .await
        }
    };

    // 1. Generated upstream.
    let (answer, _) = ask("up-1", "法国的首都是哪里？").await;
    assert_eq!(answer, "巴黎是法国的首都。");
    let started = until("generation_started", Duration::from_secs(10), || async {
        rows(&data, "generation_started", "up-1").pop()
    })
    .await;
    assert_eq!(started.detail["generator"], "fleet");
    {
        let s = script.lock().unwrap();
        let (headers, body) = &s.requests[0];
        assert_eq!(headers["authorization"], "Bearer sk-fleet-secret");
        assert_eq!(body["model"], "qwen2.5-7b");
        assert_eq!(body["messages"][0]["role"], "system");
        assert!(body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("你是测试助手。"));
        assert_eq!(
            body["messages"].as_array().unwrap().last().unwrap()["content"],
            "法国的首都是哪里？"
        );
    }

    // 2. The upstream breaks mid-answer: the local model answers the question again.
    let (answer, frames) = ask("up-2", "What is the capital of France?").await;
    assert!(
        !answer.trim().is_empty() && !answer.starts_with("答到"),
        "{answer:?}"
    );
    assert!(!answer.contains("⚠️"), "{answer:?} {frames:?}");
    let f = until("generation_failover", Duration::from_secs(10), || async {
        rows(&data, "generation_failover", "up-2").pop()
    })
    .await;
    assert_eq!(f.detail["from"], "fleet");
    assert_eq!(f.detail["to"], "local");
    assert_eq!(f.detail["restart"], true);
    until("the failover counted", Duration::from_secs(10), || async {
        common::metrics(&http, &admin)
            .await
            .contains("generation_failovers_total{from=\"fleet\",to=\"local\"} 1")
            .then_some(())
    })
    .await;
    until("the failover alerted", Duration::from_secs(30), || async {
        audit_rows(&data)
            .iter()
            .any(|r| r.kind == "alert_sent" && r.detail.to_string().contains("failed over"))
            .then_some(())
    })
    .await;

    // 3. The breaker is open: straight to the local model, announced as a failover.
    let (answer, _) = ask("up-3", "What is the capital of France?").await;
    assert!(!answer.trim().is_empty());
    let f = until("generation_failover", Duration::from_secs(10), || async {
        rows(&data, "generation_failover", "up-3").pop()
    })
    .await;
    assert_eq!(f.detail["reason"], "not ready");
    assert_eq!(f.detail["restart"], false);
    assert_eq!(
        script.lock().unwrap().requests.len(),
        2,
        "no request while the breaker is open"
    );
    // The key never reaches the audit trail.
    assert!(!audit_rows(&data)
        .iter()
        .any(|r| r.detail.to_string().contains("sk-fleet-secret")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_local_generator_no_model_is_loaded() {
    let dir = TempDir::new("box-upstream-only");
    let (_script, url) = endpoint(vec![Answer::Text(vec!["好的。"])]).await;
    let cfg = config(&dir.0, &url, "none", "/nonexistent/model.gguf");
    let (_child, info) = common::start_demo(
        &dir.0.join("data"),
        &["--config", cfg.to_str().unwrap()],
        |c| {
            c.env("FLEET_KEY", "k");
        },
    )
    .await;
    let http = reqwest::Client::new();
    let sim = info["sim"].as_str().unwrap().to_string();
    common::bot_connected(&http, &sim, Duration::from_secs(30)).await;
    let (answer, _) = common::ask(
        &http,
        &sim,
        ("g-u", "bob"),
        "only-1",
        "你好",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(answer, "好的。");
    let admin = info["admin"].as_str().unwrap();
    let m = common::metrics(&http, admin).await;
    assert!(!m.contains("check=\"model\""), "no model beacon: {m}");
}

/// Another wecom-edge box as the upstream: box A has no model and generates on box B through
/// B's OpenAI-compatible API (`[openai]`, anonymous on loopback); B audits the request, A
/// records B's exact token counts from `usage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_box_is_an_upstream() {
    let dir_b = TempDir::new("box-upstream-b");
    let cfg_b = dir_b.0.join("edge.toml");
    std::fs::write(
        &cfg_b,
        "[openai]\nlisten = \"127.0.0.1:0\"\nallow_anonymous = true\n",
    )
    .unwrap();
    let data_b = dir_b.0.join("data");
    let (_b, info_b) =
        common::start_demo(&data_b, &["--config", cfg_b.to_str().unwrap()], |_| {}).await;
    let api_b = info_b["openai"].as_str().unwrap().to_string();

    let dir_a = TempDir::new("box-upstream-a");
    let cfg_a = dir_a.0.join("edge.toml");
    std::fs::write(
        &cfg_a,
        format!(
            "[model]\npath = \"/nonexistent/model.gguf\"\ngenerator = \"box-b\"\n\
             [[upstream]]\nname = \"box-b\"\nbase_url = \"{api_b}\"\nmodel = \"any\"\ncontext_length = 8192\n"
        ),
    )
    .unwrap();
    let data_a = dir_a.0.join("data");
    let (_a, info_a) =
        common::start_demo(&data_a, &["--config", cfg_a.to_str().unwrap()], |_| {}).await;
    let http = reqwest::Client::new();
    let sim_a = info_a["sim"].as_str().unwrap().to_string();
    common::bot_connected(&http, &sim_a, Duration::from_secs(30)).await;
    let (answer, _) = common::ask(
        &http,
        &sim_a,
        ("g-ab", "dave"),
        "ab-1",
        "What is the capital of France?",
        Duration::from_secs(90),
    )
    .await;
    assert!(
        !answer.trim().is_empty() && !answer.contains("⚠️"),
        "{answer:?}"
    );
    let fin = until(
        "generation_finished on A",
        Duration::from_secs(10),
        || async { rows(&data_a, "generation_finished", "ab-1").pop() },
    )
    .await;
    let b_rows = audit_rows(&data_b);
    let b_fin = b_rows
        .iter()
        .find(|r| r.kind == "generation_finished" && r.subject.starts_with("openai/anonymous/"))
        .expect("B generated it");
    assert_eq!(
        fin.detail["prompt_tokens"], b_fin.detail["prompt_tokens"],
        "B's usage, exact"
    );
    assert_eq!(fin.detail["tokens"], b_fin.detail["tokens"]);
    assert!(b_rows
        .iter()
        .any(|r| r.kind == "api_request" && r.detail["key_id"] == "anonymous"));
}
