//! The node's token keys: loaded at start, read again on SIGHUP.

use anyhow::Context;
use tracing::{info, warn};

use crate::auth::{Auth, AuthMode, KeyError, KeySource};
use crate::config::NodeConfig;

/// The token policy of the configuration: keys from `--token-keys` and
/// `STRATA_TOKEN_KEYS`; `required` without keys is a configuration error.
pub fn load_auth(cfg: &NodeConfig) -> anyhow::Result<Auth> {
    let source = KeySource {
        path: cfg.token_keys.clone(),
        entries: cfg.token_key_entries.clone(),
    };
    let auth = match Auth::new(cfg.auth, source, cfg.token_max_ttl.as_secs()) {
        Err(KeyError::NoKeys) => anyhow::bail!(
            "--auth required needs token keys (--token-keys FILE|DIR or STRATA_TOKEN_KEYS); \
             pass --auth open only for local development"
        ),
        r => r.context("loading token keys")?,
    };
    match cfg.auth {
        AuthMode::Required => {
            info!(kids = ?auth.kids(), max_ttl = ?cfg.token_max_ttl, "publish and play need a token");
        }
        AuthMode::Open => {
            warn!(
                "!!! --auth open: ANYONE CAN PUBLISH AND PLAY ANY STREAM ON THIS NODE. \
                 Local development only; use --auth required with --token-keys in production !!!"
            );
            if !auth.kids().is_empty() {
                warn!("token keys are configured but ignored with --auth open");
            }
        }
    }
    Ok(auth)
}

/// Reads the token keys again, as on SIGHUP; on failure the node keeps the
/// keys it had (and says why). What the signal handler of `strata-node` runs.
pub fn reload_token_keys(auth: &Auth) -> Result<Vec<String>, KeyError> {
    match auth.reload() {
        Ok(kids) => {
            info!(?kids, "token keys reloaded");
            Ok(kids)
        }
        Err(e) => {
            warn!(error = %e, "token keys NOT reloaded; the previous keys stay in use");
            Err(e)
        }
    }
}
