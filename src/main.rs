//! The `tallyd` binary: command line, logging, config, then [`tallyd::app::run_from`] until
//! SIGTERM or SIGINT; or `tallyd query`, which reads the history store and exits.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tallyd::config::Config;
use tallyd::history::QueryParams;
use tallyd::history::output::{self, Format};
use tallyd::history::query::{self, QueryError};
use tallyd::history::store::StoreError;
use tracing_subscriber::EnvFilter;

/// A StatsD aggregation agent: receives StatsD lines over UDP, TCP and Unix sockets,
/// aggregates them every flush interval and hands the figures to its backends.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Read the history store (SPEC §9): one row per step (and group), or --list.
    Query(QueryArgs),
}

/// `tallyd query`: the store from the agent's config or a path, then what to read.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("store").required(true).args(["config", "path"])))]
struct QueryArgs {
    /// The agent's config file: its [history] path names the store.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The store's file.
    #[arg(long, value_name = "STORE")]
    path: Option<PathBuf>,
    /// Series whose name matches this glob (`*` matches any run of characters).
    #[arg(long, value_name = "GLOB")]
    metric: Option<String>,
    /// Series carrying this tag (repeatable; all must hold).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// The figure: count, rate, value, min, max, mean, median, upper_95, ... (default:
    /// counter count, gauge value, set count, timer mean).
    #[arg(long, value_name = "FIGURE")]
    stat: Option<String>,
    /// Start: RFC 3339, Unix seconds, or relative (-6h). Default -1h.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    from: Option<String>,
    /// End (exclusive): as --from. Default now.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    to: Option<String>,
    /// Step length (30s, 5m, 1h); default the chosen tier's step.
    #[arg(long, value_name = "DURATION", conflicts_with = "points")]
    step: Option<String>,
    /// As many steps over the range, instead of --step.
    #[arg(long, value_name = "N")]
    points: Option<String>,
    /// Combine the series of a group: avg, sum, min, max, last, count (default: merge them
    /// into one, so percentiles are over all their values).
    #[arg(long, value_name = "AGG")]
    agg: Option<String>,
    /// One group (and row per step) per value of this tag.
    #[arg(long, value_name = "TAGKEY")]
    group_by: Option<String>,
    /// table, json or csv.
    #[arg(long, default_value = "table", value_parser = Format::parse)]
    format: Format,
    /// List the series held (with --metric and --tag filters) instead.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Query(args)) = cli.command {
        init_logging(Some(cli.log_level.as_deref().unwrap_or("warn")));
        return run_query(args);
    }
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

fn run_query(args: QueryArgs) -> ExitCode {
    let path = match (&args.path, &args.config) {
        (Some(path), _) => path.clone(),
        (None, Some(config)) => match Config::load(config) {
            Ok(Config {
                history: Some(history),
                ..
            }) => history.path,
            Ok(_) => {
                eprintln!(
                    "tallyd query: history is off in {} (no [history] path)",
                    config.display()
                );
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("config error: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!("tallyd query: give --config FILE or --path STORE");
            return ExitCode::from(2);
        }
    };
    let params = QueryParams {
        metric: args.metric,
        tags: args.tags,
        stat: args.stat,
        from: args.from,
        to: args.to,
        step: args.step,
        points: args.points,
        agg: args.agg,
        group_by: args.group_by,
        list: args.list,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let answer = params
        .validate(now)
        .and_then(|query| query::run(&path, &query));
    match answer {
        Ok(answer) => {
            print!("{}", output::render(&answer, args.format));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tallyd query: {e}");
            match e {
                QueryError::Invalid(_) | QueryError::Store(StoreError::Invalid { .. }) => {
                    ExitCode::from(2)
                }
                QueryError::Store(_) => ExitCode::FAILURE,
            }
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
