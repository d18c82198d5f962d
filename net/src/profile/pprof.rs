//! Go's profile format (github.com/google/pprof, proto/profile.proto; field numbers from there),
//! gzipped as Go's runtime/pprof writes it, and the [`Builder`] that turns recorded stacks into
//! one. Every location carries its symbols, so tools need neither the binary nor `/symbol`.

use std::collections::HashMap;
use std::io::Write;

use super::stack::{Line, Stack, Symbols};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<LineMsg>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LineMsg {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
}

/// Builds one profile: sample types, then samples from recorded stacks, then [`Builder::finish`].
pub struct Builder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(String, String), u64>,
    /// Location ids by (address, interrupted instruction or return address, lines kept): a
    /// stack cut inside an inlined chain keeps fewer.
    locations: HashMap<(usize, bool, usize), u64>,
    symbols: Symbols,
    /// See [`Symbols::lines`].
    is_internal: fn(&str) -> bool,
}

/// One sample's values and labels, for [`Builder::sample`].
pub struct Values<'a> {
    pub values: &'a [i64],
    pub labels: &'a [(&'a str, LabelValue)],
}

pub enum LabelValue {
    Str(String),
    Num(i64),
}

impl Builder {
    /// `types`: (type, unit) of each sample value, Go's names (`samples`/`count`, `cpu`/
    /// `nanoseconds`, `inuse_space`/`bytes`…); `period`: (type, unit, value); `is_internal`:
    /// where recording began ([`Symbols::lines`]).
    pub fn new(
        types: &[(&str, &str)],
        default: &str,
        period: (&str, &str, i64),
        is_internal: fn(&str) -> bool,
    ) -> Self {
        let mut b = Builder {
            profile: Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
            symbols: Symbols::default(),
            is_internal,
        };
        b.string(""); // profile.proto: string_table[0] is "".
        b.mappings();
        for (t, u) in types {
            let vt = b.value_type(t, u);
            b.profile.sample_type.push(vt);
        }
        b.profile.default_sample_type = b.string(default);
        b.profile.period_type = Some(b.value_type(period.0, period.1));
        b.profile.period = period.2;
        b.profile.time_nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        b
    }

    pub fn duration(&mut self, d: std::time::Duration) {
        self.profile.duration_nanos = d.as_nanos() as i64;
    }

    pub fn comment(&mut self, text: &str) {
        let s = self.string(text);
        self.profile.comment.push(s);
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn value_type(&mut self, t: &str, u: &str) -> ValueType {
        ValueType {
            r#type: self.string(t),
            unit: self.string(u),
        }
    }

    /// The executable mappings of the process (`/proc/self/maps`), the main binary first (tools
    /// name the profile after it). Every location carries its lines, so tools need neither.
    fn mappings(&mut self) {
        let exe = std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mut found: Vec<(u64, u64, u64, String)> = maps
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (range, perms, offset) = (f.next()?, f.next()?, f.next()?);
                let path = f.nth(2)?;
                if !perms.contains('x') || !path.starts_with('/') {
                    return None;
                }
                let (start, limit) = range.split_once('-')?;
                Some((
                    u64::from_str_radix(start, 16).ok()?,
                    u64::from_str_radix(limit, 16).ok()?,
                    u64::from_str_radix(offset, 16).ok()?,
                    path.to_string(),
                ))
            })
            .collect();
        found.sort_by_key(|m| m.3 != exe);
        for (start, limit, offset, path) in found {
            let filename = self.string(&path);
            self.profile.mapping.push(Mapping {
                id: self.profile.mapping.len() as u64 + 1,
                memory_start: start,
                memory_limit: limit,
                file_offset: offset,
                filename,
                has_functions: true,
                has_filenames: true,
                has_line_numbers: true,
                has_inline_frames: true,
            });
        }
    }

    fn mapping_of(&self, ip: usize) -> u64 {
        let ip = ip as u64;
        self.profile
            .mapping
            .iter()
            .find(|m| m.memory_start <= ip && ip < m.memory_limit)
            .map_or(0, |m| m.id)
    }

    /// Adds one sample.
    pub fn sample(&mut self, stack: &Stack, v: Values<'_>) {
        let flat = self.symbols.lines(stack, self.is_internal);
        let mut ids = Vec::new();
        let mut i = 0;
        while i < flat.len() {
            // The lines of one address that are kept: from the first kept one to its last.
            let ip = flat[i].ip;
            let end = flat[i..]
                .iter()
                .position(|f| f.ip != ip)
                .map_or(flat.len(), |n| i + n);
            let key = (ip, flat[i].exact, flat[i].inlined);
            let id = match self.locations.get(&key) {
                Some(&id) => id,
                None => {
                    let lines: Vec<LineMsg> = flat[i..end]
                        .iter()
                        .map(|f| LineMsg {
                            function_id: self.function(&f.line),
                            line: f.line.line,
                        })
                        .collect();
                    let id = self.profile.location.len() as u64 + 1;
                    let mapping_id = self.mapping_of(ip);
                    self.profile.location.push(Location {
                        id,
                        mapping_id,
                        address: ip as u64,
                        line: lines,
                    });
                    self.locations.insert(key, id);
                    id
                }
            };
            ids.push(id);
            i = end;
        }
        let label = v
            .labels
            .iter()
            .map(|(k, val)| {
                let key = self.string(k);
                match val {
                    LabelValue::Str(s) => Label {
                        key,
                        str: self.string(s),
                        num: 0,
                    },
                    LabelValue::Num(n) => Label {
                        key,
                        str: 0,
                        num: *n,
                    },
                }
            })
            .collect();
        self.profile.sample.push(Sample {
            location_id: ids,
            value: v.values.to_vec(),
            label,
        });
    }

    fn function(&mut self, l: &Line) -> u64 {
        let key = (l.system.clone(), l.file.clone());
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let name = self.string(&l.function);
        let system_name = self.string(&l.system);
        let filename = self.string(&l.file);
        self.profile.function.push(Function {
            id,
            name,
            system_name,
            filename,
        });
        self.functions.insert(key, id);
        id
    }

    /// The profile, encoded and gzipped.
    pub fn finish(self) -> Vec<u8> {
        let raw = prost::Message::encode_to_vec(&self.profile);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).expect("writing to memory");
        gz.finish().expect("writing to memory")
    }
}
