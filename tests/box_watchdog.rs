//! The unit's watchdog rules, emulated: `wecom-edge demo --headless` runs under a
//! `NOTIFY_SOCKET` listener with `WATCHDOG_USEC` set, as systemd runs it (`WatchdogSec=`).
//! Another connection then takes the demo bot over (WeCom's `disconnected_event`): the box must
//! say so — `/readyz` 503 "degraded" with the reason, `STATUS=degraded: …`, the
//! `health_check_failing` gauge — keep petting the watchdog (restarting cannot cure a kicked
//! bot; under systemd it would only kick the other box back), and stay down without a
//! reconnect fight (issue 11 item 3).

mod common;

use common::until;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use wecom_edge::demo::{DEMO_BOT_ID, DEMO_BOT_SECRET};
use wecom_edge_actors::wecom::longconn::{self, BotEvent, LongConnConfig};

/// The next notify datagram within `limit`, or `None`.
fn recv(sock: &UnixDatagram, limit: Duration) -> Option<String> {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_bot_degrades_the_box_but_never_stops_the_watchdog() {
    let tmp = common::TempDir::new("watchdog");
    let sock_path = tmp.0.join("notify.sock");
    std::fs::create_dir_all(&tmp.0).unwrap();
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    // WatchdogSec=2 → the box pets every second.
    let watchdog_usec = 2_000_000u64;
    let (mut child, info) = common::start_demo(&tmp.0.join("data"), &[], |cmd| {
        cmd.env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", watchdog_usec.to_string())
            .env_remove("WATCHDOG_PID");
    })
    .await;
    let sim = info["sim"].as_str().unwrap().to_string();
    let admin = info["admin"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();

    // READY=1, then healthy once the bot is connected.
    let sock = std::sync::Arc::new(sock);
    let s = sock.clone();
    tokio::task::spawn_blocking(move || loop {
        let m = recv(&s, Duration::from_secs(60)).expect("READY=1 within a minute");
        if m.contains("READY=1") {
            break;
        }
    })
    .await
    .unwrap();
    until("the bot connected", Duration::from_secs(30), || async {
        let r = http.get(format!("{admin}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    // Another connection subscribes as the same bot: WeCom kicks the box's.
    let mut other = LongConnConfig::new(DEMO_BOT_ID, DEMO_BOT_SECRET);
    other.url = sim.replacen("http://", "ws://", 1);
    let (_other, mut other_events) = longconn::spawn(other);
    loop {
        match other_events
            .recv()
            .await
            .expect("the other connection's events")
        {
            BotEvent::Connected => break,
            BotEvent::AuthFailed { errcode, errmsg } => panic!("{errcode} {errmsg}"),
            _ => {}
        }
    }
    let body = until("readyz degraded", Duration::from_secs(30), || async {
        let r = http.get(format!("{admin}/readyz")).send().await.ok()?;
        let status = r.status();
        let body = r.text().await.ok()?;
        (status == 503 && body.contains("another connection took this bot over")).then_some(body)
    })
    .await;
    assert!(body.starts_with("degraded"), "{body}");

    // For five watchdog periods: WATCHDOG=1 at least every period, STATUS says degraded.
    let s = sock.clone();
    let (pets, statuses) = tokio::task::spawn_blocking(move || {
        let period = Duration::from_micros(watchdog_usec);
        let start = Instant::now();
        let (mut pets, mut statuses, mut last_pet) = (0, Vec::new(), Instant::now());
        while start.elapsed() < 5 * period {
            let m = recv(&s, period).expect("a notify message within every watchdog period");
            if m.contains("WATCHDOG=1") {
                assert!(
                    last_pet.elapsed() <= period,
                    "pets more than a period apart"
                );
                last_pet = Instant::now();
                pets += 1;
            }
            statuses.extend(
                m.lines()
                    .filter(|l| l.starts_with("STATUS="))
                    .map(String::from),
            );
        }
        (pets, statuses)
    })
    .await
    .unwrap();
    assert!(pets >= 5, "{pets} pets in five periods");
    assert!(
        statuses.iter().all(|s| !s.starts_with("STATUS=unhealthy")),
        "{statuses:?}"
    );
    let metrics = common::metrics(&http, &admin).await;
    assert!(
        metrics.lines().any(|l| l
            == format!(
                r#"wecom_edge_health_check_failing{{check="aibot/{DEMO_BOT_ID}",kind="readiness"}} 1"#
            )),
        "{metrics}"
    );
    // No reconnect fight: the other connection is still the bot's, the box still running.
    while let Ok(ev) = other_events.try_recv() {
        assert!(!matches!(ev, BotEvent::Kicked), "the box took the bot back");
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the box is still running"
    );
    child.kill().await.unwrap();
}
