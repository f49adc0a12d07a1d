//! The box's OpenAI-compatible API (issue 14 item 2) on `wecom-edge demo --config FILE` with
//! `[openai]`, the real model, the simulator:
//!
//! * through the official `openai` Python client (tests/data/openai_client.py, installed in
//!   .venv by scripts/fetch-openai-client.sh): a chat completion and the same request
//!   streamed give the same text (greedy decoding is exact), usage in both (the streamed one
//!   in a last chunk with no choices), a wrong key is a 401 in OpenAI's shape, `n=2` a 400
//!   naming `n`, a blocked term a refusal with `finish_reason: "content_filter"`, the models
//!   list, a legacy completion;
//! * over plain HTTP: `/health` is public, every other path needs a key, `X-Api-Key` works as
//!   well as `Bearer`, the SSE body ends with `data: [DONE]`, an unknown path is a 404 in
//!   OpenAI's shape, a stop sequence ends the answer before it;
//! * a WeCom chat and API requests at the same time all answer (one model, one batch);
//! * audit rows name the key's id, never the key.

mod common;

use std::time::Duration;

use common::{audit_rows, TempDir};
use serde_json::{json, Value};

const KEY: &str = "sk-test-scripts-0123456789";
const KEY2: &str = "sk-test-other-9876543210";
const BLOCKED: &str = "机密项目";

struct ApiBox {
    _child: tokio::process::Child,
    _dir: TempDir,
    data: std::path::PathBuf,
    api: String,
    sim: String,
    http: reqwest::Client,
}

async fn start(tag: &str) -> ApiBox {
    let dir = TempDir::new(tag);
    std::fs::write(dir.0.join("block.txt"), format!("{BLOCKED}\n")).unwrap();
    let cfg = dir.0.join("edge.toml");
    std::fs::write(
        &cfg,
        "[openai]\nlisten = \"127.0.0.1:0\"\n\
         api_keys = [{ key = \"env:API_KEY\", id = \"scripts\" }, \"env:API_KEY2\"]\n\
         [filter]\nblock = [\"block.txt\"]\n",
    )
    .unwrap();
    let data = dir.0.join("data");
    let (child, info) = common::start_demo(&data, &["--config", cfg.to_str().unwrap()], |c| {
        c.env("API_KEY", KEY).env("API_KEY2", KEY2);
    })
    .await;
    let b = ApiBox {
        _child: child,
        _dir: dir,
        data,
        api: info["openai"]
            .as_str()
            .expect("the API's address")
            .to_string(),
        sim: info["sim"].as_str().unwrap().to_string(),
        http: reqwest::Client::new(),
    };
    common::bot_connected(&b.http, &b.sim, Duration::from_secs(30)).await;
    b
}

impl ApiBox {
    async fn post(&self, path: &str, key: Option<&str>, body: Value) -> (u16, String) {
        let mut r = self.http.post(format!("{}{path}", self.api)).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn error_shape(body: &Value) -> &Value {
    let e = &body["error"];
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "error.{k} in {body}");
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_works_against_the_box() {
    let python = common::repo().join(".venv/bin/python");
    if !python.exists() {
        if std::process::Command::new("python3")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: no python3 on this machine, so no openai client to test with");
            return;
        }
        panic!("the openai client is not installed: run scripts/fetch-openai-client.sh");
    }
    let b = start("api-openai-py").await;
    let out = tokio::process::Command::new(&python)
        .arg(common::data("openai_client.py"))
        .env("OPENAI_BASE_URL", &b.api)
        .env("OPENAI_API_KEY", KEY)
        .env("BLOCKED", BLOCKED)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("openai {}: {}", v["version"], v);

    let chat = &v["chat"];
    assert_eq!(chat["object"], "chat.completion");
    assert!(chat["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(chat["role"], "assistant");
    let content = chat["content"].as_str().unwrap();
    assert!(!content.trim().is_empty());
    assert!(matches!(chat["finish"].as_str(), Some("stop" | "length")));
    let u = &chat["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 5);
    assert!(u["completion_tokens"].as_u64().unwrap() > 0);
    assert!(u["completion_tokens"].as_u64().unwrap() <= 24);
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );

    let s = &v["stream"];
    assert_eq!(
        s["text"], chat["content"],
        "greedy: the stream gives the same text"
    );
    assert_eq!(s["first_role"], "assistant");
    assert_eq!(s["finish"], json!([chat["finish"]]));
    assert_eq!(s["last_choices"], 0);
    assert_eq!(s["usage"]["completion_tokens"], u["completion_tokens"]);
    assert_eq!(s["objects"], json!(["chat.completion.chunk"]));

    let w = &v["wrong_key"];
    assert_eq!(w["status"], 401, "{v}");
    let body = if w["body"].get("error").is_some() {
        w["body"]["error"].clone()
    } else {
        w["body"].clone()
    };
    assert_eq!(body["type"], "authentication_error");
    assert_eq!(body["code"], "invalid_api_key");

    let n2 = &v["n2"];
    assert_eq!(n2["status"], 400, "{v}");
    let body = if n2["body"].get("error").is_some() {
        n2["body"]["error"].clone()
    } else {
        n2["body"].clone()
    };
    assert_eq!(body["param"], "n");

    assert_eq!(v["blocked"]["finish"], "content_filter");
    assert!(v["blocked"]["content"]
        .as_str()
        .unwrap()
        .contains("company policy"));

    assert_eq!(v["models"][0], "SmolLM2-135M-Instruct.Q4_1");

    assert_eq!(v["completion"]["object"], "text_completion");
    assert!(
        v["completion"]["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            <= 8
    );

    // Audit: the key's id, never the key; the blocked question refused before the model.
    let rows = audit_rows(&b.data);
    let requests: Vec<_> = rows.iter().filter(|r| r.kind == "api_request").collect();
    assert_eq!(
        requests.len(),
        4,
        "chat, stream, blocked, completion (the 401 and the 400 are api_refused)"
    );
    assert!(requests.iter().all(|r| r.detail["key_id"] == "scripts"));
    assert!(rows.iter().any(|r| r.kind == "filter"
        && r.subject.starts_with("openai/scripts/")
        && r.detail["action"] == "block"));
    let all: String = rows
        .iter()
        .map(|r| format!("{} {}", r.subject, r.detail))
        .collect();
    assert!(!all.contains(KEY) && !all.contains("sk-wrong-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_shapes_stops_and_sharing_the_model_with_wecom() {
    let b = start("api-openai-http").await;
    // /health is public; the rest needs a key.
    let root = b.api.trim_end_matches("/v1");
    let r = b.http.get(format!("{root}/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let r = b
        .http
        .get(format!("{}/models", b.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    error_shape(&r.json::<Value>().await.unwrap());
    let r = b
        .http
        .get(format!("{}/models", b.api))
        .header("x-api-key", KEY2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = b
        .http
        .get(format!("{}/nowhere", b.api))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        error_shape(&r.json::<Value>().await.unwrap())["code"],
        "unknown_url"
    );

    // A refused parameter, in OpenAI's shape.
    let q = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let (status, body) = b
        .post(
            "/chat/completions",
            Some(KEY),
            json!({"messages": q, "presence_penalty": 1}),
        )
        .await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error_shape(&v)["param"], "presence_penalty");

    // SSE as llama-server and OpenAI send it.
    let (status, body) = b
        .post(
            "/chat/completions",
            Some(KEY2),
            json!({"messages": q, "stream": true, "max_tokens": 16, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = body.lines().filter(|l| l.starts_with("data: ")).collect();
    assert_eq!(*lines.last().unwrap(), "data: [DONE]");
    let full: String = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str::<Value>(&l[6..]).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(!full.is_empty());

    // A stop sequence: the answer ends before it (the first word of the full answer's
    // second half, so it is there to find).
    let (_, body) = b
        .post(
            "/chat/completions",
            Some(KEY),
            json!({"messages": q, "max_tokens": 16, "temperature": 0}),
        )
        .await;
    let whole: Value = serde_json::from_str(&body).unwrap();
    let text = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(text, full, "streamed and whole answers agree");
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() >= 3 {
        let stop = words[words.len() / 2];
        let at = text.find(stop).unwrap();
        let (_, body) = b
            .post(
                "/chat/completions",
                Some(KEY),
                json!({"messages": q, "max_tokens": 16, "temperature": 0, "stop": [stop]}),
            )
            .await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], text[..at], "{body}");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }

    // WeCom and the API at once: every one answers.
    let wecom = {
        let (http, sim) = (b.http.clone(), b.sim.clone());
        tokio::spawn(async move {
            common::ask(
                &http,
                &sim,
                ("g-api", "carol"),
                "share-1",
                "What is the capital of France?",
                Duration::from_secs(120),
            )
            .await
            .0
        })
    };
    let mut api = Vec::new();
    for i in 0..3 {
        let (http, url) = (b.http.clone(), format!("{}/chat/completions", b.api));
        api.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(KEY)
                .json(&json!({"messages": [{"role": "user", "content": format!("Name a colour ({i}).")}], "max_tokens": 12}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    assert!(!wecom.await.unwrap().trim().is_empty());
    for a in api {
        let (status, v) = a.await.unwrap();
        assert_eq!(status, 200, "{v}");
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    }
    let ids: Vec<Value> = audit_rows(&b.data)
        .into_iter()
        .filter(|r| r.kind == "api_request")
        .map(|r| r.detail["key_id"].clone())
        .collect();
    assert!(
        ids.iter()
            .any(|i| i.as_str().is_some_and(|s| s.starts_with("key-"))),
        "{ids:?}"
    );
}
