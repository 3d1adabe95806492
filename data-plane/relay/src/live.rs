//! The relay's credentials and revocation list, replaceable while it runs.
//!
//! Node certificates are short-lived, so a node must take a renewed
//! certificate without a restart (which would drain it), and must stop
//! trusting a peer whose certificate an operator revoked as soon as it hears
//! of it. rustls asks a certificate resolver for the node's own certificate and
//! a verifier for the peer's at every handshake; both read the current state
//! here, so a [`LiveTls::replace`] or [`LiveTls::set_revoked`] applies from
//! the next handshake on. Connections already open keep the certificate they
//! were made with.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use strata_common::cert::CertInfo;

use crate::certs::NodeCredentials;
use crate::error::RelayError;

/// Certificates an operator revoked, by serial and by SHA-256 fingerprint
/// (both in [`CertInfo`]'s normalized form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Revoked serial numbers.
    pub serials: HashSet<String>,
    /// Revoked SHA-256 fingerprints.
    pub sha256: HashSet<String>,
}

impl Revocations {
    /// Whether the certificate is revoked.
    pub fn covers(&self, cert: &CertInfo) -> bool {
        self.serials.contains(&cert.serial) || self.sha256.contains(&cert.sha256)
    }
}

/// The node's current credentials and the verifiers built from its CAs.
struct Current {
    node_id: String,
    certified: Arc<CertifiedKey>,
    not_after: i64,
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
}

struct Inner {
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Current>>,
    revoked: RwLock<Arc<Revocations>>,
}

/// A cheap-to-clone handle on the relay's TLS state (see the module docs).
#[derive(Clone)]
pub struct LiveTls {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LiveTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current();
        f.debug_struct("LiveTls")
            .field("node_id", &current.node_id)
            .field("not_after", &current.not_after)
            .finish_non_exhaustive()
    }
}

fn tls_err(e: impl std::fmt::Display) -> RelayError {
    RelayError::Tls(e.to_string())
}

fn build(provider: &Arc<CryptoProvider>, creds: &NodeCredentials) -> Result<Current, RelayError> {
    let mut roots = RootCertStore::empty();
    for ca in std::iter::once(&creds.ca).chain(&creds.extra_cas) {
        roots.add(ca.clone()).map_err(tls_err)?;
    }
    let roots = Arc::new(roots);
    // The WebPKI verifiers check the chain, the validity period and the
    // extended key usage (clientAuth for clients, serverAuth for servers).
    let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(tls_err)?;
    let servers = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(tls_err)?;
    let leaf = creds
        .chain
        .first()
        .ok_or_else(|| RelayError::Tls("empty certificate chain".into()))?;
    let info = CertInfo::parse(leaf)
        .ok_or_else(|| RelayError::Tls("the node certificate does not parse".into()))?;
    let key = provider
        .key_provider
        .load_private_key(creds.key.clone_key())
        .map_err(tls_err)?;
    let certified = CertifiedKey::new(creds.chain.clone(), key);
    // A key that does not belong to the certificate would fail every handshake.
    certified.keys_match().map_err(tls_err)?;
    Ok(Current {
        node_id: creds.node_id.clone(),
        certified: Arc::new(certified),
        not_after: info.not_after,
        clients,
        servers,
    })
}

impl LiveTls {
    /// Starts from `creds`.
    pub fn new(creds: &NodeCredentials) -> Result<Self, RelayError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = build(&provider, creds)?;
        Ok(LiveTls {
            inner: Arc::new(Inner {
                provider,
                current: RwLock::new(Arc::new(current)),
                revoked: RwLock::default(),
            }),
        })
    }

    fn current(&self) -> Arc<Current> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn provider(&self) -> Arc<CryptoProvider> {
        self.inner.provider.clone()
    }

    /// Uses `creds` (a renewed certificate, or new CAs) from the next
    /// handshake on. Refused, keeping the current ones, when they do not load
    /// or name another node.
    pub fn replace(&self, creds: &NodeCredentials) -> Result<(), RelayError> {
        let next = build(&self.inner.provider, creds)?;
        let now = self.current();
        if next.node_id != now.node_id {
            return Err(RelayError::Tls(format!(
                "the new certificate is for {:?}, this node is {:?}",
                next.node_id, now.node_id
            )));
        }
        *self
            .inner
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// End of validity of the node's current certificate, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.current().not_after
    }

    /// Refuses peers presenting one of these certificates from the next
    /// handshake on (replaces the previous list).
    pub fn set_revoked(&self, revoked: Revocations) {
        *self
            .inner
            .revoked
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(revoked);
    }

    /// The revocation list in use.
    pub fn revoked(&self) -> Arc<Revocations> {
        self.inner
            .revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn check_revoked(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let revoked = self.revoked();
        if revoked.serials.is_empty() && revoked.sha256.is_empty() {
            return Ok(());
        }
        match CertInfo::parse(end_entity) {
            Some(info) if revoked.covers(&info) => {
                tracing::warn!(
                    peer = info.node_id().unwrap_or("?"),
                    serial = %info.serial,
                    "refused a relay peer presenting a revoked certificate"
                );
                Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
            }
            Some(_) => Ok(()),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            )),
        }
    }

    /// The algorithms handshake signatures are checked with, in both directions: the
    /// provider's, which the WebPKI verifiers in `Current` were built with (their own
    /// `verify_tls1x_signature` is `rustls::crypto::verify_tls1x_signature` with these).
    fn signature_algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.inner.provider.signature_verification_algorithms
    }

    pub(crate) fn client_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(Verifier(self.clone()))
    }

    pub(crate) fn server_verifier(&self) -> Arc<dyn ServerCertVerifier> {
        Arc::new(Verifier(self.clone()))
    }

    pub(crate) fn server_resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Resolver(self.clone()))
    }

    pub(crate) fn client_resolver(&self) -> Arc<dyn ResolvesClientCert> {
        Arc::new(Resolver(self.clone()))
    }
}

/// Hands rustls the current certificate, on both sides.
#[derive(Debug)]
struct Resolver(LiveTls);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The handshake-signature checks, the same for both verifier traits (see
/// [`LiveTls::signature_algorithms`]).
macro_rules! signature_checks {
    () => {
        signature_checks!(verify_tls12_signature, verify_tls13_signature);

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_algorithms().supported_schemes()
        }
    };
    // Each trait method is the rustls::crypto function of the same name.
    ($($check:ident),*) => {
        $(
            fn $check(
                &self,
                message: &[u8],
                cert: &CertificateDer<'_>,
                dss: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, rustls::Error> {
                let algorithms = self.0.signature_algorithms();
                rustls::crypto::$check(message, cert, dss, algorithms)
            }
        )*
    };
}

/// Verifies peers with the current CAs (WebPKI), then the revocation list.
#[derive(Debug)]
struct Verifier(LiveTls);

impl ClientCertVerifier for Verifier {
    // No CA names are sent as hints: they are optional, and the node always
    // presents its one certificate anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified =
            self.0
                .current()
                .clients
                .verify_client_cert(end_entity, intermediates, now)?;
        self.0.check_revoked(end_entity)?;
        Ok(verified)
    }

    signature_checks!();
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.0.current().servers.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp,
            now,
        )?;
        self.0.check_revoked(end_entity)?;
        Ok(verified)
    }

    signature_checks!();
}
