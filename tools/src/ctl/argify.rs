//! etcdctl's tokenizer of the lines `txn` and `watch -i` read (its `argify`): a line is split
//! into double-quoted Go string literals, single-quoted strings and runs of non-space
//! characters, the leftmost match first, as its regular expression
//! `"(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?` finds them; and Go's string-literal
//! unquoting (strconv.Unquote) that turns a double-quoted token into its bytes.

/// What a line can do wrong.
#[derive(Debug, PartialEq, Eq)]
pub enum ArgifyError {
    /// A double-quoted token that is not a valid Go literal (Go: "invalid syntax").
    Syntax,
    /// etcdctl 3.4 cuts a single-quoted token by the number of tokens in the line instead of
    /// its own length; past the token's end Go panics.
    SliceBounds { high: usize, len: usize },
}

/// Go regexp's `\s`: ASCII white space.
fn space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0c' | b'\r')
}

/// The tokens of `line`, quoted ones unquoted.
pub fn argify(line: &[u8]) -> Result<Vec<Vec<u8>>, ArgifyError> {
    let mut raw: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let end = match rest[0] {
            b'"' => double_quoted_len(rest),
            b'\'' => rest[1..].iter().position(|&b| b == b'\'').map(|n| n + 2),
            b if !space(b) => Some(rest.iter().position(|&b| space(b)).unwrap_or(rest.len())),
            _ => None,
        };
        match end {
            Some(n) => {
                raw.push(&rest[..n]);
                i += n;
            }
            None => i += 1,
        }
    }
    let count = raw.len();
    raw.into_iter()
        .map(|t| match t[0] {
            b'\'' => {
                // etcdctl 3.4: args[i][1 : len(args)-1].
                let high = count.wrapping_sub(1);
                if count == 0 || high < 1 || high > t.len() {
                    return Err(ArgifyError::SliceBounds { high, len: t.len() });
                }
                Ok(t[1..high].to_vec())
            }
            b'"' => go_unquote(t).ok_or(ArgifyError::Syntax),
            _ => Ok(t.to_vec()),
        })
        .collect()
}

/// The length of a `"…"` token at the start of `s` (backslash escapes any byte), if closed.
pub fn double_quoted_len(s: &[u8]) -> Option<usize> {
    let mut j = 1;
    while j < s.len() {
        match s[j] {
            b'"' => return Some(j + 1),
            b'\\' if j + 1 < s.len() => j += 2,
            b'\\' => return None,
            _ => j += 1,
        }
    }
    None
}

/// Go's strconv.Unquote of a double-quoted literal: `\a \b \f \n \r \t \v \\ \"`, `\xNN`,
/// octal `\NNN`, `\uNNNN`, `\UNNNNNNNN`; a raw newline or any other escape is invalid.
pub fn go_unquote(t: &[u8]) -> Option<Vec<u8>> {
    if t.len() < 2 || t[0] != b'"' || t[t.len() - 1] != b'"' {
        return None;
    }
    let body = &t[1..t.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    let hex = |s: &[u8]| -> Option<u32> {
        let s = std::str::from_utf8(s).ok()?;
        u32::from_str_radix(s, 16).ok()
    };
    while i < body.len() {
        let c = body[i];
        match c {
            b'"' | b'\n' => return None,
            b'\\' => {
                let e = *body.get(i + 1)?;
                i += 2;
                match e {
                    b'a' => out.push(7),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'v' => out.push(11),
                    b'\\' => out.push(b'\\'),
                    b'"' => out.push(b'"'),
                    b'x' => {
                        let v = hex(body.get(i..i + 2)?)?;
                        out.push(v as u8);
                        i += 2;
                    }
                    b'0'..=b'7' => {
                        let digits = body.get(i - 1..i + 2)?;
                        let mut v = 0u32;
                        for &d in digits {
                            if !(b'0'..=b'7').contains(&d) {
                                return None;
                            }
                            v = v * 8 + u32::from(d - b'0');
                        }
                        if v > 255 {
                            return None;
                        }
                        out.push(v as u8);
                        i += 2;
                    }
                    b'u' | b'U' => {
                        let n = if e == b'u' { 4 } else { 8 };
                        let v = hex(body.get(i..i + n)?)?;
                        let ch = char::from_u32(v)?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        i += n;
                    }
                    _ => return None,
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        argify(s.as_bytes())
            .unwrap()
            .into_iter()
            .map(|t| String::from_utf8(t).unwrap())
            .collect()
    }

    #[test]
    fn tokens_as_etcdctl_finds_them() {
        assert_eq!(toks("put  a b"), ["put", "a", "b"]);
        assert_eq!(toks(r#"put "c\nd" "e f""#), ["put", "c\nd", "e f"]);
        assert_eq!(toks("get --prefix a"), ["get", "--prefix", "a"]);
        // The 3.4 bug: three tokens cut a quoted token at [1:2].
        assert_eq!(toks("put 'key1' 'v'"), ["put", "k", "v"]);
        assert_eq!(
            argify(b"'abc'"),
            Err(ArgifyError::SliceBounds { high: 0, len: 5 })
        );
        assert_eq!(argify(br#"put "\q""#), Err(ArgifyError::Syntax));
        // An unclosed quote is skipped over, as the regexp does.
        assert_eq!(toks(r#"put "abc"#), ["put", "abc"]);
    }

    #[test]
    fn unquotes_as_go() {
        assert_eq!(
            go_unquote(br#""a\x41\101\u00e9""#).unwrap(),
            "aAAé".as_bytes()
        );
        assert_eq!(go_unquote(br#""\'""#), None);
    }
}
