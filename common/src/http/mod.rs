//! The WHIP/WHEP HTTP conventions the control plane's front door and the node share: the
//! layers both servers put around their routes (CORS, so that browsers on other origins
//! publish and play, the preflight answer, the whole-request timeout and request spans:
//! tower-http's, in `layers.rs`), content-type matching, and where a request's bearer token
//! comes from.

mod layers;

use axum::http::HeaderMap;
use axum::http::header;

pub use layers::{traced, whip_whep, with_timeout};

/// Whether the request's media type (parameters ignored, case-insensitive) is `want`.
pub fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// The bearer token of a request: the `Authorization: Bearer` header, else the `token`
/// query parameter (the built-in pages and encoders without header support pass it that
/// way). A present `Authorization` header with another scheme means no token: it is not
/// silently replaced by the query's.
///
/// `query` is the raw query string; a token is made of URL-safe characters (see
/// [`is_token`]), so no percent-decoding is involved.
pub fn bearer<'a>(authorization: Option<&'a str>, query: Option<&'a str>) -> Option<&'a str> {
    if let Some(v) = authorization {
        let (scheme, rest) = v.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim())
            .filter(|t| !t.is_empty());
    }
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

/// Whether `t` is made of token characters (base64url and dots, as a JWT is), and so can
/// travel in a URL as it is.
pub fn is_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_comes_from_the_header_else_the_query() {
        assert_eq!(bearer(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc "), Some("token=x")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc"), Some("token=x")), None);
        assert_eq!(bearer(Some("Bearer"), Some("token=x")), None);
        assert_eq!(bearer(None, Some("a=1&token=xyz")), Some("xyz"));
        assert_eq!(bearer(None, Some("token=")), None);
        assert_eq!(bearer(None, None), None);
    }

    #[test]
    fn token_characters() {
        assert!(is_token("eyJ.abc-_.Z9"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
        assert!(!is_token("a%20b"));
        assert!(!is_token("a&b=c"));
    }

    #[test]
    fn content_types_match_without_parameters() {
        use axum::http::HeaderValue;

        let mut h = HeaderMap::new();
        assert!(!content_type_is(&h, "application/sdp"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/SDP; charset=utf-8"),
        );
        assert!(content_type_is(&h, "application/sdp"));
        assert!(!content_type_is(&h, "application/trickle-ice-sdpfrag"));
    }
}
