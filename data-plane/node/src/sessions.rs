//! WHIP ingest and WHEP playback sessions: what happens between an accepted
//! offer and the end of the session.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use strata_media::hub::StreamHandle;
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::ApiError;
use crate::feed::Media;
use crate::pull::PullStatus;
use crate::session_table::{Opened, PublishSlot, SessionKind, session_log_id};
use crate::state::NodeState;
use strata_proto::v1;

/// How long a WHEP request waits for an upstream subscription to deliver the
/// stream's catalog.
const PULL_WAIT: Duration = Duration::from_secs(8);

/// A created session: its id (the last part of `Location`), ETag and answer.
pub struct Created {
    /// Session id.
    pub id: String,
    /// ETag of the session's ICE state.
    pub etag: String,
    /// The SDP answer.
    pub answer: String,
}

/// How long a publish waits for this node's puller of the stream to end.
const PULLER_HANDOVER: Duration = Duration::from_secs(3);

/// Attaches the publisher as the stream's hub source. If this node pulls the
/// stream for its own players (the publisher came back here after the main
/// origin died, or before a stalled stream's grace ran out), the puller holds
/// the source: it learns from its topology watch that this node is the main
/// origin now and ends, releasing its records; only then does the publisher
/// take the source over, so the players' sinks stay attached and resume at
/// its first keyframe.
pub(crate) async fn attach_after_puller(
    state: &NodeState,
    stream: &str,
    catalog: &strata_media::Catalog,
) -> Result<strata_media::hub::Source, ApiError> {
    puller_handover(state, stream).await?;
    state
        .hub
        .attach_source(stream, catalog.clone())
        .map_err(|e| ApiError::Conflict(e.to_string()))
}

/// Waits (at most [`PULLER_HANDOVER`]) for this node's puller of `stream`, if
/// any, to end: a node that just claimed the main origin of a stream it was
/// pulling for its own players takes the hub stream over from the puller once
/// the puller's topology watch has shown it the new origin (its players stay).
pub(crate) async fn puller_handover(state: &NodeState, stream: &str) -> Result<(), ApiError> {
    if let Some(mut status) = state.pullers.get(stream) {
        // The sender goes when the puller's task ends, after its cleanup.
        let ended = async { while status.changed().await.is_ok() {} };
        if tokio::time::timeout(PULLER_HANDOVER, ended).await.is_err() {
            return Err(ApiError::Conflict(format!(
                "stream {stream:?} is still pulled from another origin on this node"
            )));
        }
    }
    Ok(())
}

/// What an ingest task owns besides its media.
pub(crate) struct Ingest {
    pub(crate) stream: String,
    /// Session id.
    pub(crate) id: String,
    /// Epoch of the main origin record the session's Publish returned.
    pub(crate) epoch: i64,
    /// The stream's reservation, released after the Unpublish.
    pub(crate) _slot: PublishSlot,
}

/// A primary publisher's session whose stream was switched to another node: it goes on as
/// the standby (`backup::demote`).
pub(crate) struct Demoted {
    pub(crate) ingest: Ingest,
    pub(crate) media: Media,
    pub(crate) stop: oneshot::Receiver<()>,
}

/// Feeds the hub from a publisher holding the main origin until the
/// publisher leaves, then unpublishes; or until the stream is switched to
/// another node (a backup publisher's), then hands the session back to be
/// demoted.
pub(crate) async fn ingest(
    state: Arc<NodeState>,
    ingest: Ingest,
    (handle, mut packets): Media,
    mut source: strata_media::hub::Source,
    mut stop: oneshot::Receiver<()>,
) -> Option<Demoted> {
    let (stream, id) = (&ingest.stream, &ingest.id);
    // A stream with a backup publisher can be switched away from this node;
    // the topology watch says so, and the session then becomes the standby.
    let mut topology = None;
    loop {
        tokio::select! {
            t = next_topology(&state, stream, &mut topology) => {
                let ours = state.origins.get(stream).unwrap_or(ingest.epoch);
                if t.is_some_and(|(node, epoch)| node != state.id() && epoch > ours) {
                    drop(source);
                    let media = (handle, packets);
                    return Some(Demoted { ingest, media, stop });
                }
            }
            p = packets.recv() => match p {
                Some(p) => {
                    state.counters.publisher_bytes_in.fetch_add(p.rtp.len() as u64, Ordering::Relaxed);
                    source.push(p);
                }
                None => break,
            },
            kf = source.keyframe_request() => {
                if let Some(track) = kf
                    && let Err(e) = handle.request_keyframe(track).await
                {
                    debug!(error = %e, "keyframe request to publisher failed");
                }
            }
            () = handle.closed() => break,
            _ = &mut stop => break,
        }
    }
    handle.close().await;
    drop(source);
    state.sessions.remove(id);
    // The stream ends with its publisher. (A publisher that comes back
    // publishes again; players that stay attached resume.) The record's epoch
    // is the one this node holds now: a claim made again after the node
    // re-registered has a newer one than the session's Publish returned.
    let epoch = state.origins.get(stream).unwrap_or(ingest.epoch);
    state.origins.clear(stream);
    if let Err(e) = state.control.unpublish(stream, state.id(), epoch).await {
        warn!(error = %e, "unpublish failed; the lease will clean up");
    }
    info!(epoch, "publisher left; stream unpublished");
    let grace = state.cfg.orphan_grace;
    // Local players wait up to the grace period for a publisher to return.
    if let Some(s) = state.hub.get(stream) {
        tokio::spawn(close_if_still_orphaned(state.clone(), s, grace).in_current_span());
    }
    // `ingest` (and with it the stream's reservation) goes only now, after
    // the Unpublish: a publisher reconnecting meanwhile gets a 409 and
    // retries, rather than a claim this Unpublish would end.
    drop(ingest);
    None
}

/// How long a broken topology watch waits before it is opened again.
const WATCH_RETRY: Duration = Duration::from_millis(200);

/// The next main origin the stream's topology watch shows (node, epoch;
/// `None`: the stream has none). Opens the watch when there is none, and
/// again after it breaks.
pub(crate) async fn next_topology(
    state: &NodeState,
    stream: &str,
    watch: &mut Option<tonic::Streaming<v1::StreamTopology>>,
) -> Option<(String, i64)> {
    loop {
        if watch.is_none() {
            let req = v1::WatchStreamRequest {
                stream: stream.to_owned(),
                region: state.region().to_owned(),
            };
            match state.control.watch_stream(req).await {
                Ok(w) => *watch = Some(w),
                Err(e) => {
                    debug!(error = %e, "topology watch refused; retrying");
                    tokio::time::sleep(WATCH_RETRY).await;
                    continue;
                }
            }
        }
        let Some(w) = watch.as_mut() else { continue };
        match w.message().await {
            Ok(Some(t)) => {
                return t.main.filter(|_| t.live).map(|m| (m.node_id, m.epoch));
            }
            _ => {
                *watch = None;
                tokio::time::sleep(WATCH_RETRY).await;
            }
        }
    }
}

pub(crate) async fn close_if_still_orphaned(
    state: Arc<NodeState>,
    stream: StreamHandle,
    grace: Duration,
) {
    let mut st = stream.watch_state();
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        if st.borrow().has_source {
            return;
        }
        if tokio::time::timeout_at(deadline, st.changed())
            .await
            .is_err()
        {
            break;
        }
    }
    if !state.sessions.has_publisher(stream.name()) && state.pullers.get(stream.name()).is_none() {
        info!(
            stream = stream.name(),
            "no source came back; closing players"
        );
        stream.close();
    }
}

/// Accepts a WHEP offer for `stream`: serves it from the local hub, pulling
/// it from upstream first when this node does not carry it yet.
/// `pref` picks the simulcast layer (a stream without layers ignores it).
pub async fn play(
    state: &Arc<NodeState>,
    stream: &str,
    offer: &str,
    pref: strata_rtc::LayerPref,
) -> Result<Created, ApiError> {
    let handle = match state.hub.get(stream).filter(|s| s.has_source()) {
        Some(h) => h,
        None => wait_for_pull(state, stream).await?,
    };
    let (player, answer) = state
        .rtc
        .egress()
        .accept_with(offer, &handle, pref)
        .await
        .map_err(ApiError::from_rtc)?;
    let player = Arc::new(player);
    let Opened {
        id,
        etag,
        stop: stop_rx,
    } = state.sessions.open(
        SessionKind::Player,
        stream.to_owned(),
        Arc::clone(&player) as Arc<dyn crate::session_table::CandidateSink>,
        Some(player.state_changes()),
    );
    state.counters.players_total.fetch_add(1, Ordering::Relaxed);
    let log_id = session_log_id(&id);
    debug!(stream, session = %log_id, "player accepted");
    let span = info_span!("play", stream, session = %log_id);
    tokio::spawn(watch_player(state.clone(), id.clone(), player, stop_rx).instrument(span));
    Ok(Created { id, etag, answer })
}

async fn wait_for_pull(state: &Arc<NodeState>, stream: &str) -> Result<StreamHandle, ApiError> {
    let mut status = state.pullers.ensure(stream);
    let ready = tokio::time::timeout(PULL_WAIT, async {
        loop {
            let now = status.borrow_and_update().clone();
            match now {
                PullStatus::Ready(_) => return Ok(()),
                PullStatus::NotLive => {
                    return Err(ApiError::NotFound(format!("stream {stream:?} is not live")));
                }
                PullStatus::Failed(why) => return Err(ApiError::Unavailable(why)),
                PullStatus::Starting => {}
            }
            if status.changed().await.is_err() {
                return Err(ApiError::Unavailable("the stream's puller stopped".into()));
            }
        }
    })
    .await;
    match ready {
        Ok(Ok(())) => state
            .hub
            .get(stream)
            .ok_or_else(|| ApiError::Unavailable("stream vanished while joining".into())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::Unavailable(format!(
            "stream {stream:?} could not be pulled from upstream within {PULL_WAIT:?}"
        ))),
    }
}

/// Ends a player's session entry when the session ends, or ends the session on DELETE or
/// shutdown. The media itself flows in the egress loops.
async fn watch_player(
    state: Arc<NodeState>,
    id: String,
    player: Arc<strata_rtc::EgressPlayer>,
    mut stop: oneshot::Receiver<()>,
) {
    tokio::select! {
        () = player.closed() => {}
        _ = &mut stop => {}
    }
    player.close().await;
    state.sessions.remove(&id);
    debug!("player left");
}
