//! `strata-bench fanout --simulcast`: the same fan-out with a three-layer publisher, players on
//! `auto` (on loopback they stay on the top layer) and a mixed run (a third each pinned to
//! `low`, `mid` and `high` with `?layer=`), measured in the same run as the single-layer ramp.
//!
//! The source: with ffmpeg, one encode of the single-layer source's picture at three sizes
//! and rates ([`encode::SIMULCAST`]: 1280×720 2 Mbit/s, the single-layer source's settings,
//! plus 640×360 600 kbit/s and 320×180 200 kbit/s), keyframes on the same frames; generated
//! once into the temp dir like the single-layer clip. Without ffmpeg (and with `--quick`) the
//! committed fixture's video is sent as all three layers: the path is the same, the layers'
//! rates are not (the report says so).

use std::sync::Arc;

use anyhow::{Context, Result};
use strata_media::{Layer, TrackInfo, TrackKind};
use strata_rtc::fixture::{Clip, fixture_path};

use super::encode::{self, StrmTrack};
use super::source::{CLIP_SECONDS, Source, tracks_rate};
use crate::grpcurl::find_executable;

/// How a ramp's players choose layers.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
pub enum Mode {
    /// A single-layer publisher (no `?layer=`).
    #[default]
    Single,
    /// A simulcast publisher, players on `auto`.
    Auto,
    /// A simulcast publisher, players pinned `low`, `mid`, `high` in turn.
    Mixed,
}

impl Mode {
    /// For labels: "" for the single-layer ramp.
    pub fn suffix(self) -> &'static str {
        match self {
            Mode::Single => "",
            Mode::Auto => ", simulcast auto",
            Mode::Mixed => ", simulcast low/mid/high",
        }
    }

    /// Whether the ramp publishes simulcast.
    pub fn simulcast(self) -> bool {
        self != Mode::Single
    }

    /// The layer player `index` asks for with `?layer=`, if any.
    pub fn pinned(self, index: usize) -> Option<Layer> {
        match self {
            Mode::Mixed => Layer::ALL.get(index % Layer::ALL.len()).copied(),
            Mode::Single | Mode::Auto => None,
        }
    }

    /// The layer player `index` is expected to receive (`None`: a single-layer stream).
    /// `auto` players start on the top layer and, on loopback, stay there.
    pub fn expected(self, index: usize) -> Option<Layer> {
        match self {
            Mode::Single => None,
            Mode::Auto => Some(Layer::High),
            Mode::Mixed => self.pinned(index),
        }
    }
}

/// The three-layer source (generated once with ffmpeg), or the fixture sent three times.
pub async fn load(quick: bool) -> Result<Source> {
    if !quick && find_executable("ffmpeg").is_some() {
        let path = std::env::temp_dir().join(format!(
            "strata-bench-vp8-simulcast-720p-360p-180p-{CLIP_SECONDS}s-v1.strm"
        ));
        let clip = match Clip::load(&path) {
            Ok(clip) => clip,
            Err(_) => {
                eprintln!("encoding a {CLIP_SECONDS} s three-layer VP8 clip with ffmpeg (once)...");
                let bytes = encode::encode(&encode::SIMULCAST, CLIP_SECONDS).await?;
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, &bytes)?;
                std::fs::rename(&tmp, &path)?;
                Clip::from_bytes(&bytes).context("reading the generated clip")?
            }
        };
        let why = format!("ffmpeg testsrc2 + noise, {}", path.display());
        return Ok(with_layers(clip, "320×180, 640×360 and 1280×720", &why));
    }
    let fixture = Clip::load(fixture_path("clip-vp8.strm")).context("loading the VP8 fixture")?;
    let clip = Clip::from_bytes(&tripled(&fixture)).context("building the three-layer clip")?;
    let why = match quick {
        true => "the committed fixture clip-vp8.strm's video as every layer; --quick",
        false => "the committed fixture clip-vp8.strm's video as every layer; no ffmpeg",
    };
    Ok(with_layers(clip, "3 × 640×360", why))
}

/// The committed fixture as a three-layer source (its video as every layer): the clip and
/// its tracks with their layers, for a [`strata_rtc::client::SimulcastPublisher`].
pub fn fixture_layers() -> Result<(Arc<Clip>, Vec<TrackInfo>)> {
    let fixture = Clip::load(fixture_path("clip-vp8.strm")).context("loading the VP8 fixture")?;
    let clip = Clip::from_bytes(&tripled(&fixture)).context("building the three-layer clip")?;
    let source = with_layers(clip, "3 × 640×360", "fixture");
    Ok((source.clip, source.tracks))
}

/// The clip's video tracks become the layers, lowest first, in track order.
fn with_layers(clip: Clip, sizes: &str, why: &str) -> Source {
    let mut tracks = clip.tracks().to_vec();
    let mut layers = Layer::ALL.iter();
    for t in tracks.iter_mut().filter(|t| t.kind == TrackKind::Video) {
        t.layer = layers.next().copied();
    }
    let rate = |layer: Option<Layer>| {
        let of: Vec<bool> = tracks
            .iter()
            .map(|t| t.layer.is_some() && t.layer == layer)
            .collect();
        tracks_rate(&clip, |i| of.get(i).copied().unwrap_or(false)) / 1e6
    };
    let label = format!(
        "simulcast VP8 {sizes} 30 fps ({:.2}, {:.2} and {:.2} Mbit/s) + Opus ({why})",
        rate(Some(Layer::Low)),
        rate(Some(Layer::Mid)),
        rate(Some(Layer::High)),
    );
    Source {
        clip: Arc::new(clip),
        tracks,
        label,
    }
}

/// A `.strm` with `clip`'s video track three times (tracks 0–2) and its audio (track 3).
fn tripled(clip: &Clip) -> Vec<u8> {
    let table = |i: usize| -> Option<StrmTrack> {
        let t = clip.tracks().get(i)?;
        let kind = u8::from(t.kind == TrackKind::Video);
        let channels = u8::try_from(t.channels).unwrap_or(2);
        Some((
            kind,
            t.payload_type,
            t.clock_rate,
            channels,
            t.mime.clone(),
            t.fmtp.clone(),
        ))
    };
    let video = clip
        .tracks()
        .iter()
        .position(|t| t.kind == TrackKind::Video);
    let audio = clip
        .tracks()
        .iter()
        .position(|t| t.kind == TrackKind::Audio);
    let mut tracks = Vec::new();
    for _ in 0..3 {
        tracks.extend(video.and_then(table));
    }
    tracks.extend(audio.and_then(table));
    let packets = clip.packets().iter().flat_map(|p| {
        let offset = p.offset.as_micros() as u64;
        let copies: Vec<usize> = match Some(usize::from(p.track)) {
            t if t == video => vec![0, 1, 2],
            t if t == audio => vec![3],
            _ => Vec::new(),
        };
        copies.into_iter().map(move |c| (offset, c, &p.rtp[..]))
    });
    encode::write_strm(&tracks, clip.duration().as_micros() as u64, packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_tripled_has_three_layers_and_audio() {
        let fixture = Clip::load(fixture_path("clip-vp8.strm")).expect("fixture");
        let clip = Clip::from_bytes(&tripled(&fixture)).expect("tripled clip");
        let source = with_layers(clip, "3 × 640×360", "test");
        let layers: Vec<Option<Layer>> = source.tracks.iter().map(|t| t.layer).collect();
        assert_eq!(
            layers,
            [Some(Layer::Low), Some(Layer::Mid), Some(Layer::High), None]
        );
        assert_eq!(source.clip.packets().len(), {
            let video = fixture.packets().iter().filter(|p| p.track == 0).count();
            video * 3 + (fixture.packets().len() - video)
        });
        // A player on `mid` gets the mid track and the audio.
        assert_eq!(
            source.received_by(Some(Layer::Mid)),
            [false, true, false, true]
        );
        assert_eq!(Mode::Mixed.pinned(4), Some(Layer::Mid));
        assert_eq!(Mode::Auto.expected(7), Some(Layer::High));
        assert_eq!(Mode::Single.expected(0), None);
    }
}
