//! Tokens: their shape, signature and claims ([`verify`]), and what a
//! verified token allows ([`Grant`]).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};
use strata_common::names;

use super::Action;
use super::keys::TokenKeys;

/// Longest token accepted (bytes); real ones are a few hundred.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;

/// A token that cannot be trusted: answered with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No `Authorization: Bearer` header and no `token` query parameter.
    #[error("a token is required")]
    Missing,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("the token is too long")]
    TooLong,
    /// Not three base64url parts of JSON objects with the required fields.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// `alg` is not `HS256` (`none` included).
    #[error("the token's algorithm is not supported (use HS256)")]
    UnsupportedAlgorithm,
    /// The header has no `kid`, or names a key this node does not have.
    #[error("the token's key id is unknown")]
    UnknownKey,
    /// The signature does not verify with the named key.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is still in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `exp` is further from `iat` (or from now, without `iat`) than the
    /// node's maximum token lifetime.
    #[error("the token's lifetime exceeds this node's maximum")]
    LifetimeTooLong,
}

/// A valid token that does not cover the request: answered with 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// `sub` does not match the stream.
    #[error("the token does not cover this stream")]
    WrongStream,
    /// `act` is not the request's action.
    #[error("the token does not allow {0}")]
    WrongAction(&'static str),
    /// A backup publish with a token that does not carry `"backup": true`.
    #[error("the token does not allow publishing as a backup")]
    NoBackupRole,
}

/// The verified claims of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// A stream name, `*`, or a prefix ending in a separator and `*`.
    pub sub: String,
    /// The allowed action.
    pub action: Action,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch, when the token says.
    pub iat: Option<u64>,
    /// Whether the token allows publishing as a stream's backup publisher
    /// (`"backup": true`; publish tokens only).
    pub backup: bool,
}

impl Grant {
    /// Whether this grant allows `action` on `stream`.
    pub fn allows(&self, stream: &str, action: Action) -> Result<(), Denied> {
        if !subject_matches(&self.sub, stream) {
            return Err(Denied::WrongStream);
        }
        if self.action != action {
            return Err(Denied::WrongAction(action.as_str()));
        }
        Ok(())
    }

    /// How long the token claims to live at `now`: `exp` minus `iat`, or
    /// minus `now` when `iat` is absent or in the future (a future `iat`
    /// must not shorten the lifetime of a token that is valid already).
    pub fn lifetime(&self, now: u64) -> u64 {
        let start = self.iat.map_or(now, |iat| iat.min(now));
        self.exp.saturating_sub(start)
    }
}

/// Characters a wildcard prefix must end with: the name characters that are
/// not letters or digits, i.e. the separators of a stream name's parts.
fn is_separator(b: u8) -> bool {
    matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `sub` covers `stream`: the stream itself; `*`, every stream; or
/// `prefix*` where the prefix ends in a separator (`-` `.` `_` `~`), every
/// stream that starts with the prefix, so whole parts are matched: `cam-1-*`
/// covers `cam-1-hd`, never `cam-10`. A malformed wildcard (`cam-1*`,
/// `c*m`, `**`) covers nothing; [`verify`] refuses tokens that carry one.
pub fn subject_matches(sub: &str, stream: &str) -> bool {
    if !valid_subject(sub) {
        return false;
    }
    match sub.strip_suffix('*') {
        Some(prefix) => stream.starts_with(prefix),
        None => sub == stream,
    }
}

/// The claims a token carries (serialized by [`TokenKeys::mint`]).
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    /// Stream or prefix ending in `*`.
    pub sub: String,
    /// `publish` or `play`.
    pub act: Action,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Allows publishing as the stream's backup publisher.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub backup: bool,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    act: Option<String>,
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
    #[serde(default)]
    iat: Option<serde_json::Number>,
    #[serde(default)]
    backup: Option<bool>,
}

/// A NumericDate (RFC 7519 §2): seconds, possibly fractional, never negative.
fn numeric_date(n: &serde_json::Number) -> Option<u64> {
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n.as_f64()?;
    (f.is_finite() && (0.0..1e15).contains(&f)).then_some(f as u64)
}

/// `*`; a prefix of stream-name characters ending in a separator, then `*`
/// (`cam-*`, `cam-1-*`, not `cam-1*`, which would cover `cam-10` too); or a
/// valid stream name (not `.` or `..`, which no stream can be called).
pub fn valid_subject(sub: &str) -> bool {
    match sub.strip_suffix('*') {
        None => names::is_valid(sub),
        Some("") => true,
        Some(prefix) => {
            sub.len() <= names::MAX_NAME_LEN
                && prefix.bytes().last().is_some_and(is_separator)
                && prefix.bytes().all(names::is_name_byte)
        }
    }
}

/// Verifies `token` against `keys` at `now` (seconds since the epoch).
///
/// Checks, in order: size, shape, header (`alg` HS256, no `crit`, known
/// `kid`), the signature (constant time, `ring::hmac::verify`), and only then
/// the claims: `exp` required, `nbf` and `iat` optional, `sub` a stream name,
/// `*` or a prefix ending in a separator and `*`, `act` `publish` or `play`.
/// The lifetime bound is the caller's ([`Auth::check`]), as it is a setting.
pub fn verify(keys: &TokenKeys, token: &str, now: u64) -> Result<Grant, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three dot-separated parts"));
    };
    let header_json = URL_SAFE_NO_PAD
        .decode(head)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header_json)
        .map_err(|_| TokenError::Malformed("header is not a JSON object with alg"))?;
    if header.alg != "HS256" {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    if header.crit.is_some() {
        return Err(TokenError::Malformed("critical header parameters"));
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.key(kid))
        .ok_or(TokenError::UnknownKey)?;
    let signature = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    let signing_input = &token[..head.len() + 1 + body.len()];
    hmac::verify(key, signing_input.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;

    let claims_json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
    let claims: RawClaims = serde_json::from_slice(&claims_json)
        .map_err(|_| TokenError::Malformed("claims are not a JSON object"))?;
    let exp = claims
        .exp
        .as_ref()
        .ok_or(TokenError::Malformed("no exp claim"))
        .and_then(|n| numeric_date(n).ok_or(TokenError::Malformed("exp is not a NumericDate")))?;
    if now >= exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = &claims.nbf {
        let nbf = numeric_date(nbf).ok_or(TokenError::Malformed("nbf is not a NumericDate"))?;
        if now.saturating_add(LEEWAY_SECS) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    let iat = match &claims.iat {
        Some(n) => Some(numeric_date(n).ok_or(TokenError::Malformed("iat is not a NumericDate"))?),
        None => None,
    };
    let sub = claims
        .sub
        .filter(|s| valid_subject(s))
        .ok_or(TokenError::Malformed(
            "sub must be a stream name, * or a prefix ending in - . _ or ~ then *",
        ))?;
    let action = match claims.act.as_deref() {
        Some("publish") => Action::Publish,
        Some("play") => Action::Play,
        _ => return Err(TokenError::Malformed("act must be publish or play")),
    };
    Ok(Grant {
        sub,
        action,
        exp,
        iat,
        backup: claims.backup == Some(true) && action == Action::Publish,
    })
}
