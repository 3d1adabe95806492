//! [`Subscription`]: one stream pulled from an upstream node.

use std::sync::Arc;

use strata_media::hub::LayerSet;
use strata_media::{Catalog, MediaPacket, TrackId};
use tokio::sync::{mpsc, watch};

use super::{Incoming, Upstream, lock};
use crate::error::RelayError;
use crate::framing::{ControlMessage, Frame};
use crate::groups::{GroupOrder, HeadGate, HeadLimits, HeadOut, OrderLimits};
use crate::io::{ControlReader, codes, now, sleep_until, write_control};
use crate::stats::{RelayStats, add};

/// Unregisters the subscription from its connection when dropped.
pub(crate) struct Route {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) id: u64,
}

impl Drop for Route {
    fn drop(&mut self) {
        lock(&self.upstream.routes).remove(&self.id);
    }
}

/// What a subscription yields.
#[derive(Debug)]
pub enum SubscriptionEvent {
    /// A media packet. The first one starts a group (a keyframe for video).
    Packet(MediaPacket),
    /// The upstream's catalog changed; [`Subscription::catalog`] is updated too.
    CatalogChanged(Catalog),
    /// The upstream ended the stream. Terminal.
    Ended {
        /// The upstream's reason.
        reason: String,
    },
    /// The upstream (or the connection to it) is gone. Terminal.
    Lost(RelayError),
}

/// A stream pulled from an upstream node. Dropping it unsubscribes.
pub struct Subscription {
    route: Route,
    stream: String,
    catalog: Catalog,
    events: mpsc::Receiver<Incoming>,
    ctrl: ControlReader,
    keyframes: mpsc::Sender<TrackId>,
    layers: watch::Sender<Option<LayerSet>>,
    /// In front of `order`: each group's keyframe goes on whole or not at all.
    heads: HeadGate<Frame>,
    order: GroupOrder<Frame>,
    /// `order`'s counters already added to `stats`: (skipped, late frames).
    reported: (u64, u64),
    stats: Arc<RelayStats>,
    /// A frame of a group has been handed out: datagrams (audio) may follow.
    started: bool,
    done: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("stream", &self.stream)
            .field("id", &self.route.id)
            .field("peer", &self.route.upstream.peer)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        route: Route,
        stream: String,
        catalog: Catalog,
        events: mpsc::Receiver<Incoming>,
        (ctrl, send): (ControlReader, quinn::SendStream),
        limits: OrderLimits,
        stats: Arc<RelayStats>,
    ) -> Self {
        let (keyframes, requests) = mpsc::channel(16);
        let layers = watch::Sender::new(None);
        tokio::spawn(write_requests(send, requests, layers.subscribe()));
        Subscription {
            route,
            stream,
            catalog,
            events,
            ctrl,
            keyframes,
            layers,
            heads: HeadGate::new(HeadLimits {
                max_frames: limits.max_frames,
                max_bytes: limits.max_bytes,
                max_groups: 64,
            }),
            order: GroupOrder::new(limits),
            reported: (0, 0),
            stats,
            started: false,
            done: false,
        }
    }

    /// The stream's tracks (as of the last `SubscribeOk` / `CatalogChanged`).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The upstream's node id (from its certificate, else the server name used).
    pub fn peer(&self) -> &str {
        &self.route.upstream.peer
    }

    /// Groups not delivered to their end so far: reset by the upstream, or
    /// given up on because a newer group waited too long for them.
    pub fn skipped_groups(&self) -> u64 {
        self.order.skipped()
    }

    /// Ask the upstream for a keyframe of `track`. Never blocks; requests
    /// beyond a small queue are dropped (upstream coalesces them anyway).
    pub fn request_keyframe(&self, track: TrackId) {
        if self.keyframes.try_send(track).is_ok() {
            add(&self.stats.keyframe_requests_out, 1);
        }
    }

    /// Tell the upstream to send only these simulcast layers (the caller
    /// debounces). Ignored while the catalog has no layers: an upstream that
    /// predates simulcast would not know the message. Never blocks; only the
    /// latest set is sent if several wait.
    pub fn set_layers(&self, layers: LayerSet) {
        if self.catalog.layers().is_empty() {
            return;
        }
        let changed = self.layers.send_if_modified(|cur| {
            let changed = *cur != Some(layers);
            *cur = Some(layers);
            changed
        });
        if changed {
            add(&self.stats.layer_interest_out, 1);
        }
    }

    /// The next event; `None` after a terminal one ([`SubscriptionEvent::Ended`]
    /// or [`SubscriptionEvent::Lost`]). Cancel-safe.
    ///
    /// Packets come group by group, in group order (see
    /// [`GroupOrder`](crate::groups::GroupOrder)). While frames of a newer
    /// group are held back, this keeps reading what the connection's group
    /// readers hand over, so they never wait on the held group.
    pub async fn recv(&mut self) -> Option<SubscriptionEvent> {
        if self.done {
            return None;
        }
        loop {
            let released = self.order.poll(now());
            self.report();
            if let Some(frame) = released {
                self.started = true;
                return Some(SubscriptionEvent::Packet(frame.into_packet()));
            }
            let give_up_at = self
                .order
                .next_deadline()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                msg = self.ctrl.next() => return Some(self.on_control(msg)),
                incoming = self.events.recv() => match incoming {
                    Some(Incoming::Frame { sequence, frame }) => {
                        self.heads.on_frame(sequence, frame);
                        self.pass_heads();
                    }
                    Some(Incoming::GroupEnd { sequence, complete }) => {
                        self.heads.on_group_end(sequence, complete);
                        self.pass_heads();
                    }
                    // Audio before the first group's keyframe is of no use.
                    Some(Incoming::Datagram(frame)) if self.started => {
                        return Some(SubscriptionEvent::Packet(frame.into_packet()));
                    }
                    Some(Incoming::Datagram(_)) => add(&self.stats.late_frames, 1),
                    None => {
                        self.done = true;
                        return Some(SubscriptionEvent::Lost(RelayError::ControlClosed));
                    }
                },
                () = sleep_until(give_up_at), if give_up_at.is_some() => {}
            }
        }
    }

    /// What the head gate lets through goes into the group order.
    fn pass_heads(&mut self) {
        let at = now();
        while let Some(out) = self.heads.poll() {
            match out {
                HeadOut::Frame(sequence, frame) => {
                    let bytes = frame.rtp.len();
                    self.order.on_frame(at, sequence, frame, bytes);
                }
                HeadOut::End(sequence, complete) => self.order.on_group_end(at, sequence, complete),
            }
        }
    }

    /// Add what the group order counted since last time to the node's counters
    /// (frames of a head that never completed count as late).
    fn report(&mut self) {
        let late = self.order.late_frames() + self.heads.dropped_frames();
        let now = (self.order.skipped(), late);
        if now != self.reported {
            add(&self.stats.groups_skipped, now.0 - self.reported.0);
            add(&self.stats.late_frames, now.1 - self.reported.1);
            self.reported = now;
        }
    }

    fn on_control(&mut self, msg: Result<Option<ControlMessage>, RelayError>) -> SubscriptionEvent {
        let event = match msg {
            Ok(Some(ControlMessage::CatalogChanged { catalog })) => {
                self.catalog = catalog.clone();
                return SubscriptionEvent::CatalogChanged(catalog);
            }
            Ok(Some(ControlMessage::Ended { reason })) => SubscriptionEvent::Ended { reason },
            Ok(Some(_)) => SubscriptionEvent::Lost(RelayError::Unexpected(
                "only Ended or CatalogChanged after SubscribeOk",
            )),
            Ok(None) => SubscriptionEvent::Lost(RelayError::ControlClosed),
            Err(e) => SubscriptionEvent::Lost(e),
        };
        match &event {
            SubscriptionEvent::Ended { reason } => {
                tracing::info!(stream = %self.stream, reason, "upstream ended the stream")
            }
            SubscriptionEvent::Lost(e) => {
                tracing::info!(stream = %self.stream, error = %e, "upstream lost")
            }
            _ => {}
        }
        self.done = true;
        self.ctrl.stop(codes::DONE);
        event
    }
}

/// Owns the control stream's send half: forwards keyframe requests and layer
/// interest, and finishes the stream (= unsubscribe) when the subscription is
/// dropped.
async fn write_requests(
    mut send: quinn::SendStream,
    mut requests: mpsc::Receiver<TrackId>,
    mut layers: watch::Receiver<Option<LayerSet>>,
) {
    let mut layers_open = true;
    loop {
        let msg = tokio::select! {
            request = requests.recv() => match request {
                Some(track) => ControlMessage::KeyframeRequest { track },
                None => break,
            },
            changed = layers.changed(), if layers_open => {
                if changed.is_err() {
                    layers_open = false;
                    continue;
                }
                match *layers.borrow_and_update() {
                    Some(layers) => ControlMessage::LayerInterest { layers },
                    None => continue,
                }
            }
        };
        if let Err(e) = write_control(&mut send, &msg).await {
            tracing::debug!(error = %e, "control message not sent");
            return;
        }
    }
    let _ = send.finish();
}
