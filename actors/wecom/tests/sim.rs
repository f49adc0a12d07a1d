//! The WeCom clients against the simulator on loopback: token refresh and retries under forced
//! errors, robot limits, the long connection's stream/reconnect/kick rules, and the callback
//! driver against the box's callback endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use wecom_edge_wecom::api::{AccessToken, Api, AppClient, AppMsgType, RetryPolicy};
use wecom_edge_wecom::callback::{AiBotReply, CallbackServer, Inbound};
use wecom_edge_wecom::crypto::{random_encoding_aes_key, MsgCrypt};
use wecom_edge_wecom::longconn::{self, BotEvent, LongConnConfig};
use wecom_edge_wecom::robot::{RobotMessage, RobotWebhook};
use wecom_edge_wecom::sim::{self, AiBotSpec, AiBotWebhookSpec, AppSpec, SimConfig, SimHandle};

const FAST: RetryPolicy = RetryPolicy {
    retries: 3,
    base: Duration::from_millis(5),
    max: Duration::from_millis(50),
};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

struct Ctl {
    http: reqwest::Client,
    base: String,
}

impl Ctl {
    fn new(h: &SimHandle) -> Self {
        Ctl {
            http: reqwest::Client::new(),
            base: h.base_url(),
        }
    }
    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
    async fn post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
    async fn put(&self, path: &str, body: Value) -> Value {
        self.http
            .put(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Polls `f` every 10 ms until it yields, failing after 10 s.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most 10 s) for a client's event stream to end: it stopped for good.
async fn ended(rx: &mut mpsc::Receiver<BotEvent>, what: &str) {
    assert!(
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .is_none(),
        "{what}"
    );
}

async fn next_event(rx: &mut mpsc::Receiver<BotEvent>) -> BotEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("event channel open")
}

fn app_spec() -> AppSpec {
    AppSpec {
        corpid: "wwsimcorp".into(),
        agentid: 1000002,
        secret: "appsecret".into(),
        token: "apptoken".into(),
        encoding_aes_key: random_encoding_aes_key(),
    }
}

#[tokio::test]
async fn app_messages_split_in_order_and_tokens_refresh_once_on_rejection() {
    let spec = app_spec();
    let h = sim::start(
        SimConfig {
            apps: vec![spec.clone()],
            ..Default::default()
        },
        loopback(),
    )
    .await
    .unwrap();
    let ctl = Ctl::new(&h);
    let api = Api::new(&h.base_url()).unwrap();
    let token = Arc::new(AccessToken::new(
        api.clone(),
        &spec.corpid,
        &spec.secret,
        FAST,
    ));
    let app = AppClient::new(api, spec.agentid, token.clone(), FAST);

    // Eight concurrent sends share one gettoken (single flight).
    let sends = (0..8).map(|i| {
        let app = app.clone();
        async move {
            app.send("zhangsan", AppMsgType::Text, &format!("hello {i}"))
                .await
        }
    });
    for r in futures_util::future::join_all(sends).await {
        assert_eq!(r.unwrap().len(), 1);
    }
    assert_eq!(token.fetches(), 1);

    // A long answer goes out as ordered parts, none truncated by WeCom.
    let long = "第一段。".repeat(300) + "\n\n" + &"second paragraph. ".repeat(100);
    let parts = app
        .appchat_send("chat1", AppMsgType::Markdown, &long)
        .await
        .unwrap();
    assert!(parts.len() >= 2);
    let out = ctl.get("/sim/outbox").await;
    let chat: Vec<&Value> = out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["api"] == "/cgi-bin/appchat/send")
        .collect();
    assert_eq!(chat.len(), parts.len());
    for (i, m) in chat.iter().enumerate() {
        assert_eq!(m["truncated"], false);
        let c = m["body"]["markdown"]["content"].as_str().unwrap();
        assert!(
            c.starts_with(&format!("({}/{}) ", i + 1, parts.len())),
            "{c}"
        );
        assert!(c.len() <= 2048);
    }

    // 42001 and 40014: the token is dropped, refetched once, and the send succeeds.
    for code in [42001, 40014] {
        ctl.post(
            "/sim/faults",
            json!({"path": "/cgi-bin/message/send", "errcode": code}),
        )
        .await;
        let before = token.fetches();
        app.send("zhangsan", AppMsgType::Text, "after a token error")
            .await
            .unwrap();
        assert_eq!(token.fetches(), before + 1, "errcode {code}");
    }
    // A second rejection in a row is not retried again.
    ctl.post(
        "/sim/faults",
        json!({"path": "/cgi-bin/message/send", "errcode": 42001, "times": 2}),
    )
    .await;
    let e = app
        .send("zhangsan", AppMsgType::Text, "x")
        .await
        .unwrap_err();
    assert_eq!(e.errcode(), Some(42001));

    // −1 and 45009 back off and succeed; 60020 on gettoken surfaces with its hint.
    ctl.post(
        "/sim/faults",
        json!({"path": "/cgi-bin/message/send", "errcode": -1, "times": 2}),
    )
    .await;
    app.send("zhangsan", AppMsgType::Text, "busy twice")
        .await
        .unwrap();
    ctl.post(
        "/sim/faults",
        json!({"path": "/cgi-bin/message/send", "errcode": 40014}),
    )
    .await;
    ctl.post(
        "/sim/faults",
        json!({"path": "/cgi-bin/gettoken", "errcode": 60020}),
    )
    .await;
    let e = app
        .send("zhangsan", AppMsgType::Text, "x")
        .await
        .unwrap_err();
    assert_eq!(e.errcode(), Some(60020));
    assert!(e.to_string().contains("可信IP"), "{e}");
    assert!(!e.to_string().contains("appsecret"), "secret leaked: {e}");

    // A wrong secret is 40001, not retried forever.
    let bad = AccessToken::new(
        Api::new(&h.base_url()).unwrap(),
        &spec.corpid,
        "wrong",
        FAST,
    );
    assert_eq!(bad.get().await.unwrap_err().errcode(), Some(40001));
    assert_eq!(bad.fetches(), 1);
    assert!(app.send("zhangsan", AppMsgType::Text, " ").await.is_err());
    h.stop().await;
}

#[tokio::test]
async fn robot_webhook_keeps_the_rate_and_surfaces_93000() {
    let h = sim::start(
        SimConfig {
            webhooks: vec!["key-1".into()],
            ..Default::default()
        },
        loopback(),
    )
    .await
    .unwrap();
    let ctl = Ctl::new(&h);
    let api = Api::new(&h.base_url()).unwrap();

    // Client-side window (5 per 100 ms here): 12 messages wait for two windows, none refused.
    let robot = RobotWebhook::with_rate(api.clone(), "key-1", FAST, 5, Duration::from_millis(100));
    let t0 = std::time::Instant::now();
    for i in 0..12 {
        let msg = RobotMessage::Text {
            content: format!("n{i}"),
            mentioned_list: vec!["@all".into()],
        };
        robot.send(&msg).await.unwrap();
    }
    assert!(t0.elapsed() >= Duration::from_millis(200));
    let out = ctl.get("/sim/outbox").await;
    let sent: Vec<&str> = out["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"]["text"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(sent, (0..12).map(|i| format!("n{i}")).collect::<Vec<_>>());
    assert_eq!(
        out["messages"][0]["body"]["text"]["mentioned_list"],
        json!(["@all"])
    );

    // WeCom's own 20/min: past it the simulator answers 45009, retried with backoff, then surfaced.
    let unlimited =
        RobotWebhook::with_rate(api.clone(), "key-1", FAST, 1000, Duration::from_secs(60));
    let mut codes = Vec::new();
    for _ in 0..10 {
        if let Err(e) = unlimited
            .send(&RobotMessage::Markdown("**hi**".into()))
            .await
        {
            codes.push(e.errcode());
        }
    }
    assert_eq!(codes, vec![Some(45009); 2]);

    // Markdown over 4096 bytes is split, and markdown_v2 is sent as such.
    let h2 = sim::start(
        SimConfig {
            webhooks: vec!["k2".into()],
            ..Default::default()
        },
        loopback(),
    )
    .await
    .unwrap();
    let r2 = RobotWebhook::new(Api::new(&h2.base_url()).unwrap(), "k2", FAST);
    r2.send(&RobotMessage::MarkdownV2("| a | b |\n".repeat(600)))
        .await
        .unwrap();
    let out = Ctl::new(&h2).get("/sim/outbox").await;
    assert_eq!(out["messages"].as_array().unwrap().len(), 2);
    assert_eq!(out["messages"][1]["body"]["msgtype"], "markdown_v2");

    // Unknown key: 93000 at once, no retries.
    let gone = RobotWebhook::new(
        api,
        "no-such-key",
        RetryPolicy {
            base: Duration::from_secs(30),
            ..FAST
        },
    );
    let t0 = std::time::Instant::now();
    let e = gone
        .send(&RobotMessage::Markdown("x".into()))
        .await
        .unwrap_err();
    assert_eq!(e.errcode(), Some(93000));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(!e.to_string().contains("no-such-key"), "key leaked: {e}");

    // The simulator's byte limit, straight: 2049 bytes of text → 45002.
    let v: Value = reqwest::Client::new()
        .post(format!("{}/cgi-bin/webhook/send?key=k2", h2.base_url()))
        .json(&json!({"msgtype": "text", "text": {"content": "x".repeat(2049)}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["errcode"], 45002);
    assert!(v["errmsg"]
        .as_str()
        .unwrap()
        .contains("more info at https://open.work.weixin.qq.com/devtool/query?e=45002"));
    h.stop().await;
    h2.stop().await;
}

/// The simulator with one long-connection bot, `bot-1` with secret `s3cret`.
async fn sim_with_bot1() -> SimHandle {
    sim::start(
        SimConfig {
            aibots: vec![AiBotSpec {
                bot_id: "bot-1".into(),
                secret: "s3cret".into(),
            }],
            ..Default::default()
        },
        loopback(),
    )
    .await
    .unwrap()
}

fn bot_config(h: &SimHandle, secret: &str) -> LongConnConfig {
    LongConnConfig {
        url: h.ws_url(),
        heartbeat: Duration::from_millis(100),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..LongConnConfig::new("bot-1", secret)
    }
}

#[tokio::test]
async fn long_connection_streams_reconnects_and_stops_when_kicked() {
    let h = sim_with_bot1().await;
    let ctl = Ctl::new(&h);

    // Wrong secret: refused, reported, retried.
    let (bad, mut bad_rx) = longconn::spawn(bot_config(&h, "wrong"));
    match next_event(&mut bad_rx).await {
        BotEvent::AuthFailed { errcode, .. } => assert_eq!(errcode, 853000),
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    bad.shutdown().await;

    let (conn, mut rx) = longconn::spawn(bot_config(&h, "s3cret"));
    assert_eq!(next_event(&mut rx).await, BotEvent::Connected);
    let pushed = ctl
        .post(
            "/sim/aibot/bot-1/messages",
            json!({"chattype": "group", "chatid": "g1", "userid": "lisi", "text": "@bot hi"}),
        )
        .await;
    let (req_id, msg) = match next_event(&mut rx).await {
        BotEvent::Message { req_id, msg } => (req_id, msg),
        other => panic!("expected a message, got {other:?}"),
    };
    assert_eq!(req_id, pushed["req_id"]);
    assert_eq!(msg.msgid, pushed["msgid"]);
    assert_eq!(msg.text().as_deref(), Some("@bot hi"));
    assert_eq!(msg.conversation(), "g1");

    let mut reply = conn.stream(&req_id, msg.conversation());
    reply.update("Hel").await.unwrap();
    reply.update("Hello").await.unwrap();
    reply.finish("Hello, lisi.").await.unwrap();
    let r = ctl
        .get(&format!("/sim/aibot/bot-1/replies?req_id={req_id}"))
        .await;
    let frames = r["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(r["acks"], json!([0, 0, 0]));
    for (f, (text, fin)) in
        frames
            .iter()
            .zip([("Hel", false), ("Hello", false), ("Hello, lisi.", true)])
    {
        assert_eq!(f["cmd"], "aibot_respond_msg");
        assert_eq!(f["headers"]["req_id"], req_id.as_str());
        assert_eq!(f["body"]["stream"]["id"], reply.stream_id());
        assert_eq!(f["body"]["stream"]["content"], text);
        assert_eq!(f["body"]["stream"]["finish"], fin);
    }
    // Over 20480 bytes is refused before sending.
    assert!(conn
        .stream(&req_id, "g1")
        .update(&"x".repeat(20481))
        .await
        .is_err());

    // Redelivery of a msgid: same msgid, new req_id.
    let again = ctl
        .post("/sim/aibot/bot-1/messages", json!({"chattype": "group", "chatid": "g1", "userid": "lisi", "text": "@bot hi", "msgid": msg.msgid}))
        .await;
    match next_event(&mut rx).await {
        BotEvent::Message {
            msg: m2,
            req_id: r2,
        } => {
            assert_eq!(m2.msgid, msg.msgid);
            assert_ne!(r2, req_id);
            assert_eq!(again["req_id"], r2.as_str());
        }
        other => panic!("expected the redelivery, got {other:?}"),
    }

    // The simulator drops the socket: reconnect, and the next message arrives.
    ctl.post("/sim/aibot/bot-1/drop", json!({})).await;
    assert!(matches!(
        next_event(&mut rx).await,
        BotEvent::Disconnected { .. }
    ));
    assert_eq!(next_event(&mut rx).await, BotEvent::Connected);
    ctl.post(
        "/sim/aibot/bot-1/messages",
        json!({"userid": "lisi", "text": "still there?"}),
    )
    .await;
    match next_event(&mut rx).await {
        BotEvent::Message { msg, .. } => assert_eq!(msg.conversation(), "lisi"),
        other => panic!("expected a message, got {other:?}"),
    }

    // A zombie link (pings no longer acked): two misses → reconnect.
    ctl.post("/sim/aibot/bot-1/acks", json!({"ping": false}))
        .await;
    match next_event(&mut rx).await {
        BotEvent::Disconnected { reason, .. } => {
            assert!(reason.contains("pings unacknowledged"), "{reason}")
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    ctl.post("/sim/aibot/bot-1/acks", json!({"ping": true}))
        .await;
    assert_eq!(next_event(&mut rx).await, BotEvent::Connected);

    // Stream expiry (846608): the final answer goes out as a proactive message instead.
    ctl.post("/sim/config", json!({"stream_expiry_ms": 30}))
        .await;
    let pushed = ctl
        .post(
            "/sim/aibot/bot-1/messages",
            json!({"userid": "wangwu", "text": "slow one"}),
        )
        .await;
    let BotEvent::Message { req_id, msg } = next_event(&mut rx).await else {
        panic!("expected a message")
    };
    assert_eq!(req_id, pushed["req_id"]);
    let mut slow = conn.stream(&req_id, msg.conversation());
    slow.update("thinking").await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await; // let the stream age past expiry
    slow.update("thinking more").await.unwrap();
    assert!(slow.is_expired());
    slow.finish("the whole answer").await.unwrap();
    let out = ctl.get("/sim/outbox").await;
    let last = out["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["api"], "aibot_send_msg");
    assert_eq!(last["body"]["chatid"], "wangwu");
    assert_eq!(last["body"]["markdown"]["content"], "the whole answer");

    // A second connection for the same bot kicks this one: it stops and never reconnects.
    let (_other, mut other_rx) = longconn::spawn(bot_config(&h, "s3cret"));
    assert_eq!(next_event(&mut other_rx).await, BotEvent::Connected);
    assert_eq!(next_event(&mut rx).await, BotEvent::Kicked);
    ended(&mut rx, "the kicked client ended").await;
    assert!(conn.send_markdown("lisi", "x").await.is_err());
    let st = ctl.get("/sim/aibot/bot-1").await;
    assert_eq!(st["connected"], true);
    assert!(st["pings"].as_u64().unwrap() > 0);
    h.stop().await;
}

/// A stand-in for the owner box's admin listener: `/readyz/aibot/{bot_id}` answers `status`;
/// `looks` counts the questions.
struct FakeOwner {
    url: String,
    status: Arc<std::sync::atomic::AtomicU16>,
    looks: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeOwner {
    async fn start() -> Self {
        use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
        let status = Arc::new(AtomicU16::new(200));
        let looks = Arc::new(AtomicUsize::new(0));
        let (st, lk) = (status.clone(), looks.clone());
        let app = axum::Router::new().route(
            "/readyz/aibot/{bot}",
            axum::routing::get(
                move |axum::extract::Path(bot): axum::extract::Path<String>| {
                    let (st, lk) = (st.clone(), lk.clone());
                    async move {
                        lk.fetch_add(1, Ordering::SeqCst);
                        let code = if bot == "bot-1" {
                            st.load(Ordering::SeqCst)
                        } else {
                            404
                        };
                        (
                            axum::http::StatusCode::from_u16(code).unwrap(),
                            "owner says\n",
                        )
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeOwner { url, status, looks }
    }
    fn set(&self, code: u16) {
        self.status.store(code, std::sync::atomic::Ordering::SeqCst);
    }
    fn looks(&self) -> usize {
        self.looks.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_standby_waits_for_its_owner_takes_over_hands_back_and_stops_for_a_rival() {
    use wecom_edge_wecom::standby::{Owner, OwnerWatch, StandbyConfig};
    let h = sim_with_bot1().await;
    let ctl = Ctl::new(&h);
    let owner = FakeOwner::start().await;
    let takeover_after = Duration::from_millis(500);
    let mut cfg = bot_config(&h, "s3cret");
    let mut watch = StandbyConfig::new(&owner.url);
    watch.takeover_after = takeover_after;
    cfg.standby = Some(OwnerWatch::new(watch, "bot-1").unwrap());
    let (standby, mut rx) = longconn::spawn(cfg);

    // The owner holds the bot: the standby only watches, and refuses to send.
    assert_eq!(
        next_event(&mut rx).await,
        BotEvent::Standby {
            owner: Owner::Holds
        }
    );
    let before = owner.looks();
    while owner.looks() < before + 10 {
        // Ten looks at 100 ms: twice the takeover time has passed with the owner holding.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ctl.get("/sim/aibot/bot-1").await["subscribes"], 0);
    assert_eq!(
        standby.send_markdown("lisi", "x").await,
        Err(longconn::WsError::NotConnected)
    );

    // The owner stops holding it (503): after takeover_after the standby subscribes.
    owner.set(503);
    let started = std::time::Instant::now();
    match next_event(&mut rx).await {
        BotEvent::Standby {
            owner: Owner::Absent(why),
        } => {
            assert_eq!(why, "HTTP 503: owner says")
        }
        other => panic!("expected the owner absent, got {other:?}"),
    }
    match next_event(&mut rx).await {
        BotEvent::TakingOver { owner_gone } => assert!(owner_gone >= takeover_after),
        other => panic!("expected TakingOver, got {other:?}"),
    }
    assert_eq!(next_event(&mut rx).await, BotEvent::Connected);
    assert!(started.elapsed() >= takeover_after - Duration::from_millis(100));
    assert_eq!(ctl.get("/sim/aibot/bot-1").await["subscribes"], 1);
    standby
        .send_markdown("lisi", "from the standby")
        .await
        .unwrap();

    // The owner comes back: its subscribe kicks the standby, which sees the owner hold the
    // bot and stands by again (no reconnect that would kick the owner).
    let (_back, mut back_rx) = longconn::spawn(bot_config(&h, "s3cret"));
    assert_eq!(next_event(&mut back_rx).await, BotEvent::Connected);
    owner.set(200);
    assert_eq!(next_event(&mut rx).await, BotEvent::Yielded);
    assert_eq!(
        next_event(&mut rx).await,
        BotEvent::Standby {
            owner: Owner::Holds
        }
    );
    assert_eq!(ctl.get("/sim/aibot/bot-1").await["subscribes"], 2);

    // Unreachable from the standby (a LAN split): the standby takes over, kicking the owner,
    // which stops for good as before.
    owner.set(502);
    assert!(matches!(
        next_event(&mut rx).await,
        BotEvent::Standby {
            owner: Owner::Absent(_)
        }
    ));
    assert!(matches!(
        next_event(&mut rx).await,
        BotEvent::TakingOver { .. }
    ));
    assert_eq!(next_event(&mut rx).await, BotEvent::Connected);
    assert_eq!(next_event(&mut back_rx).await, BotEvent::Kicked);

    // Kicked by a connection that is not the owner (a second standby): the owner is never
    // seen holding the bot, so the standby stops for good instead of taking turns with it.
    let (_rival, mut rival_rx) = longconn::spawn(bot_config(&h, "s3cret"));
    assert_eq!(next_event(&mut rival_rx).await, BotEvent::Connected);
    assert_eq!(next_event(&mut rx).await, BotEvent::Kicked);
    ended(&mut rx, "the standby ended").await;
    assert_eq!(ctl.get("/sim/aibot/bot-1").await["subscribes"], 4);
    h.stop().await;
}

async fn serve_callbacks(srv: CallbackServer) -> String {
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, srv.router()).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn app_callbacks_are_verified_decrypted_and_retried_like_wecom() {
    let spec = app_spec();
    let h = sim::start(
        SimConfig {
            apps: vec![spec.clone()],
            callback_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        loopback(),
    )
    .await
    .unwrap();
    let ctl = Ctl::new(&h);
    let (tx, mut rx) = mpsc::channel(1);
    let (rej_tx, mut rej_rx) = mpsc::channel(16);
    let crypt = MsgCrypt::new(&spec.token, &spec.encoding_aes_key, &spec.corpid).unwrap();
    let interval = Duration::from_millis(50);
    let base = serve_callbacks(
        CallbackServer::new(tx)
            .app(spec.agentid, crypt)
            .rejections_every(rej_tx, interval),
    )
    .await;
    let url = format!("{base}/wecom/app/{}", spec.agentid);

    let v = ctl
        .put(
            &format!("/sim/app/{}/callback", spec.agentid),
            json!({"url": url}),
        )
        .await;
    assert_eq!(v["verified"], true, "{v}");
    let v = ctl
        .post(
            &format!("/sim/app/{}/messages", spec.agentid),
            json!({"from": "zhangsan", "text": "你好 ]]> <b>"}),
        )
        .await;
    assert_eq!(v["delivered"], true);
    assert_eq!(v["attempts"].as_array().unwrap().len(), 1);
    match rx.recv().await.unwrap() {
        Inbound::App { agentid, msg } => {
            assert_eq!(agentid, spec.agentid);
            assert_eq!(msg.from, "zhangsan");
            assert_eq!(msg.content.as_deref(), Some("你好 ]]> <b>"));
            assert_eq!(msg.msg_id.as_deref(), v["msgid"].as_str());
            assert!(msg.msg_id_u64().is_some());
        }
        other => panic!("{other:?}"),
    }

    // The box cannot take it (queue full → 503): WeCom retries three more times.
    ctl.post(
        &format!("/sim/app/{}/messages", spec.agentid),
        json!({"from": "a", "text": "fills the queue"}),
    )
    .await;
    let v = ctl
        .post(
            &format!("/sim/app/{}/messages", spec.agentid),
            json!({"from": "b", "text": "refused"}),
        )
        .await;
    assert_eq!(v["delivered"], false);
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4);
    assert!(attempts.iter().all(|a| a["status"] == 503));
    // Refusals are reported per kind and interval, with their count.
    let mut refused = 0;
    while refused < 4 {
        let r = rej_rx.recv().await.unwrap();
        assert_eq!(r.status, 503);
        assert!(r.last_ms >= r.first_ms);
        refused += r.count;
    }
    assert_eq!(refused, 4);

    // A forged callback: bad signature → 403 and reported with −40001.
    let r = reqwest::Client::new()
        .post(format!(
            "{url}?msg_signature=0000&timestamp={}&nonce=1",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        ))
        .body("<xml><Encrypt><![CDATA[AAAA]]></Encrypt></xml>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let rej = rej_rx.recv().await.unwrap();
    assert_eq!((rej.code, rej.status, rej.count), (-40001, 403, 1));
    // A flood of forged POSTs: every one refused, reported as one row with its count.
    let forged = format!(
        "{url}?msg_signature=0000&timestamp={}&nonce=1",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    let http = reqwest::Client::new();
    for _ in 0..200 {
        let r = http
            .post(&forged)
            .body("<xml><Encrypt><![CDATA[AAAA]]></Encrypt></xml>")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    let mut seen = 0;
    let mut reports = 0;
    while seen < 200 {
        let r = rej_rx.recv().await.unwrap();
        assert_eq!(r.status, 403);
        seen += r.count;
        reports += 1;
    }
    assert_eq!(seen, 200);
    assert!(reports < 50, "{reports} reports for 200 refusals");
    // A body over 1 MiB: 413, and counted like the others.
    let r = http
        .post(&forged)
        .body(vec![b'a'; (1 << 20) + 10])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let rej = rej_rx.recv().await.unwrap();
    assert_eq!((rej.status, rej.count), (413, 1));
    // A replayed old callback (timestamp a day ago) is refused too.
    let r = reqwest::Client::new()
        .post(format!(
            "{url}?msg_signature=x&timestamp=1409659813&nonce=1"
        ))
        .body("<xml/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    h.stop().await;
}

#[tokio::test]
async fn aibot_webhook_streams_through_refresh_callbacks_and_response_url_is_single_use() {
    let key = random_encoding_aes_key();
    let h = sim::start(
        SimConfig {
            aibot_webhooks: vec![AiBotWebhookSpec {
                bot_id: "hookbot".into(),
                token: "tk".into(),
                encoding_aes_key: key.clone(),
            }],
            refresh_interval: Duration::from_millis(30),
            ..Default::default()
        },
        loopback(),
    )
    .await
    .unwrap();
    let ctl = Ctl::new(&h);
    let (tx, mut rx) = mpsc::channel(8);
    let crypt = MsgCrypt::new("tk", &key, "").unwrap();
    let base = serve_callbacks(
        CallbackServer::new(tx)
            .aibot("hookbot", crypt)
            .welcome("hookbot", "hi, I am the box"),
    )
    .await;
    let v = ctl
        .put(
            "/sim/aibot/hookbot/callback",
            json!({"url": format!("{base}/wecom/aibot/hookbot")}),
        )
        .await;
    assert_eq!(v["verified"], true, "{v}");

    let pushed = ctl
        .post(
            "/sim/aibot/hookbot/messages",
            json!({"chattype": "group", "chatid": "g9", "userid": "u1", "text": "@bot go"}),
        )
        .await;
    let req_id = pushed["req_id"].as_str().unwrap().to_string();
    let Inbound::AiBot {
        msg,
        reply: AiBotReply::Webhook {
            stream,
            response_url,
        },
        ..
    } = rx.recv().await.unwrap()
    else {
        panic!("expected a webhook AI-bot message")
    };
    assert_eq!(msg.text().as_deref(), Some("@bot go"));
    stream.set("partial", false);
    until("a refresh answered with the partial answer", || async {
        let r = ctl
            .get(&format!("/sim/aibot/hookbot/replies?req_id={req_id}"))
            .await;
        r["frames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["body"]["stream"]["content"] == "partial")
            .then_some(())
    })
    .await;
    stream.set("partial, then whole", true);
    let frames = until("the finished stream", || async {
        let r = ctl
            .get(&format!("/sim/aibot/hookbot/replies?req_id={req_id}"))
            .await;
        let frames = r["frames"].as_array().unwrap().clone();
        (frames.last()?["body"]["stream"]["finish"] == true).then_some(frames)
    })
    .await;
    assert!(frames
        .iter()
        .all(|f| f["body"]["stream"]["id"] == stream.id()));
    assert_eq!(
        frames.last().unwrap()["body"]["stream"]["content"],
        "partial, then whole"
    );

    // response_url: one call.
    let url = response_url.expect("message callbacks carry a response_url");
    let api = Api::new(&h.base_url()).unwrap();
    url.send_markdown(&api, "later answer").await.unwrap();
    assert!(url.send_markdown(&api, "again").await.is_err());
    let out = ctl.get("/sim/outbox").await;
    assert_eq!(
        out["messages"][0]["body"]["markdown"]["content"],
        "later answer"
    );

    // enter_chat gets the welcome text as the passive reply.
    let ev = ctl
        .post(
            "/sim/aibot/hookbot/events",
            json!({"eventtype": "enter_chat", "userid": "u2"}),
        )
        .await;
    let r = ctl
        .get(&format!(
            "/sim/aibot/hookbot/replies?req_id={}",
            ev["req_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        r["frames"][0]["body"],
        json!({"msgtype": "text", "text": {"content": "hi, I am the box"}})
    );
    h.stop().await;
}

/// A request as the box saw it: query string and body.
type Request = (String, Vec<u8>);

#[tokio::test]
async fn a_slow_answer_is_retried_with_the_identical_request() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let spec = app_spec();
    let h = sim::start(
        SimConfig {
            apps: vec![spec.clone()],
            callback_timeout: Duration::from_millis(200),
            ..Default::default()
        },
        loopback(),
    )
    .await
    .unwrap();
    let ctl = Ctl::new(&h);
    // A box that answers the verification at once but sits on its first POST past WeCom's timeout.
    let crypt = MsgCrypt::new(&spec.token, &spec.encoding_aes_key, &spec.corpid).unwrap();
    let seen: Arc<std::sync::Mutex<Vec<Request>>> = Arc::default();
    let posts = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::get({
            let crypt = crypt.clone();
            move |q: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                crypt
                    .verify_url(
                        &q["msg_signature"],
                        &q["timestamp"],
                        &q["nonce"],
                        &q["echostr"],
                    )
                    .unwrap()
            }
        })
        .post({
            let (seen, posts) = (seen.clone(), posts.clone());
            move |uri: axum::http::Uri, body: axum::body::Bytes| async move {
                seen.lock()
                    .unwrap()
                    .push((uri.query().unwrap_or("").to_string(), body.to_vec()));
                if posts.fetch_add(1, Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    assert_eq!(
        ctl.put(
            &format!("/sim/app/{}/callback", spec.agentid),
            json!({"url": url})
        )
        .await["verified"],
        true
    );
    let v = ctl
        .post(
            &format!("/sim/app/{}/messages", spec.agentid),
            json!({"from": "u", "text": "hi"}),
        )
        .await;
    assert_eq!(v["delivered"], true, "{v}");
    let attempts = v["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{v}");
    assert!(
        attempts[0]["status"].is_null() && attempts[0]["error"].is_string(),
        "{v}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1], "WeCom retries the identical request");
    h.stop().await;
}

/// WeCom's outbound quotas (issue 11 item 10): the simulator refuses an AI-bot conversation's
/// 31st message in a minute with 45009 and drops an app member's excess silently; the box's
/// clients pace themselves so neither happens. Windows shortened to 1 s (6 per window).
#[tokio::test]
async fn outbound_quotas_are_enforced_by_the_simulator_and_kept_by_the_clients() {
    use wecom_edge_wecom::quota::Window;
    let spec = app_spec();
    let h = sim::start(
        SimConfig {
            aibots: vec![AiBotSpec {
                bot_id: "bot-1".into(),
                secret: "s3cret".into(),
            }],
            apps: vec![spec.clone()],
            aibot_per_minute: 6,
            app_per_minute: 6,
            quota_window: Duration::from_secs(1),
            ..Default::default()
        },
        loopback(),
    )
    .await
    .unwrap();
    let ctl = Ctl::new(&h);
    let window = [Window::new(6, Duration::from_secs(1))];

    // Unpaced (a client with a huge quota): the simulator refuses the excess with 45009.
    let (raw, mut raw_rx) = longconn::spawn(LongConnConfig {
        quota: vec![Window::new(1000, Duration::from_secs(1))],
        ..bot_config(&h, "s3cret")
    });
    assert_eq!(next_event(&mut raw_rx).await, BotEvent::Connected);
    let mut refused = 0;
    for i in 0..9 {
        if let Err(e) = raw.send_markdown("g-raw", &format!("m{i}")).await {
            assert_eq!(e.errcode(), Some(45009), "{e}");
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    assert_eq!(ctl.get("/sim/quota").await["refused"], 3);
    raw.shutdown().await;

    // Paced: 14 messages to one group (proactive ones and streams, whose updates do not count)
    // all land, in order, over at least two further windows; nothing refused.
    let (conn, mut rx) = longconn::spawn(LongConnConfig {
        quota: window.to_vec(),
        ..bot_config(&h, "s3cret")
    });
    assert_eq!(next_event(&mut rx).await, BotEvent::Connected);
    let t0 = std::time::Instant::now();
    for i in 0..7 {
        ctl.post(
            "/sim/aibot/bot-1/messages",
            json!({"chattype": "group", "chatid": "g1", "userid": format!("u{i}"), "text": "@bot hi"}),
        )
        .await;
        let BotEvent::Message { req_id, msg } = next_event(&mut rx).await else {
            panic!("expected a message");
        };
        let mut s = conn.stream(&req_id, msg.conversation());
        s.update("…").await.unwrap();
        s.update("… …").await.unwrap();
        s.finish(&format!("answer {i}")).await.unwrap();
        conn.send_markdown("g1", &format!("note {i}"))
            .await
            .unwrap();
    }
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(ctl.get("/sim/quota").await["refused"], 3);
    let notes: Vec<String> = ctl.get("/sim/outbox").await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["body"]["chatid"] == "g1")
        .map(|m| {
            m["body"]["markdown"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        notes,
        (0..7).map(|i| format!("note {i}")).collect::<Vec<_>>()
    );

    // Apps: WeCom drops a member's excess silently, so an unpaced client loses messages
    // without an error; a paced one loses none.
    let api = Api::new(&h.base_url()).unwrap();
    let token = Arc::new(AccessToken::new(
        api.clone(),
        &spec.corpid,
        &spec.secret,
        FAST,
    ));
    let unpaced = AppClient::new(api.clone(), spec.agentid, token.clone(), FAST)
        .with_quota(&[Window::new(1000, Duration::from_secs(1))]);
    for i in 0..8 {
        unpaced
            .send("zhangsan", AppMsgType::Text, &format!("a{i}"))
            .await
            .unwrap();
    }
    assert_eq!(ctl.get("/sim/quota").await["dropped"], 2);
    let paced = AppClient::new(api, spec.agentid, token, FAST).with_quota(&window);
    for i in 0..8 {
        paced
            .send("lisi", AppMsgType::Text, &format!("b{i}"))
            .await
            .unwrap();
    }
    assert_eq!(ctl.get("/sim/quota").await["dropped"], 2);
    let to_lisi = ctl.get("/sim/outbox").await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["body"]["touser"] == "lisi")
        .count();
    assert_eq!(to_lisi, 8);
    conn.shutdown().await;
    h.stop().await;
}
