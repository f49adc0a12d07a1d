//! systemd/wecom-edge-config-import as the appliance runs it when a WECOM-CFG stick appears,
//! here with a directory standing in for the mounted stick: a GGUF under the stick's `models/`
//! is copied, checked with `wecom-edge model check` (the real binary, real synthetic models),
//! switched to as `models/active.gguf` with the one it replaces kept as `previous.gguf`, and
//! `models/rollback` switches back. A rejected model changes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{data, repo, TempDir};

/// One box: its configuration directory and a log of the systemctl calls the script makes.
struct Box_ {
    dir: TempDir,
}

struct Run {
    ok: bool,
    out: String,
    systemctl: Vec<String>,
}

impl Box_ {
    fn new(edge_toml: &str) -> Self {
        let dir = TempDir::new("cfg-import");
        std::fs::create_dir_all(dir.0.join("etc/credentials")).unwrap();
        std::fs::write(dir.0.join("etc/edge.toml"), edge_toml).unwrap();
        // Stands in for systemctl: records its arguments.
        let stub = dir.0.join("systemctl");
        std::fs::write(
            &stub,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\n",
                dir.0.join("systemctl.log").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
        Box_ { dir }
    }

    fn etc(&self) -> PathBuf {
        self.dir.0.join("etc")
    }

    fn models(&self) -> PathBuf {
        self.etc().join("models")
    }

    /// Runs the import of `stick`.
    fn import(&self, stick: &Path) -> Run {
        let log = self.dir.0.join("systemctl.log");
        let _ = std::fs::remove_file(&log);
        let out = Command::new("sh")
            .arg(repo().join("systemd/wecom-edge-config-import"))
            .arg(stick)
            .env("WECOM_EDGE_CONFIG_DIR", self.etc())
            .env("WECOM_EDGE_BIN", env!("CARGO_BIN_EXE_wecom-edge"))
            .env("WECOM_EDGE_SYSTEMCTL", self.dir.0.join("systemctl"))
            .output()
            .unwrap();
        Run {
            ok: out.status.success(),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            systemctl: std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect(),
        }
    }

    fn link(&self, name: &str) -> Option<String> {
        std::fs::read_link(self.models().join(name))
            .ok()
            .map(|p| p.display().to_string())
    }

    /// The model files (not links) in models/, sorted; a leftover `.partial` shows too.
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.models())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| !e.file_type().unwrap().is_symlink())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A stick directory holding `models` (name, source file) and, when given, an edge.toml.
fn stick(tag: &str, models: &[(&str, &Path)], edge_toml: Option<&str>) -> TempDir {
    let s = TempDir::new(tag);
    std::fs::create_dir_all(s.0.join("models")).unwrap();
    for (name, src) in models {
        std::fs::copy(src, s.0.join("models").join(name)).unwrap();
    }
    if let Some(t) = edge_toml {
        std::fs::write(s.0.join("edge.toml"), t).unwrap();
    }
    s
}

const EDGE_TOML: &str =
    "[model]\nthreads = 1\nmax_tokens = 16\n\n[[aibot]]\nbot_id = \"b\"\nsecret = \"s\"\n";

#[test]
fn a_model_on_the_stick_is_checked_switched_to_and_rolled_back() {
    let b = Box_::new(EDGE_TOML);
    let qwen2 = data("synthetic/qwen2-q4_k_m.gguf");
    let llama3 = data("synthetic/llama3-q4_k_m.gguf");

    // 1. A first model: copied, checked, active, the service restarted.
    let s1 = stick("stick1", &[("Qwen2 Test.GGUF", &qwen2)], None);
    let r = b.import(&s1.0);
    assert!(r.ok, "{}", r.out);
    assert!(r.out.contains("model check: OK"), "{}", r.out);
    assert!(
        r.out.contains("imported model qwen2_test.gguf"),
        "{}",
        r.out
    );
    assert!(!r.out.contains("note:"), "{}", r.out);
    assert_eq!(b.link("active.gguf").as_deref(), Some("qwen2_test.gguf"));
    assert_eq!(b.link("previous.gguf"), None);
    assert_eq!(b.files(), ["qwen2_test.gguf"]);
    assert_eq!(
        std::fs::read(b.models().join("active.gguf")).unwrap(),
        std::fs::read(&qwen2).unwrap()
    );
    assert_eq!(r.systemctl, ["--no-block try-restart wecom-edge.service"]);
    // The box's configuration now runs it.
    let check = Command::new(env!("CARGO_BIN_EXE_wecom-edge"))
        .args(["config", "check", "--config"])
        .arg(b.etc().join("edge.toml"))
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(summary.contains("active.gguf (imported)"), "{summary}");

    // 2. The same stick left in: nothing happens.
    let r = b.import(&s1.0);
    assert!(r.ok, "{}", r.out);
    assert!(r.out.contains("already the active one"), "{}", r.out);
    assert!(r.systemctl.is_empty(), "{:?}", r.systemctl);

    // 3. A second model: the first is kept as previous.
    let s2 = stick("stick2", &[("llama3.gguf", &llama3)], None);
    let r = b.import(&s2.0);
    assert!(r.ok, "{}", r.out);
    assert_eq!(b.link("active.gguf").as_deref(), Some("llama3.gguf"));
    assert_eq!(b.link("previous.gguf").as_deref(), Some("qwen2_test.gguf"));
    assert_eq!(b.files(), ["llama3.gguf", "qwen2_test.gguf"]);

    // 4. A broken model (truncated) and two models at once: rejected, nothing changed.
    let broken = b.dir.0.join("broken.gguf");
    let bytes = std::fs::read(&qwen2).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let s3 = stick("stick3", &[("broken.gguf", &broken)], Some(EDGE_TOML));
    let r = b.import(&s3.0);
    assert!(!r.ok, "{}", r.out);
    assert!(r.out.contains("rejected; nothing changed"), "{}", r.out);
    let s4 = stick("stick4", &[("a.gguf", &qwen2), ("b.gguf", &llama3)], None);
    let r = b.import(&s4.0);
    assert!(!r.ok, "{}", r.out);
    assert!(r.out.contains("2 GGUF files"), "{}", r.out);
    assert_eq!(b.link("active.gguf").as_deref(), Some("llama3.gguf"));
    assert_eq!(b.link("previous.gguf").as_deref(), Some("qwen2_test.gguf"));
    assert_eq!(b.files(), ["llama3.gguf", "qwen2_test.gguf"]);
    assert!(r.systemctl.is_empty(), "{:?}", r.systemctl);

    // 5. Rollback: back to the previous model, the other one deleted; a rollback stick left
    //    in does nothing more.
    let s5 = stick("stick5", &[], None);
    std::fs::write(s5.0.join("models/rollback"), "").unwrap();
    let r = b.import(&s5.0);
    assert!(r.ok, "{}", r.out);
    assert_eq!(b.link("active.gguf").as_deref(), Some("qwen2_test.gguf"));
    assert_eq!(b.link("previous.gguf"), None);
    assert_eq!(b.files(), ["qwen2_test.gguf"]);
    assert_eq!(r.systemctl, ["--no-block try-restart wecom-edge.service"]);
    let r = b.import(&s5.0);
    assert!(r.ok, "{}", r.out);
    assert!(r.out.contains("no previous model"), "{}", r.out);
    assert!(r.systemctl.is_empty(), "{:?}", r.systemctl);
}

/// A model and an edge.toml on one stick: both land; an edge.toml that pins `[model] path`
/// keeps that model running, and the import says so.
#[test]
fn a_pinned_model_path_is_reported() {
    let b = Box_::new(EDGE_TOML);
    let qwen2 = data("synthetic/qwen2-q4_k_m.gguf");
    let pinned = format!(
        "[model]\npath = \"{}\"\n\n[[aibot]]\nbot_id = \"b\"\nsecret = \"s\"\n",
        qwen2.display()
    );
    let s = stick("stick-pin", &[("qwen2.gguf", &qwen2)], Some(&pinned));
    let r = b.import(&s.0);
    assert!(r.ok, "{}", r.out);
    assert!(r.out.contains("imported edge.toml"), "{}", r.out);
    assert!(r.out.contains("imported model qwen2.gguf"), "{}", r.out);
    assert!(
        r.out.contains("note:") && r.out.contains("[model] path"),
        "{}",
        r.out
    );
    assert_eq!(b.link("active.gguf").as_deref(), Some("qwen2.gguf"));
    assert_eq!(
        std::fs::read_to_string(b.etc().join("edge.toml")).unwrap(),
        pinned
    );
    assert_eq!(
        std::fs::read_to_string(b.etc().join("edge.toml.previous")).unwrap(),
        EDGE_TOML
    );
}

/// Term files and documents: with edge.toml they land beside it; a stick with only `filter/`
/// or `knowledge/` replaces them (subfolders kept), checked against the box's edge.toml, and
/// reloads the service instead of restarting it; term files the box's edge.toml cannot load
/// are rejected and the old ones stay.
#[test]
fn term_files_and_documents_are_imported_and_reloaded() {
    let qwen2 = data("synthetic/qwen2-q4_k_m.gguf");
    let toml = format!(
        "[model]\npath = \"{}\"\n[filter]\nblock = [\"filter/block.txt\"]\n\
         [knowledge]\ndir = \"knowledge\"\n[[aibot]]\nbot_id = \"b\"\nsecret = \"s\"\n",
        qwen2.display()
    );
    let b = Box_::new(&toml);
    // 1. edge.toml with its filter/, knowledge/ (and a persona/ directory).
    let s1 = stick("filter1", &[], Some(&toml));
    std::fs::create_dir_all(s1.0.join("filter")).unwrap();
    std::fs::create_dir_all(s1.0.join("persona")).unwrap();
    std::fs::create_dir_all(s1.0.join("knowledge/hr")).unwrap();
    std::fs::write(s1.0.join("filter/block.txt"), "机密\n").unwrap();
    std::fs::write(s1.0.join("persona/p.txt"), "你是助手。\n").unwrap();
    std::fs::write(s1.0.join("knowledge/hr/leave.md"), "# 请假\n年假五天。\n").unwrap();
    let r = b.import(&s1.0);
    assert!(r.ok, "{}", r.out);
    assert_eq!(
        std::fs::read_to_string(b.etc().join("filter/block.txt")).unwrap(),
        "机密\n"
    );
    assert!(b.etc().join("persona/p.txt").exists());
    assert!(b.etc().join("knowledge/hr/leave.md").exists());
    assert_eq!(
        r.systemctl.last().map(String::as_str),
        Some("--no-block try-restart wecom-edge.service")
    );
    // Left in: nothing to do.
    let r = b.import(&s1.0);
    assert!(r.out.contains("nothing to do"), "{}", r.out);
    assert!(r.systemctl.is_empty(), "{:?}", r.systemctl);

    // 2. Only new term files: replaced, the service reloaded (not restarted).
    let s2 = stick("filter2", &[], None);
    std::fs::create_dir_all(s2.0.join("filter")).unwrap();
    std::fs::write(s2.0.join("filter/block.txt"), "机密\n内部代号\n").unwrap();
    let r = b.import(&s2.0);
    assert!(r.ok, "{}", r.out);
    assert!(r.out.contains("imported 1 file(s) of filter/"), "{}", r.out);
    assert_eq!(
        r.systemctl,
        ["--no-block reload-or-restart wecom-edge.service"]
    );
    assert_eq!(
        std::fs::read_to_string(b.etc().join("filter/block.txt")).unwrap(),
        "机密\n内部代号\n"
    );
    assert_eq!(
        std::fs::read_to_string(b.etc().join("filter.previous/block.txt")).unwrap(),
        "机密\n"
    );
    let r = b.import(&s2.0);
    assert!(r.out.contains("filter/ matches the box's"), "{}", r.out);
    assert!(r.systemctl.is_empty(), "{:?}", r.systemctl);

    // Only new documents (a subfolder changed): replaced, the service reloaded.
    let s4 = stick("knowledge4", &[], None);
    std::fs::create_dir_all(s4.0.join("knowledge/hr")).unwrap();
    std::fs::write(s4.0.join("knowledge/hr/leave.md"), "# 请假\n年假十天。\n").unwrap();
    std::fs::write(s4.0.join("knowledge/it.md"), "# 网络\nWi-Fi 密码在前台。\n").unwrap();
    let r = b.import(&s4.0);
    assert!(r.ok, "{}", r.out);
    assert!(
        r.out.contains("imported 2 file(s) of knowledge/"),
        "{}",
        r.out
    );
    assert_eq!(
        r.systemctl,
        ["--no-block reload-or-restart wecom-edge.service"]
    );
    assert_eq!(
        std::fs::read_to_string(b.etc().join("knowledge/hr/leave.md")).unwrap(),
        "# 请假\n年假十天。\n"
    );
    assert!(b.etc().join("knowledge.previous/hr/leave.md").exists());
    let r = b.import(&s4.0);
    assert!(r.out.contains("knowledge/ matches the box's"), "{}", r.out);
    assert!(r.systemctl.is_empty(), "{:?}", r.systemctl);

    // 3. Term files without the one edge.toml names: rejected, the old ones stay.
    let s3 = stick("filter3", &[], None);
    std::fs::create_dir_all(s3.0.join("filter")).unwrap();
    std::fs::write(s3.0.join("filter/other.txt"), "x\n").unwrap();
    let r = b.import(&s3.0);
    assert!(!r.ok, "{}", r.out);
    assert!(
        r.out.contains("rejected") && r.out.contains("block.txt"),
        "{}",
        r.out
    );
    assert_eq!(
        std::fs::read_to_string(b.etc().join("filter/block.txt")).unwrap(),
        "机密\n内部代号\n"
    );
    assert!(r.systemctl.is_empty(), "{:?}", r.systemctl);
}

/// The stick's `console-password`: hashed into `console/` (what the unit hands the service
/// as a credential), deleted from the stick, the service restarted; a short one is refused
/// with nothing changed and left where it was.
#[test]
fn a_console_password_on_the_stick_is_hashed_and_leaves_the_stick() {
    use std::os::unix::fs::PermissionsExt;
    let b = Box_::new(EDGE_TOML);
    let s = stick("console-pw", &[], None);
    std::fs::write(s.0.join("console-password"), "too short\n").unwrap();
    let r = b.import(&s.0);
    assert!(!r.ok, "{}", r.out);
    assert!(r.out.contains("console-password on"), "{}", r.out);
    assert!(r.out.contains("at least 12"), "{}", r.out);
    assert!(!b.etc().join("console").exists());
    assert!(s.0.join("console-password").exists(), "a refused one stays");
    assert!(r.systemctl.is_empty(), "{:?}", r.systemctl);

    let password = "图书馆 console password";
    std::fs::write(s.0.join("console-password"), format!("{password}\n")).unwrap();
    let r = b.import(&s.0);
    assert!(r.ok, "{}", r.out);
    assert!(r.out.contains("imported the console password"), "{}", r.out);
    assert!(!s.0.join("console-password").exists(), "consumed");
    let file = b.etc().join("console/console-password.phc");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let stored = wecom_edge_actors::console::password::load_file(file)
        .unwrap()
        .unwrap();
    assert!(stored.verify(password));
    assert_eq!(r.systemctl, ["--no-block try-restart wecom-edge.service"]);
    // Nothing else changed.
    assert!(!b.etc().join("edge.toml.previous").exists());
}

/// `--switch REQUEST` (the console's Model page): the previous model is checked and swapped
/// in, the request consumed; a name that is not the previous model changes nothing.
#[test]
fn the_console_switches_back_to_the_previous_model() {
    let b = Box_::new(EDGE_TOML);
    let m = b.models();
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(data("synthetic/qwen2-q4_k_m.gguf"), m.join("qwen2.gguf")).unwrap();
    std::fs::copy(data("synthetic/qwen2-q4_k_m.gguf"), m.join("other.gguf")).unwrap();
    std::os::unix::fs::symlink("other.gguf", m.join("active.gguf")).unwrap();
    std::os::unix::fs::symlink("qwen2.gguf", m.join("previous.gguf")).unwrap();
    let req = b.dir.0.join("model-switch.request");
    let switch = |name: &str| {
        std::fs::write(&req, format!("{name}\n")).unwrap();
        let out = Command::new("sh")
            .arg(repo().join("systemd/wecom-edge-config-import"))
            .args(["--switch", req.to_str().unwrap()])
            .env("WECOM_EDGE_CONFIG_DIR", b.etc())
            .env("WECOM_EDGE_BIN", env!("CARGO_BIN_EXE_wecom-edge"))
            .env("WECOM_EDGE_SYSTEMCTL", b.dir.0.join("systemctl"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, out) = switch("../edge.toml");
    assert!(!ok && out.contains("not an imported model"), "{out}");
    let (ok, out) = switch("nothing.gguf");
    assert!(!ok && out.contains("not the previous model"), "{out}");
    assert_eq!(b.link("active.gguf").as_deref(), Some("other.gguf"));
    let (ok, out) = switch("qwen2.gguf");
    assert!(ok, "{out}");
    assert!(!req.exists(), "consumed");
    assert_eq!(b.link("active.gguf").as_deref(), Some("qwen2.gguf"));
    assert_eq!(b.link("previous.gguf").as_deref(), Some("other.gguf"));
}
