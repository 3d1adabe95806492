//! What a cluster certificate says about its holder: the node id, the hosts it
//! may advertise, how it is named for revocation (serial and SHA-256
//! fingerprint), until when it is valid, and whether it may act as a client.
//!
//! The control plane reads it from a node's client certificate (Register,
//! revocation checks) and the relay from its peers' certificates; both must
//! read a certificate the same way, hence one parser.

use std::net::IpAddr;

use ring::digest;
use x509_parser::extensions::GeneralName;

/// The facts of one certificate that Strata's checks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The DNS subject alternative names, in order; the first is the node id.
    pub dns_names: Vec<String>,
    /// The IP subject alternative names.
    pub ips: Vec<IpAddr>,
    /// The serial number: lowercase hex without leading zeros (as
    /// `openssl x509 -serial` prints it, lowercased).
    pub serial: String,
    /// SHA-256 of the DER certificate, lowercase hex without separators.
    pub sha256: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Whether the extended key usage names clientAuth. A certificate without
    /// it (the control plane's server certificate) is no node credential,
    /// whatever CA signed it.
    pub client_auth: bool,
}

impl CertInfo {
    /// Parses a DER certificate; `None` when it is not one.
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut dns_names = Vec::new();
        let mut ips = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            ips.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            ips.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        // An absent extension, or one that does not list clientAuth, makes no
        // client: nodes' certificates always name it explicitly.
        let client_auth =
            matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.client_auth);
        Some(CertInfo {
            dns_names,
            ips,
            serial: normalize_serial(&hex(cert.raw_serial()))?,
            sha256: sha256_hex(der),
            not_after: cert.validity().not_after.timestamp(),
            client_auth,
        })
    }

    /// The node id: the first DNS name.
    pub fn node_id(&self) -> Option<&str> {
        self.dns_names.first().map(String::as_str)
    }

    /// Whether `host` (an IP address, or a DNS name) is among the subject
    /// alternative names. DNS names compare without regard to case; a
    /// `*.example.net` entry covers exactly one leftmost label.
    pub fn covers_host(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.ips.contains(&ip);
        }
        let host = host.trim_end_matches('.');
        self.dns_names.iter().any(|name| {
            if name.eq_ignore_ascii_case(host) {
                return true;
            }
            match (name.strip_prefix("*."), host.split_once('.')) {
                (Some(suffix), Some((label, rest))) => {
                    !label.is_empty() && rest.eq_ignore_ascii_case(suffix)
                }
                _ => false,
            }
        })
    }
}

/// SHA-256 of `der`, lowercase hex.
pub fn sha256_hex(der: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, der).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A serial as operators type it (`1A:2B`, `0x1a2b`, `001a2b`) in the form
/// [`CertInfo::serial`] uses; `None` for anything but 1–40 hex digits.
pub fn normalize_serial(s: &str) -> Option<String> {
    let digits = normalize_hex(s.trim().trim_start_matches("0x"), 40)?;
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed }.to_owned())
}

/// A SHA-256 fingerprint as operators type it (`AB:CD:…` from
/// `openssl x509 -fingerprint -sha256`, or plain hex) in the form
/// [`CertInfo::sha256`] uses; `None` unless it is 64 hex digits.
pub fn normalize_sha256(s: &str) -> Option<String> {
    normalize_hex(s.trim(), 64).filter(|h| h.len() == 64)
}

fn normalize_hex(s: &str, max: usize) -> Option<String> {
    let digits: String = s.chars().filter(|c| *c != ':').collect();
    let ok =
        !digits.is_empty() && digits.len() <= max && digits.chars().all(|c| c.is_ascii_hexdigit());
    ok.then(|| digits.to_ascii_lowercase())
}

/// The host part of `host:port` (IPv6 in brackets) or of a URL's authority
/// (`https://host:port/path`); `None` when there is none.
pub fn host_of(addr_or_url: &str) -> Option<&str> {
    let rest = match addr_or_url.split_once("://") {
        Some((_, rest)) => rest,
        None => addr_or_url,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']')?.0
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses_and_urls() {
        assert_eq!(host_of("10.0.0.5:7700"), Some("10.0.0.5"));
        assert_eq!(host_of("[::1]:7700"), Some("::1"));
        assert_eq!(host_of("eu-1.example.net:7700"), Some("eu-1.example.net"));
        assert_eq!(
            host_of("https://eu-1.example.net"),
            Some("eu-1.example.net")
        );
        assert_eq!(host_of("http://127.0.0.1:8080/x?y"), Some("127.0.0.1"));
        assert_eq!(host_of("https://u:p@[::1]:443/"), Some("::1"));
        assert_eq!(host_of("https://:443"), None);
        assert_eq!(host_of(""), None);
    }

    #[test]
    fn identifiers_normalize() {
        assert_eq!(normalize_serial("00:1A:2b").as_deref(), Some("1a2b"));
        assert_eq!(normalize_serial("0x1a2b").as_deref(), Some("1a2b"));
        assert_eq!(normalize_serial("00").as_deref(), Some("0"));
        assert_eq!(normalize_serial("xyz"), None);
        assert_eq!(normalize_serial(""), None);
        let fp = "AB:".repeat(31) + "AB";
        assert_eq!(normalize_sha256(&fp), Some("ab".repeat(32)));
        assert_eq!(normalize_sha256("abcd"), None);
    }

    #[test]
    fn wildcards_cover_one_label() {
        let info = CertInfo {
            dns_names: vec!["eu-1".into(), "*.example.net".into()],
            ips: vec!["10.0.0.5".parse().expect("ip")],
            serial: "1".into(),
            sha256: String::new(),
            not_after: 0,
            client_auth: true,
        };
        assert!(info.covers_host("eu-1"));
        assert!(info.covers_host("EU-1"));
        assert!(info.covers_host("a.example.net"));
        assert!(!info.covers_host("a.b.example.net"));
        assert!(!info.covers_host("example.net"));
        assert!(info.covers_host("10.0.0.5"));
        assert!(!info.covers_host("10.0.0.6"));
        assert!(!info.covers_host("attacker.example.org"));
    }
}
