//! HPACK (RFC 7541), as much of it as [`crate::authority`] needs: a decoder that keeps the
//! client's dynamic table, and an encoder that writes every field as a literal *without*
//! indexing, so that the decoder on the other side (h2's) never grows a dynamic table and no
//! index we emit can refer to an entry it does not have.
//!
//! Invariants: a decoder's dynamic table never exceeds its maximum size (the
//! SETTINGS_HEADER_TABLE_SIZE the server advertised; entries are evicted oldest first, RFC 7541
//! §4.4); every integer, string and table index is bounds-checked against the block, and any
//! violation is an [`HpackError`] (the caller closes the connection), never a panic.

use std::collections::VecDeque;
use std::sync::OnceLock;

/// A header block that is not valid HPACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("HPACK: the header block ends inside a field")]
    Truncated,
    #[error("HPACK: integer overflow")]
    IntegerOverflow,
    #[error("HPACK: index {0} is not in the static or dynamic table")]
    BadIndex(usize),
    #[error("HPACK: invalid Huffman code")]
    BadHuffman,
    #[error("HPACK: dynamic table size update to {0} exceeds the maximum")]
    TableSizeTooLarge(usize),
    #[error("HPACK: dynamic table size update after the first field")]
    LateTableSizeUpdate,
    #[error("HPACK: header list larger than {0} bytes")]
    ListTooLarge(usize),
}

/// How a field was represented, as far as an intermediary must preserve it (RFC 7541 §6.2.3:
/// a never-indexed field stays never-indexed when re-encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexing {
    /// Indexed, or a literal with or without incremental indexing.
    Normal,
    /// A literal "never indexed" (sensitive values such as tokens).
    Never,
}

/// One decoded header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
    pub indexing: Indexing,
}

/// RFC 7541 Appendix A: the static table (index 1 is the first entry).
pub const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The bytes RFC 7541 counts for a table entry besides its name and value (§4.1).
const ENTRY_OVERHEAD: usize = 32;
/// The largest integer accepted in a block (far above any legal size or index; keeps the
/// shift arithmetic from overflowing).
const MAX_INTEGER: usize = 1 << 28;

/// A decoder of one connection's header blocks, in order (the dynamic table is per connection).
#[derive(Debug)]
pub struct Decoder {
    /// Newest entry first: dynamic index 62 is `table[0]`.
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// The sum of the entries' sizes (name + value + 32).
    size: usize,
    /// The table's current maximum, as last set by a size update.
    max_size: usize,
    /// The most a size update may set (the server's SETTINGS_HEADER_TABLE_SIZE).
    limit: usize,
    /// The most decoded bytes (names + values + 32 per field) one block may hold.
    max_list_bytes: usize,
}

impl Decoder {
    /// A decoder whose table may grow to `table_limit` bytes, refusing blocks that decode to
    /// more than `max_list_bytes`.
    pub fn new(table_limit: usize, max_list_bytes: usize) -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: table_limit,
            limit: table_limit,
            max_list_bytes,
        }
    }

    /// Decodes one complete header block (the fragments of a HEADERS frame and its
    /// CONTINUATIONs, joined), updating the dynamic table as the encoder did.
    pub fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut fields = Vec::new();
        let mut list_bytes = 0usize;
        let mut pos = 0;
        while pos < block.len() {
            let b = block[pos];
            let field = if b & 0x80 != 0 {
                let index = read_int(block, &mut pos, 7)?;
                let (name, value) = self.entry(index)?;
                Field {
                    name: name.to_vec(),
                    value: value.to_vec(),
                    indexing: Indexing::Normal,
                }
            } else if b & 0xc0 == 0x40 {
                let field = self.literal(block, &mut pos, 6, Indexing::Normal)?;
                self.insert(field.name.clone(), field.value.clone());
                field
            } else if b & 0xe0 == 0x20 {
                if !fields.is_empty() {
                    return Err(HpackError::LateTableSizeUpdate);
                }
                let size = read_int(block, &mut pos, 5)?;
                if size > self.limit {
                    return Err(HpackError::TableSizeTooLarge(size));
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                let indexing = if b & 0xf0 == 0x10 {
                    Indexing::Never
                } else {
                    Indexing::Normal
                };
                self.literal(block, &mut pos, 4, indexing)?
            };
            list_bytes += field.name.len() + field.value.len() + ENTRY_OVERHEAD;
            if list_bytes > self.max_list_bytes {
                return Err(HpackError::ListTooLarge(self.max_list_bytes));
            }
            fields.push(field);
        }
        Ok(fields)
    }

    /// A literal field whose name index has a `prefix`-bit prefix (0: the name follows).
    fn literal(
        &self,
        block: &[u8],
        pos: &mut usize,
        prefix: u8,
        indexing: Indexing,
    ) -> Result<Field, HpackError> {
        let index = read_int(block, pos, prefix)?;
        let name = if index == 0 {
            read_string(block, pos)?
        } else {
            self.entry(index)?.0.to_vec()
        };
        let value = read_string(block, pos)?;
        Ok(Field {
            name,
            value,
            indexing,
        })
    }

    /// The (name, value) at `index` of the combined static and dynamic tables.
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            1..=61 => {
                let (n, v) = STATIC_TABLE[index - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            _ if index > 61 => self
                .table
                .get(index - 62)
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .ok_or(HpackError::BadIndex(index)),
            _ => Err(HpackError::BadIndex(index)),
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        self.evict(size);
        if size <= self.max_size {
            self.table.push_front((name, value));
            self.size += size;
        }
        debug_assert!(self.size <= self.max_size);
    }

    /// Evicts the oldest entries until `incoming` more bytes fit (RFC 7541 §4.4: an entry larger
    /// than the whole table empties it).
    fn evict(&mut self, incoming: usize) {
        while self.size + incoming > self.max_size {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }
}

/// Appends `fields` to `out` as one header block of literals without indexing (never-indexed
/// fields stay never-indexed), names taken from the static table where it has them, strings
/// without Huffman coding.
pub fn encode(fields: &[Field], out: &mut Vec<u8>) {
    for field in fields {
        let (flag, prefix) = match field.indexing {
            Indexing::Normal => (0x00, 4),
            Indexing::Never => (0x10, 4),
        };
        let name_index = STATIC_TABLE
            .iter()
            .position(|(n, _)| n.as_bytes() == field.name.as_slice())
            .map_or(0, |i| i + 1);
        write_int(out, flag, prefix, name_index);
        if name_index == 0 {
            write_string(out, &field.name);
        }
        write_string(out, &field.value);
    }
}

/// Reads an integer with an `n`-bit prefix (RFC 7541 §5.1) at `*pos`.
fn read_int(block: &[u8], pos: &mut usize, n: u8) -> Result<usize, HpackError> {
    let mask = (1u16 << n) as usize - 1;
    let first = *block.get(*pos).ok_or(HpackError::Truncated)? as usize & mask;
    *pos += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    let mut shift = 0u32;
    loop {
        let b = *block.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        value += ((b & 0x7f) as usize) << shift;
        if value > MAX_INTEGER {
            return Err(HpackError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
    }
}

fn write_int(out: &mut Vec<u8>, flags: u8, n: u8, value: usize) {
    let mask = (1usize << n) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Reads a string literal (RFC 7541 §5.2), Huffman-decoding it when its H bit is set.
fn read_string(block: &[u8], pos: &mut usize) -> Result<Vec<u8>, HpackError> {
    let huffman = *block.get(*pos).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = read_int(block, pos, 7)?;
    let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = block.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    write_int(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// RFC 7541 Appendix B: the length in bits of the Huffman code of every symbol (0–255, then EOS
/// as 256). The code is canonical, so the lengths alone define it: codes of one length are
/// consecutive in symbol order, and each length's first code follows the previous length's last.
const HUFFMAN_CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];
const EOS: u16 = 256;
const MAX_CODE_LENGTH: usize = 30;

/// The canonical code in decoding form: per length, its first code, how many codes it has and
/// where its symbols start in `symbols` (sorted by length, then symbol).
struct HuffmanTable {
    first_code: [u32; MAX_CODE_LENGTH + 1],
    count: [u32; MAX_CODE_LENGTH + 1],
    offset: [u32; MAX_CODE_LENGTH + 1],
    symbols: [u16; 257],
}

fn huffman_table() -> &'static HuffmanTable {
    static TABLE: OnceLock<HuffmanTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = HuffmanTable {
            first_code: [0; MAX_CODE_LENGTH + 1],
            count: [0; MAX_CODE_LENGTH + 1],
            offset: [0; MAX_CODE_LENGTH + 1],
            symbols: [0; 257],
        };
        for &len in &HUFFMAN_CODE_LENGTHS {
            t.count[len as usize] += 1;
        }
        let mut code = 0u32;
        let mut offset = 0u32;
        for len in 1..=MAX_CODE_LENGTH {
            code = (code + t.count[len - 1]) << 1;
            t.first_code[len] = code;
            t.offset[len] = offset;
            offset += t.count[len];
        }
        let mut next = t.offset;
        for (sym, &len) in HUFFMAN_CODE_LENGTHS.iter().enumerate() {
            t.symbols[next[len as usize] as usize] = sym as u16;
            next[len as usize] += 1;
        }
        debug_assert_eq!(offset, 257);
        t
    })
}

/// Decodes a Huffman-coded string (RFC 7541 §5.2): the padding must be fewer than 8 bits, all
/// ones (a prefix of EOS), and EOS itself must not appear.
pub fn huffman_decode(input: &[u8]) -> Result<Vec<u8>, HpackError> {
    let t = huffman_table();
    let mut out = Vec::with_capacity(input.len() * 8 / 5);
    let mut code = 0u32;
    let mut len = 0usize;
    // Whether every bit of the pending code is a one (then it may be padding).
    let mut all_ones = true;
    for &byte in input {
        for shift in (0..8).rev() {
            let bit = u32::from(byte >> shift) & 1;
            code = (code << 1) | bit;
            all_ones &= bit == 1;
            len += 1;
            if len > MAX_CODE_LENGTH {
                return Err(HpackError::BadHuffman);
            }
            let index = code.wrapping_sub(t.first_code[len]);
            if code >= t.first_code[len] && index < t.count[len] {
                let sym = t.symbols[(t.offset[len] + index) as usize];
                if sym == EOS {
                    return Err(HpackError::BadHuffman);
                }
                out.push(sym as u8);
                code = 0;
                len = 0;
                all_ones = true;
            }
        }
    }
    if len >= 8 || !all_ones {
        return Err(HpackError::BadHuffman);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pairs(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|f| {
                (
                    String::from_utf8(f.name.clone()).unwrap(),
                    String::from_utf8(f.value.clone()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn huffman_examples_of_the_rfc() {
        // RFC 7541 C.4.1–C.4.3.
        assert_eq!(
            huffman_decode(&hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")).unwrap(),
            b"www.example.com"
        );
        assert_eq!(huffman_decode(&hex("a8eb 1064 9cbf")).unwrap(), b"no-cache");
        assert_eq!(
            huffman_decode(&hex("25a8 49e9 5bb8 e8b4 bf")).unwrap(),
            b"custom-value"
        );
        assert_eq!(huffman_decode(&[]).unwrap(), b"");
        // Padding of 8 bits, padding with a zero, and EOS itself are refused.
        assert!(huffman_decode(&hex("a8eb 1064 9cbf ff")).is_err());
        assert!(huffman_decode(&hex("a8eb 1064 9cbe")).is_err());
        assert!(huffman_decode(&hex("ffff fffc")).is_err());
    }

    #[test]
    fn requests_of_the_rfc_with_huffman_and_dynamic_table() {
        // RFC 7541 C.4: three requests on one connection.
        let mut d = Decoder::new(4096, 1 << 20);
        let first = d
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
            .unwrap();
        assert_eq!(
            pairs(&first),
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(d.size, 57);
        let second = d.decode(&hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(second[3].value, b"www.example.com");
        assert_eq!(second[4].value, b"no-cache");
        assert_eq!(d.size, 110);
        let third = d
            .decode(&hex(
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ))
            .unwrap();
        assert_eq!(third[2].value, b"/index.html");
        assert_eq!(third[3].value, b"www.example.com");
        assert_eq!(third[4].name, b"custom-key");
        assert_eq!(third[4].value, b"custom-value");
        assert_eq!(d.size, 164);
    }

    #[test]
    fn eviction_with_a_small_table() {
        // RFC 7541 C.6 uses a 256-byte table: the third response evicts entries.
        let mut d = Decoder::new(256, 1 << 20);
        d.decode(&hex(
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
             2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        ))
        .unwrap();
        assert_eq!(d.size, 222);
        d.decode(&hex("4883 640e ffc1 c0bf")).unwrap();
        assert_eq!(d.size, 222);
        assert_eq!(d.table.len(), 4);
        assert!(d.size <= 256);
    }

    #[test]
    fn encode_round_trips_without_touching_the_table() {
        let fields = vec![
            Field {
                name: b":authority".to_vec(),
                value: b"127.0.0.1:2379".to_vec(),
                indexing: Indexing::Normal,
            },
            Field {
                name: b"token".to_vec(),
                value: b"secret".to_vec(),
                indexing: Indexing::Never,
            },
            Field {
                name: b"x-long".to_vec(),
                value: vec![b'v'; 300],
                indexing: Indexing::Normal,
            },
        ];
        let mut block = Vec::new();
        encode(&fields, &mut block);
        let mut d = Decoder::new(4096, 1 << 20);
        assert_eq!(d.decode(&block).unwrap(), fields);
        assert_eq!(d.size, 0);
    }

    #[test]
    fn bad_blocks_are_errors() {
        let mut d = Decoder::new(4096, 1 << 20);
        assert_eq!(d.decode(&[0xbe]), Err(HpackError::BadIndex(62)));
        assert_eq!(d.decode(&[0x80]), Err(HpackError::BadIndex(0)));
        assert_eq!(d.decode(&[0x41, 0x05, b'a']), Err(HpackError::Truncated));
        assert_eq!(
            d.decode(&[0x3f, 0xe2, 0x1f]),
            Err(HpackError::TableSizeTooLarge(4097))
        );
        assert_eq!(
            d.decode(&[0x82, 0x20]),
            Err(HpackError::LateTableSizeUpdate)
        );
        assert_eq!(
            d.decode(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(HpackError::IntegerOverflow)
        );
        let mut small = Decoder::new(4096, 40);
        assert_eq!(
            small.decode(&[0x82, 0x82]),
            Err(HpackError::ListTooLarge(40))
        );
    }
}
