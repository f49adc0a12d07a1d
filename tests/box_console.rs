//! The console in the running box (issue 15): `console set-password` on the data directory,
//! then `wecom-edge demo --config FILE` with `[console] listen` starts it over HTTPS with a
//! certificate made in the data directory; an admin logs in and the Overview shows the box's
//! model and the certificate's fingerprint; logins are audited. Without a password there is
//! no console at all.

mod common;

use std::time::Duration;

use common::{audit_rows, until, TempDir};

const PASSWORD: &str = "IT 部门的控制台口令 2026";

fn form(password: &str) -> String {
    password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_box_serves_its_console_once_a_password_is_set() {
    let dir = TempDir::new("box-console");
    let data = dir.0.join("data");
    let cfg = dir.0.join("edge.toml");
    std::fs::write(&cfg, "[console]\nlisten = \"127.0.0.1:0\"\n").unwrap();

    // No password: no console.
    let (child, info) =
        common::start_demo(&data, &["--config", cfg.to_str().unwrap()], |_| {}).await;
    assert!(info["console"].is_null(), "{info}");
    drop(child);

    common::set_console_password(&data, PASSWORD);

    let (_box, info) =
        common::start_demo(&data, &["--config", cfg.to_str().unwrap()], |_| {}).await;
    let base = info["console"]
        .as_str()
        .expect("the console's URL")
        .to_string();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let pem = std::fs::read(data.join("console-cert.pem")).unwrap();
    let cert = reqwest::Certificate::from_pem(&pem).unwrap();
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |pw: &str| {
        http.post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("password={}", form(pw)))
            .send()
    };
    assert_eq!(login("wrong password!").await.unwrap().status(), 401);
    let r = login(PASSWORD).await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = http
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("SmolLM2-135M-Instruct.Q4_1.gguf"), "{page}");
    let fingerprint = wecom_edge_actors::console::tls::pem_fingerprint(&pem).unwrap();
    assert!(page.contains(&fingerprint), "{page}");

    let rows = until(
        "the console's audit rows",
        Duration::from_secs(10),
        || async {
            let rows = audit_rows(&data);
            let kinds: Vec<String> = rows
                .iter()
                .filter(|r| r.kind.starts_with("console_"))
                .map(|r| format!("{} {}", r.kind, r.subject))
                .collect();
            (kinds.len() >= 2).then_some(kinds)
        },
    )
    .await;
    assert_eq!(
        rows,
        ["console_login_failed 127.0.0.1", "console_login 127.0.0.1"]
    );
    assert!(!format!("{:?}", audit_rows(&data)).contains(PASSWORD));
}

/// On the appliance the password comes from the configuration stick as a systemd credential
/// (`$CREDENTIALS_DIRECTORY/wecom-edge-console_console-password.phc`), not the data directory;
/// the login screen's note names the console's port and its certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appliance_credential_turns_the_console_on() {
    let dir = TempDir::new("box-console-cred");
    let data = dir.0.join("data");
    let creds = dir.0.join("creds");
    let cfg = dir.0.join("edge.toml");
    std::fs::write(&cfg, "[console]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let hashed = wecom_edge_actors::console::password::set(&dir.0, PASSWORD).unwrap();
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::rename(
        hashed,
        creds.join(wecom_edge_actors::console::password::CREDENTIAL),
    )
    .unwrap();
    let (_box, info) = common::start_demo(&data, &["--config", cfg.to_str().unwrap()], |c| {
        c.env("CREDENTIALS_DIRECTORY", &creds);
    })
    .await;
    let base = info["console"].as_str().expect("the console's URL");
    let port = base.rsplit(':').next().unwrap();
    let pem = std::fs::read(data.join("console-cert.pem")).unwrap();
    let fingerprint = wecom_edge_actors::console::tls::pem_fingerprint(&pem).unwrap();
    let issue = std::fs::read_to_string(data.join("console.issue")).unwrap();
    assert!(
        issue.starts_with(&format!("Web console: https://127.0.0.1:{port}/\n")),
        "{issue}"
    );
    assert!(issue.contains(&fingerprint), "{issue}");
}
