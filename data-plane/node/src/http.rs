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

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::layers;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use strata_common::http::{self, content_type_is};
use strata_common::names;
use strata_proto::v1::{self, Purpose};
use strata_rtc::LayerPref;
use tracing::debug;

use crate::auth::{self, Action};
use crate::backup::{self, Role};
use crate::error::ApiError;
use crate::sessions::{self, Created};
use crate::state::{NodeState, SessionKind};

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

/// A WHIP/WHEP POST or a trickle PATCH the client's rate limit allows (429
/// otherwise). Runs before the body is read.
struct Admitted;

impl FromRequestParts<Arc<NodeState>> for Admitted {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<NodeState>,
    ) -> Result<Self, Response> {
        let remote = crate::limits::remote_of(&parts.extensions);
        match state.admit(remote.ip()) {
            Ok(()) => Ok(Admitted),
            Err(wait) => Err(failed(state, ApiError::TooManyRequests(wait))),
        }
    }
}

/// The action a route needs a token for.
trait Needs: Send + Sync + 'static {
    const ACTION: Action;
}

struct PublishAction;
impl Needs for PublishAction {
    const ACTION: Action = Action::Publish;
}

struct PlayAction;
impl Needs for PlayAction {
    const ACTION: Action = Action::Play;
}

/// A request whose token allows `A` on the stream of its path (or any
/// request in `--auth open`). Runs before the body is read. Keeps the token
/// to pass it on when the request is redirected to another node.
struct Authorized<A> {
    token: Option<String>,
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

fn check_stream(stream: &str) -> Result<(), ApiError> {
    if names::is_valid(stream) {
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

pub(crate) fn failed(state: &NodeState, e: ApiError) -> Response {
    state.counters.refused_total.fetch_add(1, Ordering::Relaxed);
    debug!(error = %e, "request refused");
    e.into_response()
}

/// A node that cannot take the client sends it elsewhere (RFC 9725 §4.5
/// allows a 307), or answers 503 with Retry-After when no node can. `keep`
/// is the request's own (already validated) query parameter the next node
/// must see too: a backup publisher's `role=backup`, a player's `layer=`.
async fn redirect_or_refuse(
    state: &NodeState,
    kind: &str,
    stream: &str,
    purpose: v1::Purpose,
    why: &str,
    token: Option<&str>,
    keep: Option<(&str, &str)>,
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
                let mut query: Vec<String> = Vec::new();
                // Browsers drop `Authorization` on a cross-origin redirect; the
                // next node takes the token from the query instead. (Tokens are
                // base64url and dots: nothing to escape.)
                if let Some(t) = token.filter(|t| t.bytes().all(is_token_char)) {
                    query.push(format!("token={t}"));
                }
                if let Some((k, v)) = keep {
                    query.push(format!("{k}={v}"));
                }
                let mut to = format!("{}/{kind}/{stream}", n.http_url.trim_end_matches('/'));
                if !query.is_empty() {
                    to.push('?');
                    to.push_str(&query.join("&"));
                }
                let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
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

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

async fn whip_post(
    State(state): State<Arc<NodeState>>,
    _admitted: Admitted,
    authorized: Authorized<PublishAction>,
    Path(stream): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match offer_of(&stream, &headers, &body) {
        Ok(o) => o,
        Err(e) => return failed(&state, e),
    };
    let role = match backup::role_of(query.as_deref()) {
        Ok(r) => r,
        Err(e) => return failed(&state, e),
    };
    if role == Role::Backup {
        let token = authorized.token.as_deref();
        if let Err(e) = state.auth.check_backup(token, &stream, auth::unix_now()) {
            return failed(&state, ApiError::from_auth(e));
        }
    }
    let full = state.session_count(SessionKind::Publisher) >= state.cfg.max_publishers as usize;
    if state.is_draining() || full {
        let why = if full {
            "node at publisher capacity"
        } else {
            "node draining"
        };
        let token = authorized.token.as_deref();
        let keep = (role == Role::Backup).then_some(("role", "backup"));
        return redirect_or_refuse(&state, "whip", &stream, Purpose::Publish, why, token, keep)
            .await;
    }
    // In a task of its own: if the client goes away or the request times
    // out, the claim and negotiation still finish (or are given back)
    // instead of being cancelled half-way.
    let task = {
        let (state, stream) = (state.clone(), stream.clone());
        tokio::spawn(async move {
            match role {
                Role::Primary => sessions::publish(&state, &stream, &offer).await,
                Role::Backup => backup::publish(&state, &stream, &offer).await,
            }
        })
    };
    match task.await {
        Ok(Ok(c)) => created(&state, "whip", &stream, c),
        Ok(Err(e)) => failed(&state, e),
        Err(e) => failed(&state, ApiError::Internal(e.to_string())),
    }
}

async fn whep_post(
    State(state): State<Arc<NodeState>>,
    _admitted: Admitted,
    authorized: Authorized<PlayAction>,
    Path(stream): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match offer_of(&stream, &headers, &body) {
        Ok(o) => o,
        Err(e) => return failed(&state, e),
    };
    let pref = match layers::layer_pref(query.as_deref()) {
        Ok(p) => p,
        Err(e) => return failed(&state, e),
    };
    let cap = state.cfg.capacity as usize;
    let full = cap != 0 && state.connected_players() >= cap;
    if state.is_draining() || full {
        let why = if full {
            "node at player capacity"
        } else {
            "node draining"
        };
        let token = authorized.token.as_deref();
        let keep = match pref {
            LayerPref::Auto => None,
            LayerPref::Pinned(layer) => Some(("layer", layer.as_str())),
        };
        return redirect_or_refuse(&state, "whep", &stream, Purpose::Play, why, token, keep).await;
    }
    // See whip_post: not cancelled with the request.
    let task = {
        let (state, stream) = (state.clone(), stream.clone());
        tokio::spawn(async move { sessions::play(&state, &stream, &offer, pref).await })
    };
    match task.await {
        Ok(Ok(c)) => created(&state, "whep", &stream, c),
        Ok(Err(e)) => failed(&state, e),
        Err(e) => failed(&state, ApiError::Internal(e.to_string())),
    }
}

async fn session_patch(
    State(state): State<Arc<NodeState>>,
    _admitted: Admitted,
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
    StatusCode::OK.into_response()
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
