//! `strata-control`: the Strata control plane binary. Without a subcommand it
//! runs the server; `nodes`, `streams`, `stream` and `drain` are operator
//! commands against a running control plane (see [`strata_control::cli`]).

use std::io::Write;
use std::process::ExitCode;

use strata_control::Config;
use strata_control::cli::{self, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let config = Config::load()?;
    if let Some(cmd) = &config.command {
        return Ok(operator(cmd).await);
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    tracing::info!(config = ?config, "starting");
    if let Err(e) = config.check_transport() {
        eprintln!("strata-control: {e}");
        return Ok(ExitCode::from(2));
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    strata_control::run(config, listener, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs an operator command; errors go to stderr as one line.
async fn operator(cmd: &Command) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let mut out = std::io::stdout().lock();
    let result = cli::run(cmd, &mut out).await;
    let _ = out.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-control: {e}");
            ExitCode::FAILURE
        }
    }
}
