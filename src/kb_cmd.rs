//! `wecom-edge kb add|list|remove|search`: the company knowledge base in the data directory
//! (`knowledge.sqlite3`; the service may be running: SQLite's WAL lets both work).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use wecom_edge_actors::audit::knowledge::{Added, Knowledge, MIN_RELATIVE_SCORE};

use crate::audit_cmd::data_dir;

#[derive(Args)]
pub struct KbArgs {
    /// The box's data directory [default: $STATE_DIRECTORY, else /var/lib/wecom-edge].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: KbCommand,
}

#[derive(Subcommand)]
enum KbCommand {
    /// Store documents (.md, .markdown, .txt, .text, .docx, .pdf), each under its file name; a
    /// document of that name is replaced when its content changed. Exits 1 if any failed.
    Add {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The stored name (only with one file) [default: the file's name].
        #[arg(long)]
        name: Option<String>,
    },
    /// The stored documents.
    List {
        /// One JSON object: `{"documents":[{"doc","title","chunks","bytes","source","added_ms","sha256"}]}`.
        #[arg(long)]
        json: bool,
    },
    /// Forget a document (by its name, as `list` shows it).
    Remove {
        /// The document's name.
        doc: String,
    },
    /// The chunks a turn's retrieve stage would use for QUERY, best first by BM25 score: at
    /// most --limit (a turn: `[knowledge] top_k`), those scoring at least
    /// --min-relative-score × the best.
    Search {
        /// The question.
        query: String,
        /// Most results.
        #[arg(long, default_value_t = 5)]
        limit: usize,
        /// Keep chunks scoring at least this fraction of the best (0: all matches).
        #[arg(long, default_value_t = MIN_RELATIVE_SCORE)]
        min_relative_score: f64,
        /// One JSON object: `{"results":[{"doc","title","section","score","snippet","position"}]}`.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `kb` command.
pub fn run(a: KbArgs) -> anyhow::Result<ExitCode> {
    let dir = data_dir(a.data_dir);
    let mut kb = Knowledge::open(&dir)
        .with_context(|| format!("the knowledge base in {}", dir.display()))?;
    match a.command {
        KbCommand::Add { files, name } => {
            anyhow::ensure!(
                name.is_none() || files.len() == 1,
                "--name names one file; {} were given",
                files.len()
            );
            let mut failed = 0;
            for f in &files {
                let stored = name.clone().unwrap_or_else(|| {
                    f.file_name().map_or_else(
                        || f.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    )
                });
                match kb.add_file(f, &stored, "cli") {
                    Ok(a) => {
                        let what = match a {
                            Added::New(_) => "added",
                            Added::Updated(_) => "updated",
                            Added::Unchanged(_) => "unchanged",
                        };
                        let d = a.document();
                        println!("{what} {}: «{}», {} chunks", d.doc, d.title, d.chunks);
                    }
                    Err(e) => {
                        eprintln!("kb add: {e}");
                        failed += 1;
                    }
                }
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        KbCommand::List { json } => {
            let docs = kb.list()?;
            if json {
                println!("{}", json!({ "documents": docs }));
            } else if docs.is_empty() {
                println!("no documents in {}", kb.path().display());
            } else {
                for d in docs {
                    println!(
                        "{}\t«{}»\t{} chunks\t{} bytes\t{}",
                        d.doc, d.title, d.chunks, d.bytes, d.source
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KbCommand::Remove { doc } => {
            kb.remove(&doc)?;
            println!("removed {doc}");
            Ok(ExitCode::SUCCESS)
        }
        KbCommand::Search {
            query,
            limit,
            min_relative_score,
            json,
        } => {
            let hits = kb.retrieve(&query, limit, min_relative_score)?;
            if json {
                println!("{}", json!({ "results": hits }));
            } else if hits.is_empty() {
                println!("nothing found");
            } else {
                for h in hits {
                    println!(
                        "{:.3}\t{}\t«{}» {}\t{}",
                        h.score, h.doc, h.title, h.section, h.snippet
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
