//! Unit tests of the load client's transport-cc: reading the extension, building feedback.

use rtc::rtcp::packet::Packet as _;
use rtc::shared::marshal::{Marshal, Unmarshal};

use super::*;

/// An RTP header with `csrcs` CSRCs and the extension block `ext` (profile, length and
/// elements), then a payload.
fn rtp_with(csrcs: u8, ext: &[u8]) -> Vec<u8> {
    let mut p = vec![0x90 | csrcs, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
    p.extend(std::iter::repeat_n(0xaa, 4 * usize::from(csrcs)));
    p.extend_from_slice(ext);
    p.extend_from_slice(&[1, 2, 3]);
    p
}

#[test]
fn reads_the_transport_wide_sequence_number() {
    // As the node stamps it: one element, one-byte form.
    let node = [0xbe, 0xde, 0, 1, (3 << 4) | 1, 0x12, 0x34, 0];
    assert_eq!(transport_seq(&rtp_with(0, &node), 3), Some(0x1234));
    assert_eq!(transport_seq(&rtp_with(2, &node), 3), Some(0x1234));
    assert_eq!(transport_seq(&rtp_with(0, &node), 4), None);
    // Behind another element (id 1, 3 bytes) and padding.
    let two = [
        0xbe, 0xde, 0, 2, 0x12, b'a', b'b', b'c', 0, 0x51, 0xff, 0xfe,
    ];
    assert_eq!(transport_seq(&rtp_with(0, &two), 5), Some(0xfffe));
    // Two-byte form.
    let long = [0x10, 0x00, 0, 1, 5, 2, 0x00, 0x09];
    assert_eq!(transport_seq(&rtp_with(0, &long), 5), Some(9));
    // No extension; a block longer than the packet; an element running past the block.
    let mut plain = rtp_with(0, &node);
    plain[0] &= !0x10;
    assert_eq!(transport_seq(&plain, 3), None);
    assert_eq!(
        transport_seq(&rtp_with(0, &[0xbe, 0xde, 0, 9, 0x31]), 3),
        None
    );
    let cut = [0xbe, 0xde, 0, 1, 0, 0, 0, (3 << 4) | 1];
    assert_eq!(transport_seq(&rtp_with(0, &cut)[..20], 3), None);
}

#[test]
fn finds_the_negotiated_extension_id() {
    let sdp = "v=0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
               a=extmap:3/recvonly http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n";
    assert_eq!(extmap_id(sdp), Some(3));
    assert_eq!(
        extmap_id("v=0\r\na=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"),
        None
    );
}

#[test]
fn the_ring_keeps_the_newest_arrivals() {
    let mut a = Arrivals::new();
    let mut out = Vec::new();
    assert_eq!(a.drain_into(&mut out), None);
    for i in 0..(RING + 10) {
        a.push(i as u16, i as i64, 42);
    }
    assert_eq!(a.drain_into(&mut out), Some(42));
    assert_eq!(out.len(), RING);
    assert_eq!(out[0], (10, 10));
    assert_eq!(out[RING - 1], ((RING + 9) as u16, (RING + 9) as i64));
    out.clear();
    assert_eq!(a.drain_into(&mut out), None);
}

/// Marshals `fb` and reads it back as the `rtc` crate does: (base, statuses, deltas in µs).
fn round_trip(fb: &TransportLayerCc) -> (u16, u16, Vec<i64>) {
    let bytes = fb.marshal().expect("marshal");
    assert_eq!(bytes.len() % 4, 0);
    assert_eq!(usize::from(fb.header().length + 1) * 4, bytes.len());
    let back = TransportLayerCc::unmarshal(&mut bytes.clone()).expect("unmarshal");
    let deltas = back.recv_deltas.iter().map(|d| d.delta).collect();
    (back.base_sequence_number, back.packet_status_count, deltas)
}

#[test]
fn feedback_reports_arrivals_and_losses_in_order() {
    let mut fb = Feedback::default();
    // 65534, 65535, (0 lost), 2 before 1 (reordered), then 3 a large gap later.
    let t0 = 10 * REFERENCE_US + 1_000;
    let arrivals = [
        (65_534, t0),
        (65_535, t0 + 500),
        (2, t0 + 1_000),
        (1, t0 + 1_250),
        (3, t0 + 100_000),
    ];
    let p = fb.build(&arrivals, 9).expect("feedback");
    assert_eq!(p.media_ssrc, 9);
    assert_eq!(p.base_sequence_number, 65_534);
    assert_eq!(p.packet_status_count, 6);
    assert_eq!(p.reference_time, 10);
    assert_eq!(p.fb_pkt_count, 0);
    let (base, count, deltas) = round_trip(&p);
    assert_eq!((base, count), (65_534, 6));
    // 1 ms after the reference, +0.5 ms, (0 lost), 1 at +0.75 ms, 2 arrived 0.25 ms before
    // it, 3 99 ms after 2.
    assert_eq!(deltas, vec![1_000, 500, 750, -250, 99_000]);
    // The next packet starts after 3; 4 arrived late and 5 never: reported lost.
    let p = fb
        .build(&[(6, t0 + 200_000), (7, t0 + 200_250)], 9)
        .expect("feedback");
    assert_eq!((p.base_sequence_number, p.packet_status_count), (4, 4));
    assert_eq!(p.fb_pkt_count, 1);
    assert_eq!(p.recv_deltas.len(), 2);
    round_trip(&p);
    // Nothing new, or only what was already reported: no packet.
    assert!(fb.build(&[], 9).is_none());
    assert!(fb.build(&[(7, t0 + 300_000)], 9).is_none());
}

#[test]
fn long_gaps_use_run_length_chunks_and_stay_bounded() {
    let mut fb = Feedback::default();
    fb.build(&[(0, 0)], 1).expect("feedback");
    // 100 lost, then one: one run-length chunk and a vector.
    let p = fb.build(&[(101, 50_000)], 1).expect("feedback");
    assert_eq!((p.base_sequence_number, p.packet_status_count), (1, 101));
    assert_eq!(p.packet_chunks.len(), 2);
    round_trip(&p);
    // A gap beyond what one packet carries restarts near the newest packet.
    let p = fb.build(&[(30_000, 60_000)], 1).expect("feedback");
    assert_eq!(i64::from(p.packet_status_count), MAX_STATUSES);
    assert_eq!(p.base_sequence_number, (30_000 - MAX_STATUSES + 1) as u16);
    round_trip(&p);
}
