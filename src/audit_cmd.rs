//! `wecom-edge audit tail|verify|export`: read the audit trail (read-only; the service may run).
//! `verify` needs the box's audit key (it never makes one) and checks the head file too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use wecom_edge_actors::audit::{AuditError, AuditKey, AuditStore};

#[derive(Args)]
pub struct AuditArgs {
    /// The box's data directory [default: $STATE_DIRECTORY, else /var/lib/wecom-edge].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// The audit key file (for verify) [default: DATA_DIR/keys/audit.key].
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// The last rows, one JSON object per line.
    Tail {
        /// How many rows.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Walk the keyed hash chain and check it against the head file; exits 1 naming the first
    /// broken row, a truncated end, or a deleted or replaced database.
    Verify,
    /// Every row (or those since a time) as JSON lines or CSV.
    Export {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Only rows at or after this time: unix seconds, RFC 3339 (`2026-11-22T08:00:00Z`), or
        /// an age such as `2h` or `30min`.
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

/// The data directory: the flag, else systemd's `$STATE_DIRECTORY`, else /var/lib/wecom-edge.
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| {
        std::env::var_os("STATE_DIRECTORY").map(|v| {
            PathBuf::from(
                v.to_string_lossy()
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            )
        })
    })
    .unwrap_or_else(|| PathBuf::from("/var/lib/wecom-edge"))
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    let now = std::time::SystemTime::now();
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs * 1000);
    }
    let t = if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        t
    } else if let Ok(age) = humantime::parse_duration(s) {
        now - age
    } else {
        bail!("--since {s:?}: expected unix seconds, an RFC 3339 time, or an age like 2h");
    };
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

/// Loads the key without ever creating it.
fn load_key(path: &Path) -> anyhow::Result<AuditKey> {
    AuditKey::load(path).map_err(|e| match e {
        AuditError::Key { source, .. } if source.kind() == std::io::ErrorKind::NotFound => anyhow!(
            "no audit key at {}: verify needs the key the service made at its first start \
             (or --key FILE)",
            path.display()
        ),
        e => anyhow!(e),
    })
}

fn verify(dir: &Path, key: &Path, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let key = load_key(key)?;
    let v = AuditStore::verify_dir(dir, &key)
        .with_context(|| format!("verifying the audit trail in {}", dir.display()))?;
    for i in &v.incidents {
        eprintln!(
            "warning: row {} records an earlier finding at start: {}",
            i.seq, i.kind
        );
    }
    if v.is_intact() {
        writeln!(out, "{}", v.summary())?;
        Ok(ExitCode::SUCCESS)
    } else {
        for p in v.problems() {
            eprintln!("{p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

pub fn run(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let dir = data_dir(a.data_dir);
    let open = || {
        AuditStore::open_read_only(&dir)
            .with_context(|| format!("opening the audit database in {}", dir.display()))
    };
    let mut out = std::io::stdout().lock();
    match a.command {
        AuditCommand::Tail { lines } => {
            for r in open()?.tail(lines)? {
                writeln!(out, "{}", serde_json::to_string(&r)?)?;
            }
        }
        AuditCommand::Verify => {
            let key = a.key.unwrap_or_else(|| AuditKey::default_path(&dir));
            return verify(&dir, &key, &mut out);
        }
        AuditCommand::Export { format, since } => {
            let since = since
                .as_deref()
                .map(parse_since)
                .transpose()?
                .unwrap_or(i64::MIN);
            let rows = open()?.rows_since(since)?;
            match format {
                Format::Jsonl => {
                    for r in rows {
                        writeln!(out, "{}", serde_json::to_string(&r)?)?;
                    }
                }
                Format::Csv => wecom_edge_actors::audit::write_csv(&mut out, &rows)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
