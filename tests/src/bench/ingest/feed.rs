//! Stamped encoder feeds for the glass-to-glass runs: the committed one-second H.264 + AAC FLV
//! fixture looped in real time, an SEI stamp (`crate::bench::stamp`) before each access unit's
//! slices, taken just before the frame is written to the socket.
//!
//! - RTMP: the scripted client (`crate::rtmp`), video and audio tags as in the file.
//! - SRT: `srt-tokio` as the caller, video only, muxed by [`super::tsmux`] (what ffmpeg's
//!   `-f mpegts` writes), 1,316-byte messages (seven TS packets) as SRT encoders send.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::SinkExt;
use srt_tokio::SrtSocket;
use tokio::task::JoinHandle;
use tokio::time::sleep_until;

use super::tsmux::{PACKET, TsMux};
use crate::bench::stamp::sei;
use crate::rtmp::{FIXTURE_FLV, RtmpClient, flv_tags};

const TAG_AUDIO: u8 = 8;
const TAG_VIDEO: u8 = 9;
const NAL_AUD: u8 = 9;

/// The fixture, split for looping.
#[derive(Debug)]
struct Fixture {
    /// Bytes of each NAL unit's length prefix.
    length_size: usize,
    /// SPS and PPS (for Annex B, in-band before every keyframe).
    parameter_sets: Vec<Vec<u8>>,
    /// The AVC and AAC sequence headers, sent once: (tag type, body).
    headers: Vec<(u8, Bytes)>,
    /// Coded frames: (tag type, ms, body).
    frames: Vec<(u8, u32, Bytes)>,
    /// From a video frame to the same frame of the next round.
    period_ms: u32,
}

impl Fixture {
    fn load() -> Result<Fixture> {
        let mut fx = Fixture {
            length_size: 4,
            parameter_sets: Vec::new(),
            headers: Vec::new(),
            frames: Vec::new(),
            period_ms: 0,
        };
        for (kind, ts, body) in flv_tags(FIXTURE_FLV) {
            // Packet type: 0 a sequence header, 1 a coded frame (2: AVC end of sequence).
            match (kind, body.get(1)) {
                (TAG_VIDEO, Some(0)) => {
                    let record = body.get(5..).context("short AVC sequence header")?;
                    fx.read_record(record)?;
                    fx.headers.push((kind, body));
                }
                (TAG_AUDIO, Some(0)) => fx.headers.push((kind, body)),
                (TAG_AUDIO | TAG_VIDEO, Some(1)) => fx.frames.push((kind, ts, body)),
                _ => {}
            }
        }
        let video: Vec<u32> = fx.video().map(|(ts, _)| ts).collect();
        let [first, .., before_last, last] = video[..] else {
            bail!("the fixture has fewer than three video frames");
        };
        fx.period_ms = last + (last - before_last) - first;
        Ok(fx)
    }

    /// An `AVCDecoderConfigurationRecord`'s length size, SPS and PPS.
    fn read_record(&mut self, r: &[u8]) -> Result<()> {
        let bad = || anyhow::anyhow!("bad AVC sequence header in the fixture");
        self.length_size = usize::from(r.get(4).ok_or_else(bad)? & 3) + 1;
        let mut at = 5;
        for count_mask in [0x1f, 0xff] {
            let count = r.get(at).ok_or_else(bad)? & count_mask;
            at += 1;
            for _ in 0..count {
                let len = usize::from(u16::from_be_bytes([
                    *r.get(at).ok_or_else(bad)?,
                    *r.get(at + 1).ok_or_else(bad)?,
                ]));
                let set = r.get(at + 2..at + 2 + len).ok_or_else(bad)?;
                self.parameter_sets.push(set.to_vec());
                at += 2 + len;
            }
        }
        Ok(())
    }

    fn video(&self) -> impl Iterator<Item = (u32, &Bytes)> {
        self.frames
            .iter()
            .filter(|(k, _, _)| *k == TAG_VIDEO)
            .map(|(_, ts, b)| (*ts, b))
    }

    /// The NAL units of a video tag body (after its 5-byte header).
    fn units<'a>(&self, body: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = body.get(5..).unwrap_or_default();
        while rest.len() >= self.length_size {
            let (prefix, tail) = rest.split_at(self.length_size);
            let len = prefix
                .iter()
                .fold(0usize, |a, b| (a << 8) | usize::from(*b));
            let Some(unit) = tail.get(..len) else { break };
            out.push(unit);
            rest = &tail[len..];
        }
        out
    }

    /// A video tag body with a stamp of `at` before its first slice (after an AUD, if any).
    fn stamped_tag(&self, body: &[u8], at: Instant) -> Bytes {
        let units = self.units(body);
        let skip = usize::from(units.first().is_some_and(|u| u[0] & 0x1f == NAL_AUD));
        let mut out = body.get(..5).unwrap_or_default().to_vec();
        let sei = sei::build(at);
        let mut put = |u: &[u8]| {
            let len = (u.len() as u32).to_be_bytes();
            out.extend_from_slice(&len[4 - self.length_size..]);
            out.extend_from_slice(u);
        };
        units[..skip].iter().for_each(|u| put(u));
        put(&sei);
        units[skip..].iter().for_each(|u| put(u));
        Bytes::from(out)
    }

    /// An access unit in Annex B: AUD, SPS and PPS before a keyframe, the stamp, the slices.
    fn stamped_annex_b(&self, body: &[u8], keyframe: bool, at: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |u: &[u8]| {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(u);
        };
        put(&[NAL_AUD, 0xf0]);
        if keyframe {
            self.parameter_sets.iter().for_each(|s| put(s));
        }
        put(&sei::build(at));
        for u in self.units(body) {
            if u[0] & 0x1f != NAL_AUD {
                put(u);
            }
        }
        out
    }
}

/// A stamped publisher; stops when dropped.
pub struct StampedFeed {
    task: JoinHandle<Result<()>>,
}

impl StampedFeed {
    /// Whether it stopped (an error, or the server closed), with the reason.
    pub fn stopped(&self) -> bool {
        self.task.is_finished()
    }

    /// Why it stopped (waits for it to stop).
    pub async fn reason(&mut self) -> String {
        match (&mut self.task).await {
            Ok(Ok(())) => "ended".into(),
            Ok(Err(e)) => format!("{e:#}"),
            Err(e) => format!("task: {e}"),
        }
    }
}

impl Drop for StampedFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes `stream` over RTMP to `addr` (`host:port`, app `live`); returns once the node
/// accepted the publish.
pub async fn rtmp(addr: &str, stream: &str) -> Result<StampedFeed> {
    let fx = Fixture::load()?;
    let mut client = match RtmpClient::publish(addr, "live", stream).await? {
        Ok(c) => c,
        Err(refusal) => bail!("RTMP publish of {stream} refused: {refusal}"),
    };
    let task = tokio::spawn(async move {
        for (kind, body) in &fx.headers {
            match *kind {
                TAG_VIDEO => client.video(0, body.clone()).await?,
                _ => client.audio(0, body.clone()).await?,
            }
        }
        let start = tokio::time::Instant::now();
        for round in 0u32.. {
            for (kind, ts, body) in &fx.frames {
                let t = round * fx.period_ms + ts;
                sleep_until(start + Duration::from_millis(u64::from(t))).await;
                match *kind {
                    TAG_VIDEO => {
                        client
                            .video(t, fx.stamped_tag(body, Instant::now()))
                            .await?
                    }
                    _ => client.audio(t, body.clone()).await?,
                }
            }
        }
        Ok(())
    });
    Ok(StampedFeed { task })
}

/// Bytes of an SRT message: seven TS packets, as SRT encoders send.
const SRT_MESSAGE: usize = 7 * PACKET;

/// Publishes `stream` over SRT to `addr` with `latency` (the caller's; the connection takes
/// the larger of both sides'); returns once connected.
pub async fn srt(addr: &str, stream: &str, latency: Duration) -> Result<StampedFeed> {
    let fx = Fixture::load()?;
    let id = format!("#!::r={stream},m=publish");
    let mut sock = SrtSocket::builder()
        .latency(latency)
        .call(addr, Some(&id))
        .await
        .with_context(|| format!("SRT call to {addr}"))?;
    let task = tokio::spawn(async move {
        let mut mux = TsMux::default();
        let start = tokio::time::Instant::now();
        for round in 0u32.. {
            for (ts, body) in fx.video() {
                let t = round * fx.period_ms + ts;
                sleep_until(start + Duration::from_millis(u64::from(t))).await;
                let keyframe = body.first().is_some_and(|b| b >> 4 == 1);
                let au = fx.stamped_annex_b(body, keyframe, Instant::now());
                // PTS from 1 s on, as ffmpeg starts (its default muxdelay puts it above 0).
                let pts = 90 * (u64::from(t) + 1000);
                let ts_bytes = mux.video(pts, keyframe, &au);
                for chunk in ts_bytes.chunks(SRT_MESSAGE) {
                    sock.send((Instant::now(), Bytes::copy_from_slice(chunk)))
                        .await?;
                }
            }
        }
        Ok(())
    });
    Ok(StampedFeed { task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stamp::anchor;

    #[test]
    fn the_fixture_loops_at_its_frame_rate_and_stamps_read_back() {
        let fx = Fixture::load().expect("fixture");
        assert_eq!(fx.period_ms, 1000, "25 fps, 25 frames");
        assert_eq!(fx.headers.len(), 2, "AVC and AAC sequence headers");
        assert!(fx.parameter_sets.len() >= 2, "SPS and PPS");
        let (_, first) = fx.video().next().expect("a video frame");
        let at = anchor() + Duration::from_millis(42);
        let tag = fx.stamped_tag(first, at);
        let units = fx.units(&tag);
        let stamped = units.iter().position(|u| sei::read(u) == Some(at));
        let first_slice = units.iter().position(|u| matches!(u[0] & 0x1f, 1 | 5));
        assert!(stamped < first_slice && stamped.is_some(), "{stamped:?}");
        assert_eq!(units.len(), fx.units(first).len() + 1);
        let au = fx.stamped_annex_b(first, true, at);
        assert_eq!(&au[..6], &[0, 0, 0, 1, NAL_AUD, 0xf0]);
        let has_sei = au.windows(5).any(|w| w == [0, 0, 0, 1, sei::NAL_SEI]);
        assert!(has_sei);
    }
}
