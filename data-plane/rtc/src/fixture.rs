//! Recorded RTP clips (`tests/fixtures/*.strm`): reading, looping, pacing.
//!
//! The format is documented in `tests/fixtures/README.md`. A clip loops seamlessly: loop `k`
//! shifts every packet's sequence number by `k` times the track's sequence span and its
//! timestamp by `k` times the clip duration in clock ticks, so consecutive loops look like one
//! long stream to a receiver.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strata_media::{Catalog, TrackId, TrackInfo, TrackKind};

/// Why a clip could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// The file could not be read.
    #[error("reading clip: {0}")]
    Io(#[from] std::io::Error),
    /// The data does not start with the `STRM` magic.
    #[error("not a .strm clip")]
    BadMagic,
    /// The format version is not 1.
    #[error("unsupported clip version {0}")]
    UnsupportedVersion(u8),
    /// The data ends in the middle of a field.
    #[error("clip truncated")]
    Truncated,
    /// A text field is not UTF-8.
    #[error("clip has a malformed text field")]
    BadText,
    /// A packet names a track that is not in the track table.
    #[error("packet {0} names an unknown track")]
    UnknownTrack(usize),
    /// A packet is not an RTP version 2 packet.
    #[error("packet {0} is not RTP")]
    NotRtp(usize),
    /// The clip has no packets, or a zero duration.
    #[error("clip is empty")]
    Empty,
}

/// One packet of a clip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipPacket {
    /// When to send it, from the start of the (looped) clip.
    pub offset: Duration,
    /// Index of its track in [`Clip::tracks`] (and its id in [`Clip::catalog`]).
    pub track: TrackId,
    /// The whole RTP packet.
    pub rtp: Bytes,
}

#[derive(Debug, Clone, Copy, Default)]
struct Span {
    seq: u16,
    ts: u32,
}

/// A recorded clip.
#[derive(Debug, Clone)]
pub struct Clip {
    tracks: Vec<TrackInfo>,
    duration: Duration,
    packets: Vec<ClipPacket>,
    spans: Vec<Span>,
}

/// Path of a committed fixture, e.g. `fixture_path("clip-vp8.strm")`.
pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ClipError> {
        if self.0.len() < n {
            return Err(ClipError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ClipError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ClipError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ClipError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn text(&mut self, len: usize) -> Result<String, ClipError> {
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ClipError::BadText)
    }
}

impl Clip {
    /// Reads a clip file.
    pub fn load(path: impl AsRef<Path>) -> Result<Clip, ClipError> {
        Clip::from_bytes(&std::fs::read(path)?)
    }

    /// Parses a clip.
    pub fn from_bytes(bytes: &[u8]) -> Result<Clip, ClipError> {
        let mut r = Reader(bytes);
        if r.take(4)? != b"STRM" {
            return Err(ClipError::BadMagic);
        }
        let version = r.u8()?;
        if version != 1 {
            return Err(ClipError::UnsupportedVersion(version));
        }
        let track_count = r.u8()?;
        let duration = Duration::from_micros(u64::from(r.u32()?));
        let mut tracks = Vec::with_capacity(usize::from(track_count));
        for id in 0..track_count {
            let kind = if r.u8()? == 0 {
                TrackKind::Audio
            } else {
                TrackKind::Video
            };
            let payload_type = r.u8()?;
            let clock_rate = r.u32()?;
            let channels = u16::from(r.u8()?);
            let mime_len = usize::from(r.u8()?);
            let mime = r.text(mime_len)?;
            let fmtp_len = usize::from(r.u16()?);
            let fmtp = r.text(fmtp_len)?;
            tracks.push(TrackInfo {
                id,
                kind,
                mime,
                clock_rate,
                channels,
                fmtp,
                payload_type,
                layer: None,
            });
        }
        let count = r.u32()? as usize;
        let mut packets = Vec::with_capacity(count.min(1 << 20));
        let mut first_last: Vec<Option<(u16, u16)>> = vec![None; tracks.len()];
        for index in 0..count {
            let offset = Duration::from_micros(u64::from(r.u32()?));
            let track = r.u8()?;
            let len = usize::from(r.u16()?);
            let rtp = r.take(len)?;
            let slot = first_last
                .get_mut(usize::from(track))
                .ok_or(ClipError::UnknownTrack(index))?;
            if rtp.len() < 12 || rtp[0] >> 6 != 2 {
                return Err(ClipError::NotRtp(index));
            }
            let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
            *slot = Some(slot.map_or((seq, seq), |(first, _)| (first, seq)));
            packets.push(ClipPacket {
                offset,
                track,
                rtp: Bytes::copy_from_slice(rtp),
            });
        }
        if packets.is_empty() || duration.is_zero() {
            return Err(ClipError::Empty);
        }
        let spans = tracks
            .iter()
            .zip(&first_last)
            .map(|(t, fl)| Span {
                seq: fl.map_or(0, |(first, last)| last.wrapping_sub(first).wrapping_add(1)),
                ts: (duration.as_micros() * u128::from(t.clock_rate) / 1_000_000) as u32,
            })
            .collect();
        Ok(Clip {
            tracks,
            duration,
            packets,
            spans,
        })
    }

    /// The clip's tracks, ids 0, 1, ...
    pub fn tracks(&self) -> &[TrackInfo] {
        &self.tracks
    }

    /// The tracks as a catalog.
    pub fn catalog(&self) -> Catalog {
        Catalog {
            tracks: self.tracks.clone(),
        }
    }

    /// Length of one loop.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// The packets of one loop, in send order.
    pub fn packets(&self) -> &[ClipPacket] {
        &self.packets
    }

    /// Packet `n` of the endlessly looped clip, with shifted offset, sequence number and
    /// timestamp.
    pub fn looped_packet(&self, n: u64) -> ClipPacket {
        let per_loop = self.packets.len() as u64;
        let lap = n / per_loop;
        let packet = &self.packets[(n % per_loop) as usize];
        if lap == 0 {
            return packet.clone();
        }
        let span = self.spans[usize::from(packet.track)];
        let mut rtp = BytesMut::from(&packet.rtp[..]);
        let seq =
            u16::from_be_bytes([rtp[2], rtp[3]]).wrapping_add(span.seq.wrapping_mul(lap as u16));
        let ts = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]])
            .wrapping_add(span.ts.wrapping_mul(lap as u32));
        rtp[2..4].copy_from_slice(&seq.to_be_bytes());
        rtp[4..8].copy_from_slice(&ts.to_be_bytes());
        ClipPacket {
            offset: packet.offset + self.duration.saturating_mul(lap as u32),
            track: packet.track,
            rtp: rtp.freeze(),
        }
    }

    /// The looped clip as an iterator, `loops` times (`None`: forever).
    pub fn iter_looped(&self, loops: Option<u32>) -> impl Iterator<Item = ClipPacket> + '_ {
        let total = loops.map(|l| u64::from(l) * self.packets.len() as u64);
        (0..)
            .take_while(move |n| total.is_none_or(|t| *n < t))
            .map(|n| self.looped_packet(n))
    }
}

/// Yields a clip's packets at their original pace, looping.
pub struct ClipPacer {
    clip: Arc<Clip>,
    next: u64,
    total: Option<u64>,
    start: tokio::time::Instant,
}

impl ClipPacer {
    /// Paces `clip` from now on, `loops` times (`None`: forever).
    pub fn new(clip: Arc<Clip>, loops: Option<u32>) -> ClipPacer {
        let total = loops.map(|l| u64::from(l) * clip.packets.len() as u64);
        ClipPacer {
            clip,
            next: 0,
            total,
            start: tokio::time::Instant::now(),
        }
    }

    /// The next packet, once its time has come; `None` after the last loop.
    pub async fn next(&mut self) -> Option<ClipPacket> {
        if self.total.is_some_and(|t| self.next >= t) {
            return None;
        }
        let packet = self.clip.looped_packet(self.next);
        self.next += 1;
        tokio::time::sleep_until(self.start + packet.offset).await;
        Some(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    fn vp8_clip() -> Clip {
        Clip::load(fixture_path("clip-vp8.strm")).expect("committed fixture")
    }

    #[test]
    fn reads_the_vp8_fixture() {
        let clip = vp8_clip();
        let catalog = clip.catalog();
        assert_eq!(catalog.tracks.len(), 2);
        let video = catalog.video().expect("video track");
        assert_eq!(video.mime, "video/VP8");
        assert_eq!(video.clock_rate, 90_000);
        let audio = &catalog.tracks[1];
        assert_eq!(audio.mime, "audio/opus");
        assert_eq!(clip.duration(), Duration::from_secs(6));
        // Keyframe every second, the first packet of video is one.
        let keyframes: Vec<_> = clip
            .packets()
            .iter()
            .filter(|p| p.track == video.id && Codec::Vp8.is_keyframe(&p.rtp[12..]))
            .map(|p| p.offset.as_millis())
            .collect();
        assert_eq!(keyframes, vec![0, 1000, 2000, 3000, 4000, 5000]);
        assert!(
            clip.packets()
                .windows(2)
                .all(|w| w[0].offset <= w[1].offset)
        );
    }

    #[test]
    fn reads_the_h264_fixture() {
        let clip = Clip::load(fixture_path("clip-h264.strm")).expect("committed fixture");
        let video = clip.catalog().video().cloned().expect("video");
        assert_eq!(video.mime, "video/H264");
        let first = clip
            .packets()
            .iter()
            .find(|p| p.track == video.id)
            .expect("packet");
        assert!(Codec::H264.is_keyframe(&first.rtp[12..]));
    }

    #[test]
    fn loops_are_continuous() {
        let clip = vp8_clip();
        let per_loop = clip.packets().len() as u64;
        let seq = |p: &ClipPacket| u16::from_be_bytes([p.rtp[2], p.rtp[3]]);
        let ts = |p: &ClipPacket| u32::from_be_bytes([p.rtp[4], p.rtp[5], p.rtp[6], p.rtp[7]]);
        for track in 0..2u8 {
            let packets: Vec<_> = clip
                .iter_looped(Some(3))
                .filter(|p| p.track == track)
                .collect();
            assert!(
                packets.len() > 3 * 250,
                "track {track}: {} packets",
                packets.len()
            );
            for w in packets.windows(2) {
                assert_eq!(seq(&w[1]), seq(&w[0]).wrapping_add(1), "track {track}");
                let step = ts(&w[1]).wrapping_sub(ts(&w[0]));
                assert!(step <= 3000, "track {track}: timestamp step {step}");
                assert!(w[0].offset <= w[1].offset);
            }
        }
        assert_eq!(clip.iter_looped(Some(2)).count() as u64, 2 * per_loop);
        let second = clip.looped_packet(per_loop);
        assert_eq!(second.offset, clip.duration());
    }

    #[test]
    fn rejects_malformed_clips() {
        assert!(matches!(
            Clip::from_bytes(b"nope"),
            Err(ClipError::BadMagic)
        ));
        assert!(matches!(
            Clip::from_bytes(b"STR"),
            Err(ClipError::Truncated)
        ));
        let bytes = std::fs::read(fixture_path("clip-vp8.strm")).expect("fixture");
        for len in [5, 10, 40, 100, 1000] {
            assert!(Clip::from_bytes(&bytes[..len]).is_err(), "prefix {len}");
        }
        let mut bad_version = bytes.clone();
        bad_version[4] = 9;
        assert!(matches!(
            Clip::from_bytes(&bad_version),
            Err(ClipError::UnsupportedVersion(9))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_keeps_time() {
        let clip = Arc::new(vp8_clip());
        let per_loop = clip.packets().len();
        let start = tokio::time::Instant::now();
        let mut pacer = ClipPacer::new(Arc::clone(&clip), Some(2));
        let mut n = 0;
        while let Some(packet) = pacer.next().await {
            assert!(start.elapsed() >= packet.offset);
            n += 1;
        }
        assert_eq!(n, 2 * per_loop);
        assert!(start.elapsed() >= Duration::from_secs(11));
    }
}
