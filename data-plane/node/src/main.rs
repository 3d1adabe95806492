//! `strata-node`: one Strata data-plane node.

use std::path::Path;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use strata_node::auth::{Action, Claims, SecretString, TokenKeys, unix_now};
use strata_node::config::{Cli, Command};
use strata_relay::certs::{CertKind, DevCa, IssueOptions, NodeCredentials};
use tracing_subscriber::EnvFilter;

/// The log filter when `RUST_LOG` is unset: Strata at info, the WebRTC stack only on errors
/// (it logs every late or unknown packet as a warning, which drowns a busy node's log), and
/// the SRT stack likewise (a warning per datagram that does not parse: anyone could flood it).
const DEFAULT_LOG_FILTER: &str = "info,webrtc=error,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_srtp=error,rtc_sctp=error,srt_protocol=error,srt_tokio=error";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .init();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Some(Command::CertsInit { dir }) => certs_init(&dir),
        Some(Command::CertsIssue {
            dir,
            node_id,
            ip,
            dns,
            valid_for,
            server_only,
        }) => {
            let options = IssueOptions {
                valid_for,
                kind: if server_only {
                    CertKind::Server
                } else {
                    CertKind::Node
                },
                dns_names: dns,
                ..IssueOptions::default()
            };
            certs_issue(&dir, &node_id, &ip, &options)
        }
        Some(Command::Token {
            key_file,
            kid,
            stream,
            action,
            ttl,
            backup,
        }) => token(&key_file, &kid, &stream, action, ttl, backup),
        None => {
            let mut cfg = cli.run.with_file(&matches)?;
            // Secrets come from the environment only, never from a flag.
            cfg.token_key_entries = std::env::var("STRATA_TOKEN_KEYS").ok().map(SecretString);
            tracing::info!(config = ?cfg, "starting");
            let listeners = strata_node::Listeners::bind(&cfg).await?;
            let reloads = reload_signal()?;
            strata_node::run_with_reload(cfg, listeners, shutdown_signal(), reloads).await
        }
    }
}

fn certs_init(dir: &Path) -> anyhow::Result<()> {
    let ca = DevCa::generate()?;
    ca.write(dir)
        .with_context(|| format!("writing the CA to {}", dir.display()))?;
    println!("cluster CA written to {}", dir.display());
    Ok(())
}

fn certs_issue(
    dir: &Path,
    node_id: &str,
    ips: &[std::net::IpAddr],
    options: &IssueOptions,
) -> anyhow::Result<()> {
    let ca = DevCa::load(dir).with_context(|| format!("loading the CA from {}", dir.display()))?;
    let creds: NodeCredentials = ca.issue_with(node_id, ips, options)?;
    creds.write(dir)?;
    let info = creds
        .chain
        .first()
        .and_then(|c| strata_common::cert::CertInfo::parse(c))
        .context("the new certificate does not parse")?;
    println!(
        "certificate of {node_id} written to {} (serial {}, sha256 {}, valid for {}d{})",
        dir.display(),
        info.serial,
        info.sha256,
        options.valid_for.as_secs() / 86_400,
        if options.kind == CertKind::Server {
            ", server only"
        } else {
            ""
        }
    );
    Ok(())
}

fn token(
    key_file: &Path,
    kid: &str,
    stream: &str,
    action: Action,
    ttl: std::time::Duration,
    backup: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !backup || action == Action::Publish,
        "--backup goes with --action publish"
    );
    let mut keys = TokenKeys::new();
    keys.add_path(key_file)?;
    let now = unix_now();
    let claims = Claims {
        sub: stream.to_owned(),
        act: action,
        exp: now + ttl.as_secs().max(1),
        nbf: None,
        iat: Some(now),
        backup,
    };
    anyhow::ensure!(
        strata_node::auth::valid_subject(stream),
        "--stream must be a stream name, * or a prefix ending in - . _ or ~ then * \
         (cam-1-*, not cam-1*, which would cover cam-10)"
    );
    let token = keys
        .mint(kid, &claims)
        .with_context(|| format!("no key {kid:?} in {}", key_file.display()))?;
    println!("{token}");
    Ok(())
}

/// SIGHUP: read the token keys and the node's certificate files again. The handler is installed before the
/// node starts, so a SIGHUP never kills a running node.
fn reload_signal() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received; reloading token keys and certificates");
            // Several signals while a reload is pending fold into it.
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}

/// SIGTERM or Ctrl-C: drain and stop.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("signal received; draining");
}
