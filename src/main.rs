//! The `shardbridge` command: `run` and `validate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use shardbridge::metrics::health::Health;

/// Exit status for every configuration error (clap uses it for usage errors too).
const EXIT_CONFIG: u8 = 2;
const EXIT_RUNTIME: u8 = 1;

#[derive(Parser)]
#[command(
    name = "shardbridge",
    version,
    about = "Forwards DynamoDB Streams and Kinesis records to sinks, with leases and checkpoints",
    long_about = "Reads change records from DynamoDB Streams and records from Kinesis Data \
                  Streams, shares the shards with other \
                  shardbridge processes through a KCL-compatible lease table, and forwards the \
                  records, in per-item order, to the sinks of connectors.toml (stdout, file, \
                  S3, Kinesis and Kafka; S3, Kinesis and Kafka exactly once).\n\n\
                  Exit status: 0 after a clean stop, 1 on a fatal runtime error (or when a \
                  connector failed), 2 on a configuration error. Logging: RUST_LOG (default info)."
)]
struct Cli {
    /// Log lines on stderr: `text` for people, `json` (one object per line, with connector and
    /// shard as fields) for log pipelines.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SHARDBRIDGE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run every connector until SIGTERM or SIGINT, then checkpoint, release leases and exit 0.
    Run {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Check a configuration file: exit 0 when valid, else exit 2 with one line per problem.
    Validate {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Per connector, one row per shard: owner, lease counter, checkpoint, pending intent,
    /// state (waiting_on_parents, reading, ended, unowned, expired) and how far behind.
    Status {
        #[command(flatten)]
        config: ConfigPath,
        /// Only this connector.
        #[arg(long)]
        connector: Option<String>,
        /// One JSON document: {"connectors": [{"name", "lease_table", "shards": [...]}]}.
        #[arg(long)]
        json: bool,
    },
    /// Moves a shard's checkpoint by hand (recovery): refuses while a live worker holds the
    /// lease unless --force; the write is conditional on the row not moving meanwhile.
    Checkpoint {
        #[command(subcommand)]
        action: CheckpointAction,
    },
}

/// Which configuration file a command reads.
#[derive(clap::Args)]
struct ConfigPath {
    /// The configuration file; every key can be overridden by SHARDBRIDGE__SECTION__KEY.
    #[arg(
        long = "config",
        short = 'c',
        value_name = "CONFIG",
        env = "SHARDBRIDGE_CONFIG",
        default_value = "connectors.toml"
    )]
    path: PathBuf,
}

#[derive(Subcommand)]
enum CheckpointAction {
    /// Sets the checkpoint to a sequence number, the trim horizon or the latest record.
    Set(CheckpointArgs),
    /// Resets the checkpoint: to the trim horizon unless --latest or --sequence is given.
    Reset(CheckpointArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").args(["sequence", "trim_horizon", "latest"])))]
struct CheckpointArgs {
    #[command(flatten)]
    config: ConfigPath,
    #[arg(long)]
    connector: String,
    #[arg(long)]
    shard: String,
    /// Every record up to and including this sequence number counts as delivered.
    #[arg(long)]
    sequence: Option<String>,
    /// Read the shard again from its oldest record.
    #[arg(long)]
    trim_horizon: bool,
    /// Skip to the newest record (what was not read is never delivered).
    #[arg(long)]
    latest: bool,
    /// Move it even while a live worker holds the lease.
    #[arg(long)]
    force: bool,
}

fn load(path: &std::path::Path) -> Result<shardbridge::config::Config, ExitCode> {
    shardbridge::config::load(path).map_err(|errors| {
        for p in &errors.0 {
            eprintln!("{p}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    match cli.command {
        Command::Validate { config } => match load(&config.path) {
            Ok(c) => {
                println!(
                    "{}: valid ({} connector(s))",
                    config.path.display(),
                    c.connectors.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Status {
            config,
            connector,
            json,
        } => {
            let config = match load(&config.path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            operate(async move {
                let report = shardbridge::operate::status(&config, connector.as_deref()).await?;
                if json {
                    println!("{}", shardbridge::operate::status_json(&report));
                } else {
                    print!("{}", shardbridge::operate::status_text(&report));
                }
                Ok(())
            })
        }
        Command::Checkpoint { action } => {
            let (args, reset) = match action {
                CheckpointAction::Set(a) => (a, false),
                CheckpointAction::Reset(a) => (a, true),
            };
            let target = match (&args.sequence, args.trim_horizon, args.latest) {
                (Some(s), _, _) => match shardbridge::source::sequence::SequenceNumber::parse(s) {
                    Ok(seq) => shardbridge::operate::CheckpointTarget::Sequence(seq),
                    Err(e) => {
                        eprintln!("--sequence: {e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                },
                (None, _, true) => shardbridge::operate::CheckpointTarget::Latest,
                (None, true, _) => shardbridge::operate::CheckpointTarget::TrimHorizon,
                (None, false, false) if reset => {
                    shardbridge::operate::CheckpointTarget::TrimHorizon
                }
                (None, false, false) => {
                    eprintln!("checkpoint set: give --sequence N, --trim-horizon or --latest");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let config = match load(&args.config.path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            operate(async move {
                let what = shardbridge::operate::set_checkpoint(
                    &config,
                    &args.connector,
                    &args.shard,
                    &target,
                    args.force,
                )
                .await?;
                println!("{what}");
                Ok(())
            })
        }
        Command::Run { config } => {
            let config = match load(&config.path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_tracing(log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            match runtime.block_on(run(config)) {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("shardbridge: {e:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
    }
}

/// Runs an operator command: exit 0, 2 for a usage problem (an unknown connector or shard), 1
/// otherwise.
fn operate(
    work: impl std::future::Future<Output = Result<(), shardbridge::operate::OperateError>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardbridge: {e}");
            match e {
                shardbridge::operate::OperateError::Usage(_) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::from(EXIT_RUNTIME),
            }
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a person at a terminal, not in log files and collectors.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line; the event's fields (connector, shard, …) at the top level.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn run(config: shardbridge::config::Config) -> anyhow::Result<ExitCode> {
    let prometheus = shardbridge::metrics::install()?;
    let health = Arc::new(Health::default());
    let stop = CancellationToken::new();
    let server_stop = CancellationToken::new();
    let server = shardbridge::metrics::server::serve(
        config.worker.listen,
        prometheus,
        health.clone(),
        server_stop.clone(),
    )
    .await?;
    tracing::info!(worker = %config.worker.id, connectors = config.connectors.len(), "shardbridge starting");

    let signals = stop.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "stop requested: finishing batches in flight, checkpointing, releasing leases"
        );
        signals.cancel();
    });

    let failed = shardbridge::pipeline::run_all(config, health, stop).await;
    server_stop.cancel();
    let _ = server.await;
    if failed.is_empty() {
        tracing::info!("stopped cleanly");
        Ok(ExitCode::SUCCESS)
    } else {
        for (name, why) in &failed {
            eprintln!("shardbridge: connector {name} failed: {why}");
        }
        Ok(ExitCode::from(EXIT_RUNTIME))
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
