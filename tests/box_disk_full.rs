//! A nearly full data partition (a small tmpfs, so this runs only as root; otherwise it says so
//! and passes): the box turns degraded with the free space in `/readyz`, a long-connection
//! message is told plainly that it cannot be taken (WeCom never redelivers those), and once
//! space is back the next message is answered and the refused one is in the audit trail as
//! `inbound_unrecorded` (issue 11 item 5).

mod common;

use common::until;

use std::process::Stdio;
use std::time::Duration;

use wecom_edge_actors::audit::AuditStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_told_not_swallowed() {
    let tmp = common::TempDir::new("diskfull");
    let mnt = tmp.0.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=100m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a tmpfs needs root (the disk-full test runs in CI as root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            // Lazy: the killed box may still hold files open for a moment.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let data = mnt.join("data");
    let (mut child, info) =
        common::start_demo(&data, &["--max-tokens", "16", "--temperature", "0"], |_| {}).await;
    let sim = info["sim"].as_str().unwrap().to_string();
    let admin = info["admin"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let readyz = || async {
        let r = http.get(format!("{admin}/readyz")).send().await.ok()?;
        Some((r.status().as_u16(), r.text().await.ok()?))
    };
    until("ready", Duration::from_secs(30), || async {
        (readyz().await?.0 == 200).then_some(())
    })
    .await;

    // Fill the partition to 8 MiB free: below the refusal threshold.
    let (free, _) = wecom_edge::disk::free_space(&mnt).unwrap();
    let fill = mnt.join("fill");
    std::fs::write(&fill, vec![0u8; (free - (8 << 20)) as usize]).unwrap();
    let body = until("the disk check", Duration::from_secs(30), || async {
        let (status, body) = readyz().await?;
        (status == 503 && body.contains("disk:")).then_some(body)
    })
    .await;
    assert!(
        body.starts_with("degraded") && body.contains("refused"),
        "{body}"
    );
    let told = common::ask_group(&http, &sim, "g-disk", "m-full-1", "What is 2+2?").await;
    assert!(told.contains("cannot store messages"), "{told}");

    // Space is back: the next message is answered, the refused one is in the trail.
    std::fs::remove_file(&fill).unwrap();
    until("the disk check clears", Duration::from_secs(30), || async {
        (readyz().await?.0 == 200).then_some(())
    })
    .await;
    let answer = common::ask_group(&http, &sim, "g-disk", "m-full-2", "What is 2+2?").await;
    assert!(
        !answer.is_empty() && !answer.contains("cannot store"),
        "{answer}"
    );
    until(
        "the refused message audited",
        Duration::from_secs(10),
        || async {
            let store = AuditStore::open_read_only(&data).ok()?;
            store
                .tail(200)
                .ok()?
                .iter()
                .any(|r| r.kind == "inbound_unrecorded" && r.subject == "m-full-1")
                .then_some(())
        },
    )
    .await;
    child.kill().await.unwrap();
}
