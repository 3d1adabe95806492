//! Who is calling the control plane, and what they may do.
//!
//! - **Nodes** authenticate with mutual TLS: a client certificate of the
//!   cluster CA (`--client-ca`) whose DNS name is the node id, whose extended
//!   key usage names clientAuth (the control plane's own server certificate
//!   does not, so it is no node credential) and that no operator revoked
//!   (`revoked/` in etcd, read from the cache). A node may act
//!   only as itself (Register, KeepAlive, Publish, Unpublish, Resolve, Release,
//!   Drain, Undrain and Deregister of itself); it may also read what a node needs
//!   (ListNodes, GetNode, WatchStream, Place, Ping).
//! - **Operators** authenticate with `authorization: Bearer <token>`, tokens
//!   from `--operator-tokens` (`name=token` lines); they may call everything
//!   but the node-only RPCs (they may Drain, Undrain and Deregister any node).
//! - **Plaintext mode** (`--plaintext`, local development only) authenticates
//!   nobody and allows everything; it is logged loudly at start.
//!
//! The interceptor ([`Policy::intercept`]) decides the [`Caller`] once per
//! request and puts it in the request extensions; each RPC then checks it
//! with [`require`]. Tokens are compared as SHA-256 digests, over every
//! entry without an early exit, and never logged.

use std::path::Path;
use std::sync::Arc;

use ring::digest;
use strata_common::cert::CertInfo;
use tonic::{Request, Status};

use crate::cache::Cache;

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A node, by the DNS name of its client certificate.
    Node(String),
    /// An operator, by the name of its token.
    Operator(String),
    /// Plaintext development mode: anyone, allowed everything.
    Dev,
}

/// What an RPC needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// The node named in the request itself.
    NodeItself(&'a str),
    /// The node named in the request, or an operator.
    NodeItselfOrOperator(&'a str),
    /// Any node or operator.
    Member,
    /// An operator.
    Operator,
}

/// A failure to load operator tokens.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// The token file could not be read.
    #[error("reading operator tokens from {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not `name=token` with a token of at least 16 characters (the
    /// token is never shown).
    #[error("operator token line {0} is not name=token (token of 16 characters or more)")]
    BadLine(usize),
}

/// Operator tokens by name, kept as SHA-256 digests.
#[derive(Clone, Default)]
pub struct OperatorTokens {
    entries: Vec<(String, digest::Digest)>,
}

impl std::fmt::Debug for OperatorTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OperatorTokens")
            .field("names", &names)
            .finish()
    }
}

impl OperatorTokens {
    /// Parses `name=token` lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, AuthConfigError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = line
                .split_once('=')
                .map(|(n, t)| (n.trim(), t.trim()))
                .filter(|(n, t)| !n.is_empty() && t.len() >= 16)
                .ok_or(AuthConfigError::BadLine(i + 1))?;
            entries.push((
                name.to_owned(),
                digest::digest(&digest::SHA256, token.as_bytes()),
            ));
        }
        Ok(Self { entries })
    }

    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Self, AuthConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True without tokens.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The operator a token belongs to. Looks at every entry and compares
    /// digests without an early exit, so timing tells nothing about tokens.
    pub fn find(&self, token: &str) -> Option<&str> {
        let presented = digest::digest(&digest::SHA256, token.as_bytes());
        let mut found = None;
        for (name, d) in &self.entries {
            let diff = d
                .as_ref()
                .iter()
                .zip(presented.as_ref())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// How the server authenticates callers.
#[derive(Clone)]
pub struct Policy {
    /// Plaintext development mode: everyone is [`Caller::Dev`].
    pub plaintext: bool,
    /// Operator tokens.
    pub operators: OperatorTokens,
    /// Where revoked certificates are looked up (the replica's cache); `None`
    /// checks none (unit tests).
    pub revocations: Option<Cache>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("plaintext", &self.plaintext)
            .field("operators", &self.operators)
            .finish_non_exhaustive()
    }
}

/// The client certificate of a node's request, put in the request
/// extensions beside its [`Caller`] (Register checks its names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert(pub CertInfo);

/// Why a client certificate is not a node credential, if it is not.
pub fn node_credential_refusal(cert: &CertInfo) -> Option<Status> {
    if !cert.client_auth {
        return Some(Status::permission_denied(
            "this certificate is not a client credential (no clientAuth extended key usage): \
             a server certificate cannot act as a node",
        ));
    }
    None
}

impl Policy {
    /// Decides the caller of a request (before any RPC code runs): a valid
    /// operator token, else a client certificate, else UNAUTHENTICATED.
    pub fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        if self.plaintext {
            return Ok(Caller::Dev);
        }
        if let Some(v) = req.metadata().get("authorization") {
            let token = v
                .to_str()
                .ok()
                .and_then(|v| v.trim().strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| Status::unauthenticated("authorization must be Bearer <token>"))?;
            return match self.operators.find(token) {
                Some(name) => Ok(Caller::Operator(name.to_owned())),
                None => Err(Status::unauthenticated("invalid operator token")),
            };
        }
        let cert = req
            .peer_certs()
            .and_then(|chain| chain.first().and_then(|c| CertInfo::parse(c.as_ref())));
        match cert {
            Some(cert) => {
                if let Some(refusal) = node_credential_refusal(&cert) {
                    return Err(refusal);
                }
                let revoked = self
                    .revocations
                    .as_ref()
                    .is_some_and(|c| c.read().is_revoked(&cert.serial, &cert.sha256));
                if revoked {
                    return Err(Status::permission_denied(format!(
                        "certificate serial {} is revoked",
                        cert.serial
                    )));
                }
                match cert.node_id() {
                    Some(id) => Ok(Caller::Node(id.to_owned())),
                    None => Err(Status::unauthenticated(
                        "the client certificate names no node (no DNS name)",
                    )),
                }
            }
            None => Err(Status::unauthenticated(
                "a node client certificate of the cluster CA or an operator token is required",
            )),
        }
    }

    /// The client certificate of a request, if it presented one that parses.
    pub fn node_cert<T>(req: &Request<T>) -> Option<NodeCert> {
        req.peer_certs()
            .and_then(|chain| chain.first().and_then(|c| CertInfo::parse(c.as_ref())))
            .map(NodeCert)
    }

    /// A tonic interceptor putting the [`Caller`] in the request extensions.
    pub fn interceptor(
        self: Arc<Self>,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static
    {
        move |mut req: Request<()>| {
            let caller = self.caller(&req)?;
            if matches!(caller, Caller::Node(_))
                && let Some(cert) = Self::node_cert(&req)
            {
                req.extensions_mut().insert(cert);
            }
            req.extensions_mut().insert(caller);
            Ok(req)
        }
    }
}

/// Why an HTTP request for operator data (`/api/v1/topology`) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpDenied {
    /// No `Authorization: Bearer` header.
    #[error("an operator token is required (Authorization: Bearer <token>)")]
    Missing,
    /// A token that is not one of `--operator-tokens`, or another scheme.
    #[error("invalid operator token")]
    Invalid,
    /// TLS mode without `--operator-tokens`: nobody may read operator data.
    #[error("operator data over HTTP needs --operator-tokens on the control plane")]
    NotConfigured,
}

impl Policy {
    /// Decides who reads operator data over HTTP, from the request's
    /// `Authorization` header. With operator tokens configured, one of them is
    /// required, in plaintext mode too (the tokens say the operator wants the
    /// data closed). Without any: open in plaintext mode (the open dev
    /// cluster, where gRPC is open as well), closed in TLS mode.
    pub fn http_operator(&self, authorization: Option<&str>) -> Result<Caller, HttpDenied> {
        if self.operators.is_empty() {
            return match self.plaintext {
                true => Ok(Caller::Dev),
                false => Err(HttpDenied::NotConfigured),
            };
        }
        let value = authorization.ok_or(HttpDenied::Missing)?.trim();
        let token = match value.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err(HttpDenied::Invalid),
        };
        match self.operators.find(token) {
            Some(name) => Ok(Caller::Operator(name.to_owned())),
            None => Err(HttpDenied::Invalid),
        }
    }
}

/// Whether `caller` satisfies `need` (pure; see [`require`]).
pub fn allows(caller: &Caller, need: Need<'_>) -> Result<(), Status> {
    let denied = |why: String| Err(Status::permission_denied(why));
    match (caller, need) {
        (Caller::Dev, _) => Ok(()),
        (Caller::Node(me), Need::NodeItself(id) | Need::NodeItselfOrOperator(id)) => {
            if me == id {
                Ok(())
            } else {
                denied(format!("node {me:?} may act only as itself, not as {id:?}"))
            }
        }
        (Caller::Operator(_), Need::NodeItself(_)) => {
            denied("only the node itself may call this".to_owned())
        }
        (Caller::Operator(_), _) => Ok(()),
        (Caller::Node(_), Need::Member) => Ok(()),
        (Caller::Node(me), Need::Operator) => denied(format!("node {me:?} is not an operator")),
    }
}

/// Checks the caller the interceptor found against what the RPC needs. A
/// request that did not pass the interceptor (no caller) is refused.
pub fn require<T>(req: &Request<T>, need: Need<'_>) -> Result<(), Status> {
    match req.extensions().get::<Caller>() {
        Some(caller) => allows(caller, need),
        None => Err(Status::unauthenticated("no authenticated caller")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_act_only_as_themselves() {
        let n = Caller::Node("eu-1".into());
        assert!(allows(&n, Need::NodeItself("eu-1")).is_ok());
        assert!(allows(&n, Need::NodeItself("eu-2")).is_err());
        assert!(allows(&n, Need::NodeItselfOrOperator("eu-2")).is_err());
        assert!(allows(&n, Need::Member).is_ok());
        assert!(allows(&n, Need::Operator).is_err());
        let o = Caller::Operator("alice".into());
        assert!(allows(&o, Need::NodeItself("eu-1")).is_err());
        assert!(allows(&o, Need::NodeItselfOrOperator("eu-1")).is_ok());
        assert!(allows(&o, Need::Operator).is_ok());
        assert!(allows(&Caller::Dev, Need::NodeItself("x")).is_ok());
    }

    #[test]
    fn operator_tokens() {
        let t =
            OperatorTokens::parse("# ops\nalice=0123456789abcdef\n\nbob = fedcba9876543210xyz\n")
                .expect("parse");
        assert_eq!(t.len(), 2);
        assert_eq!(t.find("0123456789abcdef"), Some("alice"));
        assert_eq!(t.find("fedcba9876543210xyz"), Some("bob"));
        assert_eq!(t.find("0123456789abcdeF"), None);
        assert_eq!(t.find(""), None);
        assert!(!format!("{t:?}").contains("0123"));
        assert!(matches!(
            OperatorTokens::parse("alice=short"),
            Err(AuthConfigError::BadLine(1))
        ));
        let e = OperatorTokens::parse("x\nnoequals-secret-secret").expect_err("bad");
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn requests_without_credentials_are_refused() {
        let p = Policy {
            plaintext: false,
            operators: OperatorTokens::parse("alice=0123456789abcdef").expect("parse"),
            revocations: None,
        };
        let req = Request::new(());
        assert_eq!(
            p.caller(&req).expect_err("anonymous").code(),
            tonic::Code::Unauthenticated
        );
        let mut req = Request::new(());
        req.metadata_mut().insert(
            "authorization",
            "Bearer 0123456789abcdef".parse().expect("ascii"),
        );
        assert_eq!(
            p.caller(&req).expect("operator"),
            Caller::Operator("alice".into())
        );
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer nope".parse().expect("ascii"));
        assert!(p.caller(&req).is_err());
        // No caller in the extensions: refused.
        assert!(require(&Request::new(()), Need::Member).is_err());
    }

    #[test]
    fn http_operator_data_needs_a_token_when_tokens_exist() {
        let tokens = || OperatorTokens::parse("alice=0123456789abcdef").expect("parse");
        for plaintext in [false, true] {
            let p = Policy {
                plaintext,
                operators: tokens(),
                revocations: None,
            };
            assert_eq!(p.http_operator(None), Err(HttpDenied::Missing));
            assert_eq!(
                p.http_operator(Some("Bearer nope")),
                Err(HttpDenied::Invalid)
            );
            assert_eq!(
                p.http_operator(Some("Basic 0123456789abcdef")),
                Err(HttpDenied::Invalid)
            );
            assert_eq!(p.http_operator(Some("Bearer")), Err(HttpDenied::Invalid));
            assert_eq!(
                p.http_operator(Some("bearer  0123456789abcdef ")),
                Ok(Caller::Operator("alice".into()))
            );
        }
        // Without tokens: the open dev cluster reads it, a TLS control plane nobody.
        let dev = Policy {
            plaintext: true,
            operators: OperatorTokens::default(),
            revocations: None,
        };
        assert_eq!(dev.http_operator(None), Ok(Caller::Dev));
        let tls = Policy {
            plaintext: false,
            operators: OperatorTokens::default(),
            revocations: None,
        };
        assert_eq!(
            tls.http_operator(Some("Bearer 0123456789abcdef")),
            Err(HttpDenied::NotConfigured)
        );
    }
}
