//! The console in a real browser (issue 15 item 3): Debian's chromium, headless, driven over
//! WebDriver by chromedriver (both installed by scripts/setup-debian.sh), against a real box
//! (`wecom-edge demo` with the real model, SQLite, the simulator) serving its console over
//! HTTPS with its self-signed certificate.
//!
//! The admin logs in, sees the Overview with the model's name, the Bots page with the demo
//! bot connected, the Conversations page with a WeCom message counted, asks a question in
//! Try it and watches the answer stream in, runs verify on the Audit page and exports CSV,
//! uploads a document whose title carries `<img src=x onerror=…>` (shown as text: no image
//! element, no script ran), tests a phrase against the filter, opens the Model page, and
//! logs out; then every page sends the browser to the login form, a POST without the CSRF
//! token is 403, and the 6th wrong password within a minute finds the address locked.
//!
//! Each page's screenshot is written to `target/console-screenshots/`; with
//! `UPDATE_SCREENSHOTS=1` also to `actors/console/screenshots/` (README shows those).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{audit_rows, repo, until, TempDir};
use fantoccini::{Client, Locator};
use serde_json::json;

const PASSWORD: &str = "控制台 password for the browser test";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free loopback port, killed on drop.
struct Driver(std::process::Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn driver() -> Driver {
    assert!(
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
        "{CHROMEDRIVER} and {CHROMIUM} are needed: scripts/setup-debian.sh installs \
         Debian's chromium and chromium-driver"
    );
    let port = common::free_port();
    let child = std::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let d = Driver(child, port);
    until(
        "chromedriver listening",
        Duration::from_secs(30),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    d
}

async fn browser(d: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1100,860", "--lang=en-US",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    // The console's certificate is self-signed (its fingerprint is what an admin checks).
    caps.insert("acceptInsecureCerts".into(), json!(true));
    // chromedriver is plain HTTP on loopback; the client still wants a TLS provider chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    fantoccini::ClientBuilder::rustls()
        .expect("TLS for the WebDriver client")
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.1))
        .await
        .expect("a chromium session")
}

struct Page<'a> {
    c: &'a Client,
    base: String,
}

impl Page<'_> {
    async fn go(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_string()
    }

    /// The element's visible text, runs of white space as one space.
    async fn text(&self, css: &str) -> String {
        let t = self
            .c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap();
        t.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.c.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Clicks `css` (a link or a form's button) and waits until the next page has loaded.
    async fn submit(&self, css: &str) {
        self.c
            .execute("window.__before_submit = true;", vec![])
            .await
            .unwrap();
        self.click(css).await;
        until("the next page", Duration::from_secs(30), || async {
            let v = self
                .c
                .execute(
                    "return !window.__before_submit && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .ok()?;
            (v == true).then_some(())
        })
        .await;
    }

    async fn body(&self) -> String {
        self.text("body").await
    }

    /// Runs `script` (an async function body whose result is `return`ed) in the page.
    async fn run(&self, script: &str) -> serde_json::Value {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1]; (async () => {{ {script} }})().then(done, e => done('error: ' + e));"
        );
        self.c.execute_async(&wrapped, vec![]).await.unwrap()
    }

    async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        let out = repo().join("target/console-screenshots");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join(format!("{name}.png")), &png).unwrap();
        if std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
            let kept = repo().join("actors/console/screenshots");
            std::fs::create_dir_all(&kept).unwrap();
            std::fs::write(kept.join(format!("{name}.png")), &png).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_uses_the_console_in_chromium() {
    let dir = TempDir::new("browser-console");
    let data = dir.0.join("data");
    let cfg = dir.0.join("edge.toml");
    std::fs::create_dir_all(dir.0.join("filter")).unwrap();
    std::fs::write(dir.0.join("filter/mask.txt"), "机密\n内部资料\n").unwrap();
    std::fs::write(
        &cfg,
        "[console]\nlisten = \"127.0.0.1:0\"\n\n[filter]\nmask = [\"filter/mask.txt\"]\n",
    )
    .unwrap();
    common::set_console_password(&data, PASSWORD);
    let (_box, info) =
        common::start_demo(&data, &["--config", cfg.to_str().unwrap()], |_| {}).await;
    let console = info["console"]
        .as_str()
        .expect("the console's URL")
        .to_string();
    let sim = info["sim"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    common::bot_connected(&http, &sim, Duration::from_secs(30)).await;
    // One WeCom message, for the Conversations page to count.
    common::ask(
        &http,
        &sim,
        ("wr-group-1", "zhangsan"),
        "browser-msg-1",
        "Hello!",
        Duration::from_secs(120),
    )
    .await;

    let d = driver().await;
    let c = browser(&d, &dir.0.join("chromium")).await;
    let p = Page {
        c: &c,
        base: console.clone(),
    };

    // No session: to the login form.
    p.go("/").await;
    assert_eq!(p.path().await, "/login");
    p.shot("login").await;
    p.fill("#password", PASSWORD).await;
    p.submit("#login").await;
    assert_eq!(p.path().await, "/", "{}", p.body().await);
    assert_eq!(p.text("#model").await, "SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(p.text("#state").await, "READY");
    let fingerprint = wecom_edge_actors::console::tls::pem_fingerprint(
        &std::fs::read(data.join("console-cert.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(p.text("#fingerprint").await, fingerprint);

    p.submit("nav a[href='/bots']").await;
    let bots = p.text("#bots").await;
    assert!(
        bots.contains("demo-bot") && bots.contains("connected"),
        "{bots}"
    );
    p.shot("bots").await;

    p.go("/conversations").await;
    let today = p.text("#today").await;
    assert!(today.contains("aibot/demo-bot 1 1"), "{today}");
    let body = p.body().await;
    assert!(!body.contains("Hello!"), "no message text: {body}");
    p.shot("conversations").await;

    // Try it: the answer streams in (several different texts seen before the final one).
    p.go("/try").await;
    p.fill("#question", "Hello! Who are you?").await;
    p.click("#send").await;
    let seen = std::sync::Mutex::new(Vec::<String>::new());
    let last = until("the streamed answer", Duration::from_secs(120), || async {
        let a = p.c.find(Locator::Css("#answer")).await.ok()?;
        let text = a.text().await.ok()?;
        let class = a.attr("class").await.ok()??;
        {
            let mut seen = seen.lock().unwrap();
            if seen.last() != Some(&text) {
                seen.push(text.clone());
            }
        }
        (class == "final").then_some(text)
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(!last.trim().is_empty() && last != "…", "{last:?}");
    assert!(
        seen.iter().filter(|t| !t.is_empty() && *t != "…").count() >= 2,
        "streamed in steps: {seen:?}"
    );
    p.shot("try-it").await;

    // Audit: verify, a kind filter, the CSV export.
    p.go("/audit").await;
    p.submit("#verify").await;
    let verified = p.text("#verified").await;
    assert!(verified.starts_with("Intact"), "{verified}");
    p.shot("audit").await;
    p.go("/audit?kind=console_*").await;
    let rows = p.text("#rows").await;
    assert!(
        rows.contains("console_verify") && rows.contains("console_try"),
        "{rows}"
    );
    assert!(!rows.contains("reply_sent"), "{rows}");
    let csv = p
        .run("const r = await fetch('/audit/export?format=csv'); return [r.status, r.headers.get('content-disposition'), await r.text()];")
        .await;
    assert_eq!(csv[0], 200, "{csv}");
    assert_eq!(csv[1], "attachment; filename=\"wecom-edge-audit.csv\"");
    assert!(csv[2]
        .as_str()
        .unwrap()
        .starts_with("seq,ts_ms,kind,actor,subject,detail,prev_hash,hash\n"));

    // Knowledge: a document whose title is markup is shown as text.
    let doc = dir.0.join("报销制度.md");
    std::fs::write(
        &doc,
        "# 报销 <img src=x onerror=\"document.title='owned'\">\n\n差旅费报销须在出差结束后 30 天内提交。\n",
    )
    .unwrap();
    p.go("/knowledge").await;
    p.c.find(Locator::Css("#file"))
        .await
        .unwrap()
        .send_keys(doc.to_str().unwrap())
        .await
        .unwrap();
    p.submit("#add").await;
    let outcome = p.text("#outcome").await;
    assert!(outcome.starts_with("Added 报销制度.md"), "{outcome}");
    let title = p.text("#documents td.title").await;
    assert_eq!(title, "报销 <img src=x onerror=\"document.title='owned'\">");
    let images =
        p.c.execute("return document.images.length", vec![])
            .await
            .unwrap();
    assert_eq!(images, 0, "the title is text, not an element");
    assert_ne!(p.c.title().await.unwrap(), "owned");
    p.shot("knowledge").await;

    // Filter: the sizes and a phrase tested.
    p.go("/filter").await;
    assert_eq!(
        p.text("#sizes").await,
        "In force: 2 term(s), 0 regular expression(s)."
    );
    p.fill("#phrase", "这份机密文件").await;
    p.submit("#test button").await;
    assert_eq!(p.text("#masked").await, "这份＊＊文件");
    p.shot("filter").await;

    p.go("/model").await;
    let report = p.text("pre.report").await;
    assert!(report.contains("llama"), "{report}");
    p.shot("model").await;

    // The Overview again, once its chart has a line (a sample every 10 s): the answer above
    // is in it.
    until("three load samples", Duration::from_secs(60), || async {
        p.go("/").await;
        let points = p
            .c
            .execute(
                "const l = document.querySelector('figure.chart svg polyline'); return l ? l.getAttribute('points').split(' ') : [];",
                vec![],
            )
            .await
            .ok()?;
        let points = points.as_array()?.len();
        (points >= 3).then_some(())
    })
    .await;
    assert_eq!(p.text("#device").await, "cpu");
    let max: f64 =
        p.c.execute(
            "return document.querySelector('figure.chart svg text').textContent",
            vec![],
        )
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        max > 1.0,
        "the answer's tokens/s is in the chart (its top: {max})"
    );
    p.shot("overview").await;

    // A POST without the CSRF token, from the page itself: 403.
    let status = p
        .run("const r = await fetch('/audit/verify', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'}, body: 'csrf='}); return r.status;")
        .await;
    assert_eq!(status, 403);

    // Log out: every page goes back to the login form.
    p.submit("#logout").await;
    assert_eq!(p.path().await, "/login");
    for path in ["/", "/audit", "/knowledge", "/try", "/model"] {
        p.go(path).await;
        assert_eq!(p.path().await, "/login", "{path}");
    }

    // Wrong passwords: the 6th in a minute finds the address locked.
    for i in 1..=6 {
        p.fill("#password", &format!("wrong password {i}")).await;
        p.submit("#login").await;
        let error = p.text("#error").await;
        if i < 5 {
            assert_eq!(error, "Wrong password.", "attempt {i}");
        } else {
            assert!(
                error.starts_with("Too many wrong passwords"),
                "attempt {i}: {error}"
            );
        }
    }
    p.shot("locked").await;
    c.close().await.unwrap();

    let kinds: Vec<String> = audit_rows(&data)
        .into_iter()
        .filter(|r| r.kind.starts_with("console_"))
        .map(|r| r.kind)
        .collect();
    for k in [
        "console_login",
        "console_try",
        "console_verify",
        "console_export",
        "console_knowledge_add",
        "console_forbidden",
        "console_logout",
        "console_login_failed",
        "console_locked",
        "console_locked_out",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    assert!(!format!("{:?}", audit_rows(&data)).contains(PASSWORD));
}
