//! A bounds-checked cursor: every read returns a `Result`, nothing can panic.

use super::FrameError;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn string(&mut self, max: usize, what: &'static str) -> Result<String, FrameError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(FrameError::TooLong { what, len, max });
        }
        let raw = self.bytes(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| FrameError::InvalidUtf8)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn finish(self) -> Result<(), FrameError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(FrameError::TrailingBytes(n)),
        }
    }
}

/// Append a `u16`-length-prefixed string.
pub(crate) fn put_string(
    out: &mut bytes::BytesMut,
    s: &str,
    max: usize,
    what: &'static str,
) -> Result<(), FrameError> {
    use bytes::BufMut;
    let len = s.len();
    if len > max || len > usize::from(u16::MAX) {
        return Err(FrameError::TooLong { what, len, max });
    }
    out.put_u16(u16::try_from(len).map_err(|_| FrameError::TooLong { what, len, max })?);
    out.put_slice(s.as_bytes());
    Ok(())
}
