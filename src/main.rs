//! The `shoal` binary: parses the command line, sets up logging, and runs
//! the chosen subcommand. The only place besides tests that uses `anyhow`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use shoal::cli::{Cli, Command, LogArgs, LogFormat};
use tracing_subscriber::EnvFilter;

/// Exit status for a flag combination that cannot work (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = init_logging(&cli.log) {
        eprintln!("shoal: {error:#}");
        return ExitCode::from(EX_USAGE);
    }
    match cli.command {
        Command::Version => {
            println!("shoal {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Configure(args) => report(
            shoal::configure::configure(&args.into_config())
                .map(|written| {
                    for path in written {
                        println!("wrote {}", path.display());
                    }
                })
                .context("configuring containerd"),
        ),
        Command::Cleanup(args) => report(
            shoal::configure::cleanup(&args.containerd_config_path).context("restoring the containerd configuration"),
        ),
        Command::Run(args) => match args.into_config() {
            Ok(config) => report(run(config)),
            Err(error) => {
                eprintln!("shoal: {error}");
                ExitCode::from(EX_USAGE)
            }
        },
    }
}

fn run(config: shoal::app::RunConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(shoal::app::run(config)).context("running the node")
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("shoal: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(args: &LogArgs) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(&args.log_level).with_context(|| format!("invalid --log-level {:?}", args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
