//! The watchdog against a real notify socket and a real HTTP listener on loopback.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use wecom_edge_watchdog::alert::{self, AlertLayer};
use wecom_edge_watchdog::{router, run, Health, Metrics, Notifier};

/// The next alert, within 10 s.
async fn next(rx: &mut tokio::sync::mpsc::Receiver<alert::Alert>) -> alert::Alert {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an alert within 10 s")
        .unwrap()
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notify datagram within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A notify socket bound for one test (`tag` keeps the tests' paths apart), read with a 10 s
/// timeout, and a [`Notifier`] sending to it.
fn listener(tag: &str) -> (UnixDatagram, std::path::PathBuf, Notifier) {
    let path = std::env::temp_dir().join(format!(
        "wecom-edge-notify{tag}-{}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let notifier = Notifier::new(path.to_str().unwrap()).unwrap();
    (sock, path, notifier)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pets_the_watchdog_only_while_healthy() {
    let (sock, path, notifier) = listener("");
    let health = Health::new();
    let model = health.beacon("model", Duration::from_millis(200));
    let task = tokio::spawn(run(
        health.clone(),
        Some(notifier),
        Duration::from_millis(20),
        Duration::from_secs(3600),
    ));

    assert_eq!(recv(&sock), "STATUS=starting");
    health.set_ready(true);
    assert_eq!(recv(&sock), "READY=1\nWATCHDOG=1\nSTATUS=healthy");
    assert_eq!(recv(&sock), "WATCHDOG=1");

    // A busy model that stops making progress: no more WATCHDOG=1, and STATUS says why.
    model.set_idle(false);
    let unhealthy = loop {
        let m = recv(&sock);
        if m.contains("STATUS=unhealthy") {
            break m;
        }
    };
    assert!(!unhealthy.contains("WATCHDOG=1"), "{unhealthy}");
    assert!(unhealthy.contains("model: no progress"), "{unhealthy}");
    sock.set_read_timeout(Some(Duration::from_millis(150)))
        .unwrap();
    assert!(
        sock.recv(&mut [0u8; 64]).is_err(),
        "silence while unhealthy"
    );
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    model.beat();
    let back = recv(&sock);
    assert!(
        back.contains("WATCHDOG=1") && back.contains("STATUS=healthy"),
        "{back}"
    );
    task.abort();
    let _ = std::fs::remove_file(&path);
}

/// Liveness is not readiness: a lost long connection, a kicked bot or a full disk make the box
/// degraded (STATUS says why, an alert is logged) while WATCHDOG=1 keeps coming, so systemd
/// never restarts a process that restarting cannot cure (issue 11 item 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_failures_degrade_but_keep_petting() {
    let (sock, path, notifier) = listener("-degraded");
    let health = Health::new();
    let model = health.beacon("model", Duration::from_millis(300));
    let task = tokio::spawn(run(
        health.clone(),
        Some(notifier),
        Duration::from_millis(20),
        Duration::from_secs(3600),
    ));
    assert_eq!(recv(&sock), "STATUS=starting");
    health.set_ready(true);
    assert_eq!(recv(&sock), "READY=1\nWATCHDOG=1\nSTATUS=healthy");

    health.set("aibot/b1", Err("disconnected: connection reset".into()));
    health.set("disk", Err("12 MiB free of 512 MiB".into()));
    // Each change is reported (the first may name only the first check).
    let degraded = loop {
        let m = recv(&sock);
        assert!(!m.contains("STATUS=unhealthy"), "{m}");
        if m.contains("STATUS=degraded") && m.contains("disk: 12 MiB") {
            break m;
        }
    };
    assert!(degraded.contains("WATCHDOG=1"), "{degraded}");
    assert!(degraded.contains("aibot/b1: disconnected"), "{degraded}");
    // Pets keep coming while degraded, for longer than the model's deadline.
    for _ in 0..20 {
        assert_eq!(recv(&sock), "WATCHDOG=1");
    }
    assert_eq!(health.liveness_failures(), Vec::<String>::new());

    // A stuck actor on top: now the pets stop.
    model.set_idle(false);
    let unhealthy = loop {
        let m = recv(&sock);
        if m.contains("STATUS=unhealthy") {
            break m;
        }
    };
    assert!(!unhealthy.contains("WATCHDOG=1"), "{unhealthy}");
    model.set_idle(true);
    health.set("aibot/b1", Ok(()));
    health.set("disk", Ok(()));
    let back = loop {
        let m = recv(&sock);
        if m.contains("STATUS=healthy") {
            break m;
        }
    };
    assert!(back.contains("WATCHDOG=1"), "{back}");
    task.abort();
    let _ = std::fs::remove_file(&path);
}

/// A failure that lasts `alert_after` raises one alert (with the status), its recovery
/// another; a failure that heals sooner is only logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lasting_failure_alerts_and_so_does_its_recovery() {
    use tracing_subscriber::layer::SubscriberExt;
    // The only test here that sets a subscriber or a route.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(AlertLayer))
        .unwrap();
    let mut alerts = alert::route(16);

    // alert_after of an hour: a failure and its healing are logged and notified, not alerted.
    let (sock, path, notifier) = listener("-alerts");
    let health = Health::new();
    let task = tokio::spawn(run(
        health.clone(),
        Some(notifier),
        Duration::from_millis(20),
        Duration::from_secs(3600),
    ));
    health.set_ready(true);
    health.set("aibot/b1", Err("disconnected: connection reset".into()));
    while !recv(&sock).contains("STATUS=degraded") {}
    health.set("aibot/b1", Ok(()));
    while !recv(&sock).contains("STATUS=healthy") {}
    task.abort();
    let _ = std::fs::remove_file(&path);
    assert!(
        alerts.try_recv().is_err(),
        "a short failure is not an alert"
    );

    // alert_after of 300 ms: the kicked bot alerts once, not before 300 ms; healing alerts.
    let health = Health::new();
    let hold = Duration::from_millis(300);
    let task = tokio::spawn(run(health.clone(), None, Duration::from_millis(20), hold));
    health.set_ready(true);
    let t0 = std::time::Instant::now();
    health.set(
        "aibot/b1",
        Err("another connection took this bot over".into()),
    );
    let a = next(&mut alerts).await;
    assert!(t0.elapsed() >= hold, "{:?}", t0.elapsed());
    assert_eq!(
        (a.level.as_str(), a.message.as_str()),
        ("WARN", "the box is not healthy")
    );
    assert_eq!(
        a.key(),
        "the box is not healthy status=degraded: aibot/b1: another connection took this bot over"
    );
    health.set("aibot/b1", Ok(()));
    let b = next(&mut alerts).await;
    assert_eq!(
        (b.level.as_str(), b.message.as_str()),
        ("INFO", "the box is healthy again")
    );
    task.abort();
    assert!(alerts.try_recv().is_err(), "one alert each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_sent_at_once_not_at_the_next_tick() {
    let (sock, path, notifier) = listener("-ready");
    let health = Health::new();
    // An hour between ticks: only the readiness wake-up can deliver READY=1 in time.
    let task = tokio::spawn(run(
        health.clone(),
        Some(notifier),
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    ));
    assert_eq!(recv(&sock), "STATUS=starting");
    health.set_ready(true);
    assert_eq!(recv(&sock), "READY=1\nWATCHDOG=1\nSTATUS=healthy");
    task.abort();
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn readyz_explains_and_metrics_are_exposed() {
    let health = Health::new();
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = router(health.clone(), metrics.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();

    assert_eq!(
        http.get(format!("{base}/livez"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    health.set("wecom/aibot/demo-bot", Err("not connected".into()));
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("starting") && body.contains("wecom/aibot/demo-bot: not connected"),
        "{body}"
    );
    health.set_ready(true);
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.starts_with("degraded"), "{body}");
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines().any(|l| l
            == r#"wecom_edge_health_check_failing{check="wecom/aibot/demo-bot",kind="readiness"} 1"#),
        "{text}"
    );
    // One check by name (a standby asks its owner this): its own state, nothing else's.
    health.set("disk", Err("12 MiB free".into()));
    let one = |name: &'static str| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .get(format!("{base}/readyz/{name}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        one("wecom/aibot/demo-bot").await,
        (503, "wecom/aibot/demo-bot: not connected\n".into())
    );
    assert_eq!(one("wecom/aibot/other").await.0, 404);
    health.set("wecom/aibot/demo-bot", Ok(()));
    assert_eq!(one("wecom/aibot/demo-bot").await, (200, "ok\n".into()));
    health.remove("disk");
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    metrics.messages_received.inc();
    metrics.time_to_first_token_seconds.observe(0.3);
    metrics.queue_depth.set(3);
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "wecom_edge_messages_received_total 1",
        "wecom_edge_queue_depth 3",
        "wecom_edge_time_to_first_token_seconds_count 1",
        "wecom_edge_websocket_reconnects_total 0",
        "wecom_edge_sqlite_write_errors_total 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
