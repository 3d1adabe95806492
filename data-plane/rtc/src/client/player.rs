//! A WHEP player that hands back the RTP packets it receives.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use strata_media::TrackKind;
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{MediaEngine, Registry};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use super::{ClientConfig, ClientPc, exchange_with};
use crate::RtcError;
use crate::codec::{Codec, codec_parameters};
use crate::publisher::codec_kind;

/// Packets buffered between the WebRTC stack and [`Player::recv`].
const RECEIVE_QUEUE: usize = 8192;

/// A codec the player offers, under a payload type of its choosing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCodec {
    /// The codec.
    pub codec: Codec,
    /// Payload type offered for it.
    pub payload_type: u8,
    /// `a=fmtp` parameters offered.
    pub fmtp: String,
}

impl ClientCodec {
    /// VP8 under `payload_type`.
    pub fn vp8(payload_type: u8) -> Self {
        ClientCodec {
            codec: Codec::Vp8,
            payload_type,
            fmtp: String::new(),
        }
    }

    /// H.264 constrained baseline, packetization-mode 1, under `payload_type`.
    pub fn h264(payload_type: u8) -> Self {
        ClientCodec {
            codec: Codec::H264,
            payload_type,
            fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
        }
    }

    /// Opus stereo under `payload_type`.
    pub fn opus(payload_type: u8) -> Self {
        ClientCodec {
            codec: Codec::Opus,
            payload_type,
            fmtp: "minptime=10;useinbandfec=1".into(),
        }
    }
}

/// What the player offers: one receive-only section per kind that has codecs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerOptions {
    /// Codecs offered, in order of preference within each kind.
    pub codecs: Vec<ClientCodec>,
}

impl Default for PlayerOptions {
    /// VP8 (96), H.264 (102) and Opus (111), as browsers commonly number them.
    fn default() -> Self {
        PlayerOptions {
            codecs: vec![
                ClientCodec::vp8(96),
                ClientCodec::h264(102),
                ClientCodec::opus(111),
            ],
        }
    }
}

/// One received RTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPacket {
    /// Audio or video.
    pub kind: TrackKind,
    /// The codec negotiated for the packet's stream, if known.
    pub codec: Option<Codec>,
    /// RTP header fields.
    pub ssrc: u32,
    /// RTP sequence number.
    pub sequence_number: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP payload type.
    pub payload_type: u8,
    /// RTP marker bit.
    pub marker: bool,
    /// The payload (padding removed).
    pub payload: Bytes,
    /// When the packet came out of the WebRTC stack.
    pub arrival: Instant,
}

impl ReceivedPacket {
    /// Whether this packet starts a keyframe.
    pub fn is_keyframe(&self) -> bool {
        self.codec.is_some_and(|c| c.is_keyframe(&self.payload))
    }
}

type Remotes = Arc<Mutex<Vec<(TrackKind, Arc<dyn TrackRemote>, u32)>>>;

/// A WHEP player.
pub struct Player {
    pc: ClientPc,
    packets: mpsc::Receiver<ReceivedPacket>,
    remotes: Remotes,
}

impl Player {
    /// A player offering the given codecs.
    pub async fn new(options: &PlayerOptions, config: &ClientConfig) -> Result<Player, RtcError> {
        let mut media_engine = MediaEngine::default();
        for c in &options.codecs {
            let channels = if c.codec == Codec::Opus { 2 } else { 0 };
            media_engine.register_codec(
                codec_parameters(c.codec, c.payload_type, channels, &c.fmtp),
                codec_kind(c.codec.kind()),
            )?;
        }
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
        let (pc, mut events) = ClientPc::build(media_engine, registry, config, true).await?;
        for kind in [TrackKind::Audio, TrackKind::Video] {
            if options.codecs.iter().any(|c| c.codec.kind() == kind) {
                pc.pc()
                    .add_transceiver_from_kind(
                        codec_kind(kind),
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Recvonly,
                            streams: vec![],
                            send_encodings: vec![],
                        }),
                    )
                    .await?;
            }
        }
        let (tx, packets) = mpsc::channel(RECEIVE_QUEUE);
        let remotes: Remotes = Arc::default();
        if let Some(mut tracks) = events.tracks.take() {
            let remotes = Arc::clone(&remotes);
            tokio::spawn(async move {
                while let Some(track) = tracks.recv().await {
                    tokio::spawn(read_track(track, tx.clone(), Arc::clone(&remotes)));
                }
            });
        }
        Ok(Player {
            pc,
            packets,
            remotes,
        })
    }

    /// Creates the local offer (ICE gathered, no trickle needed).
    pub async fn offer(&self) -> Result<String, RtcError> {
        self.pc.offer().await
    }

    /// Applies the server's answer.
    pub async fn set_answer(&self, answer_sdp: &str) -> Result<(), RtcError> {
        self.pc.set_answer(answer_sdp).await
    }

    /// Offer, exchange (e.g. an HTTP `POST` returning the answer body), answer.
    pub async fn negotiate<F, Fut, E>(&self, exchange: F) -> Result<(), RtcError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<String, E>>,
        E: std::fmt::Display,
    {
        exchange_with(&self.pc, exchange).await
    }

    /// The next received packet, or `None` once the connection is closed and drained.
    pub async fn recv(&mut self) -> Option<ReceivedPacket> {
        tokio::select! {
            biased;
            packet = self.packets.recv() => packet,
            () = self.pc.core.closed() => self.packets.try_recv().ok(),
        }
    }

    /// Sends a PLI for the stream of this kind; fails until its first packet arrived.
    pub async fn request_keyframe(&self, kind: TrackKind) -> Result<(), RtcError> {
        self.feedback(kind, |media_ssrc| {
            Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })
        })
        .await
    }

    /// Sends one generic NACK (RFC 4585 §6.2.1) naming `seqs` of the stream of this kind, as a
    /// player that lost them (or a hostile one) would; fails until its first packet arrived.
    pub async fn send_nack(&self, kind: TrackKind, seqs: &[u16]) -> Result<(), RtcError> {
        self.feedback(kind, |media_ssrc| {
            Box::new(TransportLayerNack {
                sender_ssrc: 0,
                media_ssrc,
                nacks: nack_pairs_from_sequence_numbers(seqs),
            })
        })
        .await
    }

    /// Sends `rtcp` as it is (one RTCP packet, header included, built by the caller for the
    /// stream of this kind's SSRC, passed to it), as a hostile player would; fails until its
    /// first packet arrived.
    pub async fn send_raw_rtcp(
        &self,
        kind: TrackKind,
        rtcp: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<(), RtcError> {
        self.feedback(kind, |media_ssrc| {
            Box::new(rtc::rtcp::raw_packet::RawPacket(bytes::Bytes::from(rtcp(
                media_ssrc,
            ))))
        })
        .await
    }

    /// Sends one RTCP feedback packet about the stream of this kind, built for its SSRC.
    async fn feedback(
        &self,
        kind: TrackKind,
        packet: impl FnOnce(u32) -> Box<dyn rtc::rtcp::Packet>,
    ) -> Result<(), RtcError> {
        let remote = self
            .remotes
            .lock()
            .ok()
            .and_then(|r| r.iter().find(|(k, ..)| *k == kind).cloned());
        let Some((_, remote, media_ssrc)) = remote else {
            return Err(RtcError::NotConnected);
        };
        remote.write_rtcp(vec![packet(media_ssrc)]).await?;
        Ok(())
    }

    client_lifecycle!();
}

async fn read_track(
    track: Arc<dyn TrackRemote>,
    tx: mpsc::Sender<ReceivedPacket>,
    remotes: Remotes,
) {
    let kind = match track.kind().await {
        RtpCodecKind::Audio => TrackKind::Audio,
        _ => TrackKind::Video,
    };
    let mut codec = None;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnOpen(init) => {
                codec = track
                    .codec(init.ssrc)
                    .await
                    .and_then(|c| Codec::from_mime(&c.mime_type));
                if let Ok(mut remotes) = remotes.lock() {
                    remotes.push((kind, Arc::clone(&track), init.ssrc));
                }
            }
            TrackRemoteEvent::OnRtpPacket(packet) => {
                let received = ReceivedPacket {
                    kind,
                    codec,
                    ssrc: packet.header.ssrc,
                    sequence_number: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    payload_type: packet.header.payload_type,
                    marker: packet.header.marker,
                    payload: packet.payload,
                    arrival: Instant::now(),
                };
                if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(received) {
                    break;
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}
