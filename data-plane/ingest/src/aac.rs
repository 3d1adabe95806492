//! AAC's framing: the `AudioSpecificConfig` RTMP sends as its sequence
//! header (ISO/IEC 14496-3 §1.6.2.1) and the ADTS headers of MPEG-TS
//! (§1.A.2.2).

use crate::IngestError;

const RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// What the decoder needs to know about an AAC stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// Audio object type (2 = AAC-LC).
    pub object_type: u8,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// Channels (1 or 2).
    pub channels: u8,
}

impl AacConfig {
    /// Parses an `AudioSpecificConfig`. Only AAC-LC, mono or stereo, with a
    /// table sampling rate is accepted (what RTMP encoders send; HE-AAC and
    /// multichannel layouts are refused with the reason).
    pub fn parse_asc(asc: &[u8]) -> Result<AacConfig, IngestError> {
        let [a, b, ..] = asc else {
            return Err(IngestError::Malformed("AudioSpecificConfig under 2 bytes"));
        };
        let object_type = a >> 3;
        let rate_index = ((a & 0x07) << 1) | (b >> 7);
        let channels = (b >> 3) & 0x0f;
        AacConfig::checked(object_type, rate_index, channels)
    }

    /// The config that this ADTS header's fields describe.
    fn checked(object_type: u8, rate_index: u8, channels: u8) -> Result<AacConfig, IngestError> {
        if object_type != 2 {
            return Err(IngestError::UnsupportedAudio(format!(
                "AAC audio object type {object_type}; only AAC-LC (2) is accepted"
            )));
        }
        let Some(&sample_rate) = RATES.get(usize::from(rate_index)) else {
            return Err(IngestError::UnsupportedAudio(format!(
                "AAC sampling frequency index {rate_index}"
            )));
        };
        if !(1..=2).contains(&channels) {
            return Err(IngestError::UnsupportedAudio(format!(
                "AAC channel configuration {channels}; only mono and stereo are accepted"
            )));
        }
        Ok(AacConfig {
            object_type,
            sample_rate,
            channels,
        })
    }

    /// The two-byte `AudioSpecificConfig` of this config.
    pub fn to_asc(self) -> [u8; 2] {
        let index = RATES
            .iter()
            .position(|r| *r == self.sample_rate)
            .unwrap_or(4) as u8;
        [
            (self.object_type << 3) | (index >> 1),
            ((index & 1) << 7) | (self.channels << 3),
        ]
    }
}

/// One ADTS frame found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct AdtsFrame<'a> {
    /// The stream's config, from the header.
    pub config: AacConfig,
    /// The raw AAC frame (header and CRC stripped).
    pub payload: &'a [u8],
    /// Bytes of the whole frame, header included.
    pub len: usize,
}

/// Parses the ADTS frame at the start of `data`. Frames with more than one
/// raw data block are refused (encoders send one).
pub fn parse_adts(data: &[u8]) -> Result<AdtsFrame<'_>, IngestError> {
    let [h0, h1, h2, h3, h4, h5, h6, ..] = data else {
        return Err(IngestError::Malformed("short ADTS header"));
    };
    if *h0 != 0xff || h1 & 0xf0 != 0xf0 {
        return Err(IngestError::Malformed("no ADTS sync word"));
    }
    let protection_absent = h1 & 0x01 != 0;
    let object_type = (h2 >> 6) + 1;
    let rate_index = (h2 >> 2) & 0x0f;
    let channels = ((h2 & 0x01) << 2) | (h3 >> 6);
    let len = (usize::from(h3 & 0x03) << 11) | (usize::from(*h4) << 3) | usize::from(h5 >> 5);
    let blocks = (h6 & 0x03) + 1;
    let header = if protection_absent { 7 } else { 9 };
    if len < header || len > data.len() {
        return Err(IngestError::Malformed("bad ADTS frame length"));
    }
    if blocks != 1 {
        return Err(IngestError::UnsupportedAudio(
            "ADTS frames with several raw data blocks".into(),
        ));
    }
    Ok(AdtsFrame {
        config: AacConfig::checked(object_type, rate_index, channels)?,
        payload: &data[header..len],
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_specific_config() {
        // AAC-LC, 44.1 kHz, stereo.
        let c = AacConfig::parse_asc(&[0x12, 0x10]).expect("asc");
        assert_eq!(
            c,
            AacConfig {
                object_type: 2,
                sample_rate: 44_100,
                channels: 2
            }
        );
        assert_eq!(c.to_asc(), [0x12, 0x10]);
        // 48 kHz mono.
        let c = AacConfig::parse_asc(&[0x11, 0x88]).expect("asc");
        assert_eq!((c.sample_rate, c.channels), (48_000, 1));
        // HE-AAC (5), 5.1, a reserved rate index, too short.
        assert!(matches!(
            AacConfig::parse_asc(&[0x2a, 0x10]),
            Err(IngestError::UnsupportedAudio(_))
        ));
        assert!(matches!(
            AacConfig::parse_asc(&[0x12, 0x30]),
            Err(IngestError::UnsupportedAudio(_))
        ));
        assert!(matches!(
            AacConfig::parse_asc(&[0x16, 0x90]),
            Err(IngestError::UnsupportedAudio(_))
        ));
        assert!(matches!(
            AacConfig::parse_asc(&[0x12]),
            Err(IngestError::Malformed(_))
        ));
    }

    fn adts(payload: &[u8]) -> Vec<u8> {
        let len = payload.len() + 7;
        // Sync, MPEG-4, layer 0, no CRC; LC, 44.1 kHz (4), stereo; one block.
        let mut f = vec![
            0xff,
            0xf1,
            (1 << 6) | (4 << 2),
            (2 << 6) | ((len >> 11) as u8 & 0x03),
            (len >> 3) as u8,
            ((len as u8 & 0x07) << 5) | 0x1f,
            0xfc,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn adts_frames() {
        let mut two = adts(&[1, 2, 3]);
        two.extend(adts(&[4]));
        let f = parse_adts(&two).expect("first");
        assert_eq!(f.payload, &[1, 2, 3]);
        assert_eq!(f.config.sample_rate, 44_100);
        assert_eq!(f.config.channels, 2);
        let g = parse_adts(&two[f.len..]).expect("second");
        assert_eq!(g.payload, &[4]);
        // Truncated, bad sync, length past the buffer: errors, no panic.
        let one = adts(&[1, 2, 3]);
        for len in 0..one.len() {
            assert!(parse_adts(&one[..len]).is_err(), "len {len}");
        }
        assert!(parse_adts(&[0u8; 16]).is_err());
    }
}
