//! What a WHIP/WHEP request must pass before its body is read: the client's
//! rate limit ([`Admitted`]) and, for POSTs, a token for the stream and
//! action ([`Authorized`]); then a POST's offer ([`Post`]).

use std::marker::PhantomData;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use strata_common::http::content_type_is;

use super::{MAX_BODY, check_stream, failed};
use crate::auth::{self, Action};
use crate::error::ApiError;
use crate::state::NodeState;

/// A WHIP/WHEP POST or a trickle PATCH the client's rate limit allows (429
/// otherwise). Runs before the body is read.
pub(super) struct Admitted;

impl FromRequestParts<Arc<NodeState>> for Admitted {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<NodeState>,
    ) -> Result<Self, Response> {
        let remote = crate::limits::remote_of(&parts.extensions);
        match state.limiter.admit(remote.ip()) {
            Ok(()) => Ok(Admitted),
            Err(wait) => Err(failed(state, ApiError::TooManyRequests(wait))),
        }
    }
}

/// The action a route needs a token for.
pub(super) trait Needs: Send + Sync + 'static {
    const ACTION: Action;
}

pub(super) struct PublishAction;
impl Needs for PublishAction {
    const ACTION: Action = Action::Publish;
}

pub(super) struct PlayAction;
impl Needs for PlayAction {
    const ACTION: Action = Action::Play;
}

/// A request whose token allows `A` on the stream of its path (or any
/// request in `--auth open`). Runs before the body is read. Keeps the token
/// to pass it on when the request is redirected to another node.
pub(super) struct Authorized<A> {
    pub(super) token: Option<String>,
    _action: PhantomData<A>,
}

impl<A: Needs> FromRequestParts<Arc<NodeState>> for Authorized<A> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<NodeState>,
    ) -> Result<Self, Response> {
        let Ok(Path(stream)) = Path::<String>::from_request_parts(parts, state).await else {
            return Err(failed(state, ApiError::BadRequest("bad path".into())));
        };
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = strata_common::http::bearer(authorization, parts.uri.query());
        match state
            .auth
            .check(token, &stream, A::ACTION, auth::unix_now())
        {
            Ok(()) => Ok(Authorized {
                token: token.map(str::to_owned),
                _action: PhantomData,
            }),
            Err(e) => Err(failed(state, ApiError::from_auth(e))),
        }
    }
}

/// A WHIP or WHEP POST that passed the rate limit and the token check for
/// `A`, with its offer.
pub(super) struct Post<A> {
    /// The stream of the path.
    pub stream: String,
    /// The request's token, passed on when it is redirected.
    pub token: Option<String>,
    /// The raw query (`role=`, `layer=`).
    pub query: Option<String>,
    /// The SDP offer.
    pub offer: String,
    _action: PhantomData<A>,
}

impl<A: Needs> FromRequest<Arc<NodeState>> for Post<A> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<NodeState>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        Admitted::from_request_parts(&mut parts, state).await?;
        let authorized = Authorized::<A>::from_request_parts(&mut parts, state).await?;
        let path = Path::<String>::from_request_parts(&mut parts, state).await;
        let Path(stream) = path.map_err(IntoResponse::into_response)?;
        let Ok(RawQuery(query)) = RawQuery::from_request_parts(&mut parts, state).await;
        let headers = parts.headers.clone();
        let req = Request::from_parts(parts, body);
        let body = Bytes::from_request(req, state).await;
        let body = body.map_err(IntoResponse::into_response)?;
        match offer_of(&stream, &headers, &body) {
            Ok(offer) => Ok(Post {
                stream,
                token: authorized.token,
                query,
                offer,
                _action: PhantomData,
            }),
            Err(e) => Err(failed(state, e)),
        }
    }
}

/// Checks what every WHIP/WHEP POST must satisfy and returns the offer.
fn offer_of(stream: &str, headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    check_stream(stream)?;
    if !content_type_is(headers, "application/sdp") {
        return Err(ApiError::UnsupportedMediaType(
            "expected Content-Type: application/sdp".into(),
        ));
    }
    if body.len() > MAX_BODY {
        return Err(ApiError::TooLarge(format!("body over {MAX_BODY} bytes")));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the SDP offer is not UTF-8".into()))?;
    if !text.trim_start().starts_with("v=") {
        return Err(ApiError::BadRequest("the body is not an SDP offer".into()));
    }
    Ok(text.to_owned())
}
