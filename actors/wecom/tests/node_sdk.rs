//! Fidelity check against Tencent's own client: the official Node SDK `@wecom/aibot-node-sdk`
//! (its `wsUrl` option pointed at the simulator) must authenticate, receive a pushed message and
//! stream a reply that `/sim/aibot/{bot_id}/replies` returns whole and in order.
//!
//! The test installs the SDK itself (`npm install` into the target directory, pinned version);
//! it is skipped, saying so, only when `node` is absent.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use wecom_edge_wecom::sim::{self, AiBotSpec, SimConfig};

const SDK: &str = "@wecom/aibot-node-sdk@1.0.7";

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn install_sdk() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("aibot-node-sdk-1.0.7");
    let module = dir.join("node_modules/@wecom/aibot-node-sdk/package.json");
    if !module.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
            ])
            .arg(&dir)
            .arg(SDK)
            .status()
            .expect("npm runs (it comes with node)");
        assert!(st.success(), "npm install {SDK} failed");
    }
    dir.join("node_modules")
}

#[tokio::test]
async fn official_node_sdk_talks_to_the_simulator() {
    if !have("node") {
        eprintln!(
            "SKIPPED: node is not installed; the official-SDK fidelity test needs node and npm"
        );
        return;
    }
    let node_path = tokio::task::spawn_blocking(install_sdk).await.unwrap();
    let h = sim::start(
        SimConfig {
            aibots: vec![AiBotSpec {
                bot_id: "sdk-bot".into(),
                secret: "sdk-secret".into(),
            }],
            ..Default::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/sdk_echo.cjs");
    let child = tokio::process::Command::new("node")
        .arg(script)
        .args([h.ws_url().as_str(), "sdk-bot", "sdk-secret"])
        .env("NODE_PATH", &node_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let http = reqwest::Client::new();
    let base = h.base_url();
    // Wait until the SDK has subscribed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st: Value = http
            .get(format!("{base}/sim/aibot/sdk-bot"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if st["connected"] == true {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SDK never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pushed: Value = http
        .post(format!("{base}/sim/aibot/sdk-bot/messages"))
        .json(&json!({"chattype": "group", "chatid": "g1", "userid": "zhangsan", "text": "hello sdk"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let req_id = pushed["req_id"].as_str().unwrap().to_string();

    let out = tokio::time::timeout(Duration::from_secs(40), child.wait_with_output())
        .await
        .expect("node exits")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("AUTHENTICATED"), "{stdout}");
    assert!(stdout.contains(&format!("REPLIED {req_id}")), "{stdout}");

    let r: Value = http
        .get(format!("{base}/sim/aibot/sdk-bot/replies?req_id={req_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let frames = r["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 2, "{r}");
    assert_eq!(r["acks"], json!([0, 0]));
    assert_eq!(frames[0]["cmd"], "aibot_respond_msg");
    assert_eq!(frames[0]["body"]["stream"]["content"], "thinking");
    assert_eq!(frames[0]["body"]["stream"]["finish"], false);
    assert_eq!(frames[1]["body"]["stream"]["content"], "echo: hello sdk");
    assert_eq!(frames[1]["body"]["stream"]["finish"], true);
    assert_eq!(
        frames[0]["body"]["stream"]["id"],
        frames[1]["body"]["stream"]["id"]
    );
    h.stop().await;
}
