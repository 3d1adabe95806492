//! What a WHIP/WHEP request must pass before its body is read: the client's
//! rate limit ([`Admitted`]) and, for POSTs, a token for the stream and
//! action ([`Authorized`]).

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::Response;

use super::failed;
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
