//! Round-trip and hostile-input tests of the wire format (randomised with a
//! fixed seed, so failures reproduce).

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_media::hub::LayerSet;
use strata_media::{Catalog, TrackInfo, TrackKind};

use super::*;

fn rng() -> StdRng {
    StdRng::seed_from_u64(0x0515_7a7a)
}

fn random_string(rng: &mut StdRng, max: usize) -> String {
    let len = rng.random_range(0..=max);
    (0..len)
        .map(|_| {
            if rng.random_bool(0.1) {
                'é'
            } else {
                rng.random_range('a'..='z')
            }
        })
        .collect()
}

fn random_catalog(rng: &mut StdRng) -> Catalog {
    let n = rng.random_range(0..4);
    Catalog {
        tracks: (0..n)
            .map(|id| TrackInfo {
                id,
                kind: if rng.random() {
                    TrackKind::Audio
                } else {
                    TrackKind::Video
                },
                mime: random_string(rng, 12),
                clock_rate: rng.random(),
                channels: rng.random(),
                fmtp: random_string(rng, 40),
                payload_type: rng.random(),
                layer: None,
            })
            .collect(),
    }
}

fn random_message(rng: &mut StdRng) -> ControlMessage {
    match rng.random_range(0..7) {
        0 => ControlMessage::Subscribe {
            id: rng.random(),
            stream: random_string(rng, 64),
            epoch: rng.random(),
        },
        1 => ControlMessage::SubscribeOk {
            catalog: random_catalog(rng),
        },
        2 => ControlMessage::SubscribeError {
            code: SubscribeErrorCode::from_u16(rng.random()),
            reason: random_string(rng, 100),
        },
        3 => ControlMessage::KeyframeRequest {
            track: rng.random(),
        },
        4 => ControlMessage::Ended {
            reason: random_string(rng, 100),
        },
        5 => ControlMessage::CatalogChanged {
            catalog: random_catalog(rng),
        },
        _ => ControlMessage::LayerInterest {
            layers: LayerSet::from_bits(rng.random_range(0..8)).unwrap_or(LayerSet::ALL),
        },
    }
}

fn random_frame(rng: &mut StdRng) -> Frame {
    let len = if rng.random_bool(0.05) {
        MAX_RTP
    } else {
        rng.random_range(1..1500)
    };
    let rtp: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    Frame {
        track: rng.random(),
        keyframe: rng.random(),
        ingest_us: rng.random(),
        send_us: rng.random(),
        rtp: Bytes::from(rtp),
    }
}

/// Feed `wire` in random-sized pieces, decoding as much as possible each time.
fn decode_in_pieces<T>(
    rng: &mut StdRng,
    wire: &[u8],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, FrameError>,
) -> Result<(Vec<T>, usize), FrameError> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = wire;
    while !rest.is_empty() {
        let n = rng.random_range(1..=rest.len().min(700));
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(item) = decode(&mut buf)? {
            out.push(item);
        }
    }
    Ok((out, buf.len()))
}

#[test]
fn control_messages_round_trip() {
    let mut rng = rng();
    for _ in 0..200 {
        let msgs: Vec<ControlMessage> = (0..rng.random_range(1..6))
            .map(|_| random_message(&mut rng))
            .collect();
        let mut wire = BytesMut::new();
        for m in &msgs {
            encode_control(m, &mut wire).unwrap();
        }
        let (decoded, left) = decode_in_pieces(&mut rng, &wire, decode_control).unwrap();
        assert_eq!(decoded, msgs);
        assert_eq!(left, 0);
    }
}

#[test]
fn group_round_trips() {
    let mut rng = rng();
    for _ in 0..50 {
        let header = GroupHeader {
            subscription: rng.random(),
            sequence: rng.random(),
        };
        let frames: Vec<Frame> = (0..rng.random_range(0..20))
            .map(|_| random_frame(&mut rng))
            .collect();
        let mut wire = BytesMut::new();
        encode_group_header(&header, &mut wire);
        for f in &frames {
            encode_frame(f, &mut wire).unwrap();
        }
        let mut buf = wire.clone();
        assert_eq!(decode_group_header(&mut buf).unwrap(), Some(header));
        let (decoded, left) = decode_in_pieces(&mut rng, &buf, decode_frame).unwrap();
        assert_eq!(decoded, frames);
        assert_eq!(left, 0);
    }
}

#[test]
fn every_truncation_asks_for_more() {
    let mut rng = rng();
    for _ in 0..50 {
        let mut wire = BytesMut::new();
        encode_control(&random_message(&mut rng), &mut wire).unwrap();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(decode_control(&mut buf), Ok(None), "cut at {cut}");
        }
        let mut wire = BytesMut::new();
        encode_frame(&random_frame(&mut rng), &mut wire).unwrap();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(decode_frame(&mut buf), Ok(None), "cut at {cut}");
        }
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = rng();
    for round in 0..20_000 {
        let len = rng.random_range(0..200);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if round % 2 == 0 && bytes.len() >= 4 {
            // Plausible length prefixes reach the body parsers.
            let body = u32::try_from(bytes.len() - 4).unwrap();
            bytes[..4].copy_from_slice(&body.to_be_bytes());
        }
        let _ = decode_in_pieces(&mut rng, &bytes, decode_control);
        let _ = decode_in_pieces(&mut rng, &bytes, decode_frame);
        let _ = decode_group_header(&mut BytesMut::from(&bytes[..]));
    }
}

#[test]
fn mutated_messages_never_panic() {
    let mut rng = rng();
    for _ in 0..5_000 {
        let mut wire = BytesMut::new();
        encode_control(&random_message(&mut rng), &mut wire).unwrap();
        encode_frame(&random_frame(&mut rng), &mut wire).unwrap();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..wire.len());
            wire[i] ^= 1 << rng.random_range(0..8);
        }
        let _ = decode_in_pieces(&mut rng, &wire, decode_control);
        let _ = decode_in_pieces(&mut rng, &wire, decode_frame);
    }
}

#[test]
fn limits_are_enforced() {
    let mut buf = BytesMut::from(&[0u8, 1, 0, 1][..]);
    assert!(matches!(
        decode_control(&mut buf),
        Err(FrameError::TooLong { .. })
    ));
    let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        decode_control(&mut buf),
        Err(FrameError::TooLong { .. })
    ));
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
    assert_eq!(decode_control(&mut buf), Err(FrameError::Empty));
    let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 0x7f][..]);
    assert_eq!(decode_control(&mut buf), Err(FrameError::UnknownType(0x7f)));
    let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 0x04, 1, 2][..]);
    assert_eq!(decode_control(&mut buf), Err(FrameError::TrailingBytes(1)));
    let mut buf = BytesMut::from(&[0u8, 0, 0, 2, 0x07, 0x08][..]);
    assert_eq!(decode_control(&mut buf), Err(FrameError::BadLayers(0x08)));
    let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 0x07][..]);
    assert_eq!(decode_control(&mut buf), Err(FrameError::Truncated));
    let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 0x07, 0x05, 0][..]);
    assert_eq!(decode_control(&mut buf), Err(FrameError::TrailingBytes(1)));
    let mut buf = BytesMut::from(&[0u8, 0, 0, 2, 0x07, 0x05][..]);
    assert_eq!(
        decode_control(&mut buf),
        Ok(Some(ControlMessage::LayerInterest {
            layers: LayerSet::from_bits(0b101).unwrap_or(LayerSet::ALL)
        }))
    );
    let mut buf = BytesMut::from(&[0u8, 0, 0, 2, 0x02, b'{'][..]);
    assert!(matches!(
        decode_control(&mut buf),
        Err(FrameError::InvalidCatalog(_))
    ));
    let mut buf = BytesMut::from(&[0x02u8][..]);
    assert_eq!(decode_frame(&mut buf), Err(FrameError::BadFlags(2)));
    let mut buf = BytesMut::from(&[0x00u8][..]);
    assert_eq!(decode_group_header(&mut buf), Err(FrameError::BadMagic(0)));

    let long = ControlMessage::Subscribe {
        id: 1,
        stream: "x".repeat(MAX_STREAM_NAME + 1),
        epoch: 1,
    };
    let mut out = BytesMut::from(&b"keep"[..]);
    assert!(matches!(
        encode_control(&long, &mut out),
        Err(FrameError::TooLong { .. })
    ));
    assert_eq!(&out[..], b"keep", "failed encode leaves the buffer alone");
    let mut frame = Frame {
        track: 0,
        keyframe: false,
        ingest_us: 0,
        send_us: 0,
        rtp: Bytes::from(vec![0; MAX_RTP + 1]),
    };
    assert!(matches!(
        encode_frame(&frame, &mut out),
        Err(FrameError::TooLong { .. })
    ));
    frame.rtp = Bytes::new();
    assert_eq!(
        encode_frame(&frame, &mut out),
        Err(FrameError::EmptyPayload)
    );
}

#[test]
fn frames_decode_alike_from_shared_bytes() {
    let mut rng = rng();
    for _ in 0..200 {
        let frames: Vec<Frame> = (0..rng.random_range(1..10))
            .map(|_| random_frame(&mut rng))
            .collect();
        let mut wire = BytesMut::new();
        for f in &frames {
            let mut header_only = BytesMut::new();
            encode_frame_header(f, &mut header_only).unwrap();
            encode_frame(f, &mut wire).unwrap();
            assert_eq!(
                &wire[wire.len() - f.rtp.len() - header_only.len()..][..header_only.len()],
                &header_only[..]
            );
        }
        let all = wire.freeze();
        // Any cut: whole frames come off the shared bytes, the rest is left for later.
        let cut = rng.random_range(0..=all.len());
        let mut chunk = all.slice(..cut);
        let mut decoded = Vec::new();
        while let Some(f) = decode_frame_bytes(&mut chunk).unwrap() {
            decoded.push(f);
        }
        assert_eq!(decoded[..], frames[..decoded.len()]);
        let mut rest = BytesMut::from(&chunk[..]);
        rest.extend_from_slice(&all[cut..]);
        while let Some(f) = decode_frame(&mut rest).unwrap() {
            decoded.push(f);
        }
        assert_eq!(decoded, frames);
        assert!(rest.is_empty());
    }
    // Hostile bytes: the same errors as the copying decoder, never a panic.
    for _ in 0..5_000 {
        let len = rng.random_range(0..64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let a = decode_frame_bytes(&mut Bytes::from(bytes.clone()));
        let b = decode_frame(&mut BytesMut::from(&bytes[..]));
        assert_eq!(a, b);
    }
}
