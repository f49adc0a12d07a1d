//! A power cut, as far as a process can tell: `wecom-edge demo --headless` is SIGKILLed while it
//! answers an accepted message; started again on the same data directory, it answers that
//! message (the stream's req_id died with the old connection, so the answer arrives as a new
//! message in the chat) and the inbound row is settled.

mod common;

use common::until;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Child;
use wecom_edge_actors::audit::{AuditKey, AuditStore};

/// Starts the demo box on `dir`; returns the child and its simulator's base URL.
async fn start(dir: &Path) -> (Child, String) {
    let (child, info) =
        common::start_demo(dir, &["--max-tokens", "200", "--temperature", "0"], |_| {}).await;
    (child, info["sim"].as_str().unwrap().to_string())
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_message_survives_sigkill() {
    let tmp = common::TempDir::new("restart");
    let dir = tmp.0.clone();
    let http = reqwest::Client::new();

    let (mut child, sim) = start(&dir).await;
    until("the long connection", Duration::from_secs(30), || async {
        (get(&http, format!("{sim}/sim/aibot/demo-bot")).await["connected"] == true).then_some(())
    })
    .await;
    let r: Value = http
        .post(format!("{sim}/sim/aibot/demo-bot/messages"))
        .json(
            &json!({"chattype": "group", "chatid": "g1", "userid": "alice",
                      "msgid": "m-kill-1",
                      "text": "@demo-bot Write a long story about a dragon and a castle."}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let req_id = r["req_id"].as_str().unwrap().to_string();
    until(
        "the first streamed frame",
        Duration::from_secs(60),
        || async {
            let v = get(
                &http,
                format!("{sim}/sim/aibot/demo-bot/replies?req_id={req_id}"),
            )
            .await;
            (!v["frames"].as_array().unwrap().is_empty()).then_some(())
        },
    )
    .await;
    child.kill().await.unwrap(); // SIGKILL
    {
        let store = AuditStore::open_read_only(&dir).unwrap();
        let pending = store.pending_inbound().unwrap();
        assert_eq!(pending.len(), 1, "accepted, not answered");
        assert_eq!(pending[0].msgid, "m-kill-1");
    }

    let (mut child, sim) = start(&dir).await;
    let sent = until(
        "the answer after the restart",
        Duration::from_secs(60),
        || async {
            let v = get(&http, format!("{sim}/sim/outbox")).await;
            v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["body"]["chatid"] == "g1")
                .cloned()
        },
    )
    .await;
    assert!(!sent["body"]["markdown"]["content"]
        .as_str()
        .unwrap_or_default()
        .is_empty());
    let store = AuditStore::open_read_only(&dir).unwrap();
    until(
        "the inbound row settled",
        Duration::from_secs(10),
        || async { store.pending_inbound().unwrap().is_empty().then_some(()) },
    )
    .await;
    store
        .verify(&AuditKey::load(&AuditKey::default_path(&dir)).unwrap())
        .unwrap()
        .intact()
        .expect("the chain verifies across the kill");
    child.kill().await.unwrap();
}
