//! Transport-wide congestion control on the load client (`strata-bench fanout --transport-cc`).
//!
//! A player that negotiated transport-cc gets a transport-wide sequence number in a header
//! extension of every media packet (draft-holmer-rmcat-transport-wide-cc-extensions-01). The
//! extension is clear text under SRTP, so the receive loop reads it beside the RTP header and
//! keeps (sequence number, arrival time) in a fixed ring per player ([`Arrivals`]). Every
//! 100 ms a task per player turns what arrived into one transport feedback packet
//! ([`Feedback`]) and writes it through the player's peer connection, which protects it
//! (SRTCP) as a browser's would be.

use std::sync::Arc;
use std::time::Duration;

use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
    SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::PeerConnection;

use super::{Counters, LoadPeer};
use crate::http;

/// Arrivals a player keeps between two feedback packets; older ones are overwritten (and
/// reported lost). A player gets a few dozen packets in 100 ms.
const RING: usize = 1024;
/// How often a player sends transport feedback (browsers: about every 100 ms).
pub(super) const INTERVAL: Duration = Duration::from_millis(100);
/// Most statuses one feedback packet carries; a longer gap restarts at the newest packets.
const MAX_STATUSES: i64 = 4096;
/// Receive deltas are in multiples of 250 µs; the reference time in multiples of 64 ms.
const DELTA_US: i64 = 250;
const REFERENCE_US: i64 = 64_000;
/// Our SSRC in feedback packets: the player sends no media of its own.
const SENDER_SSRC: u32 = 1;
/// Statuses of one two-bit status vector chunk.
const VECTOR: usize = 7;
/// Longest run one run-length chunk states.
const MAX_RUN: usize = 0x1fff;

/// The transport-wide sequence number in `data` (RTP), if its header extension block carries
/// element `id` (one-byte form, RFC 8285 §4.2; or the two-byte form, §4.3).
pub(super) fn transport_seq(data: &[u8], id: u8) -> Option<u16> {
    if data.len() < 12 || data[0] & 0x10 == 0 {
        return None;
    }
    let start = 12 + 4 * usize::from(data[0] & 0x0f);
    let head = data.get(start..start + 4)?;
    let profile = u16::from_be_bytes([head[0], head[1]]);
    let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let block = data.get(start + 4..start + 4 + 4 * words)?;
    let two_byte = match profile {
        0xbede => false,
        p if p & 0xfff0 == 0x1000 => true,
        _ => return None,
    };
    let mut pos = 0;
    while pos < block.len() {
        let (element, len, body) = match two_byte {
            false => match block[pos] {
                0 => (0, 0, pos + 1),
                b if b >> 4 == 15 => return None,
                b => (b >> 4, usize::from(b & 0x0f) + 1, pos + 1),
            },
            true => match block[pos] {
                0 => (0, 0, pos + 1),
                e => (e, usize::from(*block.get(pos + 1)?), pos + 2),
            },
        };
        if element == id && len >= 2 {
            let v = block.get(body..body + 2)?;
            return Some(u16::from_be_bytes([v[0], v[1]]));
        }
        pos = body + len;
    }
    None
}

/// The id `sdp` maps the transport-wide sequence number extension to (`a=extmap:ID URI`), if
/// the one-byte form can carry it.
pub(super) fn extmap_id(sdp: &str) -> Option<u8> {
    sdp.lines().find_map(|line| {
        let mut parts = line.trim().strip_prefix("a=extmap:")?.split_whitespace();
        let id = parts.next()?.split('/').next()?.parse::<u8>().ok()?;
        (parts.next() == Some(rtc::sdp::extmap::TRANSPORT_CC_URI) && (1..=14).contains(&id))
            .then_some(id)
    })
}

/// (sequence number, arrival µs) of the packets a player received since its last feedback:
/// a ring allocated once, so recording costs no allocation.
pub(crate) struct Arrivals {
    ring: Box<[(u16, i64)]>,
    /// Where the next arrival goes.
    next: usize,
    /// Arrivals held (at most the ring's size).
    len: usize,
    /// SSRC of the newest packet.
    ssrc: u32,
}

impl std::fmt::Debug for Arrivals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrivals").field("len", &self.len).finish()
    }
}

impl Arrivals {
    pub(super) fn new() -> Self {
        Arrivals {
            ring: vec![(0, 0); RING].into_boxed_slice(),
            next: 0,
            len: 0,
            ssrc: 0,
        }
    }

    pub(super) fn push(&mut self, seq: u16, arrival_us: i64, ssrc: u32) {
        self.ring[self.next] = (seq, arrival_us);
        self.next = (self.next + 1) % RING;
        self.len = (self.len + 1).min(RING);
        self.ssrc = ssrc;
    }

    /// Appends what the ring holds to `out`, oldest first, and empties it; the SSRC of the
    /// newest packet, if there was any.
    pub(super) fn drain_into(&mut self, out: &mut Vec<(u16, i64)>) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let first = (self.next + RING - self.len) % RING;
        for i in 0..self.len {
            out.push(self.ring[(first + i) % RING]);
        }
        self.len = 0;
        Some(self.ssrc)
    }
}

/// Builds one player's feedback packets: each covers the sequence numbers from the end of
/// the previous one to the newest arrival, so packets that never came are reported lost.
#[derive(Debug, Default)]
pub(super) struct Feedback {
    /// Highest extended sequence number seen.
    highest: Option<i64>,
    /// First extended sequence number the next packet reports.
    base: Option<i64>,
    /// Feedback packets built (wraps).
    count: u8,
    /// (extended sequence number, arrival µs), reused.
    sorted: Vec<(i64, i64)>,
    symbols: Vec<SymbolTypeTcc>,
}

impl Feedback {
    /// The feedback packet for `arrivals` (oldest first) about media SSRC `ssrc`; `None`
    /// when nothing new arrived.
    pub(super) fn build(&mut self, arrivals: &[(u16, i64)], ssrc: u32) -> Option<TransportLayerCc> {
        self.extend(arrivals);
        let base = self.base.unwrap_or(self.sorted.first()?.0);
        self.sorted.retain(|&(ext, _)| ext >= base);
        let last = self.sorted.last()?.0;
        let base = base.max(last - MAX_STATUSES + 1);
        self.sorted.retain(|&(ext, _)| ext >= base);
        let first_arrival = self.sorted.first()?.1;
        let reference = first_arrival.div_euclid(REFERENCE_US);
        let mut cursor = reference * REFERENCE_US;
        let mut deltas = Vec::with_capacity(self.sorted.len());
        self.symbols.clear();
        let mut next = self.sorted.iter().peekable();
        for ext in base..=last {
            let Some(&(_, at)) = next.next_if(|(e, _)| *e == ext) else {
                self.symbols.push(SymbolTypeTcc::PacketNotReceived);
                continue;
            };
            let units = (at - cursor)
                .div_euclid(DELTA_US)
                .clamp(i64::from(i16::MIN), i64::from(i16::MAX));
            cursor += units * DELTA_US;
            let symbol = match units {
                0..=255 => SymbolTypeTcc::PacketReceivedSmallDelta,
                _ => SymbolTypeTcc::PacketReceivedLargeDelta,
            };
            self.symbols.push(symbol);
            deltas.push(RecvDelta {
                type_tcc_packet: symbol,
                delta: units * DELTA_US,
            });
        }
        self.base = Some(last + 1);
        self.count = self.count.wrapping_add(1);
        Some(TransportLayerCc {
            sender_ssrc: SENDER_SSRC,
            media_ssrc: ssrc,
            base_sequence_number: base as u16,
            packet_status_count: self.symbols.len() as u16,
            reference_time: (reference as u32) & 0x00ff_ffff,
            fb_pkt_count: self.count.wrapping_sub(1),
            packet_chunks: chunks(&self.symbols),
            recv_deltas: deltas,
        })
    }

    /// Extends the 16-bit sequence numbers of `arrivals` into `sorted`, in sequence order,
    /// each once.
    fn extend(&mut self, arrivals: &[(u16, i64)]) {
        self.sorted.clear();
        for &(seq, at) in arrivals {
            let ext = match self.highest {
                Some(h) => h + i64::from(seq.wrapping_sub(h as u16) as i16),
                // Start high so that early reordering never goes below zero.
                None => (1 << 20) + i64::from(seq),
            };
            self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
            self.sorted.push((ext, at));
        }
        self.sorted.sort_by_key(|&(ext, _)| ext);
        self.sorted.dedup_by_key(|&mut (ext, _)| ext);
    }
}

/// Status chunks for `symbols`: a run-length chunk for a run of at least seven equal
/// statuses, two-bit status vectors of seven for the rest.
fn chunks(symbols: &[SymbolTypeTcc]) -> Vec<PacketStatusChunk> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < symbols.len() {
        let run = symbols[i..]
            .iter()
            .take(MAX_RUN)
            .take_while(|s| **s == symbols[i])
            .count();
        if run >= VECTOR {
            out.push(PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: symbols[i],
                run_length: run as u16,
            }));
            i += run;
        } else {
            let end = (i + VECTOR).min(symbols.len());
            out.push(PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::TwoBit,
                symbol_list: symbols[i..end].to_vec(),
            }));
            i = end;
        }
    }
    out
}

/// Sends the player's transport feedback every [`INTERVAL`] until its connection goes away.
/// The feedback is written through a receiver (any: it is about the transport, not one
/// stream), which the stack opens on a stream's first packet.
pub(super) async fn send_feedback(pc: Arc<dyn PeerConnection>, counters: Arc<Counters>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut track: Option<Arc<dyn TrackRemote>> = None;
    let mut feedback = Feedback::default();
    let mut arrivals = Vec::with_capacity(RING);
    loop {
        tick.tick().await;
        let Some(ssrc) = counters.take_arrivals(&mut arrivals) else {
            continue;
        };
        if track.is_none() {
            let receivers = pc.get_receivers().await;
            track = receivers.first().map(|r| Arc::clone(r.track()));
        }
        // Not open yet: these arrivals go unreported, the first feedback starts after them.
        let Some(track) = &track else {
            continue;
        };
        let Some(packet) = feedback.build(&arrivals, ssrc) else {
            continue;
        };
        if track.write_rtcp(vec![Box::new(packet)]).await.is_err() {
            return;
        }
        counters.feedback_sent();
    }
}

/// Transport feedback of one Strata ramp: what its players sent and what the node says it
/// did with it (its `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFeedback {
    /// The ramp.
    pub label: String,
    /// Players that negotiated transport-cc, of all players connected.
    pub players: (usize, usize),
    /// Feedback packets those players sent.
    pub sent: u64,
    /// `strata_egress_transport_feedback_total`; `None` if `/metrics` could not be read.
    pub read: Option<u64>,
    /// `strata_egress_transport_feedback_refused_total`.
    pub refused: Option<u64>,
}

impl NodeFeedback {
    /// Reads the node serving `whep_url` (`http://…/whep/…`) after `peers` played from it.
    pub async fn read(label: &str, whep_url: &str, peers: &[LoadPeer]) -> NodeFeedback {
        let metrics = match http::split_url(whep_url) {
            Ok((authority, _)) => http::get(&format!("http://{authority}/metrics")).await,
            Err(e) => Err(e),
        };
        let text = metrics.ok().filter(|r| r.status == 200).map(|r| r.text());
        let value = |name| {
            let text = text.as_deref()?;
            Some(http::metric_sum(text, name, &[]) as u64)
        };
        NodeFeedback {
            label: label.to_owned(),
            players: (
                peers.iter().filter(|p| p.transport_cc()).count(),
                peers.len(),
            ),
            sent: peers.iter().map(|p| p.counters().feedback_packets()).sum(),
            read: value("strata_egress_transport_feedback_total"),
            refused: value("strata_egress_transport_feedback_refused_total"),
        }
    }
}

impl std::fmt::Display for NodeFeedback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (on, of) = self.players;
        write!(
            f,
            "{}: transport-cc on, negotiated by {on} of {of} players, which sent {} transport \
             feedback packets (every {} ms); ",
            self.label,
            self.sent,
            INTERVAL.as_millis()
        )?;
        match (self.read, self.refused) {
            (Some(read), Some(refused)) => {
                write!(f, "the node read {read} and refused {refused}.")
            }
            _ => write!(f, "the node's /metrics could not be read."),
        }
    }
}

#[cfg(test)]
#[path = "twcc_tests.rs"]
mod tests;
