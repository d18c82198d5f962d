//! Command-line arguments are bytes on Unix, and etcdctl takes any bytes as a key or value
//! (`put $'\xff' v`). retcdctl's parser works on `String`s, so an argument that is not UTF-8
//! is carried losslessly: each byte that is not part of valid UTF-8 becomes a character of the
//! last private-use block (U+10FF00 + byte), and [`bytes`] turns it back when a key or value is
//! built. Characters of that block in a real argument would be read as those bytes; nothing
//! writes them.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

const BASE: u32 = 0x10_FF00;

/// An argument as a `String`, its invalid bytes escaped.
pub fn from_os(a: &OsString) -> String {
    let mut s = String::new();
    for chunk in a.as_bytes().utf8_chunks() {
        s.push_str(chunk.valid());
        for &b in chunk.invalid() {
            s.push(char::from_u32(BASE + u32::from(b)).expect("U+10FF00..U+10FFFF are chars"));
        }
    }
    s
}

/// Text (possibly holding escaped bytes) turned back into the bytes it stands for.
pub fn bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        match u32::from(c).checked_sub(BASE) {
            Some(b) if b < 256 => out.push(b as u8),
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// Bytes as text, escaping what is not UTF-8 (the inverse of [`bytes`]).
pub fn from_bytes(b: &[u8]) -> String {
    from_os(&OsString::from(std::ffi::OsStr::from_bytes(b)))
}

/// The process's arguments after the program name.
pub fn args() -> Vec<String> {
    std::env::args_os().skip(1).map(|a| from_os(&a)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn any_bytes_round_trip() {
        let raw: &[u8] = b"a\xff\xc3\xa9z\x80";
        let s = super::from_bytes(raw);
        assert!(s.starts_with('a') && s.contains('é'));
        assert_eq!(super::bytes(&s), raw);
        assert_eq!(super::bytes("plain é"), "plain é".as_bytes());
    }
}
