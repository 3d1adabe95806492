//! Publish and play tokens: JWTs (RFC 7519) signed with HS256, verified
//! locally against keys from the node's configuration.
//!
//! A token names a stream (or a prefix ending in a separator and `*`), an
//! action and an expiry:
//!
//! ```text
//! header  {"alg":"HS256","typ":"JWT","kid":"k1"}
//! claims  {"sub":"cam-*","act":"play","exp":1767225600,"iat":1767222000}
//! ```
//!
//! The keys can be read again while the node runs ([`Auth::reload`], on
//! SIGHUP), and a token may not claim to live longer than the node's
//! `--token-max-ttl`.
//!
//! Everything here is a pure function of its inputs (the current time is an
//! argument), so the parser is fuzzed (`fuzz/fuzz_targets/token.rs`) and unit-tested
//! without a server. Secrets and tokens are never logged: [`TokenKeys`] and
//! [`SecretString`] print redacted, and no error message carries token text.

mod keys;
mod policy;
mod token;

use serde::{Deserialize, Serialize};

pub use keys::{KeyError, KeySource, MIN_SECRET_LEN, SecretString, TokenKeys};
pub use policy::Auth;
pub use token::{
    Claims, Denied, Grant, LEEWAY_SECS, MAX_TOKEN_LEN, TokenError, subject_matches, valid_subject,
    verify,
};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// WHIP: send a stream.
    Publish,
    /// WHEP: receive a stream.
    Play,
}

impl Action {
    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Play => "play",
        }
    }
}

/// Whether WHIP and WHEP need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone may publish and play (local development only; logged loudly).
    Open,
    /// Every WHIP/WHEP POST needs a valid token for its stream and action.
    Required,
}

/// A URI (path and query) with the value of any `token` parameter replaced,
/// for logs.
pub fn redact_uri(uri: &str) -> String {
    let Some((path, query)) = uri.split_once('?') else {
        return uri.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("token") => format!("{k}=REDACTED"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// Why a WHIP/WHEP request was not authorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or one that cannot be trusted (401).
    #[error(transparent)]
    Unauthorized(#[from] TokenError),
    /// A valid token for another stream or action (403).
    #[error(transparent)]
    Forbidden(#[from] Denied),
}

/// Seconds since the epoch on the system clock.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
