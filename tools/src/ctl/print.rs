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
    pub fn unsupported(&self) -> Printed {
        Printed::Unsupported(format!(
            "{} not supported as output format",
            self.format.name()
        ))
    }

    pub fn get(&self, r: &RangeResponse) -> Printed {
        let mut o = String::new();
        match self.format {
            Format::Simple => {
                let mut b = Vec::new();
                for kv in &r.kvs {
                    self.simple_kv(&mut b, kv);
                }
                return Printed::Out(b);
            }
            Format::Fields => fields_get(&mut o, r),
            Format::Json => {
                let mut j = Json::new();
                json_get(&mut j, r);
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
                let mut b = b"OK\n".to_vec();
                if let Some(kv) = &r.prev_kv {
                    self.simple_kv(&mut b, kv);
                }
                return Printed::Out(b);
            }
            Format::Fields => fields_put(&mut o, r),
            Format::Json => {
                let mut j = Json::new();
                json_put(&mut j, r);
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
                let mut b = format!("{}\n", r.deleted).into_bytes();
                for kv in &r.prev_kvs {
                    self.simple_kv(&mut b, kv);
                }
                return Printed::Out(b);
            }
            Format::Fields => fields_del(&mut o, r),
            Format::Json => {
                let mut j = Json::new();
                json_del(&mut j, r);
                o = j.end();
            }
            Format::Protobuf => return Printed::Out(prost::Message::encode_to_vec(r)),
            Format::Table => return self.unsupported(),
        }
        Printed::Out(o.into_bytes())
    }

    /// etcdctl's printerRPC pattern: simple and fields text of the command's own, json the
    /// struct's (through `json`, which writes an open object's fields), protobuf the message's
    /// bytes, table refused, fields refused where the command has none.
    pub fn rpc<M: prost::Message>(
        &self,
        m: &M,
        simple: impl FnOnce(&mut String),
        fields: Option<&dyn Fn(&mut String)>,
        json: impl FnOnce(&mut Json),
    ) -> Printed {
        let mut o = String::new();
        match self.format {
            Format::Simple => simple(&mut o),
            Format::Fields => match fields {
                Some(f) => f(&mut o),
                None => return self.unsupported(),
            },
            Format::Json => {
                let mut j = Json::new();
                json(&mut j);
                o = j.end();
            }
            Format::Protobuf => return Printed::Out(prost::Message::encode_to_vec(m)),
            Format::Table => return self.unsupported(),
        }
        Printed::Out(o.into_bytes())
    }

    /// etcdctl's printKV: the key (unless value-only), then the value, as raw bytes (values
    /// are often binary); `--hex` as `\xNN`s.
    pub fn simple_kv(&self, o: &mut Vec<u8>, kv: &KeyValue) {
        let mut show = |b: &[u8]| {
            if self.hex {
                for x in b {
                    o.extend_from_slice(format!("\\x{x:02x}").as_bytes());
                }
            } else {
                o.extend_from_slice(b);
            }
            o.push(b'\n');
        };
        if !self.value_only {
            show(&kv.key);
        }
        show(&kv.value);
    }
}

/// Writes `p` to stdout. Bytes that are not UTF-8 are written as they are (as Go prints them).
pub fn emit(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

pub fn fields_get(o: &mut String, r: &RangeResponse) {
    fields_header(o, r.header.as_ref());
    for kv in &r.kvs {
        fields_kv(o, "", kv);
    }
    let _ = writeln!(o, "\"More\" : {}", r.more);
    let _ = writeln!(o, "\"Count\" : {}", r.count);
}

pub fn fields_put(o: &mut String, r: &PutResponse) {
    fields_header(o, r.header.as_ref());
    if let Some(kv) = &r.prev_kv {
        fields_kv(o, "Prev", kv);
    }
}

pub fn fields_del(o: &mut String, r: &DeleteRangeResponse) {
    fields_header(o, r.header.as_ref());
    let _ = writeln!(o, "\"Deleted\" : {}", r.deleted);
    for kv in &r.prev_kvs {
        fields_kv(o, "Prev", kv);
    }
}

pub fn json_get(j: &mut Json, r: &RangeResponse) {
    j.header(r.header.as_ref());
    j.kvs("kvs", &r.kvs);
    j.boolean("more", r.more);
    j.num("count", r.count);
}

pub fn json_put(j: &mut Json, r: &PutResponse) {
    j.header(r.header.as_ref());
    if let Some(kv) = &r.prev_kv {
        j.key("prev_kv");
        j.kv(kv);
    }
}

pub fn json_del(j: &mut Json, r: &DeleteRangeResponse) {
    j.header(r.header.as_ref());
    j.num("deleted", r.deleted);
    j.kvs("prev_kvs", &r.prev_kvs);
}

/// etcdctl's fields header: the response header's four numbers (0 when missing).
pub fn fields_header(o: &mut String, h: Option<&ResponseHeader>) {
    let h = h.cloned().unwrap_or_default();
    let _ = writeln!(o, "\"ClusterID\" : {}", h.cluster_id);
    let _ = writeln!(o, "\"MemberID\" : {}", h.member_id);
    let _ = writeln!(o, "\"Revision\" : {}", h.revision);
    let _ = writeln!(o, "\"RaftTerm\" : {}", h.raft_term);
}

pub fn fields_kv(o: &mut String, prefix: &str, kv: &KeyValue) {
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

/// Go's encoding/json of etcd's gogo structs: fields in struct order, `omitempty` ones left out
/// when empty (the `*_always` forms are the fields without it).
pub struct Json {
    out: String,
    first: Vec<bool>,
}

impl Json {
    pub fn new() -> Json {
        Json {
            out: "{".into(),
            first: vec![true],
        }
    }

    pub fn key(&mut self, k: &str) {
        let first = self.first.last_mut().expect("open object");
        if !*first {
            self.out.push(',');
        }
        *first = false;
        let _ = write!(self.out, "\"{k}\":");
    }

    pub fn num(&mut self, k: &str, v: impl Into<i128>) {
        let v = v.into();
        if v != 0 {
            self.key(k);
            let _ = write!(self.out, "{v}");
        }
    }

    pub fn boolean(&mut self, k: &str, v: bool) {
        if v {
            self.key(k);
            self.out.push_str("true");
        }
    }

    pub fn bytes(&mut self, k: &str, v: &[u8]) {
        if !v.is_empty() {
            self.key(k);
            let _ = write!(
                self.out,
                "\"{}\"",
                base64::engine::general_purpose::STANDARD.encode(v)
            );
        }
    }

    pub fn open(&mut self) {
        self.out.push('{');
        self.first.push(true);
    }

    pub fn close(&mut self) {
        self.out.push('}');
        self.first.pop();
    }

    /// A header embedded in a clientv3 struct: its fields at this level.
    pub fn header_fields(&mut self, h: Option<&ResponseHeader>) {
        let Some(h) = h else { return };
        self.num("cluster_id", h.cluster_id);
        self.num("member_id", h.member_id);
        self.num("revision", h.revision);
        self.num("raft_term", h.raft_term);
    }

    pub fn header(&mut self, h: Option<&ResponseHeader>) {
        let Some(h) = h else { return };
        self.key("header");
        self.open();
        self.num("cluster_id", h.cluster_id);
        self.num("member_id", h.member_id);
        self.num("revision", h.revision);
        self.num("raft_term", h.raft_term);
        self.close();
    }

    pub fn kv(&mut self, kv: &KeyValue) {
        self.open();
        self.bytes("key", &kv.key);
        self.num("create_revision", kv.create_revision);
        self.num("mod_revision", kv.mod_revision);
        self.num("version", kv.version);
        self.bytes("value", &kv.value);
        self.num("lease", kv.lease);
        self.close();
    }

    pub fn kvs(&mut self, k: &str, kvs: &[KeyValue]) {
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

    /// A field whose value the caller writes with [`Json::raw`] or nested calls.
    pub fn raw(&mut self, text: &str) {
        self.out.push_str(text);
    }

    pub fn num_always(&mut self, k: &str, v: impl Into<i128>) {
        self.key(k);
        let _ = write!(self.out, "{}", v.into());
    }

    pub fn boolean_always(&mut self, k: &str, v: bool) {
        self.key(k);
        let _ = write!(self.out, "{v}");
    }

    pub fn str(&mut self, k: &str, v: &str) {
        if !v.is_empty() {
            self.str_always(k, v);
        }
    }

    pub fn str_always(&mut self, k: &str, v: &str) {
        self.key(k);
        self.out.push_str(&json_string(v.as_bytes()));
    }

    /// A string slice: left out when empty if `omit`, else `null` for none.
    pub fn strs(&mut self, k: &str, v: &[String], omit: bool) {
        if v.is_empty() && omit {
            return;
        }
        self.key(k);
        if v.is_empty() {
            self.out.push_str("null");
            return;
        }
        self.out.push('[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(&json_string(s.as_bytes()));
        }
        self.out.push(']');
    }

    /// An array of objects, each written by `each` between its braces. An empty one is left
    /// out (`empty` None: omitempty) or written as `empty` says (`null` or `[]`).
    pub fn objects<T>(
        &mut self,
        k: &str,
        v: &[T],
        empty: Option<&str>,
        each: impl Fn(&mut Json, &T),
    ) {
        if v.is_empty() {
            match empty {
                None => return,
                Some(e) => {
                    self.key(k);
                    self.out.push_str(e);
                    return;
                }
            }
        }
        self.key(k);
        self.out.push('[');
        for (i, x) in v.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.open();
            each(self, x);
            self.close();
        }
        self.out.push(']');
    }

    /// The object, closed, without a newline (an element of an array).
    pub fn close_object(mut self) -> String {
        self.out.push('}');
        self.out
    }

    pub fn end(mut self) -> String {
        self.out.push_str("}\n");
        self.out
    }
}

impl Default for Json {
    fn default() -> Json {
        Json::new()
    }
}

/// A capnslog line as etcd's pkg/flags writes it on stderr: `2026-12-03 16:36:08.815009 W |
/// pkg/flags: <msg>` (the time in UTC here; etcdctl writes local time).
pub fn capnslog(level: char, msg: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    eprintln!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:06} {level} | pkg/flags: {msg}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_micros()
    );
}

/// One of the zap info lines etcdctl's libraries write on stderr: `{"level":"info","ts":…,
/// "caller":…,"msg":…,<fields>}`; `fields` hold JSON values already written.
pub fn zap_info(caller: &str, msg: &str, fields: &[(&str, String)]) {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut line = format!(
        "{{\"level\":\"info\",\"ts\":{ts},\"caller\":{},\"msg\":{}",
        json_string(caller.as_bytes()),
        json_string(msg.as_bytes())
    );
    for (k, v) in fields {
        let _ = write!(line, ",{}:{v}", json_string(k.as_bytes()));
    }
    line.push('}');
    eprintln!("{line}");
}

/// A JSON string value for [`zap_info`].
pub fn js(s: &str) -> String {
    json_string(s.as_bytes())
}

/// Go's time.Duration.String(): `850ns`, `1.5µs`, `2.004401ms`, `1.001037315s`, `1m0.5s`.
pub fn go_duration(d: std::time::Duration) -> String {
    let n = d.as_nanos();
    // The digits of `v` with `scale` of them after the point, trailing zeros dropped.
    let frac = |v: u128, scale: u32| -> String {
        let p = 10u128.pow(scale);
        let (i, f) = (v / p, v % p);
        if f == 0 {
            return i.to_string();
        }
        let f = format!("{f:0w$}", w = scale as usize);
        format!("{i}.{}", f.trim_end_matches('0'))
    };
    if n == 0 {
        return "0s".into();
    }
    if n < 1_000 {
        return format!("{n}ns");
    }
    if n < 1_000_000 {
        return format!("{}µs", frac(n, 3));
    }
    if n < 1_000_000_000 {
        return format!("{}ms", frac(n, 6));
    }
    let secs = n / 1_000_000_000;
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let s = frac(n % 60_000_000_000, 9);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// Go's encoding/json string: `\" \\ \n \r \t` escaped, other control bytes as `\u00XX`,
/// `< > &` and U+2028/U+2029 as `\uXXXX` (HTML-safe), invalid UTF-8 as U+FFFD.
pub fn json_string(b: &[u8]) -> String {
    let mut o = String::with_capacity(b.len() + 2);
    o.push('"');
    for chunk in b.utf8_chunks() {
        json_chars(&mut o, chunk.valid());
        // Go writes one replacement per byte it cannot decode.
        for _ in chunk.invalid() {
            o.push_str("\\ufffd");
        }
    }
    o.push('"');
    o
}

fn json_chars(o: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{go_quote, json_string};

    #[test]
    fn json_strings_as_go() {
        assert_eq!(
            json_string(b"a\"b\\<\x01\n"),
            "\"a\\\"b\\\\\\u003c\\u0001\\n\""
        );
        assert_eq!(json_string(b"\xff"), "\"\\ufffd\"");
    }

    #[test]
    fn durations_as_go() {
        use std::time::Duration;
        assert_eq!(super::go_duration(Duration::from_nanos(850)), "850ns");
        assert_eq!(super::go_duration(Duration::from_nanos(850_000)), "850µs");
        assert_eq!(
            super::go_duration(Duration::from_nanos(2_004_401)),
            "2.004401ms"
        );
        assert_eq!(
            super::go_duration(Duration::from_nanos(1_001_037_315)),
            "1.001037315s"
        );
        assert_eq!(super::go_duration(Duration::from_millis(60_500)), "1m0.5s");
        assert_eq!(super::go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn quotes_as_go() {
        assert_eq!(go_quote(b"foo"), "\"foo\"");
        assert_eq!(go_quote(b"a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote(b"\x00\xff"), "\"\\x00\\xff\"");
        assert_eq!(go_quote("é".as_bytes()), "\"é\"");
    }
}
