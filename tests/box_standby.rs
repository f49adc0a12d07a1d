//! Two boxes configured with the same AI bot against one simulator (issue 14 item 3): box A
//! owns the bot, box B is its standby (`standby = true`, `owner` = A's admin URL), each a real
//! `wecom-edge serve` process with its own SQLite and the real model.
//!
//! * Exactly one holds the long connection: B stands by (`/readyz/standby/demo-bot` 200,
//!   `/readyz/aibot/demo-bot` 404) and never subscribes while A holds the bot.
//! * A is killed (SIGKILL): B subscribes after `takeover_after` and answers; the takeover is
//!   audited (`standby_takeover`) and counted (`standby_events_total`). The measured failover
//!   time is printed.
//! * A starts again: its subscribe kicks B, which hands the bot back (`standby_yielded`) and
//!   stands by; A answers again.
//! * No message is answered twice: each message is in exactly one box's audit trail, and the
//!   simulator saw exactly one final frame for it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{audit_rows, until, TempDir};
use wecom_edge::demo::{self, DEMO_BOT_ID, DEMO_BOT_SECRET};
use wecom_edge_actors::wecom::sim::{self, SimHandle};

const TAKEOVER_AFTER: Duration = Duration::from_secs(2);

fn config(dir: &Path, sim: &SimHandle, admin: &str, standby_of: Option<&str>) -> PathBuf {
    let model = common::model_path();
    let standby = standby_of.map_or(String::new(), |owner| {
        format!(
            "standby = true\nowner = \"{owner}\"\ntakeover_after = \"{}s\"\n",
            TAKEOVER_AFTER.as_secs()
        )
    });
    let path = dir.join("edge.toml");
    std::fs::write(
        &path,
        format!(
            "[box]\ndata_dir = \"{data}\"\nadmin_listen = \"{admin}\"\napi_base = \"{api}\"\nws_url = \"{ws}\"\n\n\
             [model]\npath = \"{model}\"\ndevice = \"cpu\"\nmax_tokens = 12\ntemperature = 0.0\n\n\
             [[aibot]]\nbot_id = \"{DEMO_BOT_ID}\"\nsecret = \"{DEMO_BOT_SECRET}\"\n{standby}",
            data = dir.join("data").display(),
            api = sim.base_url(),
            ws = sim.ws_url(),
            model = model.display(),
        ),
    )
    .unwrap();
    path
}

/// `wecom-edge serve --config FILE`, killed on drop; its admin URL from the READY line.
async fn serve(config: &Path) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("serve prints READY")
        .unwrap()
        .expect("a line");
    let admin = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("admin="))
        .unwrap_or_else(|| panic!("no admin= in {ready:?}"))
        .to_string();
    // The rest of stdout is not read; keep the pipe drained so the box never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, admin)
}

/// The status of `{admin}/readyz/{check}` (0 when the box does not answer).
async fn check(http: &reqwest::Client, admin: &str, name: &str) -> u16 {
    match http.get(format!("{admin}/readyz/{name}")).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Asks through the simulator and waits for the final frame; the req_id.
async fn ask(http: &reqwest::Client, sim: &str, msgid: &str) -> String {
    let req_id = common::send(http, sim, ("g-standby", "alice"), msgid, "你好").await;
    until("the final frame", Duration::from_secs(90), || async {
        let f = wecom_edge::demo::frames(http, sim, &req_id).await.ok()?;
        f.last().is_some_and(|(_, done)| *done).then_some(())
    })
    .await;
    req_id
}

fn received(dir: &Path) -> Vec<String> {
    audit_rows(&dir.join("data"))
        .into_iter()
        .filter(|r| r.kind == "inbound_received")
        .map(|r| r.subject)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_owner_dies_and_hands_back_when_it_returns() {
    let (a_dir, b_dir) = (TempDir::new("standby-owner"), TempDir::new("standby-b"));
    let sim = sim::start(demo::sim_config(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let s = sim.base_url();
    let http = reqwest::Client::new();
    let owner_admin = format!("127.0.0.1:{}", common::free_port());
    let a_cfg = config(&a_dir.0, &sim, &owner_admin, None);
    let (mut a, a_admin) = serve(&a_cfg).await;
    assert_eq!(a_admin, format!("http://{owner_admin}"));
    let b_cfg = config(&b_dir.0, &sim, "127.0.0.1:0", Some(&a_admin));
    let (mut b, b_admin) = serve(&b_cfg).await;

    let bot = format!("aibot/{DEMO_BOT_ID}");
    let standby = format!("standby/{DEMO_BOT_ID}");
    until(
        "A holds the bot, B stands by",
        Duration::from_secs(30),
        || async {
            (check(&http, &a_admin, &bot).await == 200
                && check(&http, &b_admin, &standby).await == 200)
                .then_some(())
        },
    )
    .await;
    let standing = Instant::now();
    assert_eq!(check(&http, &b_admin, &bot).await, 404, "B holds nothing");

    let mut req_ids = Vec::new();
    for m in ["sb-1", "sb-2"] {
        req_ids.push((m, ask(&http, &s, m).await));
    }
    // Twice the takeover time with A holding the bot: B never subscribed.
    while standing.elapsed() < TAKEOVER_AFTER * 2 {
        assert_eq!(
            common::sim_bot(&http, &s).await.unwrap()["subscribes"],
            1,
            "only A subscribed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(common::sim_bot(&http, &s).await.unwrap()["subscribes"], 1);

    // A dies: B takes over within takeover_after + one poll + a subscribe.
    a.kill().await.unwrap();
    let killed = Instant::now();
    until("B holds the bot", Duration::from_secs(30), || async {
        (check(&http, &b_admin, &bot).await == 200).then_some(())
    })
    .await;
    let failover = killed.elapsed();
    println!(
        "standby failover: {:.2} s after the owner was killed (takeover_after {} s)",
        failover.as_secs_f64(),
        TAKEOVER_AFTER.as_secs()
    );
    assert!(
        failover >= TAKEOVER_AFTER - Duration::from_millis(300),
        "{failover:?}"
    );
    assert_eq!(check(&http, &b_admin, &standby).await, 404);
    let st = common::sim_bot(&http, &s).await.unwrap();
    assert_eq!(
        (st["connected"].clone(), st["subscribes"].clone()),
        (true.into(), 2.into())
    );
    for m in ["sb-3", "sb-4"] {
        req_ids.push((m, ask(&http, &s, m).await));
    }
    let m = common::metrics(&http, &b_admin).await;
    assert!(
        m.contains(&format!(
            "wecom_edge_standby_events_total{{bot_id=\"{DEMO_BOT_ID}\",event=\"takeover\"}} 1"
        )),
        "{m}"
    );

    // A comes back: it kicks B, B hands the bot back and stands by again.
    let (mut a2, _) = serve(&a_cfg).await;
    until(
        "A holds the bot again, B stands by",
        Duration::from_secs(30),
        || async {
            (check(&http, &a_admin, &bot).await == 200
                && check(&http, &b_admin, &standby).await == 200
                && check(&http, &b_admin, &bot).await == 404)
                .then_some(())
        },
    )
    .await;
    req_ids.push(("sb-5", ask(&http, &s, "sb-5").await));
    assert_eq!(common::sim_bot(&http, &s).await.unwrap()["subscribes"], 3);

    // No message answered twice: one box received each, one final frame went out for each.
    let (in_a, in_b) = (received(&a_dir.0), received(&b_dir.0));
    for (m, req_id) in &req_ids {
        let holders = [&in_a, &in_b]
            .iter()
            .filter(|r| r.iter().any(|s| s == m))
            .count();
        assert_eq!(holders, 1, "{m}: A {in_a:?} B {in_b:?}");
        let frames = wecom_edge::demo::frames(&http, &s, req_id).await.unwrap();
        assert_eq!(
            frames.iter().filter(|(_, done)| *done).count(),
            1,
            "{m}: {frames:?}"
        );
    }
    for m in ["sb-1", "sb-2", "sb-5"] {
        assert!(in_a.iter().any(|s| s == m), "{m} went to A");
    }
    for m in ["sb-3", "sb-4"] {
        assert!(in_b.iter().any(|s| s == m), "{m} went to B");
    }
    let kinds: Vec<String> = audit_rows(&b_dir.0.join("data"))
        .into_iter()
        .filter(|r| r.kind.starts_with("standby_"))
        .map(|r| r.kind)
        .collect();
    assert_eq!(kinds, ["standby_takeover", "standby_yielded"]);
    let _ = a2.kill().await;
    let _ = b.kill().await;
    sim.stop().await;
}
