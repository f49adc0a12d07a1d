//! `wecom-edge console set-password`: turns the console on by storing its password's
//! Argon2id hash in the data directory (`console-password.phc`, mode 0600).
//!
//! The password is read from standard input: one line, its line ending removed. On a terminal
//! it is asked for twice, without echo; from a pipe (`printf '%s\n' "$PW" | …`, the appliance's
//! config-stick import) it is read once. It is never printed.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use wecom_edge_actors::console::password;

use crate::audit_cmd::data_dir;

#[derive(Args)]
pub struct ConsoleArgs {
    /// The box's data directory [default: $STATE_DIRECTORY, else /var/lib/wecom-edge].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: ConsoleCommand,
}

#[derive(Subcommand)]
enum ConsoleCommand {
    /// Set (or replace) the console password, read from stdin; at least 12 characters.
    SetPassword,
}

pub fn run(a: ConsoleArgs) -> anyhow::Result<ExitCode> {
    let dir = data_dir(a.data_dir);
    match a.command {
        ConsoleCommand::SetPassword => {
            let pw = if std::io::stdin().is_terminal() {
                let first = read_hidden("New console password: ")?;
                let again = read_hidden("Again: ")?;
                if first != again {
                    eprintln!("the two passwords differ; nothing was changed");
                    return Ok(ExitCode::from(2));
                }
                first
            } else {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                line.trim_end_matches(['\n', '\r']).to_string()
            };
            match password::set(&dir, &pw) {
                Ok(file) => {
                    println!("console password set: {} (argon2id)", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ password::PasswordError::Weak(_)) => {
                    eprintln!("{e}; nothing was changed");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// One line from the terminal with echo off (restored afterwards, also on error).
fn read_hidden(prompt: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let before = tcgetattr(&stdin)?;
    let mut quiet = before.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    tcsetattr(&stdin, SetArg::TCSANOW, &before)?;
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
