//! Protobuf's wire format, written by hand for etcd's on-disk records (`etcd_keys`'
//! mvccpb.KeyValue, `etcd_db`'s lease, user, role and alarm records): encoders that emit what
//! Go's gogo protobuf emits (fields in number order, proto3 zero values omitted, a negative int64
//! as the 10-byte varint of its two's complement), and one field walker that accepts any valid
//! encoding (any order, unknown fields skipped) and refuses bad framing — never a panic, every
//! loop bounded by the input's length. Callers: those two modules only.

pub const WIRE_VARINT: u64 = 0;
pub const WIRE_FIXED64: u64 = 1;
pub const WIRE_BYTES: u64 = 2;
pub const WIRE_FIXED32: u64 = 5;

/// Bad framing of a protobuf message (callers wrap it in their own error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

pub fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    // 10 groups of 7 bits cover 64 bits.
    for _ in 0..10 {
        if v < 0x80 {
            out.push(v as u8);
            return;
        }
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
}

/// A varint field, omitted when zero (proto3).
pub fn put_uint(field: u64, v: u64, out: &mut Vec<u8>) {
    if v != 0 {
        put_varint(field << 3 | WIRE_VARINT, out);
        put_varint(v, out);
    }
}

/// An int64 field: Go writes the varint of its two's-complement u64 (10 bytes when negative).
pub fn put_int64(field: u64, v: i64, out: &mut Vec<u8>) {
    put_uint(field, v as u64, out);
}

/// A length-delimited field; `always` writes it even when empty (a set sub-message).
pub fn put_len(field: u64, b: &[u8], always: bool, out: &mut Vec<u8>) {
    if always || !b.is_empty() {
        put_varint(field << 3 | WIRE_BYTES, out);
        put_varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
}

/// One field of a protobuf message.
pub enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed32/fixed64 field (etcd's messages have none; skipped as unknown).
    Fixed,
}

/// Visits every field of the message `b` (named `what` in errors) in order; malformed framing
/// is an error.
pub fn fields<'a, E: From<WireError>>(
    b: &'a [u8],
    what: &str,
    mut visit: impl FnMut(u64, Field<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let mut pos = 0;
    // Each field consumes at least one byte, so this ends.
    while pos < b.len() {
        let tag = varint(b, &mut pos, what)?;
        let field = tag >> 3;
        if field == 0 {
            return Err(WireError(format!("{what}: field number 0")).into());
        }
        let f = match tag & 7 {
            WIRE_VARINT => Field::Varint(varint(b, &mut pos, what)?),
            WIRE_BYTES => {
                let len = varint(b, &mut pos, what)?;
                Field::Bytes(take(b, &mut pos, len, what)?)
            }
            WIRE_FIXED64 => {
                take(b, &mut pos, 8, what)?;
                Field::Fixed
            }
            WIRE_FIXED32 => {
                take(b, &mut pos, 4, what)?;
                Field::Fixed
            }
            w => return Err(WireError(format!("{what}: field {field} has wire type {w}")).into()),
        };
        visit(field, f)?;
    }
    Ok(())
}

fn varint(b: &[u8], pos: &mut usize, what: &str) -> Result<u64, WireError> {
    let mut v = 0u64;
    for i in 0..10 {
        let Some(&byte) = b.get(*pos) else {
            return Err(WireError(format!("{what}: truncated varint")));
        };
        *pos += 1;
        v |= u64::from(byte & 0x7F) << (7 * i);
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(WireError(format!("{what}: varint longer than 10 bytes")))
}

fn take<'a>(b: &'a [u8], pos: &mut usize, len: u64, what: &str) -> Result<&'a [u8], WireError> {
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| pos.checked_add(l))
        .filter(|&e| e <= b.len())
        .ok_or_else(|| WireError(format!("{what}: field runs past the end")))?;
    let s = &b[*pos..end];
    *pos = end;
    Ok(s)
}

/// Bytes from hex digits (whitespace ignored): the byte strings tests compare encodings with.
#[cfg(test)]
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
