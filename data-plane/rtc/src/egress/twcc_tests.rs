use super::*;

use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
    SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
};
use rtc::shared::marshal::Marshal;

/// A feedback packet: header, base, count, reference time, then `body` (chunks and deltas),
/// padded to a word.
fn feedback(base: u16, count: u16, reference: i32, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x8f, 205, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2];
    p.extend_from_slice(&base.to_be_bytes());
    p.extend_from_slice(&count.to_be_bytes());
    p.extend_from_slice(&reference.to_be_bytes()[1..]);
    p.push(0);
    p.extend_from_slice(body);
    while p.len() % 4 != 0 {
        p.push(0);
    }
    let words = (p.len() / 4 - 1) as u16;
    p[2..4].copy_from_slice(&words.to_be_bytes());
    p
}

fn statuses(p: &[u8]) -> Result<Vec<Status>, FeedbackError> {
    let mut out = Vec::new();
    parse(p, |s| out.push(s))?;
    Ok(out)
}

#[test]
fn the_extension_block_is_one_byte_form() {
    assert_eq!(
        extension_block(3, 0x1234),
        [0xbe, 0xde, 0, 1, 0x31, 0x12, 0x34, 0]
    );
}

#[test]
fn reads_what_the_rtcp_crate_writes() {
    let tcc = TransportLayerCc {
        sender_ssrc: 1,
        media_ssrc: 2,
        base_sequence_number: 65_534,
        packet_status_count: 5,
        reference_time: 3,
        fb_pkt_count: 0,
        packet_chunks: vec![
            PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                run_length: 2,
            }),
            PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::TwoBit,
                symbol_list: vec![
                    SymbolTypeTcc::PacketNotReceived,
                    SymbolTypeTcc::PacketReceivedLargeDelta,
                    SymbolTypeTcc::PacketReceivedSmallDelta,
                    SymbolTypeTcc::PacketNotReceived,
                    SymbolTypeTcc::PacketNotReceived,
                    SymbolTypeTcc::PacketNotReceived,
                    SymbolTypeTcc::PacketNotReceived,
                ],
            }),
        ],
        recv_deltas: vec![
            RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: 1_000,
            },
            RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: 500,
            },
            RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedLargeDelta,
                delta: -2_000,
            },
            RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: 250,
            },
        ],
    };
    let bytes = tcc.marshal().expect("marshal");
    let got = statuses(&bytes).expect("parses");
    let t0 = 3 * 64_000;
    assert_eq!(
        got,
        [
            Status::Received {
                seq: 65_534,
                arrival_us: t0 + 1_000
            },
            Status::Received {
                seq: 65_535,
                arrival_us: t0 + 1_500
            },
            Status::Lost { first: 0, count: 1 },
            Status::Received {
                seq: 1,
                arrival_us: t0 - 500
            },
            Status::Received {
                seq: 2,
                arrival_us: t0 - 250
            },
        ]
    );
}

#[test]
fn acknowledges_only_what_was_sent_and_only_once() {
    let mut sent = SentPackets::new();
    for i in 0..10u64 {
        assert_eq!(sent.on_sent(i * 1_000, 1_000 + i as usize), i as u16);
    }
    // Seqs 8..12: 8 and 9 received, then a run of 3 received that were never sent.
    let p = feedback(8, 5, 0, &[0x20, 5, 4, 4, 4, 4, 4]);
    let mut acked = Vec::new();
    let counts = sent.on_feedback(&p, &mut acked).expect("valid");
    assert_eq!(
        counts,
        FeedbackCounts {
            received: 2,
            lost: 0
        }
    );
    assert_eq!(
        acked,
        [
            Acked {
                send_us: 8_000,
                arrival_us: 1_000,
                size: 1_008
            },
            Acked {
                send_us: 9_000,
                arrival_us: 2_000,
                size: 1_009
            },
        ]
    );
    // The same feedback again acknowledges nothing new.
    acked.clear();
    let again = sent.on_feedback(&p, &mut acked).expect("valid");
    assert_eq!(again.received, 0);
    assert!(acked.is_empty());
    // A run of 8,000 lost from seq 0 counts only the ten sent.
    let lost = feedback(0, 8_000, 0, &[0x1f, 0x40]);
    let counts = sent.on_feedback(&lost, &mut acked).expect("valid");
    assert_eq!(counts.lost, 10);
}

#[test]
fn the_ring_forgets_old_packets() {
    let mut sent = SentPackets::new();
    for i in 0..(RING as u64 + 10) {
        sent.on_sent(i, 100);
    }
    let mut acked = Vec::new();
    // Seq 5 was overwritten by seq RING + 5.
    let p = feedback(5, 1, 0, &[0x20, 1, 1]);
    let counts = sent.on_feedback(&p, &mut acked).expect("valid");
    assert_eq!(acked.len(), 0, "{counts:?}");
    let p = feedback((RING + 5) as u16, 1, 0, &[0x20, 1, 1]);
    sent.on_feedback(&p, &mut acked).expect("valid");
    assert_eq!(acked.len(), 1);
    assert_eq!(acked[0].send_us, RING as u64 + 5);
}

#[test]
fn malformed_feedback_is_refused_whole() {
    let mut sent = SentPackets::new();
    for i in 0..100u64 {
        sent.on_sent(i, 100);
    }
    let mut acked = Vec::new();
    // Two received statuses but one delta byte: nothing acknowledged.
    let short = feedback(0, 2, 0, &[0x20, 2, 7]);
    let mut short = short;
    short.truncate(21 + 2);
    let words = (short.len() / 4 - 1) as u16;
    short[2..4].copy_from_slice(&words.to_be_bytes());
    assert!(sent.on_feedback(&short, &mut acked).is_err());
    assert!(acked.is_empty());
    // 65,535 statuses claimed, one chunk given.
    let huge = feedback(0, u16::MAX, 0, &[0x20, 1, 9]);
    assert_eq!(
        sent.on_feedback(&huge, &mut acked),
        Err(FeedbackError::Truncated)
    );
    // The reserved symbol.
    let reserved = feedback(0, 1, 0, &[0x60, 1, 9]);
    assert_eq!(
        sent.on_feedback(&reserved, &mut acked),
        Err(FeedbackError::ReservedSymbol)
    );
    // A length field beyond the datagram.
    let mut long = feedback(0, 1, 0, &[0x20, 1, 9]);
    long[3] = 200;
    assert_eq!(
        sent.on_feedback(&long, &mut acked),
        Err(FeedbackError::Truncated)
    );
    // Another RTCP packet.
    let mut other = feedback(0, 1, 0, &[0x20, 1, 9]);
    other[0] = 0x81;
    assert_eq!(
        sent.on_feedback(&other, &mut acked),
        Err(FeedbackError::NotFeedback)
    );
    assert!(acked.is_empty());
}

#[test]
fn hostile_feedback_costs_what_its_length_allows() {
    // Every chunk a run of 8,191 lost: 65,535 statuses from 18 bytes of chunks, reported as
    // 9 ranges, not 65,535 packets.
    let mut body = Vec::new();
    for _ in 0..9 {
        body.extend_from_slice(&[0x1f, 0xff]);
    }
    let p = feedback(0, u16::MAX, 0, &body);
    let got = statuses(&p).expect("valid");
    assert_eq!(got.len(), 9);
    // Large deltas of extreme values and an extreme reference time: no overflow.
    let mut body = vec![0x40, 64];
    for _ in 0..64 {
        body.extend_from_slice(&[0x80, 0x00]);
    }
    let p = feedback(0, 64, -8_388_608, &body);
    let got = statuses(&p).expect("valid");
    assert_eq!(got.len(), 64);
    // Every truncation and random bytes: errors or statuses, never a panic, and never more
    // statuses than bytes.
    let mut sent = SentPackets::new();
    for i in 0..3_000u64 {
        sent.on_sent(i, 1_200);
    }
    let mut seed = 0x1234_5678_u32;
    let mut acked = Vec::new();
    for round in 0..2_000 {
        let len: usize = 20 + (round % 120);
        let mut p: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        p[0] = 0x8f | (p[0] & 0x20);
        p[1] = 205;
        let words = (len / 4).saturating_sub(1) as u16;
        p[2..4].copy_from_slice(&words.to_be_bytes());
        for cut in [len, len / 2, 21.min(len)] {
            let mut n = 0usize;
            let _ = parse(&p[..cut], |_| n += 1);
            assert!(n <= cut * 8, "{n} statuses from {cut} bytes");
            acked.clear();
            let _ = sent.on_feedback(&p[..cut], &mut acked);
            assert!(acked.len() <= cut);
        }
    }
}

#[test]
fn a_player_keeps_16_kib_for_its_feedback() {
    assert_eq!(std::mem::size_of::<Sent>() * RING, 16 * 1024);
}
