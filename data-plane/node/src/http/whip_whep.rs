//! The WHIP and WHEP endpoints: POST creates a session (or redirects the
//! client to another node), PATCH trickles candidates, DELETE ends it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use strata_common::http::content_type_is;
use strata_proto::v1::{self, Purpose};
use strata_rtc::LayerPref;
use tokio::task::JoinHandle;

use super::extract::{Admitted, PlayAction, Post, PublishAction};
use super::{failed, layers};
use crate::auth;
use crate::error::ApiError;
use crate::feed::Role;
use crate::publish;
use crate::session_table::SessionKind;
use crate::sessions::{self, Created};
use crate::state::NodeState;

/// The 201 of a created session.
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

/// Why the node turns a new session away, if it does: it drains, or it is
/// `full` (`full_why` then).
fn turned_away(state: &NodeState, full: bool, full_why: &'static str) -> Option<&'static str> {
    match (full, state.is_draining()) {
        (true, _) => Some(full_why),
        (false, true) => Some("node draining"),
        (false, false) => None,
    }
}

/// Where a request is sent when this node cannot take it.
struct Elsewhere<'a> {
    kind: &'a str,
    stream: &'a str,
    purpose: v1::Purpose,
    why: &'a str,
    token: Option<&'a str>,
    /// The request's own (already validated) query parameter the next node
    /// must see too: a backup publisher's `role=backup`, a player's `layer=`.
    keep: Option<(&'a str, &'a str)>,
}

/// A node that cannot take the client sends it elsewhere (RFC 9725 §4.5
/// allows a 307), or answers 503 with Retry-After when no node can.
async fn redirect_or_refuse(state: &NodeState, to: Elsewhere<'_>) -> Response {
    let placed = state
        .control
        .place(state.region(), to.stream, to.purpose, state.id())
        .await;
    let Some(node) = placed.ok().and_then(|p| p.node) else {
        return failed(state, ApiError::Unavailable(to.why.into()));
    };
    state
        .counters
        .redirects_total
        .fetch_add(1, Ordering::Relaxed);
    let mut query: Vec<String> = Vec::new();
    // Browsers drop `Authorization` on a cross-origin redirect; the next node
    // takes the token from the query instead. (Tokens are base64url and dots:
    // nothing to escape.)
    if let Some(t) = to.token.filter(|t| t.bytes().all(is_token_char)) {
        query.push(format!("token={t}"));
    }
    if let Some((k, v)) = to.keep {
        query.push(format!("{k}={v}"));
    }
    let base = node.http_url.trim_end_matches('/');
    let mut location = format!("{base}/{}/{}", to.kind, to.stream);
    if !query.is_empty() {
        location.push('?');
        location.push_str(&query.join("&"));
    }
    let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Session creation runs in a task of its own: if the client goes away or
/// the request times out, the claim and negotiation still finish (or are
/// given back) instead of being cancelled half-way.
async fn joined(task: JoinHandle<Result<Created, ApiError>>) -> Result<Created, ApiError> {
    task.await.map_err(|e| ApiError::Internal(e.to_string()))?
}

impl<A> Post<A> {
    /// Where to send this POST when the node cannot take it.
    fn elsewhere<'a>(&'a self, kind: &'a str, why: &'a str) -> Elsewhere<'a> {
        let purpose = match kind {
            "whip" => Purpose::Publish,
            _ => Purpose::Play,
        };
        Elsewhere {
            kind,
            stream: &self.stream,
            purpose,
            why,
            token: self.token.as_deref(),
            keep: None,
        }
    }
}

pub(super) async fn whip_post(
    State(state): State<Arc<NodeState>>,
    post: Post<PublishAction>,
) -> Response {
    whip(&state, post)
        .await
        .unwrap_or_else(|e| failed(&state, e))
}

async fn whip(state: &Arc<NodeState>, post: Post<PublishAction>) -> Result<Response, ApiError> {
    let role = crate::feed::role_of(post.query.as_deref())?;
    if role == Role::Backup {
        let (token, now) = (post.token.as_deref(), auth::unix_now());
        let checked = state.auth.check_backup(token, &post.stream, now);
        checked.map_err(ApiError::from_auth)?;
    }
    let full = state.sessions.count(SessionKind::Publisher) >= state.cfg.max_publishers as usize;
    if let Some(why) = turned_away(state, full, "node at publisher capacity") {
        let mut to = post.elsewhere("whip", why);
        to.keep = (role == Role::Backup).then_some(("role", "backup"));
        return Ok(redirect_or_refuse(state, to).await);
    }
    let (st, s, offer) = (state.clone(), post.stream.clone(), post.offer.clone());
    let c = joined(tokio::spawn(async move {
        publish::whip(&st, &s, &offer, role).await
    }))
    .await?;
    Ok(created(state, "whip", &post.stream, c))
}

pub(super) async fn whep_post(
    State(state): State<Arc<NodeState>>,
    post: Post<PlayAction>,
) -> Response {
    whep(&state, post)
        .await
        .unwrap_or_else(|e| failed(&state, e))
}

async fn whep(state: &Arc<NodeState>, post: Post<PlayAction>) -> Result<Response, ApiError> {
    let pref = layers::layer_pref(post.query.as_deref())?;
    let cap = state.cfg.capacity as usize;
    let full = cap != 0 && state.sessions.connected_players() >= cap;
    if let Some(why) = turned_away(state, full, "node at player capacity") {
        let mut to = post.elsewhere("whep", why);
        if let LayerPref::Pinned(layer) = pref {
            to.keep = Some(("layer", layer.as_str()));
        }
        return Ok(redirect_or_refuse(state, to).await);
    }
    // See `joined`: not cancelled with the request.
    let (st, s, offer) = (state.clone(), post.stream.clone(), post.offer.clone());
    let c = joined(tokio::spawn(async move {
        sessions::play(&st, &s, &offer, pref).await
    }))
    .await?;
    Ok(created(state, "whep", &post.stream, c))
}

pub(super) async fn session_patch(
    State(state): State<Arc<NodeState>>,
    _admitted: Admitted,
    Path((stream, session)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    patch(&state, &stream, &session, &headers, &body)
        .await
        .unwrap_or_else(|e| failed(&state, e))
}

async fn patch(
    state: &NodeState,
    stream: &str,
    session: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if !content_type_is(headers, "application/trickle-ice-sdpfrag") {
        return Err(ApiError::UnsupportedMediaType(
            "expected Content-Type: application/trickle-ice-sdpfrag".into(),
        ));
    }
    let found = state.sessions.with(session, |s| {
        (s.stream == stream).then(|| (s.etag.clone(), s.candidates.clone()))
    });
    let Some((etag, candidates)) = found.flatten() else {
        return Err(ApiError::NotFound("no such session".into()));
    };
    if let Some(m) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
        && m.trim() != "*"
        && m.trim() != etag
    {
        return Err(ApiError::PreconditionFailed(
            "ETag does not match the session".into(),
        ));
    }
    let frag = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the sdpfrag is not UTF-8".into()))?;
    candidates.add(frag).await.map_err(ApiError::from_rtc)?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

pub(super) async fn session_delete(
    State(state): State<Arc<NodeState>>,
    Path((stream, session)): Path<(String, String)>,
) -> Response {
    let belongs = state
        .sessions
        .with(&session, |s| s.stream == stream)
        .unwrap_or(false);
    if !belongs {
        return failed(&state, ApiError::NotFound("no such session".into()));
    }
    if let Some(mut s) = state.sessions.remove(&session)
        && let Some(stop) = s.stop.take()
    {
        let _ = stop.send(());
    }
    StatusCode::OK.into_response()
}
