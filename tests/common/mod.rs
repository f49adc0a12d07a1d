//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use wecom_edge_actors::model::{CpuBackend, Engine, DEFAULT_MODEL_FILE};

pub mod llama_server;
pub mod upstream;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under tests/data.
pub fn data(name: &str) -> PathBuf {
    repo().join("tests/data").join(name)
}

/// The default model; panics with the fetch instruction when it is absent.
pub fn model_path() -> PathBuf {
    let p = std::env::var_os("WECOM_EDGE_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models").join(DEFAULT_MODEL_FILE));
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-model.sh first (the README's test command does)",
        p.display()
    );
    p
}

/// The default model loaded once per test binary on the CPU backend.
pub fn engine() -> &'static Engine<CpuBackend> {
    static ENGINE: OnceLock<Engine<CpuBackend>> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::load(model_path(), &Default::default()).expect("load the default model")
    })
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "wecom-edge-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every audit row in `dir`'s database, read-only (the box may be running).
pub fn audit_rows(dir: &std::path::Path) -> Vec<wecom_edge_actors::audit::AuditRow> {
    wecom_edge_actors::audit::AuditStore::open_read_only(dir)
        .unwrap()
        .rows_since(0)
        .unwrap()
}

/// The box's `/metrics` text; `admin` is its base URL (`http://…`).
pub async fn metrics(http: &reqwest::Client, admin: &str) -> String {
    http.get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `f` every 20 ms until it yields `Some`, for at most `limit`.
pub async fn until<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port free right now on loopback (for an address that must be known before a box starts,
/// or stay the same across its restart).
#[allow(dead_code)]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `wecom-edge demo --headless` on `data_dir` (CPU, the default model, loopback ports)
/// with `args` added and `configure` applied to the command (environment, …); returns the child
/// (killed on drop) and the JSON line it prints first (`sim`, `admin`, …).
pub async fn start_demo(
    data_dir: &std::path::Path,
    args: &[&str],
    configure: impl FnOnce(&mut tokio::process::Command),
) -> (tokio::process::Child, serde_json::Value) {
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wecom-edge"));
    cmd.args(["demo", "--headless", "--sim-listen", "127.0.0.1:0"])
        .args([
            "--admin-listen",
            "127.0.0.1:0",
            "--device",
            "cpu",
            "--model",
        ])
        .arg(model_path())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    configure(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the demo prints its addresses")
        .unwrap()
        .expect("a line");
    (child, serde_json::from_str(&first).unwrap())
}

/// Runs `wecom-edge console set-password --data-dir DATA_DIR` with `password` on its stdin.
#[allow(dead_code)]
pub fn set_console_password(data_dir: &std::path::Path, password: &str) {
    use std::io::Write;
    let mut set = std::process::Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .args(["console", "set-password", "--data-dir"])
        .arg(data_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    writeln!(set.stdin.take().unwrap(), "{password}").unwrap();
    assert!(set.wait().unwrap().success(), "console set-password");
}

/// Waits up to `limit` until the simulator says the demo bot's long connection is up.
#[allow(dead_code)]
pub async fn bot_connected(http: &reqwest::Client, sim: &str, limit: Duration) {
    until("the bot's long connection", limit, || async {
        (sim_bot(http, sim).await.ok()?["connected"] == true).then_some(())
    })
    .await;
}

/// The simulator's view of the demo bot: `{"connected","connections","subscribes",…}`.
#[allow(dead_code)]
pub async fn sim_bot(http: &reqwest::Client, sim: &str) -> reqwest::Result<serde_json::Value> {
    http.get(format!("{sim}/sim/aibot/demo-bot"))
        .send()
        .await?
        .json()
        .await
}

/// Sends `text` from `userid` in group `chatid` to the demo bot through the simulator (as an
/// @-message); the callback's req_id, whose frames `wecom_edge::demo::frames` reads.
#[allow(dead_code)]
pub async fn send(
    http: &reqwest::Client,
    sim: &str,
    (chatid, userid): (&str, &str),
    msgid: &str,
    text: &str,
) -> String {
    let r: serde_json::Value = http
        .post(format!("{sim}/sim/aibot/demo-bot/messages"))
        .json(
            &serde_json::json!({"chattype": "group", "chatid": chatid, "userid": userid,
                                  "msgid": msgid, "text": format!("@demo-bot {text}")}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["req_id"].as_str().unwrap().to_string()
}

/// Sends `text` from `userid` in group `chatid` to the demo bot through the simulator (as an
/// @-message) and waits up to `limit` for the final frame of the answer; returns its text and
/// the text of every frame, in order.
#[allow(dead_code)]
pub async fn ask(
    http: &reqwest::Client,
    sim: &str,
    (chatid, userid): (&str, &str),
    msgid: &str,
    text: &str,
    limit: Duration,
) -> (String, Vec<String>) {
    let req_id = send(http, sim, (chatid, userid), msgid, text).await;
    until("the final frame", limit, || async {
        let f = wecom_edge::demo::frames(http, sim, &req_id).await.ok()?;
        match f.last() {
            Some((text, true)) => Some((text.clone(), f.iter().map(|(t, _)| t.clone()).collect())),
            _ => None,
        }
    })
    .await
}

/// Sends `text` from `alice` in group `chatid` to the demo bot through the simulator and waits
/// (up to 60 s) for the final frame of the answer; returns its text.
#[allow(dead_code)]
pub async fn ask_group(
    http: &reqwest::Client,
    sim: &str,
    chatid: &str,
    msgid: &str,
    text: &str,
) -> String {
    ask(
        http,
        sim,
        (chatid, "alice"),
        msgid,
        text,
        Duration::from_secs(60),
    )
    .await
    .0
}

/// The (text, ids) pairs of llama.cpp's tokenizer vectors for vocabulary `name`
/// (tests/data/vocab/{ggml-vocab-NAME,NAME}.gguf.{inp,out}), split as test-tokenizer-0.cpp.
pub fn vocab_vectors(name: &str) -> Vec<(String, Vec<u32>)> {
    let file = |ext: &str| {
        let own = data(&format!("vocab/ggml-vocab-{name}.gguf.{ext}"));
        if own.exists() {
            own
        } else {
            data(&format!("vocab/{name}.gguf.{ext}"))
        }
    };
    let inp = std::fs::read_to_string(file("inp")).unwrap();
    let out = std::fs::read_to_string(file("out")).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(i) => {
                texts.push(inp[pos..pos + i].to_owned());
                pos += i + sep.len();
            }
            None => {
                texts.push(inp[pos..].to_owned());
                break;
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(texts.len(), ids.len(), "{name}: .inp and .out disagree");
    texts.into_iter().zip(ids).collect()
}
