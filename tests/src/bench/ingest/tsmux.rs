//! A minimal MPEG-TS muxer for the stamped SRT publisher: one program, one H.264 stream.
//!
//! It writes what ffmpeg's `mpegts` muxer writes for such a stream, in the parts the node reads:
//! PAT and PMT before every keyframe, one PES per access unit with a PTS and, as ffmpeg does
//! for video by default, no PES length (0: "until the next PES"), so a demuxer completes an
//! access unit only when the next one starts.

/// Bytes of a TS packet.
pub const PACKET: usize = 188;
const PMT_PID: u16 = 0x1000;
/// The video stream's PID (also the PCR PID).
pub const VIDEO_PID: u16 = 0x100;
const STREAM_TYPE_H264: u8 = 0x1b;

/// Continuity counters per PID.
#[derive(Debug, Default)]
pub struct TsMux {
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
}

impl TsMux {
    /// The TS packets of one access unit (Annex B) presented at `pts` (90 kHz); with the PAT
    /// and PMT first when `keyframe`.
    pub fn video(&mut self, pts: u64, keyframe: bool, annex_b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if keyframe {
            let pat = section(
                0x00,
                1,
                &[0x00, 0x01, 0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8],
            );
            packets(0, &mut self.cc_pat, &pat, true, &mut out);
            let pmt_body = [
                0xe0 | (VIDEO_PID >> 8) as u8,
                VIDEO_PID as u8, // PCR PID
                0xf0,
                0x00, // no program info
                STREAM_TYPE_H264,
                0xe0 | (VIDEO_PID >> 8) as u8,
                VIDEO_PID as u8,
                0xf0,
                0x00, // no ES info
            ];
            let pmt = section(0x02, 1, &pmt_body);
            packets(PMT_PID, &mut self.cc_pmt, &pmt, true, &mut out);
        }
        let mut pes = vec![0x00, 0x00, 0x01, 0xe0, 0x00, 0x00, 0x80, 0x80, 0x05];
        pes.extend_from_slice(&timestamp(0x2, pts));
        pes.extend_from_slice(annex_b);
        packets(VIDEO_PID, &mut self.cc_video, &pes, false, &mut out);
        out
    }
}

/// A PSI section (pointer field first) with its CRC.
fn section(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
    let len = 5 + body.len() + 4; // after the length field: id, version, numbers, body, CRC
    let mut s = vec![
        table_id,
        0xb0 | ((len >> 8) as u8 & 0x0f),
        len as u8,
        (id >> 8) as u8,
        id as u8,
        0xc1, // version 0, current
        0x00,
        0x00,
    ];
    s.extend_from_slice(body);
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    let mut out = vec![0x00]; // pointer field
    out.extend_from_slice(&s);
    out
}

/// A PTS/DTS field (ISO/IEC 13818-1 2.4.3.7) with the 4-bit prefix `prefix`.
fn timestamp(prefix: u8, t: u64) -> [u8; 5] {
    let t = t & ((1 << 33) - 1);
    [
        (prefix << 4) | (((t >> 30) as u8 & 0x07) << 1) | 1,
        (t >> 22) as u8,
        (((t >> 15) as u8) << 1) | 1,
        (t >> 7) as u8,
        ((t as u8) << 1) | 1,
    ]
}

/// `payload` split into TS packets of `pid`; the first starts a unit. PSI sections pad with
/// 0xff after the section, PES packets with adaptation-field stuffing.
fn packets(pid: u16, cc: &mut u8, payload: &[u8], psi: bool, out: &mut Vec<u8>) {
    let mut rest = payload;
    let mut first = true;
    loop {
        let mut p = Vec::with_capacity(PACKET);
        p.push(0x47);
        p.push((u8::from(first) << 6) | ((pid >> 8) as u8 & 0x1f));
        p.push(pid as u8);
        let room = PACKET - 4;
        let take = rest.len().min(room);
        if take < room && !psi {
            // Adaptation field of stuffing: length byte, flags byte, then 0xff.
            let af_len = room - take - 1;
            p.push(0x30 | *cc);
            p.push(af_len as u8);
            if af_len > 0 {
                p.push(0x00);
                p.resize(p.len() + af_len - 1, 0xff);
            }
        } else {
            p.push(0x10 | *cc);
        }
        p.extend_from_slice(&rest[..take]);
        p.resize(PACKET, 0xff);
        out.extend_from_slice(&p);
        *cc = (*cc + 1) & 0x0f;
        rest = &rest[take..];
        first = false;
        if rest.is_empty() {
            return;
        }
    }
}

/// CRC-32/MPEG-2 (polynomial 0x04c11db7, not reflected, initial 0xffffffff).
fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_timestamps_match_the_standard() {
        // The check value of CRC-32/MPEG-2.
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
        // PTS 0 with prefix 0010: the marker bits only.
        assert_eq!(timestamp(2, 0), [0x21, 0x00, 0x01, 0x00, 0x01]);
        let t = 0x1_2345_6789u64;
        let b = timestamp(2, t);
        let back = (u64::from(b[0] >> 1) & 7) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1);
        assert_eq!(back, t);
    }

    #[test]
    fn packets_are_whole_numbered_and_carry_the_payload() {
        let mut mux = TsMux::default();
        let au: Vec<u8> = [0, 0, 0, 1, 0x65].into_iter().chain([7u8; 500]).collect();
        let ts = mux.video(90_000, true, &au);
        assert_eq!(ts.len() % PACKET, 0);
        let pkts: Vec<&[u8]> = ts.chunks(PACKET).collect();
        assert!(pkts.iter().all(|p| p[0] == 0x47));
        let pid = |p: &[u8]| u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
        assert_eq!((pid(pkts[0]), pid(pkts[1])), (0, PMT_PID));
        let video: Vec<&&[u8]> = pkts.iter().filter(|p| pid(p) == VIDEO_PID).collect();
        // 9 + 5 header bytes + 505 of access unit over 184-byte payloads: 3 packets.
        assert_eq!(video.len(), 3);
        assert_eq!(video[0][1] & 0x40, 0x40, "the first starts the PES");
        let ccs: Vec<u8> = video.iter().map(|p| p[3] & 0x0f).collect();
        assert_eq!(ccs, [0, 1, 2]);
        // Payload bytes (after any adaptation field) put back together are the PES.
        let mut pes = Vec::new();
        for p in &video {
            let start = match p[3] & 0x20 {
                0 => 4,
                _ => 5 + usize::from(p[4]),
            };
            pes.extend_from_slice(&p[start..]);
        }
        assert_eq!(&pes[..4], &[0, 0, 1, 0xe0]);
        assert_eq!(&pes[14..], &au[..]);
        // Without a keyframe: no PAT/PMT, counters go on.
        let next = mux.video(93_600, false, &au[..50]);
        assert_eq!(next.len(), PACKET);
        assert_eq!(next[3] & 0x0f, 3);
    }
}
