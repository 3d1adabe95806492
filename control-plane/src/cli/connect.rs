//! The way to the control plane: the first address that answers, TLS for `https://`, and
//! the operator's bearer token on every request.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::{CONNECT_TIMEOUT, CliError, Common, REQUEST_TIMEOUT};

/// Adds the operator's bearer token to every request.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel with the operator's credential on every request.
pub(super) type AuthChannel = InterceptedService<Channel, Bearer>;

impl Common {
    /// The operator token: from `--token-file`, else `STRATA_OPERATOR_TOKEN`, else none.
    pub(super) fn bearer(&self) -> Result<Bearer, CliError> {
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    CliError::Credentials(format!("reading {}: {e}", path.display()))
                })?;
                Some(token_from_file(&text).ok_or_else(|| {
                    CliError::Credentials(format!("{}: no token in the file", path.display()))
                })?)
            }
            None => std::env::var("STRATA_OPERATOR_TOKEN")
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
        };
        let Some(token) = token else {
            return Ok(Bearer(None));
        };
        let value = format!("Bearer {token}").parse().map_err(|_| {
            // Never echo the token itself.
            CliError::Credentials("the operator token has characters a header cannot carry".into())
        })?;
        Ok(Bearer(Some(value)))
    }

    /// Client TLS settings for `https://` addresses.
    fn tls(&self) -> Result<ClientTlsConfig, CliError> {
        let path = self.ca_cert.as_ref().ok_or_else(|| {
            CliError::Credentials(
                "https:// addresses need --ca-cert (the CA of the control plane's certificate)"
                    .into(),
            )
        })?;
        let pem = std::fs::read(path)
            .map_err(|e| CliError::Credentials(format!("reading {}: {e}", path.display())))?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        if let Some(name) = &self.tls_server_name {
            tls = tls.domain_name(name.clone());
        }
        Ok(tls)
    }
}

/// The token in a token file: its first non-empty, non-comment line, and of a
/// `name=token` line (the control plane's own format) the part after the first `=`.
fn token_from_file(text: &str) -> Option<String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    let token = match line.split_once('=') {
        Some((_, t)) => t.trim(),
        None => line,
    };
    (!token.is_empty()).then(|| token.to_owned())
}

/// A channel to the first address that accepts a connection, and whether it is TLS.
pub(super) async fn connect(common: &Common) -> Result<(Channel, bool), CliError> {
    let mut reason = String::from("no address given");
    let mut tried = Vec::new();
    let mut tls = None;
    for addr in common
        .control_plane
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty())
    {
        let url = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        tried.push(url.clone());
        let mut endpoint = match Endpoint::from_shared(url.clone()) {
            Ok(e) => e.connect_timeout(CONNECT_TIMEOUT).timeout(REQUEST_TIMEOUT),
            Err(e) => {
                reason = format!("{url}: {e}");
                continue;
            }
        };
        if url.starts_with("https://") {
            if tls.is_none() {
                tls = Some(common.tls()?);
            }
            if let Some(tls) = &tls {
                endpoint = match endpoint.tls_config(tls.clone()) {
                    Ok(e) => e,
                    Err(e) => {
                        reason = format!("{url}: {}", chain(&e));
                        continue;
                    }
                };
            }
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(ch)) => return Ok((ch, url.starts_with("https://"))),
            Ok(Err(e)) => reason = format!("{url}: {}", chain(&e)),
            Err(_) => reason = format!("{url}: no connection within {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(CliError::Connect {
        tried: tried.join(", "),
        reason,
    })
}

/// An error with its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files() {
        assert_eq!(token_from_file("s3cret\n").as_deref(), Some("s3cret"));
        assert_eq!(
            token_from_file("# ops\n\nalice = s3cret\nbob=other\n").as_deref(),
            Some("s3cret")
        );
        assert_eq!(token_from_file("a=b=c").as_deref(), Some("b=c"));
        assert_eq!(token_from_file("# only a comment\n"), None);
        assert_eq!(token_from_file("alice=\n"), None);
    }
}
