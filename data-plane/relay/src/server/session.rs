//! One served subscription: the control stream and the media it triggers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use strata_media::Catalog;
use strata_media::hub::{Sink, StreamHandle};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

use super::ServerCtx;
use super::interest::InterestIn;
use super::sender::GroupSender;
use crate::auth::SubscribeRequest;
use crate::error::RelayError;
use crate::framing::{ControlMessage, SubscribeErrorCode};
use crate::io::{ControlReader, codes, sleep_until, write_control};
use crate::stats::add;

pub(crate) struct Session {
    pub(crate) ctx: Arc<ServerCtx>,
    pub(crate) conn: quinn::Connection,
    pub(crate) peer: Option<String>,
    /// `None` when the connection is at its subscription limit.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
    /// Subscription ids in use on this connection.
    pub(crate) ids: Arc<Mutex<HashSet<u64>>>,
}

/// Frees the subscription id when the session ends.
struct IdGuard(Arc<Mutex<HashSet<u64>>>, u64);

impl Drop for IdGuard {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.1);
    }
}

impl Session {
    pub(crate) async fn run(self, mut send: quinn::SendStream, recv: quinn::RecvStream) {
        let mut ctrl = ControlReader::new(recv);
        let first = tokio::time::timeout(self.ctx.cfg.handshake_timeout, ctrl.next()).await;
        let (id, stream, epoch) = match first {
            Ok(Ok(Some(ControlMessage::Subscribe { id, stream, epoch }))) => (id, stream, epoch),
            Ok(Ok(Some(_))) => return self.protocol_error(send, ctrl, "expected Subscribe"),
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "bad control stream");
                return self.protocol_error(send, ctrl, "malformed control stream");
            }
            Err(_) => {
                tracing::debug!("no Subscribe in time");
                return self.protocol_error(send, ctrl, "no Subscribe in time");
            }
        };
        let span = tracing::info_span!("relay.serve", stream = %stream, epoch, id);
        async move {
            let handle = match self.admit(id, &stream, epoch) {
                Ok(handle) => handle,
                Err((code, reason)) => {
                    tracing::info!(%code, reason, "subscription refused");
                    add(&self.ctx.stats.subscriptions_refused, 1);
                    let msg = ControlMessage::SubscribeError { code, reason };
                    let _ = write_control(&mut send, &msg).await;
                    let _ = send.finish();
                    return;
                }
            };
            let _id = IdGuard(self.ids.clone(), id);
            add(&self.ctx.stats.subscriptions_served, 1);
            match self.serve(id, handle, &mut send, &mut ctrl).await {
                Ok(()) => tracing::debug!("subscription ended"),
                Err(e) => tracing::debug!(error = %e, "subscription failed"),
            }
            let _ = send.finish();
            ctrl.stop(codes::DONE);
        }
        .instrument(span)
        .await;
    }

    fn protocol_error(&self, mut send: quinn::SendStream, mut ctrl: ControlReader, why: &str) {
        tracing::debug!(why, "closing control stream");
        add(&self.ctx.stats.protocol_errors, 1);
        let _ = send.reset(quinn::VarInt::from_u32(codes::PROTOCOL));
        ctrl.stop(codes::PROTOCOL);
    }

    /// Limits, then policy, then the hub.
    fn admit(
        &self,
        id: u64,
        stream: &str,
        epoch: u64,
    ) -> Result<StreamHandle, (SubscribeErrorCode, String)> {
        if self.permit.is_none() {
            let max = self.ctx.cfg.max_subscriptions_per_connection;
            return Err((
                SubscribeErrorCode::TooManySubscriptions,
                format!("at most {max} subscriptions per connection"),
            ));
        }
        let fresh = self
            .ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
        if !fresh {
            return Err((
                SubscribeErrorCode::Protocol,
                format!("subscription id {id} already in use on this connection"),
            ));
        }
        let request = SubscribeRequest {
            peer: self.peer.as_deref(),
            stream,
            epoch,
        };
        let verdict = self
            .ctx
            .authorizer
            .authorize(&request)
            .map_err(|r| (r.code, r.reason))
            .and_then(|()| {
                self.ctx.hub.get(stream).ok_or_else(|| {
                    (
                        SubscribeErrorCode::NotFound,
                        format!("stream {stream:?} is not carried by this node"),
                    )
                })
            });
        if verdict.is_err() {
            self.ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        }
        verdict
    }

    fn group_sender(&self, id: u64, catalog: &Catalog) -> GroupSender {
        let peer = self.peer.as_deref().unwrap_or("unknown");
        GroupSender::new(
            self.conn.clone(),
            id,
            catalog,
            &self.ctx.cfg,
            self.ctx.stats.clone(),
            self.ctx.stats.peer(peer),
        )
    }

    /// Applies a control message from the subscriber (`None`: it unsubscribed). `Some` ends
    /// the subscription with that result.
    fn on_control(
        &self,
        msg: Option<ControlMessage>,
        sink: &mut Sink,
        interest: &mut InterestIn,
    ) -> Option<Result<(), RelayError>> {
        match msg {
            Some(ControlMessage::KeyframeRequest { track }) => {
                add(&self.ctx.stats.keyframe_requests_in, 1);
                sink.request_keyframe(track);
                None
            }
            Some(ControlMessage::LayerInterest { layers }) => {
                add(&self.ctx.stats.layer_interest_in, 1);
                if let Some(layers) = interest.on_message(Instant::now().into_std(), layers) {
                    sink.set_layers(layers);
                }
                None
            }
            Some(_) => Some(Err(RelayError::Unexpected(
                "only KeyframeRequest or LayerInterest after Subscribe",
            ))),
            None => Some(Ok(())), // unsubscribed
        }
    }

    async fn serve(
        &self,
        id: u64,
        handle: StreamHandle,
        send: &mut quinn::SendStream,
        ctrl: &mut ControlReader,
    ) -> Result<(), RelayError> {
        let mut state = handle.watch_state();
        let mut catalog = state.borrow_and_update().catalog.clone();
        let mut sink: Sink = handle.subscribe();
        write_control(
            send,
            &ControlMessage::SubscribeOk {
                catalog: catalog.clone(),
            },
        )
        .await?;
        let mut groups = self.group_sender(id, &catalog);
        let grace = self.ctx.cfg.source_grace;
        let mut ended_at = (!handle.has_source()).then(|| Instant::now() + grace);
        let mut interest = InterestIn::default();
        let result = loop {
            let reset_at = groups.next_deadline();
            let interest_at = interest.deadline().map(Instant::from_std);
            tokio::select! {
                msg = ctrl.next() => if let Some(end) = self.on_control(msg?, &mut sink, &mut interest) {
                    break end;
                },
                pkt = sink.recv() => match pkt {
                    Some(pkt) => groups.send_batch(pkt, || sink.try_recv()).await?,
                    None => {
                        let msg = ControlMessage::Ended { reason: "stream closed".into() };
                        break write_control(send, &msg).await;
                    }
                },
                Some(seq) = groups.next_delivered(), if groups.has_backlog() => groups.on_delivered(seq),
                () = sleep_until(reset_at), if reset_at.is_some() => groups.apply_resets(),
                () = sleep_until(interest_at), if interest_at.is_some() => {
                    if let Some(layers) = interest.poll(Instant::now().into_std()) {
                        sink.set_layers(layers);
                    }
                }
                changed = state.changed() => {
                    if changed.is_err() {
                        break Ok(());
                    }
                    let now = state.borrow_and_update().clone();
                    if now.catalog != catalog {
                        catalog = now.catalog;
                        groups.set_catalog(&catalog);
                        let msg = ControlMessage::CatalogChanged { catalog: catalog.clone() };
                        write_control(send, &msg).await?;
                    }
                    ended_at = match (now.has_source, ended_at) {
                        (true, _) => None,
                        (false, Some(at)) => Some(at),
                        (false, None) => Some(Instant::now() + grace),
                    };
                },
                () = sleep_until(ended_at), if ended_at.is_some() => {
                    let msg = ControlMessage::Ended { reason: "stream has no source".into() };
                    break write_control(send, &msg).await;
                },
            }
        };
        groups.close();
        result
    }
}
