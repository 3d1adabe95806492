//! SRT ingest: MPEG-TS over SRT in listener mode (`srt-tokio`), the stream
//! and token in the stream id (`#!::r={stream},m=publish,t={token}`, the
//! SRT access-control convention; `{stream}?token=…` and a bare `{stream}`
//! are taken too). The media goes through `strata-ingest`'s MPEG-TS
//! demuxer into the same publish path as RTMP ([`crate::encoder`]).
//!
//! Refusals are SRT handshake rejections: 2401 (token), 2400 (stream id or
//! name), 2405 (not `m=publish`), 2409 (live already), 2402 (draining,
//! full, connection limits), 2415 (codec).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::{SinkExt, StreamExt};
use srt_protocol::packet::{RejectReason, ServerRejectReason};
use srt_tokio::access::AccessControlList;
use srt_tokio::{ConnectionRequest, SrtListener, SrtSocket};
use strata_common::limits::{ConnectionLimiter, ConnectionPermit};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::encoder::key::{self, StreamKey};
use crate::encoder::{self, Publishing, RefusalKind, Stop};
use crate::feed::Role;
use crate::publish::Admitted;
use crate::state::NodeState;

/// What a stream id asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct StreamRequest {
    /// The stream.
    pub stream: String,
    /// The publish token, if any.
    pub token: Option<String>,
    /// Whether the caller wants to publish (`m=publish`); SRT's default
    /// mode is `request` (play), which this node does not serve over SRT.
    pub publish: bool,
    /// The role asked for (`role=backup`), as written; `None`: a primary.
    pub role: Option<String>,
}

/// Parses a stream id: `#!::r=…,m=publish,t=…` (keys in any order), or
/// `{stream}` / `{stream}?token=…` (then publishing is assumed).
pub fn parse_stream_id(id: &str) -> Option<StreamRequest> {
    if id.starts_with("#!::") {
        let acl: AccessControlList = id.parse().ok()?;
        let get = |k: &str| acl.0.iter().find(|e| e.key == k).map(|e| e.value.clone());
        return Some(StreamRequest {
            stream: get("r")?,
            token: get("t").filter(|t| !t.is_empty()),
            publish: get("m").is_some_and(|m| m == "publish"),
            role: get("role"),
        });
    }
    match key::parse(id) {
        StreamKey::Named {
            stream,
            token,
            query,
        } => Some(StreamRequest {
            stream: stream.to_owned(),
            token: token.map(str::to_owned),
            publish: true,
            role: query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .find_map(|kv| kv.strip_prefix("role="))
                .map(str::to_owned),
        }),
        StreamKey::Token(_) => None,
    }
}

/// Accepts SRT callers on `socket` until `stop` turns true.
pub async fn serve(
    socket: std::net::UdpSocket,
    state: Arc<NodeState>,
    mut stop: watch::Receiver<bool>,
) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => return warn!(error = %e, "SRT socket has no address"),
    };
    let socket = match socket
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UdpSocket::from_std(socket))
    {
        Ok(s) => s,
        Err(e) => return warn!(error = %e, "SRT socket"),
    };
    let bound = SrtListener::builder()
        .socket(socket)
        .latency(state.cfg.srt_latency)
        .bind(local)
        .await;
    let (mut listener, mut incoming) = match bound {
        Ok(x) => x,
        Err(e) => return warn!(error = %e, "SRT listener did not start"),
    };
    let limiter = ConnectionLimiter::new(
        state.cfg.srt_max_connections,
        state.cfg.srt_max_connections_per_ip,
    );
    loop {
        let req = tokio::select! {
            r = incoming.incoming().next() => match r {
                Some(r) => r,
                None => break,
            },
            _ = stop.changed() => break,
        };
        let peer = req.remote();
        let permit = match limiter.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                state
                    .counters
                    .srt_refused_total
                    .fetch_add(1, Ordering::Relaxed);
                debug!(%peer, %why, "SRT connection refused");
                let _ = req.reject(server(ServerRejectReason::Overload)).await;
                continue;
            }
        };
        let span = info_span!("srt", %peer);
        tokio::spawn(caller(state.clone(), req, peer, permit).instrument(span));
    }
    listener.close().await;
}

fn server(r: ServerRejectReason) -> RejectReason {
    RejectReason::Server(r)
}

async fn refuse(state: &NodeState, req: ConnectionRequest, reason: RejectReason, why: &str) {
    state
        .counters
        .srt_refused_total
        .fetch_add(1, Ordering::Relaxed);
    state.counters.refused_total.fetch_add(1, Ordering::Relaxed);
    info!("SRT publish refused: {why}");
    let _ = req.reject(reason).await;
}

/// One SRT caller: checks its stream id, claims the stream, then feeds the
/// MPEG-TS it sends into the hub until it leaves or stalls.
async fn caller(
    state: Arc<NodeState>,
    req: ConnectionRequest,
    _peer: SocketAddr,
    _permit: ConnectionPermit,
) {
    let (claim, role) = match admit(&state, &req).await {
        Ok(admitted) => admitted,
        Err((reason, why)) => return refuse(&state, req, server(reason), &why).await,
    };
    let mut publishing = Publishing::new_ts(state.clone(), claim);
    let mut socket = match req.accept(None).await {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "SRT accept failed");
            return publishing.finish().await;
        }
    };
    info!(stream = publishing.stream(), ?role, "SRT publish accepted");
    receive(&state, &mut publishing, &mut socket).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), socket.close()).await;
    publishing.finish().await;
}

/// Checks the caller's stream id and claims the stream it names; else why not, as the SRT
/// rejection to send.
async fn admit(
    state: &Arc<NodeState>,
    req: &ConnectionRequest,
) -> Result<(Admitted, Role), (ServerRejectReason, String)> {
    let id = req.stream_id().map(|s| s.to_string()).unwrap_or_default();
    let Some(asked) = parse_stream_id(&id) else {
        let why = "the stream id must be #!::r={stream},m=publish,t={token}";
        return Err((ServerRejectReason::BadRequest, why.into()));
    };
    if !asked.publish {
        let why = "this node takes publishers over SRT (m=publish); play over WHEP";
        return Err((ServerRejectReason::BadMode, why.into()));
    }
    let role = crate::feed::parse_role(asked.role.as_deref())
        .map_err(|e| (ServerRejectReason::BadRequest, e.to_string()))?;
    let token = asked.token.as_deref();
    match encoder::claim_named(state, &asked.stream, token, role).await {
        Ok(claim) => Ok((claim, role)),
        Err(r) => {
            let reason = match r.kind {
                RefusalKind::Unauthorized => ServerRejectReason::Unauthorized,
                RefusalKind::BadName => ServerRejectReason::BadRequest,
                RefusalKind::Conflict => ServerRejectReason::Conflict,
                RefusalKind::Unavailable => ServerRejectReason::Overload,
            };
            Err((reason, r.description))
        }
    }
}

/// Feeds what the caller sends into the hub until it leaves, stalls for the idle timeout,
/// sends a codec players cannot take, or the stream is taken from it.
async fn receive(state: &NodeState, publishing: &mut Publishing, socket: &mut SrtSocket) {
    let idle = state.cfg.srt_idle_timeout;
    let mut deadline = Instant::now() + idle;
    loop {
        let stop = async {
            match publishing.stop.as_mut() {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        };
        let item = tokio::select! {
            item = timeout_at(deadline, socket.next()) => item,
            () = stop => break,
        };
        match item {
            Ok(Some(Ok((_, bytes)))) => {
                deadline = Instant::now() + idle;
                match publishing.on_ts(&bytes).await {
                    Ok(()) => {}
                    Err(Stop::Unsupported(why)) => {
                        state
                            .counters
                            .srt_refused_total
                            .fetch_add(1, Ordering::Relaxed);
                        warn!(reason = %why, "SRT publish refused: a codec WebRTC players cannot take");
                        break;
                    }
                    Err(Stop::Conflict(why)) => {
                        info!(reason = %why, "SRT publish ended");
                        break;
                    }
                }
            }
            Ok(Some(Err(e))) => {
                debug!(error = %e, "SRT connection failed");
                break;
            }
            Ok(None) => break,
            Err(_) => {
                info!("SRT publisher sent nothing for {idle:?}: stalled");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids() {
        let r = parse_stream_id("#!::r=cam1,m=publish,t=abc.def.ghi").expect("acl");
        assert_eq!(
            r,
            StreamRequest {
                stream: "cam1".into(),
                token: Some("abc.def.ghi".into()),
                publish: true,
                role: None
            }
        );
        let r = parse_stream_id("#!::m=request,r=cam1").expect("acl");
        assert!(!r.publish);
        assert_eq!(r.token, None);
        assert!(parse_stream_id("#!::m=publish").is_none());
        assert!(parse_stream_id("#!::garbage").is_none());
        let r = parse_stream_id("cam2?token=x").expect("plain");
        assert_eq!(
            (r.stream.as_str(), r.token.as_deref(), r.publish),
            ("cam2", Some("x"), true)
        );
        assert_eq!(parse_stream_id("").map(|r| r.stream), Some(String::new()));
        let r = parse_stream_id("#!::r=cam1,m=publish,role=backup").expect("acl");
        assert_eq!(r.role.as_deref(), Some("backup"));
        let r = parse_stream_id("cam2?role=backup&token=x").expect("plain");
        assert_eq!(
            (r.role.as_deref(), r.token.as_deref()),
            (Some("backup"), Some("x"))
        );
    }
}
