//! The node's HTTP API: WHIP (RFC 9725) and WHEP endpoints, the built-in
//! pages, health and metrics.
//!
//! | method | path | |
//! |---|---|---|
//! | POST | `/whip/{stream}` | `application/sdp` offer → 201 + answer, `Location`, `ETag` |
//! | PATCH | `/whip/{stream}/{session}` | `application/trickle-ice-sdpfrag` → 204 |
//! | DELETE | `/whip/{stream}/{session}` | ends the publish → 200 |
//! | POST/PATCH/DELETE | `/whep/…` | the same for players |
//! | OPTIONS | any of the above | CORS preflight, `Accept-Post: application/sdp` |
//! | GET | `/play/{stream}`, `/publish/{stream}` | built-in pages |
//! | GET | `/healthz`, `/metrics` | liveness, Prometheus text |
//!
//! With `--auth required`, WHIP and WHEP POSTs need a token
//! ([`crate::auth`]) in `Authorization: Bearer …` (or a `token` query
//! parameter): none or a bad one → 401 with `WWW-Authenticate: Bearer`, one for
//! another stream or action → 403. PATCH and DELETE need no token: the session
//! URL is the capability (128 random bits, handed only to the creator).
//! WHIP/WHEP POSTs are rate-limited per client address (429 + `Retry-After`).

mod extract;
mod layers;
mod whip_whep;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use strata_common::http;
use strata_common::names;
use tracing::debug;

use crate::error::ApiError;
use crate::state::NodeState;
use whip_whep::{session_delete, session_patch, whep_post, whip_post};

/// Largest request body accepted (an SDP offer is a few KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// The router of one node: the WHIP/WHEP resources with CORS, the pages, health and
/// metrics without; every request bounded by the request timeout, in a span.
pub fn router(state: Arc<NodeState>) -> Router {
    let timeout = state.cfg.http_request_timeout;
    let whip_whep = Router::new()
        .route("/whip/{stream}", post(whip_post))
        .route(
            "/whip/{stream}/{session}",
            axum::routing::patch(session_patch).delete(session_delete),
        )
        .route("/whep/{stream}", post(whep_post))
        .route(
            "/whep/{stream}/{session}",
            axum::routing::patch(session_patch)
                .delete(session_delete)
                .get(layers::player_info),
        );
    let other = Router::new()
        .route("/play/{stream}", get(play_page))
        .route("/publish/{stream}", get(publish_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    let app = http::whip_whep(whip_whep, timeout).merge(http::with_timeout(other, timeout));
    http::traced(app)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::map_response(no_referrer))
        .with_state(state)
}

/// Tokens travel in query strings (`/play/s?token=…`, and the `Location` of
/// a redirect): no page or answer of the node may leak its URL to another
/// site through `Referer`.
async fn no_referrer(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn check_stream(stream: &str) -> Result<(), ApiError> {
    if names::is_valid(stream) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "invalid stream name: allowed are 1 to 128 characters of A-Z a-z 0-9 . _ ~ -".into(),
        ))
    }
}

pub(crate) fn failed(state: &NodeState, e: ApiError) -> Response {
    state.counters.refused_total.fetch_add(1, Ordering::Relaxed);
    debug!(error = %e, "request refused");
    e.into_response()
}

fn page(state: &NodeState, stream: &str, html: &'static str) -> Response {
    if check_stream(stream).is_err() {
        return (StatusCode::BAD_REQUEST, "invalid stream name\n").into_response();
    }
    let mut resp = Response::new(Body::from(html));
    if let Ok(v) = HeaderValue::from_str(state.id()) {
        resp.headers_mut().insert("x-strata-node", v);
    }
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn play_page(State(state): State<Arc<NodeState>>, Path(stream): Path<String>) -> Response {
    page(&state, &stream, crate::pages::PLAY)
}

async fn publish_page(State(state): State<Arc<NodeState>>, Path(stream): Path<String>) -> Response {
    page(&state, &stream, crate::pages::PUBLISH)
}

async fn healthz(State(state): State<Arc<NodeState>>) -> Response {
    if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<NodeState>>) -> Response {
    match crate::metrics::render(&state) {
        Ok(text) => {
            let content_type = strata_common::metrics::CONTENT_TYPE;
            ([(header::CONTENT_TYPE, content_type)], text).into_response()
        }
        Err(_) => ApiError::Internal("the metrics could not be encoded".into()).into_response(),
    }
}
