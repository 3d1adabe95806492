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

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use strata_proto::v1;
use tracing::debug;

use crate::error::ApiError;
use crate::sessions::{self, Created};
use crate::state::{NodeState, SessionKind};

/// Largest request body accepted (an SDP offer is a few KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// The router of one node.
pub fn router(state: Arc<NodeState>) -> Router {
    Router::new()
        .route("/whip/{stream}", post(whip_post).options(preflight))
        .route(
            "/whip/{stream}/{session}",
            axum::routing::patch(session_patch)
                .delete(session_delete)
                .options(preflight),
        )
        .route("/whep/{stream}", post(whep_post).options(preflight))
        .route(
            "/whep/{stream}/{session}",
            axum::routing::patch(session_patch)
                .delete(session_delete)
                .options(preflight),
        )
        .route("/play/{stream}", get(play_page))
        .route("/publish/{stream}", get(publish_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn cors(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, X-Strata-Node, Retry-After"),
    );
}

async fn preflight() -> Response {
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

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

fn check_stream(stream: &str) -> Result<(), ApiError> {
    let ok = !stream.is_empty()
        && stream.len() <= 128
        && stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
        && stream != "."
        && stream != "..";
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "invalid stream name: allowed are 1 to 128 characters of A-Z a-z 0-9 . _ ~ -".into(),
        ))
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

fn created(state: &NodeState, kind: &str, stream: &str, c: Created) -> Response {
    let location = format!("/{kind}/{stream}/{}", c.id);
    let mut resp = (StatusCode::CREATED, c.answer).into_response();
    let h = resp.headers_mut();
    cors(h);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&c.etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(state.id()) {
        h.insert("x-strata-node", v);
    }
    resp
}

fn failed(state: &NodeState, e: ApiError) -> Response {
    state.counters.refused_total.fetch_add(1, Ordering::Relaxed);
    debug!(error = %e, "request refused");
    let mut resp = e.into_response();
    cors(resp.headers_mut());
    resp
}

/// A node that cannot take the client sends it elsewhere (RFC 9725 §4.5
/// allows a 307), or answers 503 with Retry-After when no node can.
async fn redirect_or_refuse(
    state: &NodeState,
    kind: &str,
    stream: &str,
    purpose: v1::Purpose,
    why: &str,
) -> Response {
    match state
        .control
        .place(state.region(), stream, purpose, state.id())
        .await
    {
        Ok(p) => match p.node {
            Some(n) => {
                state
                    .counters
                    .redirects_total
                    .fetch_add(1, Ordering::Relaxed);
                let to = format!("{}/{kind}/{stream}", n.http_url.trim_end_matches('/'));
                let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
                cors(resp.headers_mut());
                if let Ok(v) = HeaderValue::from_str(&to) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                resp
            }
            None => failed(state, ApiError::Unavailable(why.into())),
        },
        Err(_) => failed(state, ApiError::Unavailable(why.into())),
    }
}

async fn whip_post(
    State(state): State<Arc<NodeState>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match offer_of(&stream, &headers, &body) {
        Ok(o) => o,
        Err(e) => return failed(&state, e),
    };
    let full = state.session_count(SessionKind::Publisher) >= state.cfg.max_publishers as usize;
    if state.is_draining() || full {
        let why = if full {
            "node at publisher capacity"
        } else {
            "node draining"
        };
        return redirect_or_refuse(&state, "whip", &stream, v1::Purpose::Publish, why).await;
    }
    match sessions::publish(&state, &stream, &offer).await {
        Ok(c) => created(&state, "whip", &stream, c),
        Err(e) => failed(&state, e),
    }
}

async fn whep_post(
    State(state): State<Arc<NodeState>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match offer_of(&stream, &headers, &body) {
        Ok(o) => o,
        Err(e) => return failed(&state, e),
    };
    let cap = state.cfg.capacity as usize;
    let full = cap != 0 && state.session_count(SessionKind::Player) >= cap;
    if state.is_draining() || full {
        let why = if full {
            "node at player capacity"
        } else {
            "node draining"
        };
        return redirect_or_refuse(&state, "whep", &stream, v1::Purpose::Play, why).await;
    }
    match sessions::play(&state, &stream, &offer).await {
        Ok(c) => created(&state, "whep", &stream, c),
        Err(e) => failed(&state, e),
    }
}

async fn session_patch(
    State(state): State<Arc<NodeState>>,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !content_type_is(&headers, "application/trickle-ice-sdpfrag") {
        return failed(
            &state,
            ApiError::UnsupportedMediaType(
                "expected Content-Type: application/trickle-ice-sdpfrag".into(),
            ),
        );
    }
    let found = state.with_session(&session, |s| {
        (s.stream.clone(), s.etag.clone(), s.candidates.clone())
    });
    let Some((s_stream, etag, candidates)) = found.filter(|(s, _, _)| *s == stream) else {
        return failed(&state, ApiError::NotFound("no such session".into()));
    };
    let _ = s_stream;
    if let Some(m) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
        && m.trim() != "*"
        && m.trim() != etag
    {
        return failed(
            &state,
            ApiError::PreconditionFailed("ETag does not match the session".into()),
        );
    }
    let Ok(frag) = std::str::from_utf8(&body) else {
        return failed(
            &state,
            ApiError::BadRequest("the sdpfrag is not UTF-8".into()),
        );
    };
    match candidates.add(frag).await {
        Ok(()) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            cors(resp.headers_mut());
            if let Ok(v) = HeaderValue::from_str(&etag) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp
        }
        Err(e) => failed(&state, ApiError::from_rtc(e)),
    }
}

async fn session_delete(
    State(state): State<Arc<NodeState>>,
    Path((stream, session)): Path<(String, String)>,
) -> Response {
    let belongs = state
        .with_session(&session, |s| s.stream == stream)
        .unwrap_or(false);
    if !belongs {
        return failed(&state, ApiError::NotFound("no such session".into()));
    }
    if let Some(mut s) = state.remove_session(&session)
        && let Some(stop) = s.stop.take()
    {
        let _ = stop.send(());
    }
    let mut resp = StatusCode::OK.into_response();
    cors(resp.headers_mut());
    resp
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
    let body = crate::metrics::render(&state);
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
