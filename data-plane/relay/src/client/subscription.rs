//! [`Subscription`]: one stream pulled from an upstream node.

use std::sync::Arc;

use strata_media::{Catalog, MediaPacket, TrackId};
use tokio::sync::mpsc;

use super::{Incoming, Upstream, lock};
use crate::error::RelayError;
use crate::framing::ControlMessage;
use crate::groups::GroupFilter;
use crate::io::{ControlReader, codes, write_control};
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
    filter: GroupFilter,
    stats: Arc<RelayStats>,
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
        ctrl: ControlReader,
        send: quinn::SendStream,
        stats: Arc<RelayStats>,
    ) -> Self {
        let (keyframes, requests) = mpsc::channel(16);
        tokio::spawn(write_requests(send, requests));
        Subscription {
            route,
            stream,
            catalog,
            events,
            ctrl,
            keyframes,
            filter: GroupFilter::default(),
            stats,
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

    /// Groups skipped so far (reset by the upstream, or superseded unfinished).
    pub fn skipped_groups(&self) -> u64 {
        self.filter.skipped()
    }

    /// Ask the upstream for a keyframe of `track`. Never blocks; requests
    /// beyond a small queue are dropped (upstream coalesces them anyway).
    pub fn request_keyframe(&self, track: TrackId) {
        if self.keyframes.try_send(track).is_ok() {
            add(&self.stats.keyframe_requests_out, 1);
        }
    }

    /// The next event; `None` after a terminal one ([`SubscriptionEvent::Ended`]
    /// or [`SubscriptionEvent::Lost`]). Cancel-safe.
    pub async fn recv(&mut self) -> Option<SubscriptionEvent> {
        if self.done {
            return None;
        }
        loop {
            tokio::select! {
                biased;
                msg = self.ctrl.next() => return Some(self.on_control(msg)),
                incoming = self.events.recv() => match incoming {
                    Some(Incoming::Frame { sequence, frame }) => {
                        if self.filter.on_frame(sequence) {
                            return Some(SubscriptionEvent::Packet(frame.into_packet()));
                        }
                    }
                    Some(Incoming::GroupEnd { sequence, complete }) => {
                        self.filter.on_group_end(sequence, complete);
                    }
                    None => {
                        self.done = true;
                        return Some(SubscriptionEvent::Lost(RelayError::ControlClosed));
                    }
                },
            }
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

/// Owns the control stream's send half: forwards keyframe requests, and
/// finishes the stream (= unsubscribe) when the subscription is dropped.
async fn write_requests(mut send: quinn::SendStream, mut requests: mpsc::Receiver<TrackId>) {
    while let Some(track) = requests.recv().await {
        let msg = ControlMessage::KeyframeRequest { track };
        if let Err(e) = write_control(&mut send, &msg).await {
            tracing::debug!(error = %e, "keyframe request not sent");
            return;
        }
    }
    let _ = send.finish();
}
