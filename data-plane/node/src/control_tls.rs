//! TLS of the node's control-plane client: the cluster CA as the only root,
//! the node's own certificate as its identity (the control plane takes the
//! certificate's DNS name as the node id and lets a node act only as itself).
//!
//! Used for `https://` control-plane endpoints. The files are the ones the
//! relay uses (`--certs-dir`: `ca.pem`, `<id>.pem`, `<id>.key`).

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Why the TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ControlTlsError {
    /// An `https://` endpoint is configured but no `--certs-dir`.
    #[error(
        "https:// control-plane endpoints need --certs-dir (the cluster CA and this node's certificate)"
    )]
    NoCertificates,
    /// A certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The client TLS settings for `endpoints`: `None` when none is `https://`.
pub fn client_tls(
    endpoints: &[String],
    certs_dir: Option<&Path>,
    node_id: &str,
) -> Result<Option<ClientTlsConfig>, ControlTlsError> {
    if !endpoints.iter().any(|e| e.starts_with("https://")) {
        return Ok(None);
    }
    let dir = certs_dir.ok_or(ControlTlsError::NoCertificates)?;
    let read = |name: String| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| ControlTlsError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let ca = read("ca.pem".to_owned())?;
    let cert = read(format!("{node_id}.pem"))?;
    let key = read(format!("{node_id}.key"))?;
    Ok(Some(
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_endpoints_need_nothing() {
        let e = ["http://127.0.0.1:7400".to_owned()];
        assert!(client_tls(&e, None, "n").expect("plaintext").is_none());
        let e = ["https://cp:7400".to_owned()];
        assert!(matches!(
            client_tls(&e, None, "n"),
            Err(ControlTlsError::NoCertificates)
        ));
        assert!(matches!(
            client_tls(&e, Some(Path::new("/nonexistent")), "n"),
            Err(ControlTlsError::Io { .. })
        ));
    }
}
