//! The control plane's HTTP side, served when `--http-listen` is set.
//!
//! | method | path | |
//! |---|---|---|
//! | POST | `/whip/{stream}?region=R` | front door: `307` to the node placement picks for a publisher |
//! | POST | `/whep/{stream}?region=R` | front door: `307` to a node for a player, preferring one that carries the stream |
//! | OPTIONS | `/whip/{stream}`, `/whep/{stream}` | CORS preflight: `204`, `Accept-Post: application/sdp` |
//! | GET | `/`, `/dashboard` | the live dashboard (self-contained HTML) |
//! | GET | `/api/v1/topology` | regions, nodes with load, streams with their trees (JSON, see [`crate::dashboard::model`]); operators only |
//! | GET | `/healthz` | `200` when the store is reachable and the cache in sync, else `503` |
//! | GET | `/metrics` | Prometheus text |
//!
//! Front-door answers: `307` with `Location: <node http_url>/whip|whep/{stream}` (a 307
//! keeps the method and body, so WHIP/WHEP clients post their offer to the node);
//! `400` for a bad or missing stream name or region; `503` with `Retry-After` when no
//! node of the region can take the session, or while the store is unreachable.
//! `region` may be left out when the replica runs with `--default-region`. The control plane
//! does not check access tokens (nodes do); a token the client sent (`Authorization: Bearer`
//! or `?token=`) is carried to the node as `?token=` in the `Location`, since browsers drop
//! `Authorization` on a cross-origin redirect.
//!
//! `/api/v1/topology` is operator data (every stream, tree, relay address and lease):
//! it needs `Authorization: Bearer <operator token>` as decided by
//! [`Policy::http_operator`], is answered without CORS headers (only the dashboard's own
//! origin reads it) and `401` with `WWW-Authenticate: Bearer` otherwise. The front door
//! keeps `Access-Control-Allow-Origin: *`: browser WHIP/WHEP clients of any origin need
//! it, and its answers carry no operator data.
//!
//! Served by [`strata_common::limits::serve`]: a header read timeout (slow-loris and idle
//! keep-alive connections are closed) and a connection cap with a per-address share. The
//! routes have tower-http's layers ([`strata_common::http`]): a whole-request timeout
//! (`503` + `Retry-After`), CORS on the front door's answers and a span per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use strata_common::http as shared;
use strata_common::limits::HttpLimits;
use strata_common::metrics as exposition;
use strata_common::names::{self, NameKind};
use strata_proto::v1;
use tokio::net::TcpListener;
use tracing::debug;

use crate::auth::{HttpDenied, Policy};
use crate::dashboard::{self, Topology};
use crate::error::Error;
use crate::metrics;
use crate::service::{self, State, convert};

/// Settings of the HTTP side.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Region used by the front door when a request names none.
    pub default_region: Option<String>,
    /// Header timeout and connection caps.
    pub limits: HttpLimits,
    /// Most time one request may take (then `503`).
    pub request_timeout: Duration,
    /// Who may read operator data (the same policy as gRPC's).
    pub policy: Arc<Policy>,
}

#[derive(Clone)]
struct Http {
    state: State,
    options: HttpOptions,
}

/// Serves HTTP on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: State,
    options: HttpOptions,
    shutdown: impl Future<Output = ()>,
) {
    let limits = options.limits;
    let app = router(state, options);
    strata_common::limits::serve(listener, app, limits, shutdown, Duration::from_secs(2)).await;
    debug!("HTTP server stopped");
}

/// The HTTP routes of one replica: the front door's WHIP/WHEP resources with CORS, the
/// operator routes without; every request bounded by the request timeout, in a span.
pub fn router(state: State, options: HttpOptions) -> Router {
    let timeout = options.request_timeout;
    let front_door = Router::new()
        .route("/whip/{stream}", post(whip))
        .route("/whep/{stream}", post(whep))
        .route("/whip", post(no_stream))
        .route("/whip/", post(no_stream))
        .route("/whep", post(no_stream))
        .route("/whep/", post(no_stream));
    let operators = Router::new()
        .route("/", get(dashboard_page))
        .route("/dashboard", get(dashboard_page))
        .route("/api/v1/topology", get(topology))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    let app =
        shared::whip_whep(front_door, timeout).merge(shared::with_timeout(operators, timeout));
    shared::traced(app).with_state(Http { state, options })
}

/// The one mapping from control-plane errors to HTTP answers (the gRPC one is
/// in [`crate::error`]). `503` carries `Retry-After`; the front door's layers add CORS.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::InvalidArgument(_) | Error::FailedPrecondition(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::AlreadyExists(_) => StatusCode::CONFLICT,
            Error::Unavailable(_) | Error::ResourceExhausted { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut resp = (status, format!("{self}\n")).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        resp
    }
}

/// WHIP or WHEP.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Whip,
    Whep,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }

    fn purpose(self) -> v1::Purpose {
        match self {
            Kind::Whip => v1::Purpose::Publish,
            Kind::Whep => v1::Purpose::Play,
        }
    }
}

type RegionQuery = Result<Query<HashMap<String, String>>, QueryRejection>;

type StreamPath = Result<Path<String>, PathRejection>;

async fn whip(
    http: AxState<Http>,
    stream: StreamPath,
    query: RegionQuery,
    headers: HeaderMap,
) -> Response {
    front_door(Kind::Whip, &http, stream, query, &headers)
}

async fn whep(
    http: AxState<Http>,
    stream: StreamPath,
    query: RegionQuery,
    headers: HeaderMap,
) -> Response {
    front_door(Kind::Whep, &http, stream, query, &headers)
}

/// The client's access token (`Authorization: Bearer …`, else `?token=`), when it is
/// made of token characters and so can travel in the redirect's URL as is.
fn token<'a>(headers: &'a HeaderMap, params: &'a HashMap<String, String>) -> Option<&'a str> {
    match headers.get(header::AUTHORIZATION) {
        Some(v) => shared::bearer(Some(v.to_str().ok()?), None),
        None => params.get("token").map(String::as_str),
    }
    .filter(|t| shared::is_token(t))
}

async fn no_stream(AxState(http): AxState<Http>) -> Response {
    refused(
        &http.state,
        Error::InvalidArgument(
            "the URL names no stream: POST /whip/{stream} or /whep/{stream}".into(),
        ),
    )
}

fn refused(state: &State, e: Error) -> Response {
    let fd = &state.metrics().front_door;
    match e {
        Error::Unavailable(_) => fd.unavailable.inc(),
        _ => fd.bad_requests.inc(),
    }
    debug!(error = %e, "front door refused a request");
    e.into_response()
}

/// Sends a WHIP publisher or WHEP player to the node placement picks.
#[tracing::instrument(skip_all, fields(kind = kind.path()))]
fn front_door(
    kind: Kind,
    http: &Http,
    stream: StreamPath,
    query: RegionQuery,
    headers: &HeaderMap,
) -> Response {
    let state = &http.state;
    let stream = match stream {
        Ok(Path(s)) => s,
        Err(e) => {
            return refused(
                state,
                Error::InvalidArgument(format!("bad stream in the URL: {e}")),
            );
        }
    };
    let stream = stream.as_str();
    let params = match query {
        Ok(Query(p)) => p,
        Err(e) => {
            return refused(
                state,
                Error::InvalidArgument(format!("malformed query string: {e}")),
            );
        }
    };
    let placed = match place(kind, http, stream, &params) {
        Ok(p) => p,
        Err(e) => return refused(state, e),
    };
    let Some(node) = &placed.node else {
        return refused(state, Error::Internal("placement returned no node".into()));
    };
    let Some(location) = location(kind, node, stream, token(headers, &params)) else {
        return refused(
            state,
            Error::Internal(format!("node {:?} has an unusable URL", node.id)),
        );
    };
    let fd = &state.metrics().front_door;
    match kind {
        Kind::Whip => fd.whip_redirects.inc(),
        Kind::Whep => fd.whep_redirects.inc(),
    }
    if placed.carries_stream {
        fd.whep_redirects_carrier.inc();
    }
    debug!(%stream, node = %node.id, carries = placed.carries_stream, "redirected");
    let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&node.id) {
        h.insert("x-strata-node", v);
    }
    resp
}

/// Placement's answer for a front-door request: the region from the query
/// (else the replica's default), both names checked before the store's health.
fn place(
    kind: Kind,
    http: &Http,
    stream: &str,
    params: &HashMap<String, String>,
) -> Result<v1::PlaceResponse, Error> {
    let state = &http.state;
    let region = match (params.get("region"), &http.options.default_region) {
        (Some(r), _) => r.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => {
            return Err(Error::InvalidArgument(
                "the region query parameter is required, e.g. ?region=eu".into(),
            ));
        }
    };
    // Bad names are told apart from an outage even while the store is down.
    names::validate(NameKind::Stream, stream)?;
    names::validate(NameKind::Region, &region)?;
    state.ensure_healthy()?;
    let view = state.cache().read();
    service::place(
        &view,
        &v1::PlaceRequest {
            region,
            stream: stream.to_owned(),
            purpose: kind.purpose() as i32,
            exclude_node_id: String::new(),
        },
    )
}

/// Where the redirect sends the client: the stream's WHIP/WHEP resource on
/// `node`, carrying the client's token. `None` when that is no header value.
fn location(
    kind: Kind,
    node: &v1::NodeInfo,
    stream: &str,
    token: Option<&str>,
) -> Option<HeaderValue> {
    let mut to = format!(
        "{}/{}/{stream}",
        node.http_url.trim_end_matches('/'),
        kind.path()
    );
    // Browsers drop `Authorization` on a cross-origin redirect: the node takes the
    // token from the query instead (as a node's own redirect does).
    if let Some(t) = token {
        to.push_str("?token=");
        to.push_str(t);
    }
    HeaderValue::from_str(&to).ok()
}

/// The topology document from this replica's cache, in one consistent read.
pub fn topology_of(state: &State) -> Topology {
    let healthy = state.cache().is_healthy();
    let view = state.cache().read();
    let nodes: Vec<v1::Node> = view
        .nodes
        .values()
        .map(|n| convert::node(&n.value, view.loads.get(&n.value.id)))
        .collect();
    let streams: Vec<v1::StreamTree> = view
        .streams
        .iter()
        .filter_map(|(id, st)| service::annotated_tree(state, &view, id, st))
        .collect();
    Topology::build(&nodes, &streams, view.revision, healthy, service::now_ms())
}

/// The topology document, for operators only (see the module documentation). No CORS
/// headers: the dashboard reads it from its own origin, and no other page should.
async fn topology(AxState(http): AxState<Http>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    if let Err(e) = http.options.policy.http_operator(authorization) {
        return unauthorized(e);
    }
    let doc = topology_of(&http.state);
    let mut resp = axum::Json(doc).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `401` with a `WWW-Authenticate` challenge; the presented token is never echoed.
fn unauthorized(e: HttpDenied) -> Response {
    let challenge = match e {
        HttpDenied::Missing | HttpDenied::NotConfigured => r#"Bearer realm="strata-operator""#,
        HttpDenied::Invalid => r#"Bearer realm="strata-operator", error="invalid_token""#,
    };
    let mut resp = (StatusCode::UNAUTHORIZED, format!("{e}\n")).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn dashboard_page() -> Response {
    let mut resp = dashboard::PAGE.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

async fn healthz(AxState(http): AxState<Http>) -> impl IntoResponse {
    if http.state.cache().is_healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n")
    }
}

async fn metrics(AxState(http): AxState<Http>) -> Response {
    let state = &http.state;
    let healthy = state.cache().is_healthy();
    let gauges = metrics::cluster::gauges(&state.cache().read(), healthy);
    match state.metrics().render(&gauges) {
        Ok(text) => ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], text).into_response(),
        Err(_) => Error::Internal("the metrics could not be encoded".into()).into_response(),
    }
}
