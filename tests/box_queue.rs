//! Load feels fair (issue 11, item 11), on the whole box in process: with one generation slot
//! and room for two waiting, a question that has to wait shows "queued, N ahead" at once and
//! sees it move; one past the bound is refused politely; every queued question is answered.

mod common;

use common::until;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use wecom_edge::app;
use wecom_edge::config::Limits;
use wecom_edge::demo::{self, DemoOptions, DEMO_BOT_ID};
use wecom_edge_actors::wecom::sim;

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_questions_see_their_place_and_only_past_the_bound_are_refused() {
    let dir = common::TempDir::new("queue");
    let sim = sim::start(demo::sim_config(), any()).await.unwrap();
    let opts = DemoOptions {
        sim_listen: any(),
        admin_listen: any(),
        data_dir: dir.0.clone(),
        model: common::model_path(),
        device: "cpu".into(),
        threads: 0,
        max_tokens: 64,
        temperature: 0.0,
        base: None,
    };
    let mut cfg = demo::config(&opts, &sim);
    cfg.limits = Limits {
        max_active: 1,
        max_queued: 2,
        ..Limits::default()
    };
    let running = app::start(&cfg).await.unwrap();
    let http = reqwest::Client::new();
    let base = sim.base_url();
    common::bot_connected(&http, &base, Duration::from_secs(10)).await;
    let ask = |user: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r: Value = http
                .post(format!("{base}/sim/aibot/{DEMO_BOT_ID}/messages"))
                .json(&json!({"chattype": "group", "chatid": format!("g-{user}"),
                              "userid": user, "msgid": format!("m-{user}"),
                              "text": format!("@{DEMO_BOT_ID} Write a long story about a ship.")}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r["req_id"].as_str().unwrap().to_string()
        }
    };
    let frames = |req: String| {
        let (http, base) = (http.clone(), base.clone());
        async move { demo::frames(&http, &base, &req).await.unwrap() }
    };

    // A holds the only slot; B waits next, C behind B.
    let a = ask("a").await;
    until("A's first frame", Duration::from_secs(30), || async {
        (!frames(a.clone()).await.is_empty()).then_some(())
    })
    .await;
    let b = ask("b").await;
    let first_b = until("B's queued frame", Duration::from_secs(5), || async {
        frames(b.clone()).await.first().cloned()
    })
    .await;
    assert!(first_b.0.contains("you are next"), "{first_b:?}");
    let c = ask("c").await;
    let first_c = until("C's queued frame", Duration::from_secs(5), || async {
        frames(c.clone()).await.first().cloned()
    })
    .await;
    assert!(first_c.0.contains("1 question(s) ahead"), "{first_c:?}");

    // D is past the bound (two already waiting): refused at once, politely.
    let d = ask("d").await;
    let (text, fin) = until("D's answer", Duration::from_secs(5), || async {
        frames(d.clone()).await.last().cloned()
    })
    .await;
    assert!(fin && text.contains("I am busy"), "{text}");

    // As A finishes, C moves up; everyone queued gets a real answer.
    for (who, req) in [("a", &a), ("b", &b), ("c", &c)] {
        let (text, _) = until(
            &format!("{who}'s answer"),
            Duration::from_secs(120),
            || async { frames(req.clone()).await.last().filter(|f| f.1).cloned() },
        )
        .await;
        assert!(
            !text.starts_with('⏳') && !text.contains("busy"),
            "{who}: {text}"
        );
    }
    let seen_c = frames(c.clone()).await;
    assert!(
        seen_c.iter().any(|(t, _)| t.contains("you are next")),
        "C saw its place move: {seen_c:?}"
    );
    let rows = common::audit_rows(&dir.0);
    assert_eq!(rows.iter().filter(|r| r.kind == "queued").count(), 2);
    running.shutdown().await;
    sim.stop().await;
}
