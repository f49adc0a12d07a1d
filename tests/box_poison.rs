//! A message that keeps killing the box is not replayed forever: `demo --headless` is SIGKILLed
//! mid-answer twice (as the watchdog would kill a box stuck on it); at the third start the
//! message is settled with an apology instead of a third generation (issue 11 item 2).

mod common;

use common::until;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Child;
use wecom_edge_actors::audit::AuditStore;

async fn start(dir: &Path) -> (Child, String) {
    let (child, info) =
        common::start_demo(dir, &["--max-tokens", "400", "--temperature", "0"], |_| {}).await;
    (child, info["sim"].as_str().unwrap().to_string())
}

/// Generations started for `msgid` so far, from the audit trail.
fn started(dir: &Path, msgid: &str) -> usize {
    AuditStore::open_read_only(dir)
        .and_then(|s| s.tail(10_000))
        .map(|rows| {
            rows.iter()
                .filter(|r| r.kind == "generation_started" && r.detail["msgid"] == msgid)
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_kills_the_box_twice_is_settled_with_an_apology() {
    let tmp = common::TempDir::new("poison");
    let dir = tmp.0.clone();
    let http = reqwest::Client::new();

    let (mut child, sim) = start(&dir).await;
    common::bot_connected(&http, &sim, Duration::from_secs(30)).await;
    http.post(format!("{sim}/sim/aibot/demo-bot/messages"))
        .json(
            &json!({"chattype": "group", "chatid": "g1", "userid": "alice",
                      "msgid": "m-poison",
                      "text": "@demo-bot Write a long story about a dragon and a castle."}),
        )
        .send()
        .await
        .unwrap();
    for run in 1..=2 {
        until(
            "the generation started",
            Duration::from_secs(60),
            || async { (started(&dir, "m-poison") >= run).then_some(()) },
        )
        .await;
        child.kill().await.unwrap(); // SIGKILL mid-answer
        let _ = child.wait().await;
        if run == 1 {
            (child, _) = start(&dir).await;
        }
    }

    // Third start: the apology, not a third generation; the row is settled.
    let (mut child, sim) = start(&dir).await;
    let sent = until("the apology", Duration::from_secs(60), || async {
        let v: Value = http
            .get(format!("{sim}/sim/outbox"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["messages"]
            .as_array()?
            .iter()
            .find(|m| m["body"]["chatid"] == "g1")
            .cloned()
    })
    .await;
    let text = sent["body"]["markdown"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("will not try it again"), "{sent}");
    let store = AuditStore::open_read_only(&dir).unwrap();
    until("the row settled", Duration::from_secs(10), || async {
        store.pending_inbound().unwrap().is_empty().then_some(())
    })
    .await;
    assert_eq!(started(&dir, "m-poison"), 2, "no third generation");
    assert!(store
        .tail(10_000)
        .unwrap()
        .iter()
        .any(|r| r.kind == "generation_failed" && r.detail["reason"] == "gave_up"));
    child.kill().await.unwrap();
}
