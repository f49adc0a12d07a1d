//! The turn's stages end to end: `wecom-edge demo --config FILE` with a persona and a content
//! filter, the real model, the simulator (issue 13 items 1–3, 7, 8).
//!
//! * the persona's welcome answers `enter_chat`, `#help` starts with its description;
//! * a question with a blocked term is refused without a model call, and its audit row names
//!   the rule, never the text;
//! * a panic injected into the prompt stage (`WECOM_EDGE_FAULT`, debug builds) ends that turn
//!   with a notice, and the session answers the next message;
//! * a two-word term of the model's own answer, put in the mask list and loaded by SIGHUP,
//!   never shows in any frame (the words are two tokens at least) and is masked in the final;
//!   in the block list, it stops the answer; a reload that fails keeps the rules in force;
//! * company knowledge (item 4): a document stored with `wecom-edge kb add` and a folder
//!   mirrored from `[knowledge] dir` answer questions: `knowledge_retrieved` names the
//!   document, `generation_started` counts the excerpts, the final frame ends with the sources
//!   line; `kb search --json` and `kb list --json` work beside the running box; a file added
//!   to or removed from the folder is mirrored at SIGHUP, and by an admin's `#reload`
//!   (`[admin] users`; anyone else is refused, audited); `#status all` likewise;
//! * alerts (item 6): a kicked bot (`disconnected_event`), a failing filter reload and a
//!   folder that cannot be mirrored each reach the demo's `demo-alerts` robot once, repeats
//!   folded, each sent alert audited.

mod common;

use std::time::Duration;

use common::{audit_rows, until};
use serde_json::{json, Value};

const Q: &str = "What is the capital of France?";

struct Box {
    http: reqwest::Client,
    sim: String,
    dir: std::path::PathBuf,
}

impl Box {
    /// Starts the demo on `data` with `--config config` (and `configure` applied to the
    /// command) and waits for its bot's long connection; the child and the box.
    async fn start(
        data: &std::path::Path,
        config: &std::path::Path,
        configure: impl FnOnce(&mut tokio::process::Command),
    ) -> (tokio::process::Child, Box, Value) {
        let (child, info) =
            common::start_demo(data, &["--config", config.to_str().unwrap()], configure).await;
        let b = Box {
            http: reqwest::Client::new(),
            sim: info["sim"].as_str().unwrap().to_string(),
            dir: data.to_path_buf(),
        };
        common::bot_connected(&b.http, &b.sim, Duration::from_secs(30)).await;
        (child, b, info)
    }

    /// Pushes `text` from `user` in group `g-{user}`; the final frame's text and every frame.
    async fn ask(&self, user: &str, msgid: &str, text: &str) -> (String, Vec<String>) {
        let chat = format!("g-{user}");
        common::ask(
            &self.http,
            &self.sim,
            (&chat, user),
            msgid,
            text,
            Duration::from_secs(90),
        )
        .await
    }

    fn rows(&self, kind: &str) -> Vec<wecom_edge_actors::audit::AuditRow> {
        audit_rows(&self.dir)
            .into_iter()
            .filter(|r| r.kind == kind)
            .collect()
    }

    fn rows_for(&self, kind: &str, msgid: &str) -> Vec<wecom_edge_actors::audit::AuditRow> {
        self.rows(kind)
            .into_iter()
            .filter(|r| r.detail["msgid"] == msgid)
            .collect()
    }

    /// The `kind` rows of `msgid` once there are at least `n` (rows written at the end of a
    /// turn may land just after its final frame); at most 10 s.
    async fn rows_awaited(
        &self,
        kind: &str,
        msgid: &str,
        n: usize,
    ) -> Vec<wecom_edge_actors::audit::AuditRow> {
        common::until(
            &format!("{n} {kind} row(s) of {msgid}"),
            Duration::from_secs(10),
            || async {
                let r = self.rows_for(kind, msgid);
                (r.len() >= n).then_some(r)
            },
        )
        .await
    }

    /// Sends SIGHUP to the demo as systemd's ExecReload does (`wecom-edge reload --pid`) and
    /// waits for the `kind` row number `n` (`filter_reloaded` or `filter_reload_failed`).
    async fn hangup(&self, pid: u32, kind: &str, n: usize) {
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
            .args(["reload", "--pid", &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        until(kind, Duration::from_secs(10), || async {
            (self.rows(kind).len() >= n).then_some(())
        })
        .await;
    }
}

/// Two consecutive words of `answer`, each of at least three letters (so at least two
/// tokens: the pre-tokenizer splits at the space).
fn two_words(answer: &str) -> String {
    let words: Vec<&str> = answer
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphabetic()))
        .collect();
    words
        .windows(2)
        .find(|w| {
            w.iter()
                .all(|x| x.len() >= 3 && x.chars().all(char::is_alphabetic))
        })
        .map(|w| w.join(" "))
        .unwrap_or_else(|| panic!("no two words in {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persona_filter_and_the_exit_guard() {
    let dir = common::TempDir::new("pipeline");
    let conf = dir.0.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("persona.txt"),
        "You are Lumen, the assistant of Acme Corp. Answer in one or two sentences.\n",
    )
    .unwrap();
    std::fs::write(conf.join("block.txt"), "机密项目\n").unwrap();
    std::fs::write(conf.join("mask.txt"), "# filled in below\n").unwrap();
    std::fs::write(
        conf.join("edge.toml"),
        "[model]\nmax_tokens = 40\ntemperature = 0\n\
         [persona]\nsystem_prompt_file = \"persona.txt\"\nwelcome = \"欢迎使用 Acme 助手！\"\n\
         description = \"Acme 助手：回答公司内部问题。\"\n\
         [filter]\nblock = [\"block.txt\"]\nmask = [\"mask.txt\"]\n",
    )
    .unwrap();
    let data = dir.0.join("data");
    let config = conf.join("edge.toml");
    let (child, b, info) = Box::start(&data, &config, |c| {
        c.env("WECOM_EDGE_FAULT", "prompt:PANICME");
    })
    .await;
    let pid = child.id().unwrap();
    let admin = info["admin"].as_str().unwrap().to_string();

    // The persona's welcome and description.
    let r: Value = b
        .http
        .post(format!("{}/sim/aibot/demo-bot/events", b.sim))
        .json(&json!({"eventtype": "enter_chat", "userid": "newcomer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let req_id = r["req_id"].as_str().unwrap().to_string();
    until("the welcome", Duration::from_secs(10), || async {
        let v: Value = b
            .http
            .get(format!(
                "{}/sim/aibot/demo-bot/replies?req_id={req_id}",
                b.sim
            ))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v.to_string().contains("欢迎使用 Acme 助手！").then_some(())
    })
    .await;
    let (help, _) = b.ask("ann", "m-help", "#help").await;
    assert!(help.starts_with("Acme 助手：回答公司内部问题。"), "{help}");

    // A blocked term inbound: refused, no generation, the rule named, the text not kept.
    let (text, _) = b.ask("ann", "m-blocked", "请介绍一下机密项目的进展").await;
    assert!(text.contains("company policy does not allow"), "{text}");
    let f = b.rows_awaited("filter", "m-blocked", 1).await;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].detail["stage"], "in");
    assert_eq!(f[0].detail["action"], "block");
    assert_eq!(f[0].detail["rules"], json!(["block.txt:1"]));
    assert!(b.rows_for("generation_started", "m-blocked").is_empty());
    assert!(
        !audit_rows(&data)
            .iter()
            .any(|r| r.detail.to_string().contains("机密项目")),
        "the blocked text is in no audit row"
    );

    // A stage that panics: a notice, a turn_failed row; the session answers the next one.
    let (text, _) = b.ask("ann", "m-panic", "PANICME now").await;
    assert!(text.contains("something went wrong"), "{text}");
    let failed = b.rows_awaited("turn_failed", "m-panic", 1).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].detail["stage"], "prompt");
    let (first, _) = b.ask("ann", "m-q1", Q).await;
    assert!(!first.trim().is_empty() && !first.contains("⚠️"), "{first}");
    assert_eq!(
        b.rows_awaited("generation_finished", "m-q1", 1).await.len(),
        1
    );

    // A term from that answer masked: asked again by someone else (no shared cache, the
    // same greedy answer), no frame shows it, the final masks it.
    let term = two_words(&first);
    std::fs::write(conf.join("mask.txt"), format!("{term}\n")).unwrap();
    b.hangup(pid, "filter_reloaded", 1).await;
    let (masked, frames) = b.ask("bob", "m-q2", Q).await;
    let lower = term.to_lowercase();
    for f in &frames {
        assert!(
            !f.to_lowercase().contains(&lower),
            "{term:?} shown in {f:?}"
        );
    }
    let stars: String = term.chars().map(|_| '＊').collect();
    assert!(masked.contains(&stars), "{masked:?} masks {term:?}");
    let out = b.rows_awaited("filter", "m-q2", 1).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].detail["stage"], "out");
    assert_eq!(out[0].detail["action"], "mask");
    assert_eq!(out[0].detail["rules"], json!(["mask.txt:1"]));

    // The same term blocked: the answer stops, nothing of it shows.
    std::fs::write(conf.join("block.txt"), format!("机密项目\n{term}\n")).unwrap();
    std::fs::write(conf.join("mask.txt"), "").unwrap();
    b.hangup(pid, "filter_reloaded", 2).await;
    let (stopped, frames) = b.ask("cy", "m-q3", Q).await;
    assert!(stopped.contains("was stopped"), "{stopped}");
    for f in &frames {
        assert!(
            !f.to_lowercase().contains(&lower),
            "{term:?} shown in {f:?}"
        );
    }
    let out = b.rows_awaited("filter", "m-q3", 1).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].detail["action"], "block");
    assert_eq!(out[0].detail["rules"], json!(["block.txt:2"]));

    // A reload that fails keeps the rules in force.
    std::fs::remove_file(conf.join("mask.txt")).unwrap();
    b.hangup(pid, "filter_reload_failed", 1).await;
    let (text, _) = b.ask("dee", "m-blocked-2", "机密项目?").await;
    assert!(text.contains("company policy does not allow"), "{text}");

    let m = common::metrics(&b.http, &admin).await;
    for want in [
        "wecom_edge_filter_decisions_total{stage=\"in\",action=\"block\"} 2",
        "wecom_edge_filter_decisions_total{stage=\"out\",action=\"mask\"} 1",
        "wecom_edge_filter_decisions_total{stage=\"out\",action=\"block\"} 1",
        "wecom_edge_turns_failed_total 1",
    ] {
        assert!(m.contains(want), "{want} in {m}");
    }
    drop(child);
}

/// Runs `wecom-edge kb ARGS --data-dir DIR`; its stdout (the command must succeed).
fn kb(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .arg("kb")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn company_knowledge_is_retrieved_and_cited() {
    let dir = common::TempDir::new("knowledge");
    let conf = dir.0.join("conf");
    let folder = conf.join("knowledge");
    std::fs::create_dir_all(folder.join("hr")).unwrap();
    std::fs::write(
        folder.join("hr/travel.md"),
        "# 差旅报销制度\n\n## 住宿标准\n\n出差住宿标准：一线城市每晚不超过六百元，其他城市每晚不超过四百元。\n\n\
         ## 报销时限\n\n差旅费用须在出差结束后三十天内提交报销。\n",
    )
    .unwrap();
    std::fs::write(
        conf.join("edge.toml"),
        "[model]\nmax_tokens = 24\ntemperature = 0\n[knowledge]\ndir = \"knowledge\"\ntop_k = 2\n\
         [admin]\nusers = [\"ann\"]\n",
    )
    .unwrap();
    let data = dir.0.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let vpn = dir.0.join("vpn.txt");
    std::fs::write(
        &vpn,
        "VPN access\n\nConnect to vpn.example.com with your WeCom account and the one-time code.\n",
    )
    .unwrap();
    let added = kb(&data, &["add", vpn.to_str().unwrap()]);
    assert!(added.starts_with("added vpn.txt: «vpn»"), "{added}");

    let config = conf.join("edge.toml");
    let (child, b, _) = Box::start(&data, &config, |_| {}).await;
    let pid = child.id().unwrap();
    // The folder is mirrored at start.
    until("knowledge_synced", Duration::from_secs(30), || async {
        b.rows("knowledge_synced").first().cloned()
    })
    .await;
    let synced = &b.rows("knowledge_synced")[0].detail;
    assert_eq!(synced["added"], json!(["hr/travel.md"]), "{synced}");
    let list: Value = serde_json::from_str(&kb(&data, &["list", "--json"])).unwrap();
    let docs: Vec<(&str, &str)> = list["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["doc"].as_str().unwrap(), d["source"].as_str().unwrap()))
        .collect();
    assert_eq!(docs, [("hr/travel.md", "dir"), ("vpn.txt", "cli")]);

    // `kb search` shows what a turn would use.
    let found: Value =
        serde_json::from_str(&kb(&data, &["search", "出差住宿标准是多少？", "--json"])).unwrap();
    let r = &found["results"][0];
    assert_eq!(r["doc"], "hr/travel.md", "{found}");
    assert_eq!(r["title"], "差旅报销制度");
    assert_eq!(r["section"], "住宿标准");
    assert!(r["score"].as_f64().unwrap() > 0.0);
    assert!(r["snippet"].as_str().unwrap().contains("住宿"), "{r}");
    assert!(r.get("text").is_none(), "only the snippet is printed");

    // A Chinese question: the travel policy is retrieved and cited.
    let (text, frames) = b.ask("ann", "m-kb-1", "出差住宿标准是多少？").await;
    let want = format!(
        "{}《差旅报销制度》",
        wecom_edge_actors::session::turn::SOURCES
    );
    assert!(text.ends_with(&want), "{text:?} ends with {want:?}");
    assert!(
        frames[..frames.len() - 1]
            .iter()
            .all(|f| !f.contains(wecom_edge_actors::session::turn::SOURCES)),
        "only the final frame carries the sources"
    );
    let got = b.rows_for("knowledge_retrieved", "m-kb-1");
    assert_eq!(got.len(), 1, "{got:?}");
    let first = &got[0].detail["docs"][0];
    assert_eq!(
        (&first["doc"], &first["title"], &first["section"]),
        (
            &json!("hr/travel.md"),
            &json!("差旅报销制度"),
            &json!("住宿标准")
        )
    );
    assert!(
        !got[0].detail.to_string().contains("六百元"),
        "the audit row names the excerpt, never its text"
    );
    let started = b.rows_for("generation_started", "m-kb-1");
    assert!(
        started[0].detail["knowledge"].as_u64().unwrap() >= 1,
        "{:?}",
        started[0].detail
    );

    // An English question: the document added with `kb add`.
    let (text, _) = b.ask("bob", "m-kb-2", "How do I connect to the VPN?").await;
    assert!(
        text.ends_with(&format!(
            "{}《vpn》",
            wecom_edge_actors::session::turn::SOURCES
        )),
        "{text:?}"
    );
    assert_eq!(
        b.rows_for("knowledge_retrieved", "m-kb-2")[0].detail["docs"][0]["doc"],
        "vpn.txt"
    );

    // Nothing matches: no row, no sources line.
    let (text, _) = b
        .ask("cy", "m-kb-3", "What is the capital of France?")
        .await;
    assert!(
        !text.contains(wecom_edge_actors::session::turn::SOURCES),
        "{text:?}"
    );
    assert!(b.rows_for("knowledge_retrieved", "m-kb-3").is_empty());
    assert_eq!(
        b.rows_for("generation_started", "m-kb-3")[0].detail["knowledge"],
        0
    );

    // The folder changes; SIGHUP mirrors it: the travel policy is gone, the new one is found.
    std::fs::remove_file(folder.join("hr/travel.md")).unwrap();
    std::fs::write(
        folder.join("wifi.md"),
        "# 办公室无线网络\n\n访客无线网络名称为 Acme-Guest，密码每周一更新，请向前台索取。\n",
    )
    .unwrap();
    b.hangup(pid, "knowledge_synced", 2).await;
    let synced = &b.rows("knowledge_synced")[1].detail;
    assert_eq!(
        (&synced["added"], &synced["removed"]),
        (&json!(["wifi.md"]), &json!(["hr/travel.md"])),
        "{synced}"
    );
    let (text, _) = b.ask("dee", "m-kb-4", "访客无线网络的密码在哪里拿？").await;
    assert!(text.ends_with("《办公室无线网络》"), "{text:?}");
    let (text, _) = b.ask("eve", "m-kb-5", "出差住宿标准是多少？").await;
    assert!(
        !text.contains("《差旅报销制度》"),
        "a removed document is not cited: {text:?}"
    );

    // `#reload` and `#status all`: for `[admin] users` only.
    std::fs::write(
        folder.join("hr/travel.md"),
        "# 差旅报销制度\n\n住宿每晚不超过六百元。\n",
    )
    .unwrap();
    let (refused, _) = b.ask("bob", "m-adm-1", "#reload").await;
    assert!(refused.contains("Only the box's admins"), "{refused}");
    let r = b.rows_for("command_refused", "m-adm-1");
    assert_eq!((r.len(), &r[0].detail["command"]), (1, &json!("reload")));
    assert_eq!(b.rows("knowledge_synced").len(), 2, "nothing reloaded");
    let (done, _) = b.ask("ann", "m-adm-2", "#reload").await;
    assert!(
        done.contains("filter reloaded") && done.contains("1 added"),
        "{done}"
    );
    assert_eq!(
        b.rows("knowledge_synced")[2].detail["added"],
        json!(["hr/travel.md"])
    );
    let (status, _) = b.ask("ann", "m-adm-3", "#status all").await;
    assert!(status.contains("knowledge: 3 document(s)"), "{status}");
    assert!(status.contains(".gguf on cpu"), "{status}");
    assert!(
        status.contains("checks: ") && status.contains("aibot/demo-bot ok"),
        "{status}"
    );
    let (status, _) = b.ask("bob", "m-adm-4", "#status all").await;
    assert!(status.contains("Only the box's admins"), "{status}");
    drop(child);
}

/// The markdown contents the simulator's group robots received, in order.
async fn robot_messages(http: &reqwest::Client, sim: &str) -> Vec<String> {
    let v: Value = http
        .get(format!("{sim}/sim/outbox"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["api"] == "/cgi-bin/webhook/send")
        .map(|m| {
            m["body"]["markdown"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_robot_once() {
    let dir = common::TempDir::new("alerts");
    let conf = dir.0.join("conf");
    std::fs::create_dir_all(conf.join("knowledge")).unwrap();
    std::fs::write(conf.join("mask.txt"), "工资\n").unwrap();
    std::fs::write(
        conf.join("edge.toml"),
        "[model]\nmax_tokens = 8\n[filter]\nmask = [\"mask.txt\"]\n[knowledge]\ndir = \"knowledge\"\n\
         [alerts]\nafter = \"1s\"\n",
    )
    .unwrap();
    let data = dir.0.join("data");
    let config = conf.join("edge.toml");
    let (child, b, _) = Box::start(&data, &config, |_| {}).await;
    let pid = child.id().unwrap();
    let has = |msgs: &[String], what: &str| msgs.iter().filter(|m| m.contains(what)).count();

    // Another connection takes the bot over: after `[alerts] after`, one alert.
    b.http
        .post(format!("{}/sim/aibot/demo-bot/events", b.sim))
        .json(&json!({"eventtype": "disconnected_event", "userid": "sys"}))
        .send()
        .await
        .unwrap();
    const KICKED: &str = "another connection took this bot over";
    let msgs = until("the kick's alert", Duration::from_secs(30), || async {
        let m = robot_messages(&b.http, &b.sim).await;
        (has(&m, KICKED) > 0).then_some(m)
    })
    .await;
    let kick = msgs.iter().find(|m| m.contains(KICKED)).unwrap();
    assert!(kick.starts_with("**wecom-edge 告警 (alert)**"), "{kick}");
    assert!(kick.contains("the box is not healthy"), "{kick}");

    // The filter reload fails three times: one alert, the repeats folded.
    std::fs::remove_file(conf.join("mask.txt")).unwrap();
    b.hangup(pid, "filter_reload_failed", 1).await;
    b.hangup(pid, "filter_reload_failed", 2).await;
    // Then the folder is gone too. A SIGHUP mirrors the folder before it reloads the filter,
    // and alerts are handled in order: once the folder's alert is in, the second failed
    // reload has been seen (the third is folded whenever it is).
    std::fs::remove_dir_all(conf.join("knowledge")).unwrap();
    b.hangup(pid, "knowledge_sync_failed", 1).await;
    let msgs = until("the folder's alert", Duration::from_secs(30), || async {
        let m = robot_messages(&b.http, &b.sim).await;
        (has(&m, "the knowledge folder could not be mirrored") > 0).then_some(m)
    })
    .await;
    assert_eq!(has(&msgs, KICKED), 1, "{msgs:#?}");
    assert_eq!(has(&msgs, "content filter reload failed"), 1, "{msgs:#?}");
    assert_eq!(has(&msgs, "the knowledge folder could not be mirrored"), 1);

    // Each message sent is audited, with the robot that took it (the row is written after
    // the robot answered: wait for it).
    let sent = until(
        "an alert_sent row per message",
        Duration::from_secs(10),
        || async {
            let sent = b.rows("alert_sent");
            (sent.len() >= msgs.len()).then_some(sent)
        },
    )
    .await;
    assert_eq!(sent.len(), msgs.len(), "{sent:?}");
    let reload = sent
        .iter()
        .find(|r| r.detail["message"] == "content filter reload failed; the rules in force stay")
        .expect("the reload alert's row");
    assert_eq!(reload.detail["repeated"], 0);
    assert_eq!(
        reload.detail["webhooks"],
        json!([{"webhook": "demo-alerts", "ok": true, "error": null}])
    );
    assert!(
        !sent.iter().any(|r| r
            .detail
            .to_string()
            .contains(wecom_edge::demo::DEMO_ALERTS_KEY)),
        "the webhook key is in no audit row"
    );
    drop(child);
}
