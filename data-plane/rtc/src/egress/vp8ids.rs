//! VP8 picture IDs and TL0PICIDX kept continuous across simulcast layer switches (RFC 7741
//! §4.2). Each layer comes from its own encoder with its own, randomly started picture ID and
//! TL0PICIDX; a receiver's frame reference finder (libwebrtc's `RtpVp8RefFinder`) follows
//! both across the whole stream, so after a switch its state from the old layer can leave
//! the new layer's frames referencing pictures it never gets: undecodable until the next
//! keyframe request. As other SFUs do for simulcast, the output continues from the last
//! values sent: the first packet of a new input SSRC gets the next picture ID and TL0PICIDX.
//! Sans-IO; rewrites the descriptor in place.

/// Where the descriptor's picture ID and TL0PICIDX are in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    /// Offset of the picture ID, and whether it is 15 bits wide (M).
    pid: Option<(usize, bool)>,
    /// Offset of TL0PICIDX.
    tl0: Option<usize>,
}

fn fields(payload: &[u8]) -> Fields {
    let none = Fields {
        pid: None,
        tl0: None,
    };
    let (Some(&first), Some(&ext)) = (payload.first(), payload.get(1)) else {
        return none;
    };
    if first & 0x80 == 0 {
        return none;
    }
    let mut offset = 2;
    let mut pid = None;
    if ext & 0x80 != 0 {
        let Some(&b) = payload.get(offset) else {
            return none;
        };
        let wide = b & 0x80 != 0;
        if wide && payload.len() < offset + 2 {
            return none;
        }
        pid = Some((offset, wide));
        offset += if wide { 2 } else { 1 };
    }
    let tl0 = (ext & 0x40 != 0 && offset < payload.len()).then_some(offset);
    Fields { pid, tl0 }
}

fn read_pid(payload: &[u8], (at, wide): (usize, bool)) -> u16 {
    if wide {
        u16::from_be_bytes([payload[at] & 0x7f, payload[at + 1]])
    } else {
        u16::from(payload[at] & 0x7f)
    }
}

fn write_pid(payload: &mut [u8], (at, wide): (usize, bool), pid: u16) {
    if wide {
        let [hi, lo] = (pid & 0x7fff).to_be_bytes();
        payload[at] = 0x80 | hi;
        payload[at + 1] = lo;
    } else {
        payload[at] = (pid & 0x7f) as u8;
    }
}

/// True when `a` is after `b` on a circle of `modulus` values.
fn ahead(a: u16, b: u16, modulus: u16) -> bool {
    let d = a.wrapping_sub(b) % modulus;
    d != 0 && d < modulus / 2
}

/// The offsets of one input SSRC (layer).
#[derive(Debug, Clone, Copy)]
struct Offsets {
    ssrc: u32,
    pid: u16,
    tl0: u8,
}

/// The offsets of this many most recent layers are kept, for retransmissions.
const KEEP: usize = 4;

/// The picture ID and TL0PICIDX state of one player's VP8 track.
#[derive(Debug, Clone, Default)]
pub(crate) struct Vp8Ids {
    /// The offsets of the current input SSRC first, then of earlier ones.
    offsets: Vec<Offsets>,
    /// The newest picture ID and TL0PICIDX sent.
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
}

impl Vp8Ids {
    /// Rewrites the descriptor of one live packet of input SSRC `ssrc` for the output; a
    /// payload without the fields is left as it is.
    pub(crate) fn rewrite(&mut self, ssrc: u32, payload: &mut [u8]) {
        let f = fields(payload);
        if self.offsets.first().is_none_or(|o| o.ssrc != ssrc) {
            // A new layer (or the first packet): continue from what was sent.
            let pid = match (f.pid, self.last_pid) {
                (Some(p), Some(last)) => last.wrapping_add(1).wrapping_sub(read_pid(payload, p)),
                _ => 0,
            };
            let tl0 = match (f.tl0, self.last_tl0) {
                (Some(t), Some(last)) => last.wrapping_add(1).wrapping_sub(payload[t]),
                _ => 0,
            };
            self.offsets.retain(|o| o.ssrc != ssrc);
            self.offsets.insert(0, Offsets { ssrc, pid, tl0 });
            self.offsets.truncate(KEEP);
        }
        let Offsets { pid, tl0, .. } = self.offsets[0];
        if let Some(p) = f.pid {
            let modulus = if p.1 { 0x8000 } else { 0x80 };
            let out = read_pid(payload, p).wrapping_add(pid) % modulus;
            write_pid(payload, p, out);
            if self
                .last_pid
                .is_none_or(|last| ahead(out, last % modulus, modulus))
            {
                self.last_pid = Some(out);
            }
        }
        if let Some(t) = f.tl0 {
            let out = payload[t].wrapping_add(tl0);
            payload[t] = out;
            if self
                .last_tl0
                .is_none_or(|last| ahead(u16::from(out), u16::from(last), 0x100))
            {
                self.last_tl0 = Some(out);
            }
        }
    }

    /// Rewrites a retransmitted packet of input SSRC `ssrc` as it was sent (with the offsets
    /// that layer had, if it is one of the last few); changes no state.
    pub(crate) fn retransmit(&self, ssrc: u32, payload: &mut [u8]) {
        let Some(o) = self.offsets.iter().find(|o| o.ssrc == ssrc) else {
            return;
        };
        let f = fields(payload);
        if let Some(p) = f.pid {
            let modulus = if p.1 { 0x8000 } else { 0x80 };
            let out = read_pid(payload, p).wrapping_add(o.pid) % modulus;
            write_pid(payload, p, out);
        }
        if let Some(t) = f.tl0 {
            payload[t] = payload[t].wrapping_add(o.tl0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload with X, I (15-bit), L and T: picture ID `pid`, TL0PICIDX `tl0`.
    fn packet(pid: u16, tl0: u8) -> Vec<u8> {
        let [hi, lo] = pid.to_be_bytes();
        vec![0x90, 0xe0, 0x80 | hi, lo, tl0, 0x20, 0x00, 0xaa]
    }

    fn ids(p: &[u8]) -> (u16, u8) {
        (u16::from_be_bytes([p[2] & 0x7f, p[3]]), p[4])
    }

    #[test]
    fn a_new_layer_continues_the_picture_ids_and_tl0() {
        let mut v = Vp8Ids::default();
        // The first layer passes unchanged.
        for (pid, tl0) in [(100, 7), (101, 8), (102, 8)] {
            let mut p = packet(pid, tl0);
            v.rewrite(1, &mut p);
            assert_eq!(ids(&p), (pid, tl0));
        }
        // Another layer, far behind: it continues from 102 / 8.
        for (i, (pid, tl0)) in [(30_000, 250), (30_000, 250), (30_001, 251)]
            .into_iter()
            .enumerate()
        {
            let mut p = packet(pid, tl0);
            v.rewrite(2, &mut p);
            let want = [(103, 9), (103, 9), (104, 10)][i];
            assert_eq!(ids(&p), want, "packet {i}");
            // The rest of the payload is untouched.
            assert_eq!(p[5..], [0x20, 0x00, 0xaa]);
        }
        // Back to the first layer, which moved on meanwhile; a late packet of it keeps its
        // place before the newest.
        let mut p = packet(200, 40);
        v.rewrite(1, &mut p);
        assert_eq!(ids(&p), (105, 11));
        let mut late = packet(199, 40);
        v.rewrite(1, &mut late);
        assert_eq!(ids(&late), (104, 11));
        let mut next = packet(201, 41);
        v.rewrite(1, &mut next);
        assert_eq!(ids(&next), (106, 12));
        // A retransmission of layer 2 gets layer 2's offsets and changes nothing.
        let mut again = packet(30_001, 251);
        v.retransmit(2, &mut again);
        assert_eq!(ids(&again), (104, 10));
        let mut unknown = packet(7, 7);
        v.retransmit(9, &mut unknown);
        assert_eq!(ids(&unknown), (7, 7));
        let mut after = packet(202, 42);
        v.rewrite(1, &mut after);
        assert_eq!(ids(&after), (107, 13));
    }

    #[test]
    fn ids_wrap_and_short_or_bare_payloads_are_left_alone() {
        let mut v = Vp8Ids::default();
        let mut p = packet(0x7fff, 255);
        v.rewrite(1, &mut p);
        let mut q = packet(5, 9);
        v.rewrite(2, &mut q);
        assert_eq!(ids(&q), (0, 0));
        // 7-bit picture ID: continues modulo 128 from the last ID's low bits.
        let mut short = vec![0x90, 0x80, 0x05, 0x00];
        v.rewrite(3, &mut short);
        assert_eq!(short, [0x90, 0x80, 0x01, 0x00]);
        // No X, or truncated descriptors: untouched, no panic.
        for bytes in [
            vec![0x10, 0x00],
            vec![0x90],
            vec![0x90, 0x80],
            vec![0x90, 0xc0, 0x80],
        ] {
            let mut b = bytes.clone();
            v.rewrite(4, &mut b);
            assert_eq!(b, bytes);
        }
    }
}
