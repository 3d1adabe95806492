//! Reading group streams and routing their frames to subscriptions.

use std::sync::Arc;
use tokio::sync::mpsc;

use super::{Incoming, Routes, group_buffer, lock};
use crate::error::RelayError;
use crate::framing::{
    Frame, FrameError, MAX_FRAME, decode_datagram, decode_frame, decode_frame_bytes,
    decode_group_header,
};
use crate::io::{codes, wall_clock_us};
use crate::stats::{HopSample, PeerStats, RelayStats, add};

/// Accept group streams and datagrams until the connection ends.
pub(crate) async fn accept_groups(
    conn: quinn::Connection,
    routes: Routes,
    stats: Arc<RelayStats>,
    peer: Arc<PeerStats>,
) {
    loop {
        let ended = tokio::select! {
            stream = conn.accept_uni() => match stream {
                Ok(recv) => {
                    tokio::spawn(read_group(
                        recv,
                        routes.clone(),
                        stats.clone(),
                        peer.clone(),
                    ));
                    continue;
                }
                Err(e) => e,
            },
            datagram = conn.read_datagram() => match datagram {
                Ok(datagram) => {
                    route_datagram(datagram, &routes, &stats, &peer);
                    continue;
                }
                Err(e) => e,
            },
        };
        tracing::debug!(error = %ended, "upstream connection ended");
        // Subscriptions notice through their control streams.
        return;
    }
}

/// Hand a datagram's frame to its subscription; never waits (a full queue
/// drops it, as the network might have).
fn route_datagram(datagram: bytes::Bytes, routes: &Routes, stats: &RelayStats, peer: &PeerStats) {
    let (subscription, frame) = match decode_datagram(datagram) {
        Ok(decoded) => decoded,
        Err(e) => {
            tracing::debug!(error = %e, "invalid datagram from upstream; dropped");
            add(&stats.protocol_errors, 1);
            return;
        }
    };
    let Some(tx) = lock(routes).get(&subscription).cloned() else {
        return;
    };
    add(&peer.packets_in, 1);
    add(
        &peer.bytes_in,
        (crate::framing::DATAGRAM_HEADER_LEN + crate::framing::FRAME_HEADER_LEN + frame.rtp.len())
            as u64,
    );
    stats.on_hop(HopSample {
        send_us: frame.send_us,
        recv_us: wall_clock_us(),
        ingest_us: frame.ingest_us,
    });
    let _ = tx.try_send(Incoming::Datagram(frame));
}

async fn read_group(
    mut recv: quinn::RecvStream,
    routes: Routes,
    stats: Arc<RelayStats>,
    peer: Arc<PeerStats>,
) {
    let mut buf = group_buffer();
    let header = loop {
        match decode_group_header(&mut buf) {
            Ok(Some(header)) => break header,
            Ok(None) => {}
            Err(e) => return protocol_error(&mut recv, &stats, &e),
        }
        match recv.read_chunk(MAX_FRAME, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) | Err(_) => return,
        }
    };
    let sequence = header.sequence;
    let Some(tx) = lock(&routes).get(&header.subscription).cloned() else {
        // Unsubscribed meanwhile (or never subscribed): not interested.
        let _ = recv.stop(quinn::VarInt::from_u32(codes::UNWANTED));
        return;
    };
    let complete = match pump(&mut recv, &mut buf, sequence, &tx, &stats, &peer).await {
        Ok(complete) => complete,
        Err(RelayError::Protocol(e)) => {
            protocol_error(&mut recv, &stats, &e);
            false
        }
        Err(_) => false,
    };
    // The subscription decides whether an unfinished group counts as skipped.
    let _ = tx.send(Incoming::GroupEnd { sequence, complete }).await;
}

/// Forward frames until the group ends: `Ok(true)` if it was finished cleanly.
///
/// Frames that lie whole in a received chunk are decoded from the chunk itself
/// (their payloads are slices of it); only a frame split across chunks is
/// assembled in `buf`.
async fn pump(
    recv: &mut quinn::RecvStream,
    buf: &mut bytes::BytesMut,
    sequence: u64,
    tx: &mpsc::Sender<Incoming>,
    stats: &RelayStats,
    peer: &PeerStats,
) -> Result<bool, RelayError> {
    let forward = |frame: Frame| {
        add(&peer.packets_in, 1);
        add(
            &peer.bytes_in,
            (crate::framing::FRAME_HEADER_LEN + frame.rtp.len()) as u64,
        );
        stats.on_hop(HopSample {
            send_us: frame.send_us,
            recv_us: wall_clock_us(),
            ingest_us: frame.ingest_us,
        });
        Incoming::Frame { sequence, frame }
    };
    loop {
        while let Some(frame) = decode_frame(buf)? {
            if tx.send(forward(frame)).await.is_err() {
                let _ = recv.stop(quinn::VarInt::from_u32(codes::UNWANTED));
                return Ok(false);
            }
        }
        let mut chunk = match recv.read_chunk(MAX_FRAME, true).await {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) if buf.is_empty() => return Ok(true),
            Ok(None) => return Err(FrameError::UnexpectedEnd(buf.len()).into()),
            Err(quinn::ReadError::Reset(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if buf.is_empty() {
            while let Some(frame) = decode_frame_bytes(&mut chunk)? {
                if tx.send(forward(frame)).await.is_err() {
                    let _ = recv.stop(quinn::VarInt::from_u32(codes::UNWANTED));
                    return Ok(false);
                }
            }
        }
        buf.extend_from_slice(&chunk);
    }
}

fn protocol_error(recv: &mut quinn::RecvStream, stats: &RelayStats, e: &FrameError) {
    tracing::warn!(error = %e, "invalid group stream from upstream; stopping it");
    add(&stats.protocol_errors, 1);
    let _ = recv.stop(quinn::VarInt::from_u32(codes::PROTOCOL));
}
