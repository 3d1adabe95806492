//! A linear-interpolation resampler to 48 kHz stereo, the rate and layout
//! the Opus encoder takes. Linear interpolation is enough for contribution
//! audio going into a 64 kbit/s Opus encode; its state runs across calls, so
//! frame boundaries leave no clicks.

/// Output rate.
pub const OUT_RATE: u32 = 48_000;

/// Resamples interleaved `f32` audio of one rate and channel count to
/// interleaved 48 kHz stereo.
#[derive(Debug)]
pub struct Resampler {
    in_rate: u32,
    channels: usize,
    /// Position of the next output sample, in input frames relative to
    /// `prev` (0.0 = `prev`, 1.0 = the first frame of the next input).
    pos: f64,
    /// The last input frame of the previous call (stereo).
    prev: [f32; 2],
}

impl Resampler {
    /// A resampler from `in_rate` Hz with `channels` channels (1 or more; only
    /// the first two are kept).
    pub fn new(in_rate: u32, channels: usize) -> Resampler {
        Resampler {
            in_rate: in_rate.max(1),
            channels: channels.max(1),
            pos: 1.0,
            prev: [0.0; 2],
        }
    }

    /// Appends the 48 kHz stereo samples of `input` to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let frames: Vec<[f32; 2]> = input
            .chunks_exact(self.channels)
            .map(|f| match f {
                [l, r, ..] => [*l, *r],
                [m] => [*m, *m],
                [] => [0.0, 0.0],
            })
            .collect();
        if frames.is_empty() {
            return;
        }
        if self.in_rate == OUT_RATE {
            // Same rate: no interpolation (and no added delay).
            out.extend(frames.iter().flatten());
            return;
        }
        let step = f64::from(self.in_rate) / f64::from(OUT_RATE);
        // Frame i of this call is at position i + 1; `prev` is at 0.
        let at = |i: usize| if i == 0 { self.prev } else { frames[i - 1] };
        let last = frames.len() as f64;
        while self.pos <= last {
            let i = self.pos.floor() as usize;
            let frac = (self.pos - i as f64) as f32;
            let a = at(i);
            let b = if i < frames.len() { at(i + 1) } else { a };
            out.push(a[0] + (b[0] - a[0]) * frac);
            out.push(a[1] + (b[1] - a[1]) * frac);
            self.pos += step;
        }
        self.pos -= last;
        self.prev = frames[frames.len() - 1];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_count_follows_the_rate_ratio_across_calls() {
        let mut r = Resampler::new(44_100, 2);
        let mut out = Vec::new();
        // 100 frames of 1024 (about 2.32 s).
        for _ in 0..100 {
            r.process(&vec![0.5; 1024 * 2], &mut out);
        }
        let expect = 102_400.0 * 48_000.0 / 44_100.0;
        let got = (out.len() / 2) as f64;
        assert!((got - expect).abs() <= 2.0, "{got} vs {expect}");
        // A constant signal stays constant once past the first sample.
        assert!(out[4..].iter().all(|s| (s - 0.5).abs() < 1e-6));
    }

    #[test]
    fn mono_is_duplicated_and_48k_passes_through() {
        let mut r = Resampler::new(48_000, 1);
        let mut out = Vec::new();
        r.process(&[0.1, 0.2], &mut out);
        assert_eq!(out, vec![0.1, 0.1, 0.2, 0.2]);
    }

    #[test]
    fn a_ramp_is_interpolated() {
        let mut r = Resampler::new(24_000, 1);
        let mut out = Vec::new();
        r.process(&[0.0, 1.0, 2.0], &mut out);
        r.process(&[3.0], &mut out);
        let left: Vec<f32> = out.iter().step_by(2).copied().collect();
        // Half steps from the first input sample on, across the call boundary.
        assert_eq!(left, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
    }
}
