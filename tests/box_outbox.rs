//! No accepted message is lost when its reply fails (issue 11, item 4): an answer that could not
//! be delivered — the stream refused, the proactive `aibot_send_msg` failing too — is kept in
//! the durable outbox and sent when WeCom takes it again, also after a SIGKILL and a restart
//! (the start-up sweep), without asking the model again.
//!
//! Faults come from the simulator (`/sim/faults` on the long-connection commands), so each
//! failure is deterministic; every wait polls a condition.

mod common;

use common::until;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

async fn get(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    http.post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn count(dir: &Path, kind: &str) -> usize {
    common::audit_rows(dir)
        .iter()
        .filter(|r| r.kind == kind)
        .count()
}

/// Proactive messages the simulator took for `chatid`.
async fn sent_to(http: &reqwest::Client, sim: &str, chatid: &str) -> Vec<Value> {
    get(http, format!("{sim}/sim/outbox")).await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["api"] == "aibot_send_msg" && m["body"]["chatid"] == chatid)
        .cloned()
        .collect()
}

async fn start(dir: &Path) -> (tokio::process::Child, String, String) {
    let (child, info) =
        common::start_demo(dir, &["--max-tokens", "24", "--temperature", "0"], |_| {}).await;
    let sim = info["sim"].as_str().unwrap().to_string();
    let admin = info["admin"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    until("the long connection", Duration::from_secs(60), || async {
        (get(&http, format!("{sim}/sim/aibot/demo-bot")).await["connected"] == true).then_some(())
    })
    .await;
    (child, sim, admin)
}

async fn ask(http: &reqwest::Client, sim: &str, chat: &str, msgid: &str) {
    let r = post(
        http,
        format!("{sim}/sim/aibot/demo-bot/messages"),
        json!({"chattype": "group", "chatid": chat, "userid": "alice", "msgid": msgid,
               "text": "@demo-bot Say hello."}),
    )
    .await;
    assert!(r["req_id"].is_string(), "{r}");
}

async fn fault(http: &reqwest::Client, sim: &str, command: &str, times: u32) {
    post(
        http,
        format!("{sim}/sim/faults"),
        json!({"path": command, "errcode": -1, "times": times}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undelivered_answer_is_kept_and_delivered_also_after_a_restart() {
    let tmp = common::TempDir::new("outbox");
    let dir = tmp.0.clone();
    let http = reqwest::Client::new();
    let (mut child, sim, admin) = start(&dir).await;

    // 1. Every stream frame refused, the proactive fallback refused twice: the answer goes to
    //    the outbox at the first refusal, fails once more there, and is delivered on the retry.
    fault(&http, &sim, "aibot_respond_msg", 10_000).await;
    fault(&http, &sim, "aibot_send_msg", 2).await;
    ask(&http, &sim, "g1", "m-out-1").await;
    let got = until(
        "the deferred answer in g1",
        Duration::from_secs(60),
        || async {
            let v = sent_to(&http, &sim, "g1").await;
            (!v.is_empty()).then_some(v)
        },
    )
    .await;
    assert_eq!(got.len(), 1, "one answer: {got:?}");
    until("reply_delivered", Duration::from_secs(10), || async {
        (count(&dir, "reply_delivered") == 1).then_some(())
    })
    .await;
    assert_eq!(count(&dir, "reply_deferred"), 1);
    assert_eq!(count(&dir, "reply_failed"), 0, "nothing given up");
    // The counters follow the audit row within the same outbox pass.
    until(
        "outbox_delivered 1, pending 0",
        Duration::from_secs(30),
        || async {
            let m = common::metrics(&http, &admin).await;
            (m.contains("wecom_edge_outbox_delivered_total 1")
                && m.contains("wecom_edge_outbox_pending 0"))
            .then_some(())
        },
    )
    .await;

    // 2. WeCom refuses everything; the answer waits in the outbox; the box is SIGKILLed.
    fault(&http, &sim, "aibot_send_msg", 10_000).await;
    ask(&http, &sim, "g2", "m-out-2").await;
    until("the second deferral", Duration::from_secs(60), || async {
        (count(&dir, "reply_deferred") == 2).then_some(())
    })
    .await;
    // The gauge is the outbox pass's count: it follows the audit row at the next pass.
    until("outbox_pending 1", Duration::from_secs(30), || async {
        let m = common::metrics(&http, &admin).await;
        m.contains("wecom_edge_outbox_pending 1").then_some(())
    })
    .await;
    child.kill().await.unwrap();

    // 3. Started again (a fresh simulator: WeCom works again): the start-up sweep delivers it,
    //    without a second generation.
    let (_child, sim, _) = start(&dir).await;
    let got = until(
        "the swept answer in g2",
        Duration::from_secs(60),
        || async {
            let v = sent_to(&http, &sim, "g2").await;
            (!v.is_empty()).then_some(v)
        },
    )
    .await;
    assert_eq!(got.len(), 1);
    until(
        "the second reply_delivered",
        Duration::from_secs(10),
        || async { (count(&dir, "reply_delivered") == 2).then_some(()) },
    )
    .await;
    let all = common::audit_rows(&dir);
    let generations = all
        .iter()
        .filter(|r| r.kind == "generation_started" && r.detail["msgid"] == "m-out-2")
        .count();
    assert_eq!(generations, 1, "the model was not asked again");
    assert!(all.iter().all(|r| r.kind != "reply_failed"));
}
