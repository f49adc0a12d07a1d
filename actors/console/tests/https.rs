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
use wecom_edge_console::backend::*;
use wecom_edge_console::pages::{Overview, Sample};
use wecom_edge_console::server::{self, ConsoleEvent, ConsoleState, CSP};
use wecom_edge_console::{password, tls};

/// A stand-in box: fixed values, documents in memory, an answer streamed in three steps.
#[derive(Default)]
struct Fake {
    docs: Mutex<Vec<Document>>,
}

impl Backend for Fake {
    fn overview(&self) -> Overview {
        Overview {
            ready: true,
            model: "SmolLM2 <img src=x onerror=alert(1)>".into(),
            device: "cpu".into(),
            version: "0.1.0".into(),
            history: vec![
                Sample {
                    tokens_per_s: 0.0,
                    queue: 0,
                },
                Sample {
                    tokens_per_s: 37.5,
                    queue: 2,
                },
            ],
            sample_every: std::time::Duration::from_secs(10),
            ..Overview::default()
        }
    }
    fn bots(&self) -> Vec<Bot> {
        vec![Bot {
            kind: "AI bot (long connection)".into(),
            id: "bot-1".into(),
            state: "connected".into(),
            ok: true,
            reconnects: Some(3),
            messages_today: 7,
            ..Bot::default()
        }]
    }
    fn conversations(&self) -> Result<Conversations, String> {
        Ok(Conversations {
            today: vec![("aibot/bot-1".into(), 7, 2)],
            active: vec!["aibot/bot-1/zhangsan".into()],
            outbox_pending: 0,
        })
    }
    fn audit(&self, q: &AuditQuery) -> Result<AuditPage, String> {
        let row = AuditEntry {
            seq: 1,
            ts_ms: 1_796_632_205_000,
            kind: "reply_sent".into(),
            actor: "session".into(),
            subject: "aibot/bot-1/zhangsan".into(),
            detail: r#"{"note":"<img src=x onerror=alert(1)>"}"#.into(),
        };
        let keep = q.kind.as_deref().is_none_or(|k| k == "reply_sent");
        Ok(AuditPage {
            rows: if keep { vec![row] } else { vec![] },
            kinds: vec!["reply_sent".into()],
        })
    }
    fn verify(&self) -> Result<String, String> {
        Ok("1 row, chain intact".into())
    }
    fn export(&self, _q: &AuditQuery, f: ExportFormat) -> Result<(Vec<u8>, usize), String> {
        Ok(match f {
            ExportFormat::Jsonl => (b"{\"seq\":1}\n".to_vec(), 1),
            ExportFormat::Csv => (b"seq\n1\n".to_vec(), 1),
        })
    }
    fn knowledge(&self) -> Option<Result<Vec<Document>, String>> {
        Some(Ok(self.docs.lock().unwrap().clone()))
    }
    fn knowledge_add(&self, name: &str, bytes: &[u8]) -> Result<String, String> {
        let text = String::from_utf8_lossy(bytes);
        self.docs.lock().unwrap().push(Document {
            doc: name.into(),
            title: text
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("# ")
                .into(),
            chunks: 1,
            bytes: bytes.len() as u64,
            source: "console".into(),
        });
        Ok(format!("added {name}"))
    }
    fn knowledge_remove(&self, name: &str) -> Result<(), String> {
        let mut d = self.docs.lock().unwrap();
        let n = d.len();
        d.retain(|x| x.doc != name);
        (d.len() < n)
            .then_some(())
            .ok_or(format!("no document {name}"))
    }
    fn filter(&self) -> Option<FilterView> {
        Some(FilterView {
            terms: 2,
            regexes: 1,
        })
    }
    fn filter_test(&self, phrase: &str) -> FilterTest {
        FilterTest {
            hits: phrase
                .contains("机密")
                .then(|| ("secret".into(), "mask".into(), "机密".into()))
                .into_iter()
                .collect(),
            masked: phrase.replace("机密", "**"),
        }
    }
    fn models(&self) -> Vec<ModelFile> {
        vec![
            ModelFile {
                name: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
                loaded: true,
                report: "architecture: llama".into(),
                ..ModelFile::default()
            },
            ModelFile {
                name: "qwen2.5-7b-instruct-q4_k_m.gguf".into(),
                switchable: true,
                report: "architecture: qwen2".into(),
                ..ModelFile::default()
            },
        ]
    }
    fn switch_model(&self, name: &str) -> Result<String, String> {
        (name == "qwen2.5-7b-instruct-q4_k_m.gguf")
            .then(|| format!("Switching to {name}."))
            .ok_or(format!("{name} is not a model this box can switch to"))
    }
    fn ask(&self, who: &str, question: &str) -> tokio::sync::mpsc::UnboundedReceiver<TryEvent> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let answer = format!("{who} asked: {question}");
        let half = answer.chars().take(5).collect::<String>();
        tx.send(TryEvent::Text(half)).unwrap();
        tx.send(TryEvent::Final(answer)).unwrap();
        rx
    }
}

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
        Arc::new(Fake::default()),
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

/// Logs in; the session cookie and the page's CSRF token.
async fn logged_in(c: &Console) -> (String, String) {
    let r = c.post("/login", &[("password", PASSWORD)], None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = c.get("/", Some(&cookie)).await.text().await.unwrap();
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|t| t.split('"').next())
        .unwrap()
        .to_string();
    (cookie, csrf)
}

const PAGES: &[&str] = &[
    "/",
    "/bots",
    "/conversations",
    "/audit",
    "/audit/export?format=csv",
    "/knowledge",
    "/filter",
    "/model",
    "/try",
];
const POSTS: &[&str] = &[
    "/audit/verify",
    "/model/switch",
    "/knowledge/remove",
    "/filter/test",
    "/try",
    "/logout",
];

#[tokio::test]
async fn every_page_needs_a_session_and_every_post_its_csrf_token() {
    let c = start().await;
    for path in PAGES {
        let r = c.get(path, None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&r), "/login", "{path}");
    }
    for path in POSTS {
        let r = c.post(path, &[("doc", "x"), ("phrase", "x")], None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{path}");
    }
    let (cookie, csrf) = logged_in(&c).await;
    for path in PAGES {
        let r = c.get(path, Some(&cookie)).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
    }
    let wrong = "f".repeat(64);
    for path in POSTS {
        for token in ["", wrong.as_str()] {
            let form = [
                ("csrf", token),
                ("doc", "x"),
                ("phrase", "x"),
                ("question", "x"),
            ];
            let r = c.post(path, &form, Some(&cookie)).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path} with {token:?}");
        }
    }
    // An upload without the token is refused before anything is stored.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"# x".to_vec()).file_name("x.md"),
    );
    let r = c
        .http
        .post(format!("{}/knowledge/add", c.base))
        .header(header::COOKIE, &cookie)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let forbidden = c
        .events()
        .iter()
        .filter(|e| matches!(e, ConsoleEvent::Forbidden { .. }))
        .count();
    assert_eq!(forbidden, POSTS.len() * 2 + 1);
    // The session is still good after all that.
    let r = c
        .post(
            "/filter/test",
            &[("csrf", &csrf), ("phrase", "ok")],
            Some(&cookie),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_pages_show_the_box_and_act_on_it() {
    let c = start().await;
    let (cookie, csrf) = logged_in(&c).await;
    let text = |path: &'static str| {
        let (c, cookie) = (&c, cookie.clone());
        async move { c.get(path, Some(&cookie)).await.text().await.unwrap() }
    };

    let overview = text("/").await;
    assert!(
        overview.contains(r#"<td id="tokens-per-s">37.5</td>"#),
        "{overview}"
    );
    assert!(overview.contains("<polyline"), "the chart: {overview}");
    let bots = text("/bots").await;
    assert!(
        bots.contains("bot-1") && bots.contains("connected"),
        "{bots}"
    );
    let conv = text("/conversations").await;
    assert!(conv.contains("aibot/bot-1/zhangsan"), "{conv}");

    // Audit: the injected detail as text; a filter; verify; the export as a download.
    let audit = text("/audit").await;
    assert!(
        audit.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{audit}"
    );
    assert!(!audit.contains("<img"));
    let none = text("/audit?kind=console_login").await;
    assert!(none.contains("No rows match."), "{none}");
    let bad = text("/audit?until=yesterday").await;
    assert!(
        bad.contains("until: &quot;yesterday&quot; is not a time"),
        "{bad}"
    );
    let r = c
        .post("/audit/verify", &[("csrf", &csrf)], Some(&cookie))
        .await;
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Intact: 1 row, chain intact"));
    let r = c
        .get(
            "/audit/export?format=csv&kind=&since=&until=",
            Some(&cookie),
        )
        .await;
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        r.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"wecom-edge-audit.csv\""
    );
    assert_eq!(r.text().await.unwrap(), "seq\n1\n");
    let r = c.get("/audit/export?format=xml", Some(&cookie)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Knowledge: upload (the name loses its folders), then remove.
    let title = "报销制度 <img src=x onerror=alert(1)>";
    let form = reqwest::multipart::Form::new()
        .text("csrf", csrf.clone())
        .part(
            "file",
            reqwest::multipart::Part::bytes(format!("# {title}\n正文").into_bytes())
                .file_name("../../报销.md"),
        );
    let r = c
        .http
        .post(format!("{}/knowledge/add", c.base))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, &c.base)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let page = r.text().await.unwrap();
    assert!(page.contains("added 报销.md"), "{page}");
    assert!(
        page.contains("报销制度 &lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    let r = c
        .post(
            "/knowledge/remove",
            &[("csrf", &csrf), ("doc", "报销.md")],
            Some(&cookie),
        )
        .await;
    let page = r.text().await.unwrap();
    assert!(
        page.contains("Removed 报销.md.") && page.contains("No documents yet."),
        "{page}"
    );

    // Filter: the sizes and a phrase tested.
    let r = c
        .post(
            "/filter/test",
            &[("csrf", &csrf), ("phrase", "这是机密文件")],
            Some(&cookie),
        )
        .await;
    let page = r.text().await.unwrap();
    assert!(
        page.contains("2 term(s), 1 regular expression(s)"),
        "{page}"
    );
    assert!(page.contains(r#"<q id="masked">这是**文件</q>"#), "{page}");

    // Model: the imported one can be switched to; a name from elsewhere cannot.
    let model = text("/model").await;
    assert_eq!(
        model.matches(r#"action="/model/switch""#).count(),
        1,
        "{model}"
    );
    let r = c
        .post(
            "/model/switch",
            &[
                ("csrf", &csrf),
                ("model", "qwen2.5-7b-instruct-q4_k_m.gguf"),
            ],
            Some(&cookie),
        )
        .await;
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("Switching to qwen2.5-7b-instruct-q4_k_m.gguf."));
    let r = c
        .post(
            "/model/switch",
            &[("csrf", &csrf), ("model", "../../etc/passwd")],
            Some(&cookie),
        )
        .await;
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("../../etc/passwd is not a model this box can switch to"));

    // Try it: streamed as server-sent events, or the whole page without the script.
    let r = c
        .http
        .post(format!("{}/try", c.base))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, &c.base)
        .header(header::ACCEPT, "text/event-stream")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&question=%E4%BD%A0%E5%A5%BD"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
    let sse = r.text().await.unwrap();
    assert_eq!(
        sse,
        "event: text\ndata: \"127.0\"\n\nevent: final\ndata: \"127.0.0.1 asked: 你好\"\n\n"
    );
    let r = c
        .post(
            "/try",
            &[("csrf", &csrf), ("question", "你好")],
            Some(&cookie),
        )
        .await;
    assert!(r.text().await.unwrap().contains("127.0.0.1 asked: 你好"));
    let js = c.get("/static/try.js", None).await;
    assert_eq!(
        js.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );

    let actions: Vec<&'static str> = c
        .events()
        .iter()
        .filter_map(|e| match e {
            ConsoleEvent::Action {
                action, ok: true, ..
            } => Some(*action),
            _ => None,
        })
        .collect();
    assert_eq!(
        actions,
        [
            "verify",
            "export",
            "knowledge_add",
            "knowledge_remove",
            "model_switch",
            "try",
            "try"
        ]
    );
}
