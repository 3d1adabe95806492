//! What the driver's samples of a page say over time (`drive.mjs`, `limited-play`): each
//! sample is the page's video `inbound-rtp` counters from Chromium's `getStats()`. Pure
//! functions over a page's samples, in the order they were taken.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// One sample of one page.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Sample {
    /// `play` (the clean player) or `limited`.
    pub page: String,
    /// The stats' own timestamp, ms.
    pub at: Option<f64>,
    pub frames_decoded: u64,
    pub frame_width: u32,
    pub frame_height: u32,
    pub key_frames_decoded: u64,
    pub frames_dropped: u64,
    pub freeze_count: u64,
    /// Seconds.
    pub total_freezes_duration: f64,
    pub pli_count: u64,
    pub nack_count: u64,
    pub packets_lost: i64,
    pub packets_received: u64,
    /// The page's reconnects (a new peer connection restarts the counters above).
    pub reconnects: Option<u64>,
    /// The layer the node last told the page.
    pub layer: Option<String>,
    pub state: Option<String>,
    /// `ip:port` of the selected pair's remote candidate.
    pub remote: Option<String>,
    pub sample_error: Option<String>,
    /// When the test read the sample.
    #[serde(skip)]
    pub seen: Option<Instant>,
}

impl Sample {
    fn at(&self) -> Option<Duration> {
        self.at
            .filter(|a| a.is_finite() && *a >= 0.0)
            .map(|a| Duration::from_secs_f64(a / 1000.0))
    }
}

/// The samples seen at or after `from`.
pub fn since(samples: &[Sample], from: Instant) -> &[Sample] {
    let i = samples.partition_point(|s| s.seen.is_some_and(|t| t < from));
    &samples[i..]
}

/// The longest time the decoded-frame count stood still, from the first sample that showed
/// a count to the last one still showing it: a lower bound of the longest gap between two
/// decoded frames (the earlier frame came at or before the first sample, the next one after
/// the last). Before the first decoded frame nothing counts.
pub fn longest_stall(samples: &[Sample]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut run: Option<(u64, Duration)> = None;
    for s in samples.iter().filter(|s| s.frames_decoded > 0) {
        let Some(at) = s.at() else { continue };
        match run {
            Some((n, start)) if n == s.frames_decoded => {
                longest = longest.max(at.saturating_sub(start));
            }
            _ => run = Some((s.frames_decoded, at)),
        }
    }
    longest
}

/// The shortest freeze Chromium counts: an inter-frame delay over both three times the
/// average and the average plus 150 ms (webrtc-stats `freezeCount`).
const MIN_FREEZE_SECS: f64 = 0.15;

/// An upper bound of the longest freeze Chromium counted between the first and the last
/// sample: between two samples, the growth of `totalFreezesDuration` less the shortest
/// possible length of the other freezes that ended in between (exact when one freeze ended
/// between them, the usual case at a sample every 200 ms; an overloaded driver samples
/// less often).
pub fn longest_freeze(samples: &[Sample]) -> Duration {
    samples
        .windows(2)
        .filter(|w| w[1].freeze_count > w[0].freeze_count)
        .map(|w| {
            let others = (w[1].freeze_count - w[0].freeze_count - 1) as f64;
            let grown = w[1].total_freezes_duration - w[0].total_freezes_duration;
            grown - others * MIN_FREEZE_SECS
        })
        .filter(|d| d.is_finite() && *d > 0.0)
        .map(Duration::from_secs_f64)
        .max()
        .unwrap_or(Duration::ZERO)
}

/// The last sample's counter minus the first's.
pub fn growth(samples: &[Sample], counter: impl Fn(&Sample) -> i64) -> i64 {
    match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => counter(b) - counter(a),
        _ => 0,
    }
}

/// Each change of the decoded frame size: (ms after the first sample, width, height).
pub fn size_changes(samples: &[Sample]) -> Vec<(u64, u32, u32)> {
    let t0 = samples.iter().find_map(Sample::at).unwrap_or_default();
    let mut out: Vec<(u64, u32, u32)> = Vec::new();
    for s in samples.iter().filter(|s| s.frame_width > 0) {
        if out
            .last()
            .is_none_or(|&(_, w, h)| (w, h) != (s.frame_width, s.frame_height))
        {
            let ms = s.at().unwrap_or_default().saturating_sub(t0).as_millis();
            out.push((
                u64::try_from(ms).unwrap_or(u64::MAX),
                s.frame_width,
                s.frame_height,
            ));
        }
    }
    out
}

/// The longest time between two consecutive samples (what [`longest_stall`] can resolve).
pub fn longest_interval(samples: &[Sample]) -> Duration {
    samples
        .windows(2)
        .filter_map(|w| Some(w[1].at()?.saturating_sub(w[0].at()?)))
        .max()
        .unwrap_or(Duration::ZERO)
}

/// One short entry per sample, for the log:
/// `ms:frames/width/keyframes/dropped frames/packets/freezes(seconds frozen)/layer`.
pub fn compact(samples: &[Sample]) -> String {
    let t0 = samples.iter().find_map(Sample::at).unwrap_or_default();
    samples
        .iter()
        .map(|s| {
            format!(
                "{}:{}/{}/{}/{}/{}/{}({:.2})/{}",
                s.at().unwrap_or_default().saturating_sub(t0).as_millis(),
                s.frames_decoded,
                s.frame_width,
                s.key_frames_decoded,
                s.frames_dropped,
                s.packets_received,
                s.freeze_count,
                s.total_freezes_duration,
                s.layer.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: f64, frames: u64, width: u32, freezes: u64, frozen_s: f64) -> Sample {
        Sample {
            at: Some(at_ms),
            frames_decoded: frames,
            frame_width: width,
            frame_height: width * 9 / 16,
            freeze_count: freezes,
            total_freezes_duration: frozen_s,
            ..Sample::default()
        }
    }

    #[test]
    fn a_stall_is_measured_between_the_samples_showing_one_count() {
        let s = [
            sample(0.0, 0, 0, 0, 0.0),
            sample(200.0, 0, 0, 0, 0.0),
            sample(400.0, 5, 320, 0, 0.0),
            sample(600.0, 9, 320, 0, 0.0),
            sample(800.0, 9, 320, 0, 0.0),
            sample(1000.0, 9, 320, 0, 0.0),
            sample(1200.0, 9, 320, 0, 0.0),
            sample(1400.0, 12, 320, 1, 0.8),
        ];
        // Waiting for the first frame is no stall; 9 frames stood from 600 to 1200 ms.
        assert_eq!(longest_stall(&s), Duration::from_millis(600));
        assert_eq!(longest_freeze(&s), Duration::from_millis(800));
        assert_eq!(growth(&s, |s| s.frames_decoded as i64), 12);
    }

    #[test]
    fn the_longest_single_freeze_is_bounded_per_interval() {
        let s = [
            sample(0.0, 10, 640, 2, 5.0),
            sample(200.0, 15, 640, 3, 5.4),
            sample(400.0, 20, 640, 3, 5.4),
            sample(600.0, 25, 640, 4, 6.1),
        ];
        // Freezes before the first sample do not count.
        let longest = longest_freeze(&s);
        assert!(longest.abs_diff(Duration::from_millis(700)) < Duration::from_millis(1));
        // Two freezes of 1.07 s together: the longer one is at most 0.92 s.
        let two = [
            sample(0.0, 10, 640, 6, 2.05),
            sample(840.0, 12, 640, 8, 3.12),
        ];
        let longest = longest_freeze(&two);
        assert!(longest.abs_diff(Duration::from_millis(920)) < Duration::from_millis(1));
        assert_eq!(longest_stall(&s), Duration::ZERO);
    }

    #[test]
    fn size_changes_are_listed_once_each() {
        let s = [
            sample(1000.0, 0, 0, 0, 0.0),
            sample(1200.0, 3, 320, 0, 0.0),
            sample(1400.0, 8, 320, 0, 0.0),
            sample(1600.0, 12, 1280, 0, 0.0),
            sample(1800.0, 20, 320, 0, 0.0),
        ];
        assert_eq!(
            size_changes(&s),
            vec![(200, 320, 180), (600, 1280, 720), (800, 320, 180)]
        );
    }

    #[test]
    fn since_skips_what_came_before() {
        let t0 = Instant::now();
        let mut s = [sample(0.0, 1, 1, 0, 0.0), sample(1.0, 2, 1, 0, 0.0)];
        s[0].seen = Some(t0);
        s[1].seen = Some(t0 + Duration::from_millis(5));
        assert_eq!(since(&s, t0 + Duration::from_millis(1)).len(), 1);
        assert_eq!(since(&s, t0).len(), 2);
    }
}
