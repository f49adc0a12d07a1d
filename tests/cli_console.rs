//! `wecom-edge console set-password` (issue 15 item 2): the password from stdin becomes an
//! Argon2id hash in the data directory, mode 0600; a weak one changes nothing; the password
//! never appears in the output.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use common::TempDir;
use wecom_edge_actors::console::password;

fn set_password(dir: &std::path::Path, stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .args(["console", "set-password", "--data-dir"])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn set_password_stores_only_an_argon2id_hash_and_refuses_a_weak_one() {
    let dir = TempDir::new("cli-console");
    let data = dir.0.join("data");

    let weak = set_password(&data, "hunter2\n");
    assert_eq!(weak.status.code(), Some(2), "{}", text(&weak));
    assert!(text(&weak).contains("at least 12"), "{}", text(&weak));
    assert!(!text(&weak).contains("hunter2"));
    assert!(password::load(&data).unwrap().is_none(), "nothing stored");

    let pw = "总部 IT 的控制台口令 2026";
    let ok = set_password(&data, &format!("{pw}\r\n"));
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(!text(&ok).contains(pw));
    let file = data.join(password::PASSWORD_FILE);
    assert!(text(&ok).contains(&file.display().to_string()));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains("控制台"));
    let loaded = password::load(&data).unwrap().unwrap();
    assert!(
        loaded.verify(pw),
        "the line ending is not part of the password"
    );

    // A weak replacement leaves the stored one as it was.
    assert_eq!(set_password(&data, "\n").status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), stored);
}
