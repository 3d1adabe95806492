//! TLS for the relay: mutual TLS against the cluster CA, or an explicit
//! insecure mode for experiments.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::certs::{NodeCredentials, node_id_of};
use crate::config::RelayConfig;
use crate::error::RelayError;
use crate::live::LiveTls;

/// The relay's ALPN protocol id; connections negotiating anything else are closed.
pub const ALPN: &[u8] = b"strata-relay/1";

/// How a node authenticates itself and its peers.
#[derive(Debug, Clone)]
pub enum RelayTls {
    /// Present `chain` and require every peer to present a certificate signed
    /// by the cluster CA (both directions).
    Mutual(NodeCredentials),
    /// Like `Mutual`, with credentials and a revocation list the node can
    /// change while the relay runs (renewal, revocation).
    Live(LiveTls),
    /// Self-signed server certificate, no client certificate, no verification
    /// of anything. Only for experiments; logs a warning when used.
    Insecure {
        /// Name put in the self-signed certificate.
        node_id: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> RelayError {
    RelayError::Tls(e.to_string())
}

/// Mutual TLS always runs on a [`LiveTls`]; a fixed `Mutual` is one nobody changes.
fn live(tls: &RelayTls) -> Result<Option<LiveTls>, RelayError> {
    match tls {
        RelayTls::Mutual(creds) => LiveTls::new(creds).map(Some),
        RelayTls::Live(live) => Ok(Some(live.clone())),
        RelayTls::Insecure { .. } => Ok(None),
    }
}

/// The rustls + quinn server side.
fn server_crypto(tls: &RelayTls) -> Result<Arc<QuicServerConfig>, RelayError> {
    let live = live(tls)?;
    let provider = live.as_ref().map_or_else(provider, LiveTls::provider);
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?;
    let mut config = match (tls, live) {
        (_, Some(live)) => builder
            .with_client_cert_verifier(live.client_verifier())
            .with_cert_resolver(live.server_resolver()),
        (RelayTls::Insecure { node_id }, None) => {
            tracing::warn!(
                node_id,
                "relay server in INSECURE mode: peers are not authenticated"
            );
            let certified =
                rcgen::generate_simple_self_signed(vec![node_id.clone()]).map_err(tls_err)?;
            let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
            builder
                .with_no_client_auth()
                .with_single_cert(vec![certified.cert.der().clone()], key)
                .map_err(tls_err)?
        }
        (_, None) => return Err(tls_err("mutual TLS without credentials")),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(
        QuicServerConfig::try_from(config).map_err(tls_err)?,
    ))
}

/// The rustls + quinn client side.
fn client_crypto(tls: &RelayTls) -> Result<Arc<QuicClientConfig>, RelayError> {
    let live = live(tls)?;
    let provider = live.as_ref().map_or_else(provider, LiveTls::provider);
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?;
    let mut config = match (tls, live) {
        (_, Some(live)) => builder
            .dangerous()
            .with_custom_certificate_verifier(live.server_verifier())
            .with_client_cert_resolver(live.client_resolver()),
        (RelayTls::Insecure { node_id }, None) => {
            tracing::warn!(
                node_id,
                "relay client in INSECURE mode: upstreams are not verified"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        }
        (_, None) => return Err(tls_err("mutual TLS without credentials")),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(
        QuicClientConfig::try_from(config).map_err(tls_err)?,
    ))
}

/// The QUIC server configuration a [`RelayServer`](crate::RelayServer) uses:
/// TLS per `tls`, ALPN [`ALPN`], transport per `cfg`. Public for tools that
/// measure raw quinn beside the relay under the same settings.
pub fn quic_server_config(
    tls: &RelayTls,
    cfg: &RelayConfig,
) -> Result<quinn::ServerConfig, RelayError> {
    let mut server = quinn::ServerConfig::with_crypto(server_crypto(tls)?);
    server.transport_config(cfg.transport(true)?);
    Ok(server)
}

/// The QUIC client configuration a [`RelayClient`](crate::RelayClient) uses
/// (see [`quic_server_config`]).
pub fn quic_client_config(
    tls: &RelayTls,
    cfg: &RelayConfig,
) -> Result<quinn::ClientConfig, RelayError> {
    let mut client = quinn::ClientConfig::new(client_crypto(tls)?);
    client.transport_config(cfg.transport(false)?);
    Ok(client)
}

/// The node id in the peer's certificate, if it presented one.
pub(crate) fn peer_node_id(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    node_id_of(chain.first()?)
}

/// True when the connection negotiated [`ALPN`].
pub(crate) fn negotiated_alpn(conn: &quinn::Connection) -> bool {
    conn.handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol)
        .is_some_and(|p| p == ALPN)
}

/// Accepts any server certificate (signatures are still checked, so the
/// handshake itself is sound). Insecure mode only.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
