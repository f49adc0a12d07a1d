//! `wecom-edge audit tail|verify|export`: read the audit trail (read-only; the service may run).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use wecom_edge_actors::audit::{AuditRow, AuditStore};

#[derive(Args)]
pub struct AuditArgs {
    /// The box's data directory [default: $STATE_DIRECTORY, else /var/lib/wecom-edge].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
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
    /// Walk the hash chain; exits 1 naming the first broken row.
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

pub fn run(a: AuditArgs) -> anyhow::Result<ExitCode> {
    let dir = data_dir(a.data_dir);
    let store = AuditStore::open_read_only(&dir)
        .with_context(|| format!("opening the audit database in {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    match a.command {
        AuditCommand::Tail { lines } => {
            for r in store.tail(lines)? {
                writeln!(out, "{}", serde_json::to_string(&r)?)?;
            }
        }
        AuditCommand::Verify => match store.verify()? {
            Ok(n) => writeln!(out, "audit chain intact: {n} rows")?,
            Err(b) => {
                eprintln!("audit chain broken at row {}: {}", b.seq, b.reason);
                return Ok(ExitCode::FAILURE);
            }
        },
        AuditCommand::Export { format, since } => {
            let since = since
                .as_deref()
                .map(parse_since)
                .transpose()?
                .unwrap_or(i64::MIN);
            let rows = store.rows_since(since)?;
            match format {
                Format::Jsonl => {
                    for r in rows {
                        writeln!(out, "{}", serde_json::to_string(&r)?)?;
                    }
                }
                Format::Csv => write_csv(&mut out, &rows)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_csv(out: &mut impl Write, rows: &[AuditRow]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "seq",
        "ts_ms",
        "kind",
        "actor",
        "subject",
        "detail",
        "prev_hash",
        "hash",
    ])?;
    for r in rows {
        w.write_record([
            r.seq.to_string(),
            r.ts_ms.to_string(),
            r.kind.clone(),
            r.actor.clone(),
            r.subject.clone(),
            r.detail.to_string(),
            r.prev_hash.clone(),
            r.hash.clone(),
        ])?;
    }
    w.flush()?;
    Ok(())
}
