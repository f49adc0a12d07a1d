//! The whole box end to end, in process: the WeCom simulator (AI bot over the long connection,
//! a self-built app for callbacks), the supervision tree, the real model and SQLite.
//!
//! One test function runs the scenarios in order because the actor registry is process-wide
//! (one box per process). Every wait polls a condition with a deadline; nothing sleeps blind.

mod common;

use common::until;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use wecom_edge::app;
use wecom_edge::config::{App, Config, Secret};
use wecom_edge::demo::{self, DemoOptions, DEMO_BOT_ID, DEMO_BOT_SECRET};
use wecom_edge_actors::audit::{AuditKey, AuditRow, AuditStore};
use wecom_edge_actors::model::MODEL_ACTOR;
use wecom_edge_actors::session::SESSION_SUP;
use wecom_edge_actors::supervisor::SupervisorMsg;
use wecom_edge_actors::wecom::sim::{self, AiBotSpec, AppSpec, SimConfig};

const AGENT: i64 = 1000002;
const CORP: &str = "wwcorp0000000001";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn rows(dir: &Path) -> Vec<AuditRow> {
    common::audit_rows(dir)
}

fn rows_of<'a>(all: &'a [AuditRow], kind: &str, msgid: &str) -> Vec<&'a AuditRow> {
    all.iter()
        .filter(|r| {
            r.kind == kind && (msgid.is_empty() || r.detail["msgid"] == msgid || r.subject == msgid)
        })
        .collect()
}

struct Harness {
    http: reqwest::Client,
    sim: String,
    dir: std::path::PathBuf,
}

impl Harness {
    async fn say(&self, user: &str, msgid: Option<&str>, text: &str) -> String {
        let mut body = json!({"chattype": "group", "chatid": "g1", "userid": user,
                              "text": format!("@{DEMO_BOT_ID} {text}")});
        if let Some(m) = msgid {
            body["msgid"] = json!(m);
        }
        self.push(body).await
    }

    /// Pushes a message as WeCom sends it (`POST /sim/aibot/{bot_id}/messages` with its own
    /// `msgtype` and fields); returns its req_id.
    async fn push(&self, body: Value) -> String {
        let r: Value = self
            .http
            .post(format!("{}/sim/aibot/{DEMO_BOT_ID}/messages", self.sim))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["req_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string()
    }

    async fn frames(&self, req_id: &str) -> Vec<(String, bool)> {
        demo::frames(&self.http, &self.sim, req_id).await.unwrap()
    }

    /// The final frame's content, once it is there.
    async fn answer(&self, req_id: &str, limit: Duration) -> (String, usize) {
        until("the final frame", limit, || async {
            let f = self.frames(req_id).await;
            match f.last() {
                Some((c, true)) => Some((c.clone(), f.len())),
                _ => None,
            }
        })
        .await
    }

    /// A member writes to the app (`POST /sim/app/{AGENT}/messages` with `body`); the
    /// simulator must have delivered it to the box's callback.
    async fn app_message(&self, body: Value) {
        let v: Value = self
            .http
            .post(format!("{}/sim/app/{AGENT}/messages", self.sim))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["delivered"], true, "{v}");
    }

    /// Everything the simulator took from the box (`GET /sim/outbox`), in arrival order.
    async fn outbox(&self) -> Vec<Value> {
        let mut v = self.get("/sim/outbox").await;
        match v["messages"].take() {
            Value::Array(m) => m,
            other => panic!("no messages in {other}"),
        }
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.sim))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `prompt_tokens` of the generation started for `msgid`.
    fn prompt_tokens(&self, msgid: &str) -> i64 {
        let all = rows(&self.dir);
        let r = rows_of(&all, "generation_started", msgid);
        r.first()
            .unwrap_or_else(|| panic!("no generation_started for {msgid}"))
            .detail["prompt_tokens"]
            .as_i64()
            .unwrap()
    }
}

fn free_addr() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_box_answers_through_the_simulator() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
    let dir = common::TempDir::new("e2e");
    let tmp = dir.0.clone();
    let sim = sim::start(
        SimConfig {
            aibots: vec![AiBotSpec {
                bot_id: DEMO_BOT_ID.into(),
                secret: DEMO_BOT_SECRET.into(),
            }],
            apps: vec![AppSpec {
                corpid: CORP.into(),
                agentid: AGENT,
                secret: "app-secret".into(),
                token: "apptoken".into(),
                encoding_aes_key: AES_KEY.into(),
            }],
            ..Default::default()
        },
        free_addr(),
    )
    .await
    .unwrap();
    let opts = DemoOptions {
        sim_listen: free_addr(),
        admin_listen: free_addr(),
        data_dir: tmp.clone(),
        model: common::model_path(),
        device: "cpu".into(),
        threads: 0,
        max_tokens: 96,
        temperature: 0.0,
        base: None,
    };
    let mut cfg: Config = demo::config(&opts, &sim);
    // Sessions stop when idle for a moment and rehydrate from SQLite on the next message, so
    // the context checks below also check rehydration.
    cfg.idle_timeout = Duration::from_millis(300);
    cfg.callback_listen = Some(free_addr());
    cfg.apps.push(App {
        corpid: CORP.into(),
        agentid: AGENT,
        secret: Secret::new("app-secret"),
        token: Secret::new("apptoken"),
        encoding_aes_key: Secret::new(AES_KEY),
    });
    let running = app::start(&cfg).await.unwrap();
    let h = Harness {
        http: reqwest::Client::new(),
        sim: sim.base_url(),
        dir: tmp.clone(),
    };
    let admin = format!("http://{}", running.admin);
    until(
        "the bot's long connection",
        Duration::from_secs(10),
        || async {
            (h.get(&format!("/sim/aibot/{DEMO_BOT_ID}")).await["connected"] == true).then_some(())
        },
    )
    .await;
    until("/readyz 200", Duration::from_secs(10), || async {
        let r = h.http.get(format!("{admin}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    // 1. A group @-message gets a streamed, finished answer.
    let req = h
        .say("alice", Some("m-alice-1"), "What is the capital of France?")
        .await;
    let (text, n_frames) = h.answer(&req, Duration::from_secs(60)).await;
    assert!(!text.trim().is_empty());
    assert!(n_frames >= 2, "the answer streamed ({n_frames} frames)");
    let frames = h.frames(&req).await;
    assert!(
        frames[..frames.len() - 1].iter().all(|(_, fin)| !fin),
        "finish only last"
    );
    assert!(
        frames
            .windows(2)
            .all(|w| w[1].0.starts_with(w[0].0.trim_end_matches('…'))),
        "each frame holds the whole answer so far"
    );

    // 2. WeCom's redelivery of the same msgid is dropped: one answer.
    let again = h
        .say("alice", Some("m-alice-1"), "What is the capital of France?")
        .await;
    until(
        "the duplicate to be recorded",
        Duration::from_secs(10),
        || async {
            (!rows_of(&rows(&tmp), "duplicate_dropped", "m-alice-1").is_empty()).then_some(())
        },
    )
    .await;
    assert!(h.frames(&again).await.is_empty(), "no second answer");
    assert_eq!(
        rows_of(&rows(&tmp), "generation_started", "m-alice-1").len(),
        1
    );

    // 3. Two users in one group keep separate contexts: bob's prompt for the same question
    //    has no history; alice's second has hers.
    let q = "Name one colour.";
    let b1 = h.say("bob", Some("m-bob-1"), q).await;
    h.answer(&b1, Duration::from_secs(60)).await;
    let a2 = h.say("alice", Some("m-alice-2"), q).await;
    h.answer(&a2, Duration::from_secs(60)).await;
    let bob_first = h.prompt_tokens("m-bob-1");
    let alice_second = h.prompt_tokens("m-alice-2");
    assert!(
        alice_second > bob_first + 10,
        "alice's prompt carries her history ({alice_second} vs bob's {bob_first})"
    );

    // 4. #reset forgets: the same question afterwards has bob's history-free prompt length.
    let r = h.say("alice", Some("m-alice-reset"), "#reset").await;
    let (text, _) = h.answer(&r, Duration::from_secs(10)).await;
    assert!(text.contains("forgotten"), "{text}");
    let a3 = h.say("alice", Some("m-alice-3"), q).await;
    h.answer(&a3, Duration::from_secs(60)).await;
    assert_eq!(h.prompt_tokens("m-alice-3"), bob_first);
    // Commands are answered without the model.
    let s = h.say("carol", Some("m-carol-status"), "/status").await;
    let (text, _) = h.answer(&s, Duration::from_secs(10)).await;
    assert!(text.contains("model ready"), "{text}");
    assert!(rows_of(&rows(&tmp), "generation_started", "m-carol-status").is_empty());

    // #reset while an answer streams: the generation is cancelled and the stream closed,
    // marked as cut.
    let long = h
        .say(
            "gina",
            Some("m-gina-1"),
            "Write a long story about a ship at sea.",
        )
        .await;
    until(
        "the first streamed frame",
        Duration::from_secs(30),
        || async { (!h.frames(&long).await.is_empty()).then_some(()) },
    )
    .await;
    let r = h.say("gina", Some("m-gina-reset"), "#reset").await;
    h.answer(&r, Duration::from_secs(10)).await;
    let (text, _) = h.answer(&long, Duration::from_secs(10)).await;
    assert!(text.contains("cancelled by #reset"), "{text}");

    // 5. Killing the model actor mid-answer: restarted, and the user gets an answer or a clear
    //    notice within 10 s; the audit shows the restart.
    let k = h
        .say(
            "dave",
            Some("m-dave-1"),
            "Write a long story about a dragon and a castle.",
        )
        .await;
    until(
        "the first streamed frame",
        Duration::from_secs(30),
        || async { (!h.frames(&k).await.is_empty()).then_some(()) },
    )
    .await;
    ractor::registry::where_is(MODEL_ACTOR.into())
        .expect("model actor registered")
        .kill();
    // Within 10 s: the notice (the answer is being regenerated) or already the answer.
    until(
        "a notice or the answer",
        Duration::from_secs(10),
        || async {
            h.frames(&k)
                .await
                .last()
                .filter(|(c, fin)| *fin || c.contains("regenerating"))
                .map(|_| ())
        },
    )
    .await;
    let (text, _) = h.answer(&k, Duration::from_secs(60)).await;
    assert!(
        !text.trim().is_empty() && !text.contains("regenerating"),
        "{text}"
    );
    until(
        "the restart in the audit trail",
        Duration::from_secs(10),
        || async {
            rows(&tmp)
                .iter()
                .any(|r| r.kind == "actor_restarted" && r.subject == MODEL_ACTOR)
                .then_some(())
        },
    )
    .await;
    let m = common::metrics(&h.http, &admin).await;
    assert!(m.contains("wecom_edge_actor_restarts_total 1"), "{m}");
    // A crash on the CPU is no device change: the model stays there, no fallback counted.
    assert!(
        m.contains("wecom_edge_model_device{device=\"cpu\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("wecom_edge_model_device_fallbacks_total 0"),
        "{m}"
    );

    // 6. The simulator drops the socket: the box reconnects and answers the next message.
    let before = h.get(&format!("/sim/aibot/{DEMO_BOT_ID}")).await["subscribes"]
        .as_i64()
        .unwrap();
    h.http
        .post(format!("{}/sim/aibot/{DEMO_BOT_ID}/drop", h.sim))
        .send()
        .await
        .unwrap();
    until("a new subscribe", Duration::from_secs(15), || async {
        let s = h.get(&format!("/sim/aibot/{DEMO_BOT_ID}")).await;
        (s["connected"] == true && s["subscribes"].as_i64().unwrap() > before).then_some(())
    })
    .await;
    let after = h.say("erin", Some("m-erin-1"), "Say hello.").await;
    h.answer(&after, Duration::from_secs(60)).await;

    // 7. A self-built app's callback: verified URL, encrypted delivery, acknowledged once
    //    recorded, answered through message/send; WeCom's retry of the same MsgId is dropped.
    let cb = running.callbacks.expect("callback listener");
    let v: Value = h
        .http
        .put(format!("{}/sim/app/{AGENT}/callback", h.sim))
        .json(&json!({"url": format!("http://{cb}/wecom/app/{AGENT}")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["verified"], true, "{v}");
    for _ in 0..2 {
        h.app_message(json!({"from": "frank", "text": "Say hello.", "msgid": 7_000_001u64}))
            .await;
    }
    let to_frank = || async {
        h.outbox()
            .await
            .iter()
            .filter(|m| m["body"]["touser"] == "frank")
            .count()
    };
    until("the app's answer", Duration::from_secs(60), || async {
        (to_frank().await > 0).then_some(())
    })
    .await;
    until(
        "the retry recorded as a duplicate",
        Duration::from_secs(10),
        || async {
            (!rows_of(&rows(&tmp), "duplicate_dropped", "7000001").is_empty()).then_some(())
        },
    )
    .await;
    assert_eq!(
        to_frank().await,
        1,
        "one answer for the message and its retry"
    );
    // An image to the app: the text-only notice through message/send, audited, no generation.
    h.app_message(json!({"from": "frank", "msgtype": "image", "msgid": 7_000_009u64}))
        .await;
    until(
        "the app's text-only notice",
        Duration::from_secs(30),
        || async {
            h.outbox()
                .await
                .iter()
                .any(|m| {
                    m["body"]["touser"] == "frank"
                        && m["body"]["text"]["content"]
                            .as_str()
                            .is_some_and(|t| t.contains("I can only read text messages"))
                })
                .then_some(())
        },
    )
    .await;
    // The audit row is written by the audit actor, not before the notice goes out.
    let un = until("message_unsupported", Duration::from_secs(10), || async {
        let all = rows(&tmp);
        let un: Vec<AuditRow> = rows_of(&all, "message_unsupported", "7000009")
            .into_iter()
            .cloned()
            .collect();
        (!un.is_empty()).then_some(un)
    })
    .await;
    assert_eq!(un.len(), 1, "{un:?}");
    assert_eq!(
        (&un[0].detail["channel"], &un[0].detail["msgtype"]),
        (&json!("app"), &json!("image"))
    );

    // 7b. message/send failing past the client's own retries (−1 ×5: four tries of the first
    //     delivery, one more in the outbox): the answer is kept in the outbox and delivered.
    h.http
        .post(format!("{}/sim/faults", h.sim))
        .json(&json!({"path": "/cgi-bin/message/send", "errcode": -1, "times": 5}))
        .send()
        .await
        .unwrap();
    h.app_message(json!({"from": "grace", "text": "Say hello.", "msgid": 7_000_002u64}))
        .await;
    until(
        "the app's deferred answer",
        Duration::from_secs(90),
        || async {
            h.outbox()
                .await
                .iter()
                .any(|m| m["body"]["touser"] == "grace")
                .then_some(())
        },
    )
    .await;
    until("reply_delivered", Duration::from_secs(10), || async {
        let all = rows(&tmp);
        let kinds = |k: &str| all.iter().filter(|r| r.kind == k).count();
        (kinds("reply_deferred") == 1 && kinds("reply_delivered") == 1).then_some(())
    })
    .await;

    // 8. A forged callback is rejected with WXBizMsgCrypt's signature error and audited.
    let resp = h
        .http
        .post(format!(
            "http://{cb}/wecom/app/{AGENT}?msg_signature=0000&timestamp={}&nonce=1",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        ))
        .body(
            "<xml><ToUserName><![CDATA[x]]></ToUserName><Encrypt><![CDATA[AAAA]]></Encrypt></xml>",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    until(
        "the rejection in the audit trail",
        Duration::from_secs(10),
        || async {
            rows(&tmp)
                .iter()
                .any(|r| r.kind == "callback_rejected" && r.detail["code"] == -40001)
                .then_some(())
        },
    )
    .await;

    // Message types (AI-bot 接收消息, path/100719). Voice is answered from its transcript.
    let voice = h
        .push(
            json!({"userid": "mt-voice", "msgid": "mt-voice-1", "msgtype": "voice",
                     "voice": {"content": "What is a database index?"}}),
        )
        .await;
    let (a, _) = h.answer(&voice, Duration::from_secs(120)).await;
    assert!(!a.is_empty() && !a.contains('⚠'), "{a}");
    assert_eq!(
        rows_of(&rows(&tmp), "generation_started", "mt-voice-1").len(),
        1
    );
    // A quoted message (引用) is the question's context: the same question with a quote makes
    // a longer prompt than without.
    let plain = h
        .push(json!({"userid": "mt-plain", "msgid": "mt-plain-1", "text": "Summarize it."}))
        .await;
    let quoted = h
        .push(
            json!({"userid": "mt-quote", "msgid": "mt-quote-1", "text": "Summarize it.",
                     "quote": {"msgtype": "text", "text": {"content":
                         "The release moved to Friday because two integration tests failed."}}}),
        )
        .await;
    h.answer(&plain, Duration::from_secs(120)).await;
    h.answer(&quoted, Duration::from_secs(120)).await;
    let (p0, p1) = (h.prompt_tokens("mt-plain-1"), h.prompt_tokens("mt-quote-1"));
    assert!(
        p1 >= p0 + 10,
        "prompt tokens without the quote {p0}, with it {p1}"
    );
    // An image gets the text-only reply, an audit row, and no generation.
    let image = h
        .push(
            json!({"userid": "mt-image", "msgid": "mt-image-1", "msgtype": "image",
                     "image": {"url": "https://example.invalid/a.png"}}),
        )
        .await;
    let (a, _) = h.answer(&image, Duration::from_secs(10)).await;
    assert!(
        a.contains("只能读文字") && a.contains("text messages"),
        "{a}"
    );
    until(
        "the unsupported message in the audit trail",
        Duration::from_secs(10),
        || async {
            rows(&tmp)
                .iter()
                .any(|r| r.kind == "message_unsupported" && r.detail["msgtype"] == "image")
                .then_some(())
        },
    )
    .await;
    assert!(rows_of(&rows(&tmp), "generation_started", "mt-image-1").is_empty());

    // The answer's first frame asked for the rating buttons (feedback.id = its req_id); a
    // dislike comes back as a feedback_event: audited with that id and counted.
    let frames: Value = h
        .get(&format!("/sim/aibot/{DEMO_BOT_ID}/replies?req_id={voice}"))
        .await;
    assert_eq!(
        frames["frames"][0]["body"]["stream"]["feedback"]["id"], voice,
        "{frames}"
    );
    let r: Value = h
        .http
        .post(format!("{}/sim/aibot/{DEMO_BOT_ID}/events", h.sim))
        .json(&json!({"eventtype": "feedback_event", "userid": "mt-voice",
                      "fields": {"id": voice, "type": 2, "inaccurate_reason_list": [1]}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["req_id"].is_string(), "{r}");
    until(
        "the rating in the audit trail",
        Duration::from_secs(10),
        || async {
            rows(&tmp)
                .iter()
                .any(|r| {
                    r.kind == "feedback" && r.subject == voice && r.detail["type"] == "inaccurate"
                })
                .then_some(())
        },
    )
    .await;
    let metrics = common::metrics(&h.http, &admin).await;
    assert!(
        metrics.contains("wecom_edge_feedback_total{type=\"inaccurate\"} 1"),
        "{metrics}"
    );

    // Every accepted message was answered; the chain verifies; no message text in the audit.
    let store = AuditStore::open_read_only(&tmp).unwrap();
    until(
        "all accepted messages answered",
        Duration::from_secs(10),
        || async { store.pending_inbound().unwrap().is_empty().then_some(()) },
    )
    .await;
    // Idle sessions are stopped (and forgotten by session_sup).
    let sup: ractor::ActorRef<SupervisorMsg> = ractor::registry::where_is(SESSION_SUP.into())
        .expect("session_sup")
        .into();
    until("idle sessions to stop", Duration::from_secs(10), || async {
        ractor::call!(sup, SupervisorMsg::WhichChildren)
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    let key = AuditKey::load(&AuditKey::default_path(&tmp)).unwrap();
    let n = store
        .verify(&key)
        .unwrap()
        .intact()
        .expect("the chain verifies");
    assert!(n > 20, "{n} rows");
    let all = rows(&tmp);
    assert!(!all.iter().any(|r| r.detail.to_string().contains("dragon")));

    running.shutdown().await;
    sim.stop().await;
}
