//! AAC to Opus: symphonia's AAC-LC decoder, [`Resampler`] to 48 kHz stereo,
//! libopus in 20 ms frames.

use symphonia_codec_aac::AacDecoder;
use symphonia_core::audio::{Channels, SampleBuffer};
use symphonia_core::codecs::{CODEC_TYPE_AAC, CodecParameters, Decoder, DecoderOptions};
use symphonia_core::formats::Packet;

use crate::IngestError;
use crate::aac::AacConfig;
use crate::resample::Resampler;

/// Samples per channel of one 20 ms Opus frame at 48 kHz.
pub const OPUS_FRAME: usize = 960;
/// Opus bit rate.
const OPUS_BITRATE: i32 = 64_000;
/// Largest Opus packet we let the encoder write.
const MAX_OPUS_PACKET: usize = 1500;

/// Decodes AAC frames and encodes their audio as Opus packets.
pub struct AacToOpus {
    config: AacConfig,
    decoder: AacDecoder,
    resampler: Resampler,
    encoder: opus::Encoder,
    /// 48 kHz stereo samples waiting for a whole Opus frame.
    pending: Vec<f32>,
    samples: Option<SampleBuffer<f32>>,
}

impl std::fmt::Debug for AacToOpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacToOpus")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl AacToOpus {
    /// A transcoder for a stream of this config.
    pub fn new(config: AacConfig) -> Result<AacToOpus, IngestError> {
        let channels = if config.channels == 1 {
            Channels::FRONT_LEFT
        } else {
            Channels::FRONT_LEFT | Channels::FRONT_RIGHT
        };
        let mut params = CodecParameters::new();
        params
            .for_codec(CODEC_TYPE_AAC)
            .with_sample_rate(config.sample_rate)
            .with_channels(channels)
            .with_extra_data(Box::new(config.to_asc()));
        let decoder = AacDecoder::try_new(&params, &DecoderOptions::default())
            .map_err(|e| IngestError::UnsupportedAudio(format!("AAC decoder: {e}")))?;
        let mut encoder =
            opus::Encoder::new(48_000, opus::Channels::Stereo, opus::Application::Audio)
                .map_err(|e| IngestError::Encoder(e.to_string()))?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(OPUS_BITRATE))
            .map_err(|e| IngestError::Encoder(e.to_string()))?;
        Ok(AacToOpus {
            config,
            decoder,
            resampler: Resampler::new(config.sample_rate, usize::from(config.channels)),
            encoder,
            pending: Vec::new(),
            samples: None,
        })
    }

    /// The config this transcoder was made for.
    pub fn config(&self) -> AacConfig {
        self.config
    }

    /// Decodes one raw AAC frame and returns the Opus packets (20 ms each)
    /// that are complete now.
    pub fn push(&mut self, frame: &[u8]) -> Result<Vec<Vec<u8>>, IngestError> {
        let packet = Packet::new_from_slice(0, 0, 1024, frame);
        // The decoder sees hostile bytes; a panic inside it must not take
        // the connection's task (or the node) down.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match self.decoder.decode(&packet) {
                Ok(buf) => {
                    let spec = *buf.spec();
                    let need = buf.capacity() as u64;
                    let samples = match &mut self.samples {
                        Some(s) if s.capacity() >= buf.capacity() * spec.channels.count() => s,
                        slot => slot.insert(SampleBuffer::new(need, spec)),
                    };
                    samples.copy_interleaved_ref(buf);
                    Ok(samples.samples().to_vec())
                }
                Err(_) => Err(IngestError::Malformed("AAC frame does not decode")),
            }
        }))
        .map_err(|_| IngestError::Malformed("AAC frame crashed the decoder"))??;
        self.resampler.process(&decoded, &mut self.pending);
        let mut out = Vec::new();
        let frame_len = OPUS_FRAME * 2;
        while self.pending.len() >= frame_len {
            let mut buf = vec![0u8; MAX_OPUS_PACKET];
            let n = self
                .encoder
                .encode_float(&self.pending[..frame_len], &mut buf)
                .map_err(|e| IngestError::Encoder(e.to_string()))?;
            buf.truncate(n);
            out.push(buf);
            self.pending.drain(..frame_len);
        }
        Ok(out)
    }
}
