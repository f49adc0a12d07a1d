//! `wecom-edge wecom decrypt|encrypt`: the admin's signature diagnostics, on Tencent's vectors.

use std::process::{Command, Output};

use serde_json::Value;

fn vectors() -> Vec<Value> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/actors/wecom/tests/data/wxbizmsgcrypt-vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn wecom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .arg("wecom")
        .args(args)
        .env_remove("WECOM_TOKEN")
        .env_remove("WECOM_ENCODING_AES_KEY")
        .output()
        .unwrap()
}

fn decrypt_args<'a>(v: &'a Value, token: &'a str, rid: &'a str) -> Vec<&'a str> {
    vec![
        "decrypt",
        "--token",
        token,
        "--encoding-aes-key",
        v["encoding_aes_key"].as_str().unwrap(),
        "--receive-id",
        rid,
        "--msg-signature",
        v["msg_signature"].as_str().unwrap(),
        "--timestamp",
        v["timestamp"].as_str().unwrap(),
        "--nonce",
        v["nonce"].as_str().unwrap(),
    ]
}

#[test]
fn decrypt_prints_exactly_the_message() {
    let vs = vectors();
    let (v4, v5) = (&vs[0], &vs[1]);
    let mut a = decrypt_args(v4, "QDG6eK", "wx5823bf96d3bd56c7");
    a.extend(["--echostr", v4["encrypt"].as_str().unwrap()]);
    let out = wecom(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        v4["expected_plaintext"].as_str().unwrap().as_bytes()
    );

    let dir = std::env::temp_dir().join(format!("wecom-edge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = dir.join("body.xml");
    std::fs::write(&body, v5["post_body"].as_str().unwrap()).unwrap();
    let mut a = decrypt_args(v5, "QDG6eK", "wx5823bf96d3bd56c7");
    a.extend(["--body-file", body.to_str().unwrap()]);
    let out = wecom(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        v5["expected_plaintext"].as_str().unwrap().as_bytes()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn decrypt_failures_exit_2_with_code_and_hint() {
    let v = &vectors()[1];
    let enc = v["encrypt"].as_str().unwrap();
    for (token, rid, code, hint) in [
        ("WRONG", "wx5823bf96d3bd56c7", "-40001", "Token is wrong"),
        ("QDG6eK", "ww_other", "-40005", "wx5823bf96d3bd56c7"),
    ] {
        let mut a = decrypt_args(v, token, rid);
        a.extend(["--encrypt", enc]);
        let out = wecom(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(out.stdout.is_empty());
        assert!(err.contains(code) && err.contains(hint), "{err}");
    }
    let mut a = decrypt_args(v, "QDG6eK", "wx5823bf96d3bd56c7");
    a[4] = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
    a.extend(["--encrypt", enc]);
    let out = wecom(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("EncodingAESKey is wrong"), "{err}");
}

#[test]
fn encrypt_then_decrypt_round_trips() {
    let key = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
    let common = [
        "--token",
        "tok",
        "--encoding-aes-key",
        key,
        "--receive-id",
        "ww1",
    ];
    let mut a = vec![
        "encrypt",
        "--timestamp",
        "1700000000",
        "--nonce",
        "42",
        "--format",
        "json",
    ];
    a.extend(common);
    a.extend(["--message", "你好 <xml>"]);
    let out = wecom(&a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut d = vec![
        "decrypt",
        "--msg-signature",
        reply["msgsignature"].as_str().unwrap(),
    ];
    d.extend(["--timestamp", "1700000000", "--nonce", "42"]);
    d.extend(common);
    d.extend(["--encrypt", reply["encrypt"].as_str().unwrap()]);
    let out = wecom(&d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "你好 <xml>");
}
