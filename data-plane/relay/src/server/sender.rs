//! The media half of a served subscription: packets into group streams.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use strata_media::MediaPacket;
use strata_media::hub::ResumeRule;
use tokio::time::Instant;

use crate::config::RelayConfig;
use crate::error::RelayError;
use crate::framing::{Frame, GroupHeader, encode_frame, encode_group_header};
use crate::groups::{GroupPlanner, PacketPlan};
use crate::io::{codes, now, wall_clock_us};
use crate::stats::{PeerStats, RelayStats, add};

/// Newer groups get higher priority; wraps only after 2^31 groups.
fn priority(sequence: u64) -> i32 {
    i32::try_from(sequence & 0x7fff_ffff).unwrap_or(i32::MAX)
}

pub(crate) struct GroupSender {
    conn: quinn::Connection,
    subscription: u64,
    planner: GroupPlanner,
    latency_bound: std::time::Duration,
    current: Option<(u64, quinn::SendStream)>,
    /// Superseded groups still being delivered.
    backlog: HashMap<u64, quinn::SendStream>,
    delivered: FuturesUnordered<BoxFuture<'static, u64>>,
    buf: BytesMut,
    stats: Arc<RelayStats>,
    peer: Arc<PeerStats>,
}

impl GroupSender {
    pub(crate) fn new(
        conn: quinn::Connection,
        subscription: u64,
        rule: ResumeRule,
        cfg: &RelayConfig,
        stats: Arc<RelayStats>,
        peer: Arc<PeerStats>,
    ) -> Self {
        GroupSender {
            conn,
            subscription,
            planner: GroupPlanner::new(
                rule,
                cfg.audio_group_duration,
                cfg.group_latency_bound,
                cfg.max_backlog_groups,
            ),
            latency_bound: cfg.group_latency_bound,
            current: None,
            backlog: HashMap::new(),
            delivered: FuturesUnordered::new(),
            buf: BytesMut::new(),
            stats,
            peer,
        }
    }

    pub(crate) fn set_rule(&mut self, rule: ResumeRule) {
        self.planner.set_rule(rule);
    }

    /// Send one packet; only a dead connection is an error.
    pub(crate) async fn send(&mut self, pkt: MediaPacket) -> Result<(), RelayError> {
        self.buf.clear();
        match self.planner.on_packet(now(), &pkt) {
            PacketPlan::Drop => return Ok(()),
            PacketPlan::Continue => {}
            PacketPlan::NewGroup { sequence } => {
                self.supersede_current();
                self.apply_resets();
                let opened = tokio::time::timeout(self.latency_bound, self.conn.open_uni()).await;
                let stream = match opened {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {
                        tracing::debug!(sequence, "no stream credit for a new group; dropping it");
                        self.planner.abandon_current();
                        return Ok(());
                    }
                };
                let _ = stream.set_priority(priority(sequence));
                self.current = Some((sequence, stream));
                let header = GroupHeader {
                    subscription: self.subscription,
                    sequence,
                };
                encode_group_header(&header, &mut self.buf);
            }
        }
        let Some((sequence, stream)) = self.current.as_mut() else {
            return Ok(());
        };
        let sequence = *sequence;
        let frame = Frame::from_packet(pkt, wall_clock_us());
        if let Err(e) = encode_frame(&frame, &mut self.buf) {
            tracing::debug!(error = %e, "packet not relayable; dropped");
            return Ok(());
        }
        let len = self.buf.len() as u64;
        match tokio::time::timeout(self.latency_bound, stream.write_all(&self.buf)).await {
            Ok(Ok(())) => {
                add(&self.peer.bytes_out, len);
                add(&self.peer.packets_out, 1);
                Ok(())
            }
            Ok(Err(quinn::WriteError::ConnectionLost(e))) => Err(e.into()),
            Ok(Err(e)) => {
                tracing::debug!(sequence, error = %e, "group stream refused; skipping to next group");
                self.abandon_current();
                Ok(())
            }
            Err(_) => {
                tracing::debug!(
                    sequence,
                    "group write blocked past the latency bound; resetting"
                );
                self.abandon_current();
                Ok(())
            }
        }
    }

    fn abandon_current(&mut self) {
        self.planner.abandon_current();
        if let Some((_, mut stream)) = self.current.take() {
            let _ = stream.reset(quinn::VarInt::from_u32(codes::LATE));
            add(&self.stats.group_resets, 1);
        }
    }

    fn supersede_current(&mut self) {
        if let Some((sequence, mut stream)) = self.current.take() {
            let _ = stream.finish();
            let stopped = stream.stopped();
            self.delivered.push(Box::pin(async move {
                let _ = stopped.await;
                sequence
            }));
            self.backlog.insert(sequence, stream);
        }
    }

    /// Reset the superseded groups the planner gives up on.
    pub(crate) fn apply_resets(&mut self) {
        while let Some(sequence) = self.planner.poll_reset(now()) {
            if let Some(mut stream) = self.backlog.remove(&sequence) {
                tracing::debug!(sequence, "group too late; resetting");
                let _ = stream.reset(quinn::VarInt::from_u32(codes::LATE));
                add(&self.stats.group_resets, 1);
            }
        }
    }

    pub(crate) fn has_backlog(&self) -> bool {
        !self.delivered.is_empty()
    }

    /// A superseded group that was acknowledged (or otherwise ended).
    pub(crate) async fn next_delivered(&mut self) -> Option<u64> {
        self.delivered.next().await
    }

    pub(crate) fn on_delivered(&mut self, sequence: u64) {
        self.planner.on_delivered(sequence);
        self.backlog.remove(&sequence);
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.planner.next_deadline().map(Instant::from_std)
    }

    /// Unsubscribed: abandon everything in flight.
    pub(crate) fn close(&mut self) {
        let code = quinn::VarInt::from_u32(codes::DONE);
        if let Some((_, mut stream)) = self.current.take() {
            let _ = stream.reset(code);
        }
        for (_, mut stream) in self.backlog.drain() {
            let _ = stream.reset(code);
        }
    }
}
