//! The node's certificates: the relay's TLS at start, and their renewal
//! while the node runs (SIGHUP).

use anyhow::Context;
use strata_relay::{LiveTls, RelayTls, certs::NodeCredentials};
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::control::ControlClient;

/// The relay's TLS; with certificates, also the handle to renew them and to
/// set the revocation list while the node runs.
pub(super) fn relay_tls(cfg: &NodeConfig) -> anyhow::Result<(RelayTls, Option<LiveTls>)> {
    if cfg.insecure_relay {
        warn!("relay runs WITHOUT authentication (--insecure-relay): experiments only");
        return Ok((
            RelayTls::Insecure {
                node_id: cfg.id.clone(),
            },
            None,
        ));
    }
    let live = LiveTls::new(&load_credentials(cfg)?)?;
    log_certificate(&live, "certificate loaded");
    Ok((RelayTls::Live(live.clone()), Some(live)))
}

fn load_credentials(cfg: &NodeConfig) -> anyhow::Result<NodeCredentials> {
    let dir = cfg.certs_dir.as_ref().context(
        "--certs-dir is required (or --insecure-relay): create one with `strata-node certs-init` and `certs-issue`",
    )?;
    NodeCredentials::load(dir, &cfg.id)
        .with_context(|| format!("loading certificates of {} from {}", cfg.id, dir.display()))
}

/// Seconds from now until `unix`.
fn seconds_until(unix: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    unix - now
}

fn log_certificate(live: &LiveTls, what: &str) {
    let left = seconds_until(live.not_after());
    if left < 7 * 86_400 {
        warn!(
            not_after = live.not_after(),
            hours_left = left / 3600,
            "{what}; it expires soon: renew it (strata-node certs-issue, then SIGHUP)"
        );
    } else {
        info!(
            not_after = live.not_after(),
            days_left = left / 86_400,
            "{what}"
        );
    }
}

/// Reads the node's certificate files again, as on SIGHUP, for the relay
/// (next handshakes) and the control-plane client (new connections). On
/// failure the node keeps the certificate it had and says why: a
/// half-installed renewal must not cut the node off.
pub fn reload_certificates(
    cfg: &NodeConfig,
    live: &LiveTls,
    control: &ControlClient,
) -> anyhow::Result<()> {
    let result = (|| {
        let creds = load_credentials(cfg)?;
        let control_tls =
            crate::control_tls::client_tls(&cfg.control_plane, cfg.certs_dir.as_deref(), &cfg.id)?;
        live.replace(&creds)?;
        control.set_tls(control_tls)?;
        anyhow::Ok(())
    })();
    match &result {
        Ok(()) => log_certificate(live, "certificate reloaded"),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "certificate NOT reloaded; the previous one stays in use");
        }
    }
    result
}
