//! Redundant ingest: a backup publisher (`POST /whip/{s}?role=backup`,
//! `role=backup` in an RTMP stream key or an SRT stream id; admitted through
//! [`crate::publish`] like every publisher).
//!
//! The node registers as the stream's standby (`RoutingService/Standby`),
//! keeps the backup publisher's latest keyframe group warm (not in the hub:
//! players on this node are served the live stream, which its puller brings
//! from the main origin), and watches the live stream by pulling it like any
//! node does, through one hub sink of its own. When the main origin record is
//! gone, or no packet arrived for `--backup-switch-gap` ([`rule`]), it
//! switches: one transaction guarded by the standby's and the main record's
//! epochs makes this node the main origin. The puller then sees from its
//! topology watch that the node is the main origin and ends; the backup
//! publisher becomes the hub's source, starting with the warm group (its
//! keyframe first), and the players of every region keep their sessions.

mod monitor;
pub mod rule;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strata_media::MediaPacket;
use strata_media::hub::{GopCache, ResumeRule};
use strata_proto::v1;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::error::ApiError;
use crate::feed::{Feed, Media};
use crate::session_table::PublishSlot;
use crate::sessions::{self, Ingest, next_topology};
use crate::state::NodeState;
use monitor::Monitor;
use rule::{Reason, SwitchRule, Verdict};

/// Bounds of the warm group (the hub's GOP cache bounds).
const WARM_MAX_BYTES: usize = 4 << 20;
const WARM_MAX_PACKETS: usize = 2048;
/// The warm group goes to the hub in bursts of this many packets, this far
/// apart (160 packets: 40 ms).
const WARM_BURST: usize = 16;
const WARM_SPACING: Duration = Duration::from_millis(4);

/// Runs a backup publisher's session while its node is the standby
/// (`ingest.epoch`: the standby record's), and as the main origin's source
/// after a switch.
pub(crate) async fn standby(
    state: Arc<NodeState>,
    ingest: Ingest,
    media: Media,
    stop: oneshot::Receiver<()>,
) {
    let task = Standby {
        catalog: media.0.catalog().clone(),
        state,
        stream: ingest.stream,
        id: ingest.id,
        epoch: ingest.epoch,
        slot: ingest._slot,
    };
    task.run(media, stop).await;
}

/// A refused standby registration as the client sees it.
pub(crate) fn refused(stream: &str, e: crate::control::ControlError) -> ApiError {
    match e.code() {
        tonic::Code::AlreadyExists => {
            ApiError::Conflict(format!("stream {stream:?} already has a backup publisher"))
        }
        tonic::Code::FailedPrecondition => ApiError::Conflict(format!(
            "stream {stream:?} is published on this node: a backup publisher needs another node"
        )),
        _ => ApiError::from_control(e),
    }
}

async fn release(state: &NodeState, stream: &str, epoch: i64) {
    if let Err(e) = state
        .control
        .release_standby(stream, state.id(), epoch)
        .await
    {
        warn!(error = %e, "releasing the standby failed; the lease will clean up");
    }
}

/// A primary publisher whose node lost the main origin record to another
/// node (its stream was switched to the backup, by the standby or by an
/// operator): it becomes the stream's standby, and this node's players
/// follow the new main origin through its puller. Without the standby
/// record (another node holds it) the session ends.
pub(crate) async fn demote(state: Arc<NodeState>, demoted: sessions::Demoted) {
    let sessions::Demoted {
        ingest,
        media: (handle, packets),
        stop,
    } = demoted;
    state.origins.clear(&ingest.stream);
    let standby = match state.control.standby(&ingest.stream, state.id()).await {
        Ok(r) => r.standby,
        Err(e) => {
            warn!(error = %e, "lost the main origin and cannot be the standby");
            None
        }
    };
    let Some(standby) = standby else {
        handle.close().await;
        state.sessions.remove(&ingest.id);
        return;
    };
    info!(
        epoch = standby.epoch,
        "the stream was switched to another node; standby now"
    );
    let task = Standby {
        catalog: handle.catalog().clone(),
        state,
        stream: ingest.stream,
        id: ingest.id,
        epoch: standby.epoch,
        slot: ingest._slot,
    };
    task.run((handle, packets), stop).await;
}

/// How watching the primary ended.
enum Outcome {
    /// The backup publisher left (or was told to).
    Left,
    /// The stream switched to this node.
    Switched(v1::MainOrigin),
}

/// A backup publisher's session while its node is the standby.
struct Standby {
    state: Arc<NodeState>,
    stream: String,
    id: String,
    epoch: i64,
    slot: PublishSlot,
    catalog: strata_media::Catalog,
}

impl Standby {
    async fn run(self, (handle, mut packets): Media, mut stop: oneshot::Receiver<()>) {
        let mut warm = GopCache::new(WARM_MAX_BYTES, WARM_MAX_PACKETS);
        let outcome = self
            .watch(&handle, &mut packets, &mut warm, &mut stop)
            .await;
        let state = self.state.clone();
        let origin = match outcome {
            Outcome::Switched(origin) => origin,
            Outcome::Left => {
                handle.close().await;
                state.sessions.remove(&self.id);
                release(&state, &self.stream, self.epoch).await;
                info!("backup publisher left; standby released");
                return;
            }
        };
        let source = match self.become_main(&warm).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "switched, but the hub would not take the backup publisher");
                handle.close().await;
                state.sessions.remove(&self.id);
                let _ = state
                    .control
                    .unpublish(&self.stream, state.id(), origin.epoch)
                    .await;
                return;
            }
        };
        state.origins.set(&self.stream, origin.epoch);
        let ingest = Ingest {
            stream: self.stream,
            id: self.id,
            epoch: origin.epoch,
            _slot: self.slot,
        };
        if let Some(demoted) =
            sessions::ingest(state.clone(), ingest, (handle, packets), source, stop).await
        {
            Box::pin(demote(state, demoted)).await;
        }
    }

    /// Hands the hub over from this node's puller to the backup publisher,
    /// starting with the warm group.
    async fn become_main(&self, warm: &GopCache) -> Result<strata_media::hub::Source, ApiError> {
        sessions::puller_handover(&self.state, &self.stream).await?;
        let source = self
            .state
            .hub
            .attach_source(&self.stream, self.catalog.clone())
            .map_err(|e| ApiError::Conflict(e.to_string()))?;
        // Paced: a group of a second (100 to 200 packets from an encoder
        // sending a keyframe a second) sent at once overflows a player's
        // socket buffer on a busy host, and the loss costs it the keyframe.
        for (i, p) in warm.packets().enumerate() {
            if i > 0 && i % WARM_BURST == 0 {
                tokio::time::sleep(WARM_SPACING).await;
            }
            source.push(p.clone());
        }
        info!(
            warm = warm.len(),
            "backup publisher is the stream's source now"
        );
        Ok(source)
    }

    /// Keeps the warm group and watches the live stream until the switch or
    /// the publisher's end.
    async fn watch(
        &self,
        handle: &Feed,
        packets: &mut mpsc::Receiver<MediaPacket>,
        warm: &mut GopCache,
        stop: &mut oneshot::Receiver<()>,
    ) -> Outcome {
        let state = &self.state;
        let resume = ResumeRule::for_catalog(&self.catalog);
        let mut rule = SwitchRule::new(state.id(), state.cfg.backup_switch_gap, Instant::now());
        let mut topology: Option<tonic::Streaming<v1::StreamTopology>> = None;
        let mut monitor = Monitor::default();
        loop {
            let now = Instant::now();
            let deadline = match rule.poll(now) {
                Verdict::Switch { main_epoch, reason } => {
                    // Packets the loop has not read yet (it was busy or
                    // starved) are not silence.
                    if reason == Reason::Silent && monitor.drain() {
                        rule.on_packet(now);
                        continue;
                    }
                    match self.switch(main_epoch, reason).await {
                        Some(origin) => return Outcome::Switched(origin),
                        None => rule.on_refused(Instant::now()),
                    }
                    continue;
                }
                Verdict::Main => {
                    // Became the main origin without this session's switch
                    // (an operator's): take the source over all the same.
                    if let Some((_, epoch)) = rule.main() {
                        return Outcome::Switched(main_origin(&self.stream, state, *epoch));
                    }
                    None
                }
                Verdict::Wait(d) => d,
            };
            if rule.main().is_some() {
                monitor.ensure(state, &self.stream, now);
            }
            let wake = [deadline, monitor.retry_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                p = packets.recv() => match p {
                    Some(p) => {
                        state.counters.publisher_bytes_in.fetch_add(p.rtp.len() as u64, Ordering::Relaxed);
                        warm.push(&resume, &p);
                    }
                    None => return Outcome::Left,
                },
                () = handle.closed() => return Outcome::Left,
                _ = &mut *stop => return Outcome::Left,
                t = next_topology(state, &self.stream, &mut topology) => {
                    rule.on_topology(Instant::now(), t);
                }
                seen = monitor.next() => if seen {
                    rule.on_packet(Instant::now());
                },
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    /// Asks the control plane to switch the stream to this node.
    async fn switch(&self, main_epoch: i64, reason: Reason) -> Option<v1::MainOrigin> {
        let state = &self.state;
        let req = v1::SwitchToStandbyRequest {
            stream: self.stream.clone(),
            node_id: state.id().to_owned(),
            standby_epoch: self.epoch,
            main_epoch,
            reason: reason.as_str().to_owned(),
        };
        match state.control.switch_to_standby(req).await {
            Ok(origin) => {
                state.counters.backup_switches[reason as usize].fetch_add(1, Ordering::Relaxed);
                info!(
                    reason = reason.as_str(),
                    old_epoch = main_epoch,
                    epoch = origin.epoch,
                    "switched the stream to the backup publisher"
                );
                Some(origin)
            }
            Err(e) => {
                debug!(error = %e, "switch refused or failed; looking again");
                None
            }
        }
    }
}

fn main_origin(stream: &str, state: &NodeState, epoch: i64) -> v1::MainOrigin {
    v1::MainOrigin {
        stream: stream.to_owned(),
        node_id: state.id().to_owned(),
        region: state.region().to_owned(),
        relay_addr: String::new(),
        epoch,
        started_at_ms: 0,
    }
}
