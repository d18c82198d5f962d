//! etcdctl's printers (`-w simple|json|fields|protobuf|table`) for the responses retcdctl
//! prints, byte for byte: json is Go's encoding/json of etcd's gogo structs (snake-case names,
//! empty fields left out, bytes in base64, 64-bit integers as numbers), fields is `"Name" :
//! value` lines with Go's `%q` for bytes, protobuf is the response message itself.

use std::fmt::Write as _;
use std::io::Write as _;

use base64::Engine as _;
use retcd_net::pb::etcdserverpb::{
    DeleteRangeResponse, PutResponse, RangeResponse, ResponseHeader,
};
use retcd_net::pb::mvccpb::KeyValue;

use crate::output::Format;

/// What a printer produced: text for stdout, or etcdctl's refusal of the format.
pub enum Printed {
    Out(Vec<u8>),
    Unsupported(String),
}

pub struct Printer {
    pub format: Format,
    pub hex: bool,
    pub value_only: bool,
}

impl Printer {
    fn unsupported(&self) -> Printed {
        Printed::Unsupported(format!(
            "{} not supported as output format",
            self.format.name()
        ))
    }

    pub fn get(&self, r: &RangeResponse) -> Printed {
        let mut o = String::new();
        match self.format {
            Format::Simple => {
                for kv in &r.kvs {
                    self.simple_kv(&mut o, kv);
                }
            }
            Format::Fields => {
                fields_header(&mut o, r.header.as_ref());
                for kv in &r.kvs {
                    fields_kv(&mut o, "", kv);
                }
                let _ = writeln!(o, "\"More\" : {}", r.more);
                let _ = writeln!(o, "\"Count\" : {}", r.count);
            }
            Format::Json => {
                let mut j = Json::new();
                j.header(r.header.as_ref());
                j.kvs("kvs", &r.kvs);
                j.boolean("more", r.more);
                j.num("count", r.count);
                o = j.end();
            }
            Format::Protobuf => return Printed::Out(prost::Message::encode_to_vec(r)),
            Format::Table => return self.unsupported(),
        }
        Printed::Out(o.into_bytes())
    }

    pub fn put(&self, r: &PutResponse) -> Printed {
        let mut o = String::new();
        match self.format {
            Format::Simple => {
                o.push_str("OK\n");
                if let Some(kv) = &r.prev_kv {
                    self.simple_kv(&mut o, kv);
                }
            }
            Format::Fields => {
                fields_header(&mut o, r.header.as_ref());
                if let Some(kv) = &r.prev_kv {
                    fields_kv(&mut o, "Prev", kv);
                }
            }
            Format::Json => {
                let mut j = Json::new();
                j.header(r.header.as_ref());
                if let Some(kv) = &r.prev_kv {
                    j.key("prev_kv");
                    j.kv(kv);
                }
                o = j.end();
            }
            Format::Protobuf => return Printed::Out(prost::Message::encode_to_vec(r)),
            Format::Table => return self.unsupported(),
        }
        Printed::Out(o.into_bytes())
    }

    pub fn del(&self, r: &DeleteRangeResponse) -> Printed {
        let mut o = String::new();
        match self.format {
            Format::Simple => {
                let _ = writeln!(o, "{}", r.deleted);
                for kv in &r.prev_kvs {
                    self.simple_kv(&mut o, kv);
                }
            }
            Format::Fields => {
                fields_header(&mut o, r.header.as_ref());
                let _ = writeln!(o, "\"Deleted\" : {}", r.deleted);
                for kv in &r.prev_kvs {
                    fields_kv(&mut o, "Prev", kv);
                }
            }
            Format::Json => {
                let mut j = Json::new();
                j.header(r.header.as_ref());
                j.num("deleted", r.deleted);
                j.kvs("prev_kvs", &r.prev_kvs);
                o = j.end();
            }
            Format::Protobuf => return Printed::Out(prost::Message::encode_to_vec(r)),
            Format::Table => return self.unsupported(),
        }
        Printed::Out(o.into_bytes())
    }

    /// etcdctl's printKV: the key (unless value-only), then the value; `--hex` as `\xNN`s.
    fn simple_kv(&self, o: &mut String, kv: &KeyValue) {
        let show = |b: &[u8]| {
            if self.hex {
                b.iter().map(|x| format!("\\x{x:02x}")).collect()
            } else {
                String::from_utf8_lossy(b).into_owned()
            }
        };
        if !self.value_only {
            o.push_str(&show(&kv.key));
            o.push('\n');
        }
        o.push_str(&show(&kv.value));
        o.push('\n');
    }
}

/// Writes `p` to stdout. Bytes that are not UTF-8 are written as they are (as Go prints them).
pub fn emit(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

fn fields_header(o: &mut String, h: Option<&ResponseHeader>) {
    let h = h.cloned().unwrap_or_default();
    let _ = writeln!(o, "\"ClusterID\" : {}", h.cluster_id);
    let _ = writeln!(o, "\"MemberID\" : {}", h.member_id);
    let _ = writeln!(o, "\"Revision\" : {}", h.revision);
    let _ = writeln!(o, "\"RaftTerm\" : {}", h.raft_term);
}

fn fields_kv(o: &mut String, prefix: &str, kv: &KeyValue) {
    let _ = writeln!(o, "\"{prefix}Key\" : {}", go_quote(&kv.key));
    let _ = writeln!(o, "\"{prefix}CreateRevision\" : {}", kv.create_revision);
    let _ = writeln!(o, "\"{prefix}ModRevision\" : {}", kv.mod_revision);
    let _ = writeln!(o, "\"{prefix}Version\" : {}", kv.version);
    let _ = writeln!(o, "\"{prefix}Value\" : {}", go_quote(&kv.value));
    let _ = writeln!(o, "\"{prefix}Lease\" : {}", kv.lease);
}

/// Go's `%q` of a byte string (strconv.Quote): printable characters as they are, `"` and `\`
/// escaped, the usual short escapes, other bytes of invalid UTF-8 as `\xNN`, other
/// non-printable characters as `\uNNNN` or `\UNNNNNNNN`.
pub fn go_quote(b: &[u8]) -> String {
    let mut o = String::from("\"");
    let mut rest = b;
    while !rest.is_empty() {
        let (c, len) = match std::str::from_utf8(&rest[..rest.len().min(4)]) {
            Ok(s) => (s.chars().next(), s.chars().next().map_or(1, char::len_utf8)),
            Err(e) if e.valid_up_to() > 0 => {
                let s = std::str::from_utf8(&rest[..e.valid_up_to()]).expect("valid prefix");
                let c = s.chars().next().expect("non-empty");
                (Some(c), c.len_utf8())
            }
            Err(_) => (None, 1),
        };
        match c {
            None => {
                let _ = write!(o, "\\x{:02x}", rest[0]);
            }
            Some('"') => o.push_str("\\\""),
            Some('\\') => o.push_str("\\\\"),
            Some('\x07') => o.push_str("\\a"),
            Some('\x08') => o.push_str("\\b"),
            Some('\x0c') => o.push_str("\\f"),
            Some('\n') => o.push_str("\\n"),
            Some('\r') => o.push_str("\\r"),
            Some('\t') => o.push_str("\\t"),
            Some('\x0b') => o.push_str("\\v"),
            Some(c) if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(o, "\\x{:02x}", c as u32);
            }
            Some(c) if c.is_control() => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            Some(c) => o.push(c),
        }
        rest = &rest[len..];
    }
    o.push('"');
    o
}

/// Go's encoding/json of etcd's gogo structs, as far as these responses need it.
struct Json {
    out: String,
    first: Vec<bool>,
}

impl Json {
    fn new() -> Json {
        Json {
            out: "{".into(),
            first: vec![true],
        }
    }

    fn key(&mut self, k: &str) {
        let first = self.first.last_mut().expect("open object");
        if !*first {
            self.out.push(',');
        }
        *first = false;
        let _ = write!(self.out, "\"{k}\":");
    }

    fn num(&mut self, k: &str, v: impl Into<i128>) {
        let v = v.into();
        if v != 0 {
            self.key(k);
            let _ = write!(self.out, "{v}");
        }
    }

    fn boolean(&mut self, k: &str, v: bool) {
        if v {
            self.key(k);
            self.out.push_str("true");
        }
    }

    fn bytes(&mut self, k: &str, v: &[u8]) {
        if !v.is_empty() {
            self.key(k);
            let _ = write!(
                self.out,
                "\"{}\"",
                base64::engine::general_purpose::STANDARD.encode(v)
            );
        }
    }

    fn open(&mut self) {
        self.out.push('{');
        self.first.push(true);
    }

    fn close(&mut self) {
        self.out.push('}');
        self.first.pop();
    }

    fn header(&mut self, h: Option<&ResponseHeader>) {
        let Some(h) = h else { return };
        self.key("header");
        self.open();
        self.num("cluster_id", h.cluster_id);
        self.num("member_id", h.member_id);
        self.num("revision", h.revision);
        self.num("raft_term", h.raft_term);
        self.close();
    }

    fn kv(&mut self, kv: &KeyValue) {
        self.open();
        self.bytes("key", &kv.key);
        self.num("create_revision", kv.create_revision);
        self.num("mod_revision", kv.mod_revision);
        self.num("version", kv.version);
        self.bytes("value", &kv.value);
        self.num("lease", kv.lease);
        self.close();
    }

    fn kvs(&mut self, k: &str, kvs: &[KeyValue]) {
        if kvs.is_empty() {
            return;
        }
        self.key(k);
        self.out.push('[');
        for (i, kv) in kvs.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.kv(kv);
        }
        self.out.push(']');
    }

    fn end(mut self) -> String {
        self.out.push_str("}\n");
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::go_quote;

    #[test]
    fn quotes_as_go() {
        assert_eq!(go_quote(b"foo"), "\"foo\"");
        assert_eq!(go_quote(b"a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote(b"\x00\xff"), "\"\\x00\\xff\"");
        assert_eq!(go_quote("é".as_bytes()), "\"é\"");
    }
}
