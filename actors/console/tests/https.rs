//! The console over real HTTPS on loopback (issue 15 item 2): a client that trusts exactly
//! the console's self-signed certificate; cookies and redirects handled by hand so each step
//! is visible.
//!
//! * Without a session every page goes to /login; security headers on every answer.
//! * Log in: a locked-down session cookie; the Overview shows the model and the fingerprint,
//!   HTML-escaped; logout without the CSRF token is 403, with it the session ends.
//! * A login POST from a foreign Origin is 403.
//! * Five wrong passwords in a minute lock the address: the sixth attempt, with the right
//!   password, is 429 with Retry-After. Every step is a `ConsoleEvent`.
//! * A client outside `allow_from` is disconnected before the TLS handshake.

use std::sync::{Arc, Mutex};

use reqwest::header;
use reqwest::StatusCode;
use wecom_edge_console::allow::AllowFrom;
use wecom_edge_console::pages::Overview;
use wecom_edge_console::server::{self, ConsoleEvent, ConsoleState, CSP};
use wecom_edge_console::{password, tls};

const PASSWORD: &str = "a long console password";

struct Console {
    base: String,
    http: reqwest::Client,
    events: Arc<Mutex<Vec<ConsoleEvent>>>,
    fingerprint: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Console {
    start_allowing(AllowFrom::lan()).await
}

async fn start_allowing(allow: AllowFrom) -> Console {
    let dir = tempfile::tempdir().unwrap();
    password::set(dir.path(), PASSWORD).unwrap();
    let stored = password::load(dir.path()).unwrap().unwrap();
    let (cert, _) = tls::load_or_create(dir.path(), &["localhost".into()]).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let state = ConsoleState::new(
        stored,
        &cert.fingerprint,
        Arc::new(|| Overview {
            ready: true,
            model: "SmolLM2 <img src=x onerror=alert(1)>".into(),
            device: "cpu".into(),
            version: "0.1.0".into(),
            ..Overview::default()
        }),
        Arc::new(move |e| ev.lock().unwrap().push(e)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        tls::server_config(&cert).unwrap(),
        allow,
        server::router(state),
    ));
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_der(cert.cert_der()).unwrap())
        .resolve("localhost", addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Console {
        base: format!("https://localhost:{}", addr.port()),
        http,
        events,
        fingerprint: cert.fingerprint.clone(),
        _dir: dir,
    }
}

impl Console {
    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        r.send().await.unwrap()
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        cookie: Option<&str>,
    ) -> reqwest::Response {
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, &self.base)
            .body(body);
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        r.send().await.unwrap()
    }

    fn events(&self) -> Vec<ConsoleEvent> {
        self.events.lock().unwrap().clone()
    }
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn location(r: &reqwest::Response) -> &str {
    r.headers()[header::LOCATION].to_str().unwrap()
}

#[tokio::test]
async fn login_overview_csrf_and_logout_over_https() {
    let c = start().await;

    // No session: every page goes to the login form; the headers are there on every answer.
    for path in ["/", "/?x=1"] {
        let r = c.get(path, None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&r), "/login");
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP);
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.headers()["x-frame-options"], "DENY");
    }
    let r = c.get("/login", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains(r#"type="password""#));
    for path in [
        "/static/../../etc/passwd",
        "/etc/passwd",
        "/static/console.css.bak",
    ] {
        assert_eq!(
            c.get(path, None).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let css = c.get("/static/console.css", None).await;
    assert_eq!(
        css.headers()[header::CONTENT_TYPE],
        "text/css; charset=utf-8"
    );

    // Log in.
    let r = c.post("/login", &[("password", PASSWORD)], None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/");
    let set = r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();

    // The Overview: the model and the fingerprint, the injected markup shown as text.
    let r = c.get("/", Some(&cookie)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains(&c.fingerprint), "{page}");
    assert!(
        page.contains("SmolLM2 &lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    assert!(!page.contains("<img"));
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(csrf.len(), 64);
    assert_eq!(
        c.get("/login", Some(&cookie)).await.status(),
        StatusCode::SEE_OTHER
    );

    // Logout without the token, or with another: 403; the session lives on.
    assert_eq!(
        c.post("/logout", &[], Some(&cookie)).await.status(),
        StatusCode::FORBIDDEN
    );
    let wrong = "0".repeat(64);
    assert_eq!(
        c.post("/logout", &[("csrf", &wrong)], Some(&cookie))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(c.get("/", Some(&cookie)).await.status(), StatusCode::OK);
    let r = c.post("/logout", &[("csrf", &csrf)], Some(&cookie)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        c.get("/", Some(&cookie)).await.status(),
        StatusCode::SEE_OTHER,
        "ended"
    );

    // A login posted from another site's page.
    let r = c
        .http
        .post(format!("{}/login", c.base))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ORIGIN, "https://evil.example")
        .body(format!("password={}", urlencode(PASSWORD)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let ev = c.events();
    let from = "127.0.0.1".parse().unwrap();
    assert_eq!(ev[0], ConsoleEvent::LoggedIn { from });
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, ConsoleEvent::Forbidden { path, .. } if path == "/logout"))
            .count(),
        2
    );
    assert!(ev.contains(&ConsoleEvent::LoggedOut { from }));
    assert!(matches!(ev.last(), Some(ConsoleEvent::Forbidden { path, .. }) if path == "/login"));
    assert!(
        !format!("{ev:?}").contains(PASSWORD) && !format!("{ev:?}").contains(&csrf),
        "no secret in events"
    );
}

#[tokio::test]
async fn five_wrong_passwords_in_a_minute_lock_the_address() {
    let c = start().await;
    for i in 0..4 {
        let r = c
            .post("/login", &[("password", "not the password")], None)
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {}", i + 1);
        assert!(r.text().await.unwrap().contains("Wrong password."));
    }
    let fifth = c
        .post("/login", &[("password", "still not it")], None)
        .await;
    assert_eq!(fifth.status(), StatusCode::TOO_MANY_REQUESTS);
    // The sixth, with the right password, is refused unchecked.
    let sixth = c.post("/login", &[("password", PASSWORD)], None).await;
    assert_eq!(sixth.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = sixth.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 14 * 60 && retry <= 15 * 60, "{retry}");
    assert!(sixth.headers().get(header::SET_COOKIE).is_none());
    assert!(sixth
        .text()
        .await
        .unwrap()
        .contains("Too many wrong passwords"));

    let from = "127.0.0.1".parse().unwrap();
    let ev = c.events();
    assert_eq!(
        ev[..4],
        (0..4)
            .map(|i| ConsoleEvent::LoginFailed { from, left: 4 - i })
            .collect::<Vec<_>>()[..]
    );
    assert!(matches!(
        ev[4],
        ConsoleEvent::Locked {
            everyone: false,
            ..
        }
    ));
    assert_eq!(ev[5], ConsoleEvent::LockedOut { from });
}

#[tokio::test]
async fn a_client_outside_allow_from_gets_no_answer() {
    let c = start_allowing(AllowFrom::parse(&["10.0.0.0/8"]).unwrap()).await;
    let e = c
        .http
        .get(format!("{}/login", c.base))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect() || e.is_request(), "{e:?}");
    assert!(c.events().is_empty());
}
