//! The H.264 SEI NAL unit that carries a stamp (format: the module above).

use std::time::Instant;

/// `user_data_unregistered`'s UUID for our stamps: `STRATA-G2G-STAMP` in ASCII.
pub const UUID: &[u8; 16] = b"STRATA-G2G-STAMP";
/// NAL unit type of SEI.
pub const NAL_SEI: u8 = 6;
/// SEI payload type of `user_data_unregistered`.
const USER_DATA_UNREGISTERED: u8 = 5;

/// An SEI NAL unit (header included, emulation prevention applied) stamped with `at`.
pub fn build(at: Instant) -> Vec<u8> {
    let stamp = super::encode(at);
    let mut rbsp = Vec::with_capacity(3 + UUID.len() + stamp.len());
    rbsp.push(USER_DATA_UNREGISTERED);
    rbsp.push((UUID.len() + stamp.len()) as u8);
    rbsp.extend_from_slice(UUID);
    rbsp.extend_from_slice(&stamp);
    rbsp.push(0x80); // rbsp_trailing_bits
    let mut nal = vec![NAL_SEI];
    escape(&rbsp, &mut nal);
    nal
}

/// The stamp in an SEI NAL unit (header included), if one of its messages is ours.
pub fn read(nal: &[u8]) -> Option<Instant> {
    let (&header, body) = nal.split_first()?;
    if header & 0x1f != NAL_SEI {
        return None;
    }
    let rbsp = unescape(body);
    let mut rest = rbsp.as_slice();
    // sei_message()s until the trailing bits: type and size are each a run of 0xff plus a byte.
    while rest.len() > 1 {
        let ty = read_ff_coded(&mut rest)?;
        let size = read_ff_coded(&mut rest)?;
        let payload = rest.get(..size)?;
        if ty == usize::from(USER_DATA_UNREGISTERED)
            && let Some(user) = payload.strip_prefix(UUID.as_slice())
        {
            return super::decode(user);
        }
        rest = &rest[size..];
    }
    None
}

/// A value of `ff_byte`s plus a last byte (H.264 7.3.2.3.1).
fn read_ff_coded(rest: &mut &[u8]) -> Option<usize> {
    let mut v = 0usize;
    loop {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        v += usize::from(b);
        if b != 0xff {
            return Some(v);
        }
        if v > 1 << 20 {
            return None;
        }
    }
}

/// Appends `rbsp` with emulation prevention bytes (00 00 0x, x ≤ 3 → 00 00 03 0x).
fn escape(rbsp: &[u8], out: &mut Vec<u8>) {
    let mut zeros = 0;
    for &b in rbsp {
        if zeros >= 2 && b <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
}

/// Removes emulation prevention bytes (00 00 03 → 00 00).
fn unescape(ebsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ebsp.len());
    let mut zeros = 0;
    for &b in ebsp {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        out.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::anchor;
    use super::*;

    #[test]
    fn a_stamped_sei_reads_back_and_never_holds_a_start_code() {
        // Small times put runs of zero bytes in the stamp: emulation prevention must apply.
        for us in [0u64, 1, 3, 256, 65_536, 1_234_567_890] {
            let at = anchor() + Duration::from_micros(us);
            let nal = build(at);
            assert_eq!(nal[0], NAL_SEI);
            assert!(
                !nal.windows(3).any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2),
                "{us}: {nal:02x?}"
            );
            assert_eq!(read(&nal), Some(at), "{us}");
        }
    }

    #[test]
    fn other_sei_and_other_units_are_not_stamps() {
        // x264's own user data (another UUID), then ours in the same NAL unit.
        let at = anchor() + Duration::from_millis(5);
        let ours = build(at);
        let mut nal = vec![NAL_SEI, 5, 17];
        nal.extend_from_slice(&[0xdc; 16]);
        nal.push(b'x');
        nal.extend_from_slice(&ours[1..]);
        assert_eq!(read(&nal), Some(at));
        assert_eq!(read(&[NAL_SEI, 5, 17, 0xdc, 0x80]), None, "truncated");
        assert_eq!(read(&[0x65, 1, 2, 3]), None, "an IDR slice");
        assert_eq!(read(&[]), None);
        // A size of 0xff runs that never ends.
        assert_eq!(read(&[NAL_SEI, 5, 0xff, 0xff, 0xff]), None);
    }
}
