//! `wecom-edge config check`: one line per problem and exit 2; a mode warning for a
//! world-readable file with literal secrets.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn problems_exit_2_one_per_line_and_loose_modes_warn() {
    let dir = std::env::temp_dir().join(format!("wecom-edge-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[model]\npath = \"/nonexistent/model.gguf\"\n[limits]\nmax_queued = 0\n[[aibot]]\nbot_id = \"b\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines.iter().any(|l| l.contains("model.path")));
    assert!(lines.iter().any(|l| l.contains("limits.max_queued")));
    assert!(lines.iter().any(|l| l.contains("needs secret")));

    let good = dir.join("good.toml");
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    std::fs::write(
        &good,
        format!(
            "[model]\npath = \"{model}\"\n[[aibot]]\nbot_id = \"b\"\nsecret = \"literal-secret\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("readable by everyone"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("literal-secret") && !err.contains("literal-secret"),
        "secret printed"
    );

    // World-readable is what DynamicUser= needs, and fine when no secret is written in it.
    std::fs::write(
        &good,
        format!(
            "[model]\npath = \"{model}\"\n[[aibot]]\nbot_id = \"b\"\nsecret = \"env:WECOM_EDGE_TEST_SECRET\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .args(["config", "check", "--config"])
        .arg(&good)
        .env("WECOM_EDGE_TEST_SECRET", "s")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("readable by"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
