//! Cluster certificates: a dev CA and node certificates signed by it.
//!
//! Layout of a certificate directory:
//!
//! ```text
//! ca.pem          the cluster CA certificate (every node trusts it); during a CA rotation,
//!                 several: the relay trusts every certificate in the file
//! ca.key          the CA's private key (only needed to issue node certificates)
//! {node}.pem      a node's certificate; SAN = node id (DNS name), further DNS names and
//!                 its IPs; valid for 30 days by default (renewed by issuing again)
//! {node}.key      the node's private key
//! ```
//!
//! A production cluster would use its own PKI; this is what the harness and
//! the local cluster launcher use, and it produces the same shapes.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// File name of the CA certificate.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA key.
pub const CA_KEY_FILE: &str = "ca.key";

/// Why certificates could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Key or certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file does not hold the expected PEM object.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A node id is not usable as a DNS name and file name.
    #[error("invalid node id {0:?}: use letters, digits, '-' and '.'")]
    InvalidNodeId(String),
}

/// The credentials a node presents and trusts.
#[derive(Debug)]
pub struct NodeCredentials {
    /// The node's id, also the DNS name in its certificate.
    pub node_id: String,
    /// The cluster CA certificate peers must chain to.
    pub ca: CertificateDer<'static>,
    /// Further CAs trusted beside `ca`: the other certificates of `ca.pem`, so that a
    /// cluster can move to a new CA without a cut-over (trust both, re-issue, drop the old).
    pub extra_cas: Vec<CertificateDer<'static>>,
    /// The node's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for NodeCredentials {
    fn clone(&self) -> Self {
        NodeCredentials {
            node_id: self.node_id.clone(),
            ca: self.ca.clone(),
            extra_cas: self.extra_cas.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn check_node_id(node_id: &str) -> Result<(), CertError> {
    let ok = !node_id.is_empty()
        && node_id.len() <= 253
        && !node_id.starts_with(['.', '-'])
        && node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(CertError::InvalidNodeId(node_id.to_owned()))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    use std::io::Write;
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = opts.open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)
}

fn pem_error(path: &Path, e: impl std::fmt::Display) -> CertError {
    CertError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// A cluster CA able to issue node certificates.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    cert_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Strata cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            cert_pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Load `ca.pem` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem =
            String::from_utf8(read(&cert_path)?).map_err(|e| pem_error(&cert_path, e))?;
        let key_pem = String::from_utf8(read(&key_path)?).map_err(|e| pem_error(&key_path, e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| pem_error(&key_path, e))?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| pem_error(&cert_path, e))?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| pem_error(&cert_path, e))?;
        Ok(DevCa {
            issuer,
            cert,
            cert_pem,
        })
    }

    /// Write `ca.pem` and `ca.key` (mode 0600) into `dir`, creating it.
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
            path: dir.to_owned(),
            source,
        })?;
        write(&dir.join(CA_CERT_FILE), &self.cert_pem, false)?;
        write(
            &dir.join(CA_KEY_FILE),
            &self.issuer.key().serialize_pem(),
            true,
        )
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Issue a node certificate for `node_id` (its DNS SAN) and `ips` (IP SANs),
    /// valid for server and client authentication for [`DEFAULT_VALIDITY`].
    pub fn issue(&self, node_id: &str, ips: &[IpAddr]) -> Result<NodeCredentials, CertError> {
        self.issue_with(node_id, ips, &IssueOptions::default())
    }

    /// Issue a certificate for `name` (its first DNS SAN), `ips` (IP SANs)
    /// and the further DNS names of `options`, as `options` say.
    pub fn issue_with(
        &self,
        name: &str,
        ips: &[IpAddr],
        options: &IssueOptions,
    ) -> Result<NodeCredentials, CertError> {
        check_node_id(name)?;
        for extra in &options.dns_names {
            check_node_id(extra)?;
        }
        let key = KeyPair::generate()?;
        let mut names = vec![name.to_owned()];
        names.extend(options.dns_names.iter().cloned());
        let mut params = CertificateParams::new(names)?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match options.kind {
            CertKind::Node => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            // Without clientAuth, TLS verifiers (the relay's, the control
            // plane's) refuse the certificate as a client credential: a
            // stolen control-plane key does not make its holder a node.
            CertKind::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        };
        params.not_before = options.valid_from.into();
        params.not_after = (options.valid_from + options.valid_for).into();
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(NodeCredentials {
            node_id: name.to_owned(),
            ca: self.cert.clone(),
            extra_cas: Vec::new(),
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }
}

/// How long a certificate from [`DevCa::issue`] (and `strata-node
/// certs-issue` without `--valid-for`) is valid: short enough that a stolen
/// key stops working by itself within a month, long enough that a renewal
/// every week or two leaves plenty of slack.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertKind {
    /// A node: relay server and client, control-plane client
    /// (extended key usage serverAuth and clientAuth).
    #[default]
    Node,
    /// A server only (the control plane): serverAuth, no clientAuth.
    Server,
}

/// Settings of [`DevCa::issue_with`].
#[derive(Debug, Clone)]
pub struct IssueOptions {
    /// Start of validity. The default is five minutes ago, so that a peer
    /// whose clock is a little behind accepts a certificate issued just now.
    pub valid_from: SystemTime,
    /// Length of validity from `valid_from`.
    pub valid_for: Duration,
    /// Node or server-only certificate.
    pub kind: CertKind,
    /// DNS names beside the first (e.g. the host name in a node's public URL).
    pub dns_names: Vec<String>,
}

impl Default for IssueOptions {
    fn default() -> Self {
        let skew = Duration::from_secs(300);
        IssueOptions {
            valid_from: SystemTime::now()
                .checked_sub(skew)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            valid_for: DEFAULT_VALIDITY + skew,
            kind: CertKind::Node,
            dns_names: Vec::new(),
        }
    }
}

impl NodeCredentials {
    /// Write `{node_id}.pem` and `{node_id}.key` (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        check_node_id(&self.node_id)?;
        std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let chain: String = self
            .chain
            .iter()
            .map(|c| to_pem("CERTIFICATE", c))
            .collect();
        write(&dir.join(format!("{}.pem", self.node_id)), &chain, false)?;
        let key = to_pem("PRIVATE KEY", self.key.secret_der());
        write(&dir.join(format!("{}.key", self.node_id)), &key, true)
    }

    /// Load `ca.pem`, `{node_id}.pem` and `{node_id}.key` from `dir`.
    pub fn load(dir: &Path, node_id: &str) -> Result<Self, CertError> {
        check_node_id(node_id)?;
        let ca_path = dir.join(CA_CERT_FILE);
        let mut cas = CertificateDer::pem_slice_iter(&read(&ca_path)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(&ca_path, e))?
            .into_iter();
        let ca = cas
            .next()
            .ok_or_else(|| pem_error(&ca_path, "no certificate"))?;
        let extra_cas = cas.collect();
        let cert_path = dir.join(format!("{node_id}.pem"));
        let chain = CertificateDer::pem_slice_iter(&read(&cert_path)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(&cert_path, e))?;
        if chain.is_empty() {
            return Err(pem_error(&cert_path, "no certificate"));
        }
        let key_path = dir.join(format!("{node_id}.key"));
        let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?)
            .map_err(|e| pem_error(&key_path, e))?;
        Ok(NodeCredentials {
            node_id: node_id.to_owned(),
            ca,
            extra_cas,
            chain,
            key,
        })
    }
}

fn to_pem(label: &str, der: &[u8]) -> String {
    pem_rfc7468(label, der)
}

/// Minimal PEM (RFC 7468) encoder: base64 in 64-column lines.
fn pem_rfc7468(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The node id (first DNS name in the subject alternative names) of a certificate.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_and_node_certificates_round_trip_through_files() {
        let dir = std::env::temp_dir().join(format!("strata-certs-{}", std::process::id()));
        let ca = DevCa::generate().unwrap();
        ca.write(&dir).unwrap();
        let loaded = DevCa::load(&dir).unwrap();
        assert_eq!(loaded.certificate(), ca.certificate());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let node = loaded.issue("node-a.eu", &[ip]).unwrap();
        node.write(&dir).unwrap();
        let back = NodeCredentials::load(&dir, "node-a.eu").unwrap();
        assert_eq!(back.chain, node.chain);
        assert_eq!(back.key.secret_der(), node.key.secret_der());
        assert_eq!(back.ca, *ca.certificate());
        assert_eq!(node_id_of(&back.chain[0]).as_deref(), Some("node-a.eu"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("node-a.eu.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn node_ids_are_checked() {
        let ca = DevCa::generate().unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(
                matches!(ca.issue(bad, &[]), Err(CertError::InvalidNodeId(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn pem_encoder_matches_known_vector() {
        assert_eq!(
            pem_rfc7468("X", b"foobar!"),
            "-----BEGIN X-----\nZm9vYmFyIQ==\n-----END X-----\n"
        );
    }
}
