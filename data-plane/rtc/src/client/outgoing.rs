//! What both publishers do alike when they send: check the connection, find the stream a
//! packet belongs to, rewrite its header for that stream, and hand on the server's
//! keyframe requests.

use rtc::rtp;
use rtc::shared::marshal::Unmarshal;
use strata_media::TrackId;
use tokio::sync::{Mutex, mpsc};

use super::ClientPc;
use crate::{RtcError, SessionState};

impl ClientPc {
    /// The entry of `streams` that sends `track` (`id` tells an entry's track), once the
    /// connection is up: [`RtcError::NotConnected`] before, [`RtcError::UnknownTrack`] if
    /// none sends it.
    pub(super) fn sending<'a, T>(
        &self,
        streams: &'a [T],
        track: TrackId,
        id: impl Fn(&T) -> TrackId,
    ) -> Result<&'a T, RtcError> {
        if self.core.state() != SessionState::Connected {
            return Err(RtcError::NotConnected);
        }
        streams
            .iter()
            .find(|s| id(s) == track)
            .ok_or(RtcError::UnknownTrack(track))
    }

    /// The next keyframe request (PLI or FIR) the server sent, from `requests`; `None` once
    /// the connection closed.
    pub(super) async fn keyframe_request(
        &self,
        requests: &Mutex<mpsc::Receiver<TrackId>>,
    ) -> Option<TrackId> {
        let mut requests = requests.lock().await;
        tokio::select! {
            biased;
            track = requests.recv() => track,
            () = self.core.closed() => None,
        }
    }
}

/// A pre-encoded RTP packet as it goes out on one of our streams: that stream's SSRC and
/// negotiated payload type, no header extensions and no padding; sequence number and
/// timestamp kept.
pub(super) fn outgoing(
    rtp_packet: &[u8],
    ssrc: u32,
    payload_type: u8,
) -> Result<rtp::Packet, RtcError> {
    let mut packet = rtp::Packet::unmarshal(&mut &rtp_packet[..])
        .map_err(|e| RtcError::MalformedRtp(e.to_string()))?;
    packet.header.ssrc = ssrc;
    packet.header.payload_type = payload_type;
    packet.header.extension = false;
    packet.header.extensions.clear();
    packet.header.extensions_padding = 0;
    packet.header.padding = false;
    Ok(packet)
}
