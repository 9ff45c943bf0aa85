//! Protobuf wire format: a bounds-checked field reader over record bytes, and the varint and
//! length-header writers the encoders share.

#[allow(unused_imports)]
use super::*;

pub(super) const WT_VARINT: u8 = 0;
pub(super) const WT_I64: u8 = 1;
pub(super) const WT_LEN: u8 = 2;
pub(super) const WT_I32: u8 = 5;

/// One field value; `Len` is a range into the whole record buffer.
#[derive(Debug, Clone)]
pub(super) enum Wire {
    Varint(u64),
    I64(u64),
    I32(u32),
    Len(Range<usize>),
}

/// A cursor over `buf[pos..end]`; all positions are absolute offsets into `buf`.
pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
    pub(super) end: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8], range: Range<usize>) -> Self {
        Reader {
            buf,
            pos: range.start,
            end: range.end,
        }
    }

    pub(super) fn err(&self, what: &'static str) -> DecodeError {
        DecodeError::Wire { at: self.pos, what }
    }

    /// Most varints on this path (tags, lengths, enums) are one byte: that case stays inline.
    #[inline(always)]
    pub(super) fn varint(&mut self) -> Result<u64, DecodeError> {
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 && self.pos < self.end {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_slow()
    }

    #[inline(never)]
    pub(super) fn varint_slow(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            if self.pos >= self.end {
                return Err(self.err("truncated varint"));
            }
            let b = self.buf[self.pos];
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(self.err("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 63 {
                return Err(self.err("varint too long"));
            }
        }
    }

    /// The next field: (field number, start of its tag, value), or None at the end.
    #[inline(always)]
    pub(super) fn field(&mut self) -> Result<Option<(u32, usize, Wire)>, DecodeError> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let tag_start = self.pos;
        let tag = self.varint()?;
        // A key is a uint32 on the wire (field numbers up to 2^29 - 1): prost refuses more.
        if tag > u64::from(u32::MAX) {
            return Err(self.err("field number too large"));
        }
        let number = (tag >> 3) as u32;
        if number == 0 {
            return Err(self.err("field number 0"));
        }
        let value = match (tag & 7) as u8 {
            WT_VARINT => Wire::Varint(self.varint()?),
            WT_I64 => {
                if self.end - self.pos < 8 {
                    return Err(self.err("truncated fixed64"));
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
                self.pos += 8;
                Wire::I64(u64::from_le_bytes(b))
            }
            WT_I32 => {
                if self.end - self.pos < 4 {
                    return Err(self.err("truncated fixed32"));
                }
                let mut b = [0u8; 4];
                b.copy_from_slice(&self.buf[self.pos..self.pos + 4]);
                self.pos += 4;
                Wire::I32(u32::from_le_bytes(b))
            }
            WT_LEN => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| self.err("length too large"))?;
                if self.end - self.pos < len {
                    return Err(self.err("length-delimited field runs past its message"));
                }
                let r = self.pos..self.pos + len;
                self.pos += len;
                Wire::Len(r)
            }
            _ => return Err(self.err("unsupported wire type")),
        };
        Ok(Some((number, tag_start, value)))
    }
}

pub(super) fn utf8<'a>(
    buf: &'a [u8],
    r: Range<usize>,
    field: &'static str,
) -> Result<&'a str, DecodeError> {
    std::str::from_utf8(&buf[r]).map_err(|_| DecodeError::Utf8 { field })
}

/// Parses an `AnyValue` body as far as its scalar.
pub(super) fn any_value(buf: &[u8], r: Range<usize>) -> Result<AnyValueRef<'_>, DecodeError> {
    let mut rd = Reader::new(buf, r);
    let mut out = AnyValueRef::Other;
    while let Some((n, _, w)) = rd.field()? {
        out = match (n, w) {
            (1, Wire::Len(s)) => AnyValueRef::Str(utf8(buf, s, "AnyValue.string_value")?),
            (2, Wire::Varint(v)) => AnyValueRef::Bool(v != 0),
            (3, Wire::Varint(v)) => AnyValueRef::Int(v as i64),
            (4, Wire::I64(v)) => AnyValueRef::Double(f64::from_bits(v)),
            _ => AnyValueRef::Other,
        };
    }
    Ok(out)
}

/// Appends a protobuf varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes a varint of `v` takes.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub(super) fn len_field_size(body: usize) -> usize {
    1 + varint_len(body as u64) + body
}

pub(super) fn put_len_header(out: &mut Vec<u8>, field: u32, body: usize) {
    put_varint(out, (u64::from(field) << 3) | u64::from(WT_LEN));
    put_varint(out, body as u64);
}

/// The body of a single encoded length-delimited field.
pub(super) fn field_body(field: &Bytes) -> Option<Bytes> {
    if field.is_empty() {
        return None;
    }
    let mut rd = Reader::new(field, 0..field.len());
    match rd.field() {
        Ok(Some((_, _, Wire::Len(body)))) => Some(field.slice(body)),
        _ => None,
    }
}

/// A hasher for keys that are hashes already.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassHasher(u64);

impl std::hash::Hasher for PassHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A key's hash, eight bytes at a time: a table key, never stored or compared across
/// processes.
pub fn key_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mix = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(K);
    let mut chunks = key.chunks_exact(8);
    let mut h = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h, u64::from_le_bytes(w));
    }
    let mut w = [0u8; 8];
    w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(mix(h, u64::from_le_bytes(w)), key.len() as u64)
}
