//! llama.cpp's OpenAI-compatible server on loopback: llama-cpp-python's `llama_cpp.server`
//! in the repository's `.venv` (scripts/fetch-llama-server.sh; not installed by CI), for the
//! test that generates through it and the pipeline bench that compares with it
//! (`benches/pipeline.rs` includes this file by path).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The `.venv` Python under `root` when it can run llama.cpp's server; `None` when the server
/// is not installed (the caller says it skips).
pub fn python(root: &Path) -> Option<PathBuf> {
    let python = root.join(".venv/bin/python");
    std::process::Command::new(&python)
        .args(["-c", "import llama_cpp.server, uvicorn"])
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(python)
}

/// Starts the server on `model` (n_ctx 4096, one thread, quiet) at a free loopback port and
/// waits (at most 120 s) until `GET /v1/models` answers; the child (killed on drop) and the
/// base URL as the `openai` client takes it (`http://127.0.0.1:PORT/v1`).
pub async fn start(python: &Path, model: &Path) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--n_ctx", "4096", "--n_threads", "1", "--verbose", "false"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}/v1");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !http
        .get(format!("{base}/models"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "llama.cpp's server did not start within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base)
}
