//! The sans-IO core of an RTMP/SRT ingest: codec configs and frames in,
//! a catalog and RTP packets out.

use strata_media::{Catalog, MediaPacket, TrackId, TrackInfo, TrackKind};

use crate::IngestError;
use crate::aac::AacConfig;
use crate::h264::{self, AvcConfig, nal};
use crate::rtp::RtpTrack;
use crate::transcode::{AacToOpus, OPUS_FRAME};

/// RTP payload type of the H.264 track (what browsers commonly use).
pub const H264_PT: u8 = 102;
/// RTP payload type of the Opus track.
pub const OPUS_PT: u8 = 111;
/// Audio timestamps are re-anchored on the encoder's clock when they drift
/// from the sample count by more than this (a gap in the encoder's audio).
const AUDIO_RESYNC_MS: i64 = 500;

/// Per-stream settings; the SSRCs and first sequence numbers come from the
/// caller (random in the node, fixed in tests).
#[derive(Debug, Clone, Copy)]
pub struct ConverterConfig {
    /// SSRC of the video track.
    pub video_ssrc: u32,
    /// SSRC of the audio track.
    pub audio_ssrc: u32,
    /// First RTP sequence number of each track.
    pub first_seq: u16,
    /// Largest RTP payload (bytes); larger NAL units go in FU-A fragments.
    pub max_payload: usize,
}

impl Default for ConverterConfig {
    fn default() -> Self {
        ConverterConfig {
            video_ssrc: 0x5354_0001,
            audio_ssrc: 0x5354_0002,
            first_seq: 1,
            max_payload: 1200,
        }
    }
}

struct Audio {
    transcoder: AacToOpus,
    /// (encoder time of the first sample in ms, Opus samples sent since).
    clock: Option<(i64, u64)>,
}

/// One ingest's conversion state.
pub struct Converter {
    cfg: ConverterConfig,
    avc: Option<AvcConfig>,
    audio: Option<Audio>,
    catalog: Option<Catalog>,
    video_track: Option<TrackId>,
    audio_track: Option<TrackId>,
    video_rtp: RtpTrack,
    audio_rtp: RtpTrack,
}

impl std::fmt::Debug for Converter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Converter")
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

impl Converter {
    /// A converter with nothing known yet.
    pub fn new(cfg: ConverterConfig) -> Converter {
        Converter {
            cfg,
            avc: None,
            audio: None,
            catalog: None,
            video_track: None,
            audio_track: None,
            video_rtp: RtpTrack::new(cfg.video_ssrc, H264_PT, cfg.first_seq),
            audio_rtp: RtpTrack::new(cfg.audio_ssrc, OPUS_PT, cfg.first_seq),
        }
    }

    /// The stream's catalog, fixed at the first coded frame from the codec
    /// configs seen before it (encoders send them first). `None` until then.
    pub fn catalog(&self) -> Option<&Catalog> {
        self.catalog.as_ref()
    }

    /// Takes an H.264 decoder configuration (AVC sequence header). A new one
    /// mid-stream replaces the SPS/PPS sent with keyframes.
    pub fn set_avc_config(&mut self, config: AvcConfig) {
        self.avc = Some(config);
    }

    /// Takes an AAC config (RTMP's sequence header, or an ADTS header's).
    /// The same config again changes nothing.
    pub fn set_aac_config(&mut self, config: AacConfig) -> Result<(), IngestError> {
        if self
            .audio
            .as_ref()
            .is_some_and(|a| a.transcoder.config() == config)
        {
            return Ok(());
        }
        self.audio = Some(Audio {
            transcoder: AacToOpus::new(config)?,
            clock: None,
        });
        Ok(())
    }

    fn fix_catalog(&mut self) -> Result<(), IngestError> {
        if self.catalog.is_some() {
            return Ok(());
        }
        let mut catalog = Catalog::default();
        if let Some(avc) = &self.avc {
            self.video_track = Some(0);
            catalog.tracks.push(TrackInfo {
                id: 0,
                kind: TrackKind::Video,
                mime: "video/H264".into(),
                clock_rate: 90_000,
                channels: 0,
                fmtp: avc.fmtp(),
                payload_type: H264_PT,
                layer: None,
            });
        }
        if self.audio.is_some() {
            let id = catalog.tracks.len() as TrackId;
            self.audio_track = Some(id);
            catalog.tracks.push(TrackInfo {
                id,
                kind: TrackKind::Audio,
                mime: "audio/opus".into(),
                clock_rate: 48_000,
                channels: 2,
                fmtp: "minptime=10;useinbandfec=1".into(),
                payload_type: OPUS_PT,
                layer: None,
            });
        }
        if catalog.tracks.is_empty() {
            return Err(IngestError::Malformed(
                "a coded frame came before any codec configuration",
            ));
        }
        self.catalog = Some(catalog);
        Ok(())
    }

    /// One H.264 access unit in AVCC form, at decode time `dts_ms` with
    /// composition offset `cts_ms`. Returns its RTP packets; the first one is
    /// flagged as a keyframe when the unit holds an IDR picture.
    pub fn push_video(
        &mut self,
        dts_ms: u32,
        cts_ms: i32,
        data: &[u8],
        ingest_us: u64,
    ) -> Result<Vec<MediaPacket>, IngestError> {
        let Some(avc) = &self.avc else {
            return Err(IngestError::Malformed(
                "H.264 frame before its sequence header",
            ));
        };
        let units = h264::split_avcc(data, avc.length_size)?;
        self.push_nal_units(dts_ms, cts_ms, &units, ingest_us)
    }

    /// One H.264 access unit as NAL units (from AVCC or Annex B).
    pub fn push_nal_units(
        &mut self,
        dts_ms: u32,
        cts_ms: i32,
        units: &[&[u8]],
        ingest_us: u64,
    ) -> Result<Vec<MediaPacket>, IngestError> {
        self.fix_catalog()?;
        let (Some(track), Some(avc)) = (self.video_track, &self.avc) else {
            // Video that started after the catalog was fixed without it.
            return Ok(Vec::new());
        };
        let units: Vec<&[u8]> = units
            .iter()
            .copied()
            .filter(|u| !matches!(h264::nal_type(u), nal::AUD) && !u.is_empty())
            .collect();
        let idr = units.iter().any(|u| h264::nal_type(u) == nal::IDR);
        let has_sps = units.iter().any(|u| h264::nal_type(u) == nal::SPS);
        let mut payloads = Vec::new();
        if idr && !has_sps {
            for set in avc.sps.iter().chain(&avc.pps) {
                h264::packetize(set, self.cfg.max_payload, &mut payloads);
            }
        }
        for u in &units {
            h264::packetize(u, self.cfg.max_payload, &mut payloads);
        }
        let pts = i64::from(dts_ms) + i64::from(cts_ms);
        let ts = (pts * 90) as u32;
        let count = payloads.len();
        Ok(payloads
            .iter()
            .enumerate()
            .map(|(i, p)| MediaPacket {
                track,
                keyframe: idr && i == 0,
                ingest_us,
                rtp: self.video_rtp.packet(ts, i + 1 == count, p),
            })
            .collect())
    }

    /// One raw AAC frame at `ts_ms`. Returns the Opus packets completed now.
    pub fn push_aac(
        &mut self,
        ts_ms: u32,
        frame: &[u8],
        ingest_us: u64,
    ) -> Result<Vec<MediaPacket>, IngestError> {
        if self.audio.is_none() {
            return Err(IngestError::Malformed(
                "AAC frame before its sequence header",
            ));
        }
        self.fix_catalog()?;
        let (Some(track), Some(audio)) = (self.audio_track, self.audio.as_mut()) else {
            return Ok(Vec::new());
        };
        let opus = audio.transcoder.push(frame)?;
        let ts_ms = i64::from(ts_ms);
        let (start_ms, sent) = audio.clock.get_or_insert((ts_ms, 0));
        let expected_ms = *start_ms + (*sent / 48) as i64;
        if (ts_ms - expected_ms).abs() > AUDIO_RESYNC_MS {
            *start_ms = ts_ms;
            *sent = 0;
        }
        let mut out = Vec::with_capacity(opus.len());
        for p in opus {
            let ts = (*start_ms * 48) as u32;
            let ts = ts.wrapping_add(*sent as u32);
            *sent += OPUS_FRAME as u64;
            out.push(MediaPacket {
                track,
                keyframe: false,
                ingest_us,
                rtp: self.audio_rtp.packet(ts, false, &p),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
