//! `wecom-edge wecom decrypt|encrypt`: WXBizMsgCrypt diagnostics for admins.
//!
//! The top support question for WeCom callbacks is a failing signature; `decrypt` replays what a
//! callback endpoint does with the values from the request and says which setting is wrong.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use wecom_edge_actors::wecom::crypto::{self, MsgCrypt};

#[derive(Subcommand)]
pub enum WecomCommand {
    /// Verify and decrypt a callback as the box would; prints the decrypted message bytes
    /// exactly (nothing else on stdout) or exits 2 with the error code and a hint.
    Decrypt(DecryptArgs),
    /// Encrypt and sign a message as WeCom (or a passive reply) would.
    Encrypt(EncryptArgs),
}

#[derive(Args)]
pub struct Endpoint {
    /// Callback Token (or $WECOM_TOKEN).
    #[arg(long, env = "WECOM_TOKEN", hide_env_values = true)]
    token: String,
    /// The 43-character EncodingAESKey (or $WECOM_ENCODING_AES_KEY).
    #[arg(long, env = "WECOM_ENCODING_AES_KEY", hide_env_values = true)]
    encoding_aes_key: String,
    /// receiveid: the CorpID for a self-built app, "" for an AI bot.
    #[arg(long, default_value = "")]
    receive_id: String,
}

#[derive(Args)]
#[group(id = "input", required = true, multiple = false, args = ["echostr", "encrypt", "body_file"])]
pub struct DecryptArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// msg_signature from the callback URL.
    #[arg(long)]
    msg_signature: String,
    /// timestamp from the callback URL, as it appears there.
    #[arg(long)]
    timestamp: String,
    /// nonce from the callback URL.
    #[arg(long)]
    nonce: String,
    /// echostr of a URL verification GET (URL-decoded).
    #[arg(long)]
    echostr: Option<String>,
    /// The Encrypt value of a callback POST.
    #[arg(long)]
    encrypt: Option<String>,
    /// A whole callback POST body (XML or JSON envelope); `-` reads stdin.
    #[arg(long)]
    body_file: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum EncryptFormat {
    /// The encrypted passive-reply XML (`<Encrypt>`, `<MsgSignature>`, `<TimeStamp>`, `<Nonce>`).
    Xml,
    /// The encrypted JSON reply (`encrypt`, `msgsignature`, `timestamp`, `nonce`).
    Json,
    /// A URL verification query: `msg_signature=…&timestamp=…&nonce=…&echostr=…`.
    Query,
}

#[derive(Args)]
#[group(id = "message_in", required = true, multiple = false, args = ["message", "message_file"])]
pub struct EncryptArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// timestamp to sign with [default: now].
    #[arg(long)]
    timestamp: Option<String>,
    /// nonce to sign with [default: random digits].
    #[arg(long)]
    nonce: Option<String>,
    /// Output form.
    #[arg(long, value_enum, default_value_t = EncryptFormat::Xml)]
    format: EncryptFormat,
    /// The plaintext message.
    #[arg(long)]
    message: Option<String>,
    /// The plaintext message from a file; `-` reads stdin.
    #[arg(long)]
    message_file: Option<PathBuf>,
}

fn read_input(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
        Ok(v)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

pub fn run(cmd: WecomCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        WecomCommand::Decrypt(a) => decrypt(a),
        WecomCommand::Encrypt(a) => encrypt(a),
    }
}

fn decrypt(a: DecryptArgs) -> anyhow::Result<ExitCode> {
    let encrypt = match (&a.echostr, &a.encrypt, &a.body_file) {
        (Some(e), _, _) | (_, Some(e), _) => e.clone(),
        (_, _, Some(f)) => match crypto::extract_encrypt(&read_input(f)?) {
            Ok((e, _)) => e,
            Err(e) => {
                eprintln!("error: {e}");
                eprintln!("hint: the body must be the callback's XML (<Encrypt>) or JSON (\"encrypt\") envelope");
                return Ok(ExitCode::from(2));
            }
        },
        _ => unreachable!("clap requires one input"),
    };
    let ep = &a.endpoint;
    match crypto::diagnose(
        &ep.token,
        &ep.encoding_aes_key,
        &ep.receive_id,
        &a.msg_signature,
        &a.timestamp,
        &a.nonce,
        &encrypt,
    ) {
        Ok(msg) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&msg)?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Err(d) => {
            eprintln!("error: {}", d.error);
            eprintln!("hint: {}", d.hint);
            Ok(ExitCode::from(2))
        }
    }
}

fn encrypt(a: EncryptArgs) -> anyhow::Result<ExitCode> {
    let ep = &a.endpoint;
    let c = match MsgCrypt::new(&ep.token, &ep.encoding_aes_key, &ep.receive_id) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let msg = match (&a.message, &a.message_file) {
        (Some(m), _) => m.clone().into_bytes(),
        (_, Some(f)) => read_input(f)?,
        _ => unreachable!("clap requires one input"),
    };
    let timestamp = a.timestamp.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string()
    });
    let nonce = a.nonce.unwrap_or_else(crypto::random_nonce);
    let out = match a.format {
        EncryptFormat::Xml => c.encrypt_xml_reply(&msg, &timestamp, &nonce),
        EncryptFormat::Json => c.encrypt_json_reply(&msg, &timestamp, &nonce),
        EncryptFormat::Query => {
            let echostr = c.encrypt(&msg);
            let sig = c.signature(&timestamp, &nonce, &echostr);
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("msg_signature", &sig)
                .append_pair("timestamp", &timestamp)
                .append_pair("nonce", &nonce)
                .append_pair("echostr", &echostr)
                .finish()
        }
    };
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}
