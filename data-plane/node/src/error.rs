//! HTTP-facing errors of the node, mapped to status codes in one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::{AuthError, TokenError};
use crate::control::ControlError;

/// What a publisher is told when its stream is already published on another
/// node (409).
pub const LIVE_ELSEWHERE: &str = "the stream is already live elsewhere";

/// Why a WHIP/WHEP request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: bad SDP, bad stream name, bad sdpfrag (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such stream or session (404).
    #[error("{0}")]
    NotFound(String),
    /// The stream is already published elsewhere (409).
    #[error("{0}")]
    Conflict(String),
    /// No token, or a bad or expired one (401, with `WWW-Authenticate`).
    #[error("{0}")]
    Unauthorized(TokenError),
    /// A valid token for another stream or action (403).
    #[error("{0}")]
    Forbidden(crate::auth::Denied),
    /// The client made too many requests; retry after the given time (429).
    #[error("too many requests from this address; retry in {} s", .0.as_secs().max(1))]
    TooManyRequests(std::time::Duration),
    /// `If-Match` did not match the session's ETag (412).
    #[error("{0}")]
    PreconditionFailed(String),
    /// The body is too large (413).
    #[error("{0}")]
    TooLarge(String),
    /// Wrong `Content-Type` (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Unsupported codecs or features in an otherwise valid offer (422).
    #[error("{0}")]
    Unprocessable(String),
    /// Over capacity or dependencies down; retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// An unexpected failure (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// Maps an authorization failure.
    pub fn from_auth(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized(t) => ApiError::Unauthorized(t),
            AuthError::Forbidden(d) => ApiError::Forbidden(d),
        }
    }

    /// Maps a control-plane failure.
    pub fn from_control(e: ControlError) -> Self {
        match e.code() {
            // The control plane's message names the origin node and its
            // region: cluster topology that is no client's business. The
            // detail stays in this node's log.
            tonic::Code::AlreadyExists => {
                tracing::debug!(error = %e, "publish refused: the stream is live elsewhere");
                ApiError::Conflict(LIVE_ELSEWHERE.into())
            }
            tonic::Code::NotFound => ApiError::NotFound(e.to_string()),
            tonic::Code::InvalidArgument => ApiError::BadRequest(e.to_string()),
            _ => ApiError::Unavailable(e.to_string()),
        }
    }

    /// Maps a WebRTC negotiation failure.
    pub fn from_rtc(e: strata_rtc::RtcError) -> Self {
        if matches!(
            e,
            strata_rtc::RtcError::SdpTooLarge { .. } | strata_rtc::RtcError::SdpTooManyLines { .. }
        ) {
            ApiError::TooLarge(e.to_string())
        } else if matches!(e, strata_rtc::RtcError::Busy(_)) {
            ApiError::Unavailable(e.to_string())
        } else if e.is_unsupported_media() {
            ApiError::Unprocessable(e.to_string())
        } else if e.is_bad_request() {
            ApiError::BadRequest(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, format!("{self}\n")).into_response();
        let h = resp.headers_mut();
        match &self {
            ApiError::Unavailable(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            ApiError::TooManyRequests(wait) => {
                // Whole seconds, rounded up: a client retrying then passes.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            // RFC 6750 §3: the challenge, with the error code once a token was sent.
            ApiError::Unauthorized(TokenError::Missing) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"strata\""),
                );
            }
            ApiError::Unauthorized(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"strata\", error=\"invalid_token\""),
                );
            }
            ApiError::Forbidden(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"strata\", error=\"insufficient_scope\"",
                    ),
                );
            }
            _ => {}
        }
        resp
    }
}
