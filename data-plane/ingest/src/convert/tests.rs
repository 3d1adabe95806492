//! The converter on a real encoder's output: a one-second FLV file made by
//! ffmpeg (libx264 baseline, 25 fps, one keyframe; AAC-LC 44.1 kHz stereo).

use super::*;
use crate::flv::{self, AudioTag, VideoTag};

const FIXTURE: &[u8] = include_bytes!("../../fixtures/h264-aac-1s.flv");

/// (tag type, timestamp in ms, body) of every tag of an FLV file.
fn flv_tags(file: &[u8]) -> Vec<(u8, u32, &[u8])> {
    assert_eq!(&file[..3], b"FLV");
    let header = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize;
    let mut at = header + 4;
    let mut tags = Vec::new();
    while at + 11 <= file.len() {
        let h = &file[at..at + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        tags.push((h[0], ts, &file[at + 11..at + 11 + size]));
        at += 11 + size + 4;
    }
    tags
}

fn convert_fixture(cfg: ConverterConfig) -> (Converter, Vec<MediaPacket>) {
    let mut c = Converter::new(cfg);
    let mut out = Vec::new();
    for (kind, ts, body) in flv_tags(FIXTURE) {
        match kind {
            9 => match flv::parse_video(body).expect("video tag") {
                VideoTag::AvcConfig(r) => c.set_avc_config(AvcConfig::parse(r).expect("avcC")),
                VideoTag::AvcFrame { cts_ms, data, .. } => {
                    out.extend(c.push_video(ts, cts_ms, data, 7).expect("frame"))
                }
                VideoTag::Ignored => {}
            },
            8 => match flv::parse_audio(body).expect("audio tag") {
                AudioTag::AacConfig(asc) => c
                    .set_aac_config(AacConfig::parse_asc(asc).expect("asc"))
                    .expect("transcoder"),
                AudioTag::AacFrame(f) => out.extend(c.push_aac(ts, f, 7).expect("aac")),
            },
            _ => {}
        }
    }
    (c, out)
}

fn seq(p: &MediaPacket) -> u16 {
    u16::from_be_bytes([p.rtp[2], p.rtp[3]])
}

fn ts(p: &MediaPacket) -> u32 {
    u32::from_be_bytes([p.rtp[4], p.rtp[5], p.rtp[6], p.rtp[7]])
}

#[test]
fn catalog_of_an_h264_aac_stream() {
    let (c, _) = convert_fixture(ConverterConfig::default());
    let catalog = c.catalog().expect("catalog");
    assert_eq!(catalog.tracks.len(), 2);
    let v = &catalog.tracks[0];
    assert_eq!(
        (v.mime.as_str(), v.clock_rate, v.payload_type),
        ("video/H264", 90_000, H264_PT)
    );
    assert!(v.fmtp.contains("packetization-mode=1"), "{}", v.fmtp);
    assert!(
        v.fmtp.contains("profile-level-id=42"),
        "baseline: {}",
        v.fmtp
    );
    let a = &catalog.tracks[1];
    assert_eq!(
        (a.mime.as_str(), a.clock_rate, a.channels),
        ("audio/opus", 48_000, 2)
    );
}

#[test]
fn video_starts_with_sps_pps_keyframe_and_is_gap_free() {
    let cfg = ConverterConfig {
        first_seq: 65_530,
        max_payload: 300,
        ..ConverterConfig::default()
    };
    let (_, out) = convert_fixture(cfg);
    let video: Vec<&MediaPacket> = out.iter().filter(|p| p.track == 0).collect();
    assert!(video.len() > 25, "{} video packets", video.len());
    // The first packet is the SPS, flagged as the keyframe start.
    assert!(video[0].keyframe);
    assert_eq!(video[0].rtp[12] & 0x1f, nal::SPS);
    assert_eq!(video[1].rtp[12] & 0x1f, nal::PPS);
    // One keyframe in the file (keyint 25, one second).
    assert_eq!(video.iter().filter(|p| p.keyframe).count(), 1);
    // Consecutive sequence numbers across the wrap, payloads within budget.
    for w in video.windows(2) {
        assert_eq!(seq(w[1]), seq(w[0]).wrapping_add(1));
        assert!(w[1].rtp.len() - 12 <= 300);
    }
    // 25 access units: 25 marker bits, 25 distinct timestamps 40 ms apart.
    let markers: Vec<u32> = video
        .iter()
        .filter(|p| p.rtp[1] & 0x80 != 0)
        .map(|p| ts(p))
        .collect();
    assert_eq!(markers.len(), 25);
    for w in markers.windows(2) {
        assert_eq!(w[1].wrapping_sub(w[0]), 3600);
    }
    // Big NAL units went as FU-A.
    assert!(video.iter().any(|p| p.rtp[12] & 0x1f == nal::FU_A));
    assert!(video.iter().all(|p| p.ingest_us == 7));
}

#[test]
fn audio_becomes_20ms_opus_that_decodes_to_the_tone() {
    let (_, out) = convert_fixture(ConverterConfig::default());
    let audio: Vec<&MediaPacket> = out.iter().filter(|p| p.track == 1).collect();
    // About one second of audio (the encoder's priming and our 20 ms
    // framing cost a few frames).
    assert!(
        (45..=53).contains(&audio.len()),
        "{} Opus packets",
        audio.len()
    );
    for w in audio.windows(2) {
        assert_eq!(seq(w[1]), seq(w[0]).wrapping_add(1));
        assert_eq!(ts(w[1]).wrapping_sub(ts(w[0])), 960);
    }
    assert!(
        audio
            .iter()
            .all(|p| p.rtp[1] & 0x7f == OPUS_PT && !p.keyframe)
    );
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Stereo).expect("decoder");
    let mut pcm = vec![0f32; 960 * 2];
    let mut energy = 0.0f64;
    let mut zero_crossings = 0usize;
    let mut last = 0.0f32;
    for p in audio.iter().skip(10) {
        let n = dec
            .decode_float(&p.rtp[12..], &mut pcm, false)
            .expect("decode");
        assert_eq!(n, 960);
        for s in pcm.iter().step_by(2) {
            energy += f64::from(*s) * f64::from(*s);
            if (last < 0.0) != (*s < 0.0) {
                zero_crossings += 1;
            }
            last = *s;
        }
    }
    let samples = (audio.len() - 10) * 960;
    let rms = (energy / samples as f64).sqrt();
    assert!(rms > 0.05, "rms {rms}");
    // A 440 Hz tone crosses zero 880 times a second.
    let per_second = zero_crossings as f64 * 48_000.0 / samples as f64;
    assert!(
        (800.0..960.0).contains(&per_second),
        "{per_second} crossings/s"
    );
}

#[test]
fn frames_before_their_config_and_garbage_are_errors() {
    let mut c = Converter::new(ConverterConfig::default());
    assert!(c.push_video(0, 0, &[0, 0, 0, 1, 0x65], 0).is_err());
    assert!(c.push_aac(0, &[1, 2, 3], 0).is_err());
    assert!(c.catalog().is_none());
    c.set_aac_config(AacConfig::parse_asc(&[0x12, 0x10]).expect("asc"))
        .expect("transcoder");
    // Garbage AAC frames: errors or silence, never a panic.
    for len in 0..64usize {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
        let _ = c.push_aac(0, &junk, 0);
    }
    assert!(c.catalog().is_some());
}

/// SEI NAL units belong to the access unit: they reach the player in order, before the slice
/// (the glass-to-glass bench carries its send-time stamps in one).
#[test]
fn sei_units_pass_through_before_the_slice() {
    let mut c = Converter::new(ConverterConfig::default());
    c.set_avc_config(AvcConfig {
        length_size: 4,
        sps: vec![vec![0x67, 0x42, 0xc0, 0x1e]],
        pps: vec![vec![0x68, 0xce]],
    });
    let sei: &[u8] = &[0x06, 0x05, 0x02, 0xaa, 0xbb, 0x80];
    let aud: &[u8] = &[0x09, 0xf0];
    let slice: &[u8] = &[0x41, 0x9a, 0x01];
    let out = c
        .push_nal_units(40, 0, &[aud, sei, slice], 7)
        .expect("frame");
    let payloads: Vec<&[u8]> = out.iter().map(|p| &p.rtp[12..]).collect();
    assert_eq!(payloads, [sei, slice], "AUD dropped, SEI kept in order");
    assert!(out[1].rtp[1] & 0x80 != 0, "marker on the slice");
}
