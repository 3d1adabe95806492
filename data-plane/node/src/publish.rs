//! One publish path for every ingest protocol (WHIP, RTMP, SRT) and role
//! (primary, backup): [`admit`] reserves the stream on this node and claims
//! its main origin (a primary) or registers the node as its standby (a
//! backup); [`start`] then makes the publisher a session: the hub's source
//! ([`crate::sessions::ingest`]) or the standby's warm group
//! ([`crate::backup`]). A protocol only negotiates (WHIP) or reads its
//! encoder's codec headers (RTMP, SRT) in between, and hands over its media
//! as a [`Feed`] and a channel of packets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{Instrument, info, info_span, warn};

use crate::backup;
use crate::error::ApiError;
use crate::feed::Role;
use crate::feed::{Feed, Media};
use crate::session_table::{CandidateSink, Opened, PublishSlot, SessionKind, session_log_id};
use crate::sessions::{self, Ingest};
use crate::state::NodeState;

/// Accepts a WHIP offer for `stream` from its primary or backup publisher (`role`): admits
/// it, negotiates, and starts its session, the same path as RTMP and SRT publishers.
pub async fn whip(
    state: &Arc<NodeState>,
    stream: &str,
    offer: &str,
    role: Role,
) -> Result<sessions::Created, ApiError> {
    let admitted = admit(state, stream, role).await?;
    let (session, answer) = match state.rtc.accept_publisher(offer).await {
        Ok(x) => x,
        Err(e) => {
            // Give the claim back: nothing will be published.
            admitted.give_back(state).await;
            return Err(ApiError::from_rtc(e));
        }
    };
    let candidates = Arc::new(session.handle());
    let (handle, packets) = session.into_parts();
    let media = (Feed::Whip(handle), packets);
    let started = start(state, admitted, media, candidates, None).await?;
    Ok(sessions::Created {
        id: started.id,
        etag: started.etag,
        answer,
    })
}

/// What the node holds for an admitted publisher before its media starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The main origin record, at this epoch.
    Main(i64),
    /// The standby record, at this epoch.
    Standby(i64),
}

/// A stream reserved on this node, with its main origin claimed or its
/// standby registered. Give it back ([`Admitted::give_back`]) if the
/// publisher never starts.
pub(crate) struct Admitted {
    stream: String,
    held: Held,
    slot: PublishSlot,
}

impl Admitted {
    /// The stream.
    pub(crate) fn stream(&self) -> &str {
        &self.stream
    }

    /// The role it was admitted as.
    pub(crate) fn role(&self) -> Role {
        match self.held {
            Held::Main(_) => Role::Primary,
            Held::Standby(_) => Role::Backup,
        }
    }

    /// Releases the record (an Unpublish, or a ReleaseStandby), then the
    /// reservation.
    pub(crate) async fn give_back(self, state: &NodeState) {
        let stream = self.stream.as_str();
        let r = match self.held {
            Held::Main(epoch) => state.control.unpublish(stream, state.id(), epoch).await,
            Held::Standby(epoch) => {
                state
                    .control
                    .release_standby(stream, state.id(), epoch)
                    .await
            }
        };
        if let Err(e) = r {
            warn!(error = %e, "giving the publish back failed; the lease will clean up");
        }
        drop(self.slot);
    }
}

/// Reserves `stream` on this node (409 while another publisher of the node
/// holds or sets it up) and claims its main origin (`Primary`: a dead
/// holder is taken over at once, see [`crate::takeover`]) or registers the
/// node as the standby (`Backup`). The caller has checked the token.
pub(crate) async fn admit(
    state: &Arc<NodeState>,
    stream: &str,
    role: Role,
) -> Result<Admitted, ApiError> {
    // Before the claim: Publish is idempotent for the node holding the
    // record, so a second publish of the stream would get the same record,
    // and its failure's Unpublish would end the first session's stream.
    let Some(slot) = state.sessions.reserve_publish(stream) else {
        return Err(ApiError::Conflict(format!(
            "stream {stream:?} is already published on this node"
        )));
    };
    let held = match role {
        Role::Primary => Held::Main(state.takeover.claim(stream).await?.epoch),
        Role::Backup => match state.control.standby(stream, state.id()).await {
            Ok(r) => match r.standby {
                Some(s) => Held::Standby(s.epoch),
                None => {
                    return Err(ApiError::Unavailable(
                        "standby answer without a record".into(),
                    ));
                }
            },
            Err(e) => return Err(backup::refused(stream, e)),
        },
    };
    Ok(Admitted {
        stream: stream.to_owned(),
        held,
        slot,
    })
}

/// A started publisher session: its id (the DELETE capability) and ETag.
pub(crate) struct Started {
    pub(crate) id: String,
    pub(crate) etag: String,
}

/// Makes an admitted publisher a session: a primary becomes the hub's
/// source (after this node's puller of the stream, if any, has handed the
/// hub over) and feeds it until it leaves; a backup keeps the standby's warm
/// group and watches the primary. `candidates` takes its trickled ICE;
/// `counter` counts it per protocol. On error the admission is given back
/// and the feed closed.
pub(crate) async fn start(
    state: &Arc<NodeState>,
    admitted: Admitted,
    (feed, packets): Media,
    candidates: Arc<dyn CandidateSink>,
    counter: Option<&AtomicU64>,
) -> Result<Started, ApiError> {
    let stream = admitted.stream.clone();
    let source = match admitted.held {
        Held::Main(epoch) => {
            match sessions::attach_after_puller(state, &stream, feed.catalog()).await {
                Ok(s) => {
                    state.origins.set(&stream, epoch);
                    Some(s)
                }
                Err(e) => {
                    feed.close().await;
                    admitted.give_back(state).await;
                    return Err(e);
                }
            }
        }
        Held::Standby(_) => None,
    };
    let Opened {
        id,
        etag,
        stop: stop_rx,
    } = state
        .sessions
        .open(SessionKind::Publisher, stream.clone(), candidates, None);
    let total = match admitted.held {
        Held::Main(_) => &state.counters.publishers_total,
        Held::Standby(_) => &state.counters.backup_publishers_total,
    };
    total.fetch_add(1, Ordering::Relaxed);
    if let Some(c) = counter {
        c.fetch_add(1, Ordering::Relaxed);
    }
    // The id is the DELETE capability: logs name the session by a hash.
    let log_id = session_log_id(&id);
    let catalog = feed.catalog().clone();
    let media = (feed, packets);
    let Admitted { held, slot, .. } = admitted;
    let (Held::Main(epoch) | Held::Standby(epoch)) = held;
    let ingest = Ingest {
        stream: stream.clone(),
        id: id.clone(),
        epoch,
        _slot: slot,
    };
    match source {
        Some(source) => {
            info!(stream, session = %log_id, epoch, ?catalog, "publisher connected");
            let span = info_span!("ingest", stream, session = %log_id);
            let state = state.clone();
            let task = async move {
                let demoted = sessions::ingest(state.clone(), ingest, media, source, stop_rx);
                if let Some(demoted) = demoted.await {
                    backup::demote(state, demoted).await;
                }
            };
            tokio::spawn(task.instrument(span));
        }
        None => {
            info!(stream, session = %log_id, epoch, "backup publisher connected; standby");
            let span = info_span!("backup", stream, session = %log_id);
            let task = backup::standby(state.clone(), ingest, media, stop_rx);
            tokio::spawn(task.instrument(span));
        }
    }
    Ok(Started { id, etag })
}
