//! The media half of a served subscription: packets into group streams.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use strata_media::hub::ResumeRule;
use strata_media::{Catalog, MediaPacket, TrackId, TrackKind};
use tokio::time::Instant;

use crate::config::RelayConfig;
use crate::error::RelayError;
use crate::framing::{
    DATAGRAM_HEADER_LEN, FRAME_HEADER_LEN, Frame, GROUP_HEADER_LEN, GroupHeader, encode_datagram,
    encode_frame_header, encode_group_header,
};
use crate::groups::{GroupPlanner, PacketPlan};
use crate::io::{codes, now, wall_clock_us};
use crate::stats::{PeerStats, RelayStats, add};

/// Most packets written in one go: bounds how long other work of the session
/// (keyframe requests, resets) waits behind a burst.
const MAX_BATCH: usize = 64;
/// Bytes of the block frame and group headers are split off.
const HEADER_BLOCK: usize = 4096;

/// The tracks whose frames go as datagrams: audio, when the stream has video
/// (audio-only streams keep their timed groups).
fn datagram_tracks(catalog: &Catalog) -> Vec<TrackId> {
    if catalog.video().is_none() {
        return Vec::new();
    }
    catalog
        .tracks
        .iter()
        .filter(|t| t.kind == TrackKind::Audio)
        .map(|t| t.id)
        .collect()
}

/// Newer groups get higher priority; wraps only after 2^31 groups.
fn priority(sequence: u64) -> i32 {
    i32::try_from(sequence & 0x7fff_ffff).unwrap_or(i32::MAX)
}

pub(crate) struct GroupSender {
    conn: quinn::Connection,
    subscription: u64,
    planner: GroupPlanner,
    /// Audio tracks that go as datagrams (empty: none do).
    datagram_tracks: Vec<TrackId>,
    /// The downstream accepts datagrams (and the config allows them).
    datagrams: bool,
    latency_bound: std::time::Duration,
    current: Option<(u64, quinn::SendStream)>,
    /// Superseded groups still being delivered.
    backlog: HashMap<u64, quinn::SendStream>,
    delivered: FuturesUnordered<BoxFuture<'static, u64>>,
    /// Block the headers are written into.
    buf: BytesMut,
    /// Chunks (headers and payloads) for the current group, not written yet.
    pending: Vec<Bytes>,
    pending_bytes: u64,
    pending_packets: u64,
    stats: Arc<RelayStats>,
    peer: Arc<PeerStats>,
}

impl GroupSender {
    pub(crate) fn new(
        conn: quinn::Connection,
        subscription: u64,
        catalog: &Catalog,
        cfg: &RelayConfig,
        stats: Arc<RelayStats>,
        peer: Arc<PeerStats>,
    ) -> Self {
        let rule = ResumeRule::for_catalog(catalog);
        GroupSender {
            datagrams: cfg.audio_datagrams && conn.max_datagram_size().is_some(),
            datagram_tracks: datagram_tracks(catalog),
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
            pending: Vec::with_capacity(2 * MAX_BATCH + 1),
            pending_bytes: 0,
            pending_packets: 0,
            stats,
            peer,
        }
    }

    pub(crate) fn set_catalog(&mut self, catalog: &Catalog) {
        self.planner.set_rule(ResumeRule::for_catalog(catalog));
        self.datagram_tracks = datagram_tracks(catalog);
    }

    /// Send `first` and up to [`MAX_BATCH`] more packets that `more` has ready
    /// without waiting, as few QUIC writes as the group boundaries allow; only
    /// a dead connection is an error.
    pub(crate) async fn send_batch(
        &mut self,
        first: MediaPacket,
        mut more: impl FnMut() -> Option<MediaPacket>,
    ) -> Result<(), RelayError> {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(pkt) = next {
            self.push(pkt).await?;
            taken += 1;
            next = if taken < MAX_BATCH { more() } else { None };
        }
        self.flush().await
    }

    /// Queue one packet's frame for the current group (opening a new group,
    /// after flushing the old one, when the packet starts one).
    async fn push(&mut self, pkt: MediaPacket) -> Result<(), RelayError> {
        match self.planner.on_packet(now(), &pkt) {
            PacketPlan::Drop => return Ok(()),
            PacketPlan::Continue => {}
            PacketPlan::NewGroup { sequence } => {
                self.flush().await?;
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
                self.reserve_headers();
                encode_group_header(&header, &mut self.buf);
                self.pending_bytes += GROUP_HEADER_LEN as u64;
                self.pending.push(self.buf.split().freeze());
            }
        }
        if self.current.is_none() {
            return Ok(());
        }
        let mut frame = Frame::from_packet(pkt, wall_clock_us());
        if self.datagrams && self.datagram_tracks.contains(&frame.track) {
            match self.send_datagram(frame) {
                Ok(()) => return Ok(()),
                Err(back) => frame = back,
            }
        }
        self.reserve_headers();
        if let Err(e) = encode_frame_header(&frame, &mut self.buf) {
            tracing::debug!(error = %e, "packet not relayable; dropped");
            return Ok(());
        }
        self.pending_bytes += (FRAME_HEADER_LEN + frame.rtp.len()) as u64;
        self.pending_packets += 1;
        self.pending.push(self.buf.split().freeze());
        // The payload goes to QUIC as its own chunk: no copy.
        self.pending.push(frame.rtp);
        Ok(())
    }

    /// Send an audio frame as a datagram; hands it back if it must go on the
    /// group stream instead (too big for the path, or datagrams refused).
    fn send_datagram(&mut self, frame: Frame) -> Result<(), Frame> {
        let room = self.conn.max_datagram_size().unwrap_or(0);
        if DATAGRAM_HEADER_LEN + FRAME_HEADER_LEN + frame.rtp.len() > room {
            return Err(frame);
        }
        let Ok(datagram) = encode_datagram(self.subscription, &frame, &mut self.buf) else {
            return Err(frame);
        };
        let len = datagram.len() as u64;
        match self.conn.send_datagram(datagram) {
            Ok(()) => {
                add(&self.peer.bytes_out, len);
                add(&self.peer.packets_out, 1);
                Ok(())
            }
            Err(quinn::SendDatagramError::TooLarge) => Err(frame),
            Err(e) => {
                tracing::debug!(error = %e, "datagrams refused; audio back on the group streams");
                self.datagrams = false;
                Err(frame)
            }
        }
    }

    /// Headers are split off one shared block, refilled when it runs out.
    fn reserve_headers(&mut self) {
        if self.buf.capacity() < GROUP_HEADER_LEN.max(FRAME_HEADER_LEN) {
            self.buf.reserve(HEADER_BLOCK);
        }
    }

    /// Write the queued frames to the current group's stream.
    async fn flush(&mut self) -> Result<(), RelayError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (bytes, packets) = (self.pending_bytes, self.pending_packets);
        self.pending_bytes = 0;
        self.pending_packets = 0;
        let Some((sequence, stream)) = self.current.as_mut() else {
            self.pending.clear();
            return Ok(());
        };
        let sequence = *sequence;
        let result = {
            let write = stream.write_all_chunks(&mut self.pending);
            tokio::pin!(write);
            // Most writes fit the stream's window at once: no timer for those.
            match futures::poll!(&mut write) {
                Poll::Ready(r) => Some(r),
                Poll::Pending => tokio::time::timeout(self.latency_bound, write).await.ok(),
            }
        };
        self.pending.clear();
        match result {
            Some(Ok(())) => {
                add(&self.peer.bytes_out, bytes);
                add(&self.peer.packets_out, packets);
                Ok(())
            }
            Some(Err(quinn::WriteError::ConnectionLost(e))) => Err(e.into()),
            Some(Err(e)) => {
                tracing::debug!(sequence, error = %e, "group stream refused; skipping to next group");
                self.abandon_current();
                Ok(())
            }
            None => {
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
