//! The `tallyd` binary: command line, logging, config, then [`tallyd::app::run_from`] until
//! SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tallyd::config::Config;
use tracing_subscriber::EnvFilter;

/// A StatsD aggregation agent: receives StatsD lines over UDP, TCP and Unix sockets,
/// aggregates them every flush interval and hands the figures to its backends.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The TOML configuration file; without it the built-in defaults apply (UDP
    /// 127.0.0.1:8125, 10 s flush, console backend). Either way, TALLYD_<SECTION>_<KEY>
    /// environment variables override keys (TALLYD_AGGREGATION_FLUSH_INTERVAL_MS=1000).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Validate the configuration file, with the environment's overrides, and exit (0 valid,
    /// 2 invalid).
    #[arg(long, value_name = "PATH", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Log level or filter (error, warn, info, debug, trace); overrides RUST_LOG.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref());

    if let Some(path) = &cli.check_config {
        return match Config::load(path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("config error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let loaded = match &cli.config {
        Some(path) => Config::load(path),
        None => Config::from_env(),
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config, cli.config.clone()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tallyd failed");
            eprintln!("tallyd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tallyd-io")
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        tallyd::app::run_from(config, path, shutdown).await?;
        Ok(())
    })
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

fn init_logging(level: Option<&str>) {
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
