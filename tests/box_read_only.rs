//! A data partition that cannot be written (issue 11 item 5): a box started on a read-only data
//! directory exits with the reason instead of saying it is ready, and a filesystem that turns
//! read-only under a running box (ext4 `errors=remount-ro` after an I/O error) makes `/readyz`
//! degraded with the reason while every new long-connection message is told plainly that it
//! cannot be taken — and the journal keeps the msgid — until the partition is repaired and the
//! box restarted, after which messages are answered again.
//!
//! Mounting needs root; the second test also needs loop devices, `mkfs.ext4` and `e2fsck`.
//! Without them each test says so and passes.

mod common;

use common::until;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn run(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Unmounts (lazily: a killed box may hold files open a moment longer) on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn readyz(http: &reqwest::Client, admin: &str) -> Option<(u16, String)> {
    let r = http.get(format!("{admin}/readyz")).send().await.ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_started_on_a_read_only_data_dir_does_not_say_ready() {
    let tmp = common::TempDir::new("rostart");
    let mnt = tmp.0.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    if !run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=64m",
            "tmpfs",
            mnt.to_str().unwrap(),
        ],
    ) {
        eprintln!("skipped: mounting a tmpfs needs root (this test runs in CI as root)");
        return;
    }
    let _mounted = Mounted(mnt.clone());
    let data = mnt.join("data");

    // A box that ran once (its trail and key are there), then the partition came back read-only.
    let (mut child, _) = common::start_demo(&data, &[], |_| {}).await;
    child.kill().await.unwrap();
    assert!(run("mount", &["-o", "remount,ro", mnt.to_str().unwrap()]));

    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
            .args(["demo", "--headless", "--sim-listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0", "--device", "cpu"])
            .arg("--model")
            .arg(common::model_path())
            .arg("--data-dir")
            .arg(&data)
            .output(),
    )
    .await
    .expect("the box exits instead of running on a read-only data dir")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.trim().is_empty(),
        "no address line (the demo's ready marker): {stdout}"
    );
    assert!(
        stderr.contains(&*data.to_string_lossy())
            && (stderr.contains("cannot be written")
                || stderr.to_lowercase().contains("read-only file system")),
        "the reason names the directory: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_turning_read_only_is_told_and_survived() {
    let tmp = common::TempDir::new("romid");
    let img = tmp.0.join("data.img");
    let mnt = tmp.0.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let img_s = img.to_str().unwrap();
    let mnt_s = mnt.to_str().unwrap();
    let mount = || run("mount", &["-o", "loop,errors=remount-ro", img_s, mnt_s]);
    let made = run("truncate", &["-s", "128m", img_s]) && run("mkfs.ext4", &["-q", "-F", img_s]);
    if !made || !mount() {
        eprintln!("skipped: needs root, loop devices and mkfs.ext4 (an ext4 image that can be made to fail)");
        return;
    }
    let mounted = Mounted(mnt.clone());
    let data = mnt.join("data");
    let log = tmp.0.join("first.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let (mut child, info) =
        common::start_demo(&data, &["--max-tokens", "16", "--temperature", "0"], |c| {
            c.stderr(log_file);
        })
        .await;
    let sim = info["sim"].as_str().unwrap().to_string();
    let admin = info["admin"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    until("ready", Duration::from_secs(30), || async {
        (readyz(&http, &admin).await?.0 == 200).then_some(())
    })
    .await;
    let answer = common::ask_group(&http, &sim, "g-ro", "m-ro-0", "What is 2+2?").await;
    assert!(!answer.contains("cannot store"), "{answer}");

    // An I/O error as ext4 reports it: the filesystem turns read-only under the box.
    let dev = String::from_utf8(
        Command::new("findmnt")
            .args(["-n", "-o", "SOURCE", mnt_s])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let dev = Path::new(dev.trim()).file_name().unwrap().to_owned();
    std::fs::write(
        Path::new("/sys/fs/ext4").join(dev).join("trigger_fs_error"),
        "box_read_only test",
    )
    .unwrap();
    let body = until("degraded", Duration::from_secs(30), || async {
        let (status, body) = readyz(&http, &admin).await?;
        (status == 503 && body.to_lowercase().contains("read-only")).then_some(body)
    })
    .await;
    assert!(body.starts_with("degraded"), "{body}");
    for msgid in ["m-ro-1", "m-ro-2"] {
        let told = common::ask_group(&http, &sim, "g-ro", msgid, "What is 2+2?").await;
        assert!(told.contains("cannot store messages"), "{told}");
    }
    // Still alive (degraded is not unhealthy): the watchdog keeps petting, the admin port answers.
    let health = http
        .get(format!("{admin}/livez"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(health.as_u16(), 200);
    child.kill().await.unwrap();
    let journal = std::fs::read_to_string(&log).unwrap();
    for msgid in ["m-ro-1", "m-ro-2"] {
        assert!(
            journal
                .lines()
                .any(|l| l.contains(msgid) && l.contains("could not record")),
            "the journal keeps {msgid}"
        );
    }

    // Repaired (fsck) and mounted again: the box starts and answers.
    drop(mounted);
    until("unmounted", Duration::from_secs(10), || async {
        (!String::from_utf8_lossy(&Command::new("findmnt").arg(mnt_s).output().ok()?.stdout)
            .contains(mnt_s))
        .then_some(())
    })
    .await;
    let _ = Command::new("e2fsck")
        .args(["-f", "-y", img_s])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(mount());
    let _mounted = Mounted(mnt.clone());
    let (mut child, info) =
        common::start_demo(&data, &["--max-tokens", "16", "--temperature", "0"], |_| {}).await;
    let sim = info["sim"].as_str().unwrap().to_string();
    let answer = common::ask_group(&http, &sim, "g-ro", "m-ro-3", "What is 2+2?").await;
    assert!(
        !answer.is_empty() && !answer.contains("cannot store"),
        "{answer}"
    );
    child.kill().await.unwrap();
    let rows = common::audit_rows(&data);
    assert!(rows.iter().any(|r| r.subject == "m-ro-3"));
    assert!(!rows.iter().any(|r| r.subject == "m-ro-1"));
}
