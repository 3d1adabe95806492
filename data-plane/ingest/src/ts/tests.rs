//! The demuxer on real encoder output: ffmpeg's MPEG-TS of the same second
//! of H.264 baseline + AAC as the FLV fixture, fed in SRT-sized pieces.

use super::*;

const TS: &[u8] = include_bytes!("../../fixtures/h264-aac-1s.ts");
const HEVC: &[u8] = include_bytes!("../../fixtures/hevc-1f.ts");

fn demux(data: &[u8], piece: usize) -> (TsDemuxer, Vec<MediaPacket>) {
    let mut d = TsDemuxer::new(ConverterConfig::default());
    let mut out = Vec::new();
    for chunk in data.chunks(piece) {
        out.extend(d.push(chunk, 1).expect("push"));
    }
    (d, out)
}

fn seq(p: &MediaPacket) -> u16 {
    u16::from_be_bytes([p.rtp[2], p.rtp[3]])
}

#[test]
fn h264_and_aac_from_mpeg_ts() {
    // 1316 bytes: 7 TS packets, what an SRT message carries; 1000: splits packets.
    for piece in [1316, 1000] {
        let (d, out) = demux(TS, piece);
        let catalog = d.converter().catalog().expect("catalog");
        assert_eq!(catalog.tracks.len(), 2, "{catalog:?}");
        assert!(catalog.tracks[0].fmtp.contains("profile-level-id=42"));
        let video: Vec<_> = out.iter().filter(|p| p.track == 0).collect();
        let audio: Vec<_> = out.iter().filter(|p| p.track == 1).collect();
        assert!(video[0].keyframe);
        assert_eq!(video[0].rtp[12] & 0x1f, nal::SPS);
        // The last frame waits for a PES that never starts (end of file).
        let frames = video.iter().filter(|p| p.rtp[1] & 0x80 != 0).count();
        assert!((24..=25).contains(&frames), "{frames} video frames");
        assert!(
            (40..=53).contains(&audio.len()),
            "{} Opus packets",
            audio.len()
        );
        for w in video.windows(2).chain(audio.windows(2)) {
            assert_eq!(seq(w[1]), seq(w[0]).wrapping_add(1));
        }
    }
}

#[test]
fn annex_b() {
    let data = [
        0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x68, 2, 0, 0, 0, 0, 1, 0x65, 3,
    ];
    let units: Vec<&[u8]> = annex_b_units(&data).collect();
    assert_eq!(units, vec![&[0x67, 1][..], &[0x68, 2][..], &[0x65, 3][..]]);
    assert_eq!(annex_b_units(&[0, 0, 1]).count(), 0);
    assert_eq!(annex_b_units(&[]).count(), 0);
}

#[test]
fn hevc_is_refused_and_garbage_is_an_error() {
    let mut d = TsDemuxer::new(ConverterConfig::default());
    let e = d.push(HEVC, 0).expect_err("HEVC");
    assert!(e.is_unsupported() && e.to_string().contains("HEVC"), "{e}");
    let mut d = TsDemuxer::new(ConverterConfig::default());
    assert!(d.push(&[0x55; 188 * 3], 0).is_err());
    // A truncated stream and random bytes: no panic.
    let mut d = TsDemuxer::new(ConverterConfig::default());
    let _ = d.push(&TS[..TS.len() / 3], 0);
    let mut seed = 7u32;
    let junk: Vec<u8> = (0..188 * 50)
        .map(|i| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            if i % 188 == 0 {
                0x47
            } else {
                (seed >> 16) as u8
            }
        })
        .collect();
    let mut d = TsDemuxer::new(ConverterConfig::default());
    for c in junk.chunks(188) {
        let _ = d.push(c, 0);
    }
}
