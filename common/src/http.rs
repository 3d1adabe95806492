//! The WHIP/WHEP HTTP conventions the control plane's front door and the node share: CORS
//! headers (browsers on other origins publish and play), the preflight answer, content-type
//! matching, and where a request's bearer token comes from.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Headers a page on another origin may read from our answers.
const EXPOSED: &str = "Location, ETag, Link, X-Strata-Node, Retry-After";

/// Adds the CORS headers every WHIP/WHEP answer carries (success or error), so a page on any
/// origin can read the answer and follow a redirect.
pub fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
}

/// The answer to `OPTIONS` on a WHIP/WHEP resource: a CORS preflight, and the WHIP/WHEP
/// `Accept-Post` discovery (RFC 9725 §4.1).
pub async fn preflight() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    resp
}

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
