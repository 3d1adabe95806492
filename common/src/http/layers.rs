//! The layers both HTTP servers put around their routes, from tower-http: CORS on the
//! WHIP/WHEP resources (with the WHIP/WHEP discovery answer to `OPTIONS`), a whole-request
//! timeout, and one tracing span per request.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::cors::{Any, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{Level, Span};

/// The WHIP/WHEP discovery header (RFC 9725 §4.1) on the answer to `OPTIONS`.
const ACCEPT_POST: &str = "accept-post";

/// Headers a page on another origin may read from our answers.
fn exposed() -> [HeaderName; 5] {
    [
        header::LOCATION,
        header::ETAG,
        header::LINK,
        HeaderName::from_static("x-strata-node"),
        header::RETRY_AFTER,
    ]
}

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(86_400);

/// What a client is told to wait before retrying a request that timed out.
const RETRY_AFTER_SECS: &str = "2";

/// Every answer of a WHIP/WHEP resource (success or error) may be read by a page of any
/// origin, so browser publishers and players on other sites can follow a redirect and read
/// `Location`; no credentials are involved (tokens travel as bearer tokens).
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::IF_MATCH,
        ])
        .expose_headers(exposed())
        .max_age(PREFLIGHT_MAX_AGE)
}

/// The CORS layer answers every `OPTIONS` itself (`200`, no body); WHIP/WHEP clients also
/// use `OPTIONS` to discover what a resource accepts: `204` with `Accept-Post`. The answer
/// also lists the exposed headers, as every other answer of the resource does.
async fn discovery(req: Request, next: Next) -> Response {
    let options = req.method() == Method::OPTIONS;
    let mut resp = next.run(req).await;
    if options && resp.status() == StatusCode::OK {
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        h.insert(
            HeaderName::from_static(ACCEPT_POST),
            HeaderValue::from_static("application/sdp"),
        );
        let exposed = exposed().map(|n| n.as_str().to_owned()).join(",");
        if let Ok(v) = HeaderValue::from_str(&exposed) {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
    resp
}

/// Layers of the WHIP/WHEP resources: the timeout of [`with_timeout`], CORS on every
/// answer (the timeout's too), and the preflight/discovery answer to `OPTIONS`.
pub fn whip_whep<S>(routes: Router<S>, timeout: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    with_timeout(routes, timeout)
        .layer(cors())
        .layer(middleware::from_fn(discovery))
}

/// Bounds each request of `routes` (body upload and handler) to `limit`; past it the
/// client gets `503` with `Retry-After` and a reason, and the handler is dropped.
pub fn with_timeout<S>(routes: Router<S>, limit: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limit,
        ))
        .layer(middleware::map_response(move |resp: Response| async move {
            timed_out(resp, limit)
        }))
}

/// tower-http answers a timed-out request with an empty `503`; every `503` of our handlers
/// carries its reason, so an empty one is the timeout's: it gets a reason and
/// `Retry-After`, like the other "try again" answers.
fn timed_out(resp: Response, limit: Duration) -> Response {
    use axum::body::HttpBody;
    let empty = resp.body().size_hint().exact() == Some(0);
    if resp.status() != StatusCode::SERVICE_UNAVAILABLE || !empty {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let h = &mut parts.headers;
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    h.remove(header::CONTENT_LENGTH);
    let reason = format!("the request took longer than {limit:?}\n");
    Response::from_parts(parts, Body::from(reason))
}

/// One `http.request` span per request, named by method and route pattern. The path
/// itself is left out on purpose: session URLs are capabilities and queries carry tokens.
/// `5xx` answers are logged at debug level: over capacity, a `503` is an ordinary answer.
pub fn traced<S>(routes: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes.layer(
        TraceLayer::new_for_http()
            .make_span_with(request_span)
            .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
    )
}

fn request_span(req: &Request<Body>) -> Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    tracing::debug_span!("http.request", method = %req.method(), route)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(1);

    fn app() -> Router {
        let whip = Router::new()
            .route("/whip/{s}", post(|| async { StatusCode::CREATED }))
            .route(
                "/whip/{s}/slow",
                post(|| async {
                    tokio::time::sleep(LIMIT * 10).await;
                    StatusCode::CREATED
                }),
            );
        let other = Router::new()
            .route(
                "/healthz",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "draining\n") }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(LIMIT * 10).await;
                    StatusCode::OK.into_response()
                }),
            );
        traced(whip_whep(whip, LIMIT).merge(with_timeout(other, LIMIT)))
    }

    async fn call(method: &str, uri: &str) -> (Response, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ORIGIN, "https://elsewhere.example")
            .body(Body::empty())
            .unwrap();
        let resp = app().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        (Response::from_parts(parts, Body::empty()), text)
    }

    fn header<'a>(resp: &'a Response, name: &str) -> &'a str {
        resp.headers()
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }

    #[tokio::test]
    async fn preflight_is_204_with_accept_post_and_the_allowed_methods() {
        let (r, _) = call("OPTIONS", "/whip/cam").await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&r, "accept-post"), "application/sdp");
        assert_eq!(header(&r, "access-control-allow-origin"), "*");
        assert!(header(&r, "access-control-allow-methods").contains("PATCH"));
        let allowed = header(&r, "access-control-allow-headers").to_ascii_lowercase();
        for h in ["content-type", "authorization", "if-match"] {
            assert!(allowed.contains(h), "{allowed}");
        }
        assert_eq!(header(&r, "access-control-max-age"), "86400");
        assert!(header(&r, "access-control-expose-headers").contains("location"));
    }

    #[tokio::test]
    async fn whip_answers_carry_cors_and_other_routes_none() {
        let (r, _) = call("POST", "/whip/cam").await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "access-control-allow-origin"), "*");
        let exposed = header(&r, "access-control-expose-headers").to_ascii_lowercase();
        for h in ["location", "etag", "link", "x-strata-node", "retry-after"] {
            assert!(exposed.contains(h), "{exposed}");
        }
        let (r, text) = call("GET", "/healthz").await;
        assert_eq!(header(&r, "access-control-allow-origin"), "");
        // A handler's own 503 is left as it is.
        assert_eq!(
            (r.status(), text.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        );
        assert_eq!(header(&r, "retry-after"), "");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_over_the_limit_gets_503_with_a_reason_and_retry_after() {
        let started = tokio::time::Instant::now();
        let (r, text) = call("POST", "/whip/cam/slow").await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let waited = started.elapsed();
        assert!(waited >= LIMIT && waited < LIMIT * 10, "{waited:?}");
        assert_eq!(header(&r, "retry-after"), "2");
        assert_eq!(header(&r, "access-control-allow-origin"), "*");
        assert!(text.contains("took longer than 1s"), "{text}");
        let (r, text) = call("GET", "/slow").await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(header(&r, "retry-after"), "2");
        assert!(text.contains("took longer"), "{text}");
    }
}
