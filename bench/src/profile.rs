//! fio-style job files: what `retcd-bench run FILE.fio` runs.
//!
//! A job file has fio's INI shape and, where fio has a key, fio's meaning for it:
//!
//! ```ini
//! ; Kubernetes-like load: writers and readers together, then a paginated list.
//! [global]
//! clients=16
//! key_prefix=/registry/pods/
//! value_size=2k
//! runtime=30s
//!
//! [writers]
//! rw=put
//! lease_ttl=60
//!
//! [readers]
//! rw=range
//! consistency=s
//!
//! [list]
//! stonewall          ; waits for writers and readers, reported apart
//! rw=range
//! prefix
//! paginate
//! limit=500
//! ```
//!
//! # Lines
//!
//! - `[name]` starts a section. `[global]` sets defaults for the jobs that *follow* it: as in fio, a
//!   later `[global]` changes only the jobs after it. Every other section is one job, named by the
//!   section name; two jobs may not share a name.
//! - `key=value` or `key = value` sets a key (spaces around the key and the value are dropped; the
//!   value is otherwise literal, with no quoting). A bare `key` sets a boolean key to true (fio's
//!   `stonewall` style).
//! - Blank lines, and lines whose first non-blank character is `;` or `#`, are comments. A `;` or
//!   `#` preceded by whitespace also starts a comment that runs to the end of the line, so a value
//!   cannot contain ` ;` or ` #`.
//! - `${VAR}` in a value is replaced by the environment variable `VAR` (as fio does); an unset
//!   variable is an error.
//!
//! A key before any section, an unknown key, a bad value and a file without a job are errors. Every
//! error names the file and the line, e.g. `k8s.fio:12: unknown key "rwmixreed"`. Errors that need
//! the whole job (the checks under "Rules between keys") name the job's `[section]` line.
//!
//! # Values
//!
//! - *size*: an integer with an optional suffix `k`, `m` or `g` (also `KB`/`KiB`, `MB`/`MiB`,
//!   `GB`/`GiB`, any case), all 1024-based as in fio's default `kb_base=1024`: `4k` = 4096,
//!   `100KiB` = 102400.
//! - *count*: an integer with an optional suffix `k` = 1000 or `m` = 1000000 (any case). Counts of
//!   operations are decimal, unlike fio's sizes.
//! - *time*: an integer or decimal number with a unit `us`, `ms`, `s`, `m`, `h` or `d`; without a
//!   unit, seconds (fio's default): `500ms`, `1.5s`, `2m`, `10`.
//! - *bool*: the bare key, or `=1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`.
//!
//! # Keys
//!
//! Every key is valid both in `[global]` and in a job.
//!
//! | key | value | default | meaning |
//! |---|---|---|---|
//! | `rw` (`readwrite`) | `put`, `range`, `txn` (`txn-put`), `mixed`, `watch`, `cas` (`stm`), `keepalive` (`lease-keepalive`) | `put` | the operation |
//! | `rwmixread` | integer 0..=100 | 50 | `rw=mixed`: percentage of reads; `rwmixwrite=N` sets `rwmixread` to 100 − N (fio) |
//! | `clients` | positive integer | 1 | concurrent clients (etcd benchmark's `--clients`) |
//! | `conns` | positive integer | 1 | gRPC connections shared by the clients; more than `clients` is allowed, as in etcd |
//! | `key_size` | size, 1..=1MiB | 8 | key bytes |
//! | `value_size` (`val_size`) | size, 0..=64MiB | 8 | value bytes |
//! | `keyspace` | positive size | 10000 | number of distinct keys (a size: `10k` = 10240) |
//! | `key_prefix` | string | empty | keys are this prefix followed by the key number; empty gives etcd benchmark's binary varint keys |
//! | `distribution` (`random_distribution`) | `uniform` (`random`), `sequential`, `zipf:θ` with θ > 0 (`zipf:1.2`) | `uniform` | which key each operation picks |
//! | `rate` (`rate_iops`) | non-negative integer | 0 | maximum operations per second of the job, all its clients together; 0 = unlimited |
//! | `runtime` | time | none | stop after this long; `0` = none, as in fio |
//! | `time_based` | bool | false | fio's: run for the whole `runtime` even when `total` is reached, i.e. `total` is ignored; needs `runtime` |
//! | `ramp_time` | time | 0 | run this long before measuring (fio) |
//! | `total` | positive count | see below | number of measured operations |
//! | `consistency` | `l`, `s`, `linearizable`, `serializable` | `l` | consistency of range reads |
//! | `txn_ops` | positive integer | 1 | `rw=txn`: puts per transaction |
//! | `limit` | non-negative integer | 0 | range result limit (0 = none); the page size with `paginate` |
//! | `paginate` | bool | false | `rw=range`: one operation lists the whole range in pages of `limit` keys, all at one revision (Kubernetes' paginated list) |
//! | `prefix` | bool | false | `rw=range`/`watch`: the range is every key under `key_prefix` |
//! | `keys_only` | bool | false | range option: keys without values |
//! | `count_only` | bool | false | range option: the count only |
//! | `watchers` | positive integer | 100 | `rw=watch`: watchers in all |
//! | `streams` | positive integer | 10 | `rw=watch`: watch streams, the watchers spread over them |
//! | `prev_kv` | bool | false | `rw=watch`: ask for the previous key-values |
//! | `lease_ttl` | non-negative integer (seconds) | none | `rw=put`: attach a lease with this TTL to every put; 0 = none |
//! | `lease_reuse` | time | 1s | `rw=put` with `lease_ttl`: grant a fresh lease once the current one is older than this (Kubernetes reuses an event lease for a while); 0 = a lease per put |
//! | `target_leader` | bool | false | connect to the leader only |
//! | `stonewall` (`wait_for_previous`) | bool | false | fio's: wait for every earlier job to finish before starting, and start a new reporting group |
//! | `numjobs` | positive integer | 1 | fio's: run this many clones of the job |
//! | `group_reporting` | bool | false | fio's: report the clones (and the group) as one |
//! | `description` | string | empty | free text |
//!
//! `total` defaults to 10000 when neither `total` nor `runtime` is set, and to no limit when
//! `runtime` is set; with `time_based` it is always no limit. A `rw=watch` job has no default
//! `total`: without `runtime` or `total` it ends when the other jobs of its reporting group end.
//!
//! # Rules between keys
//!
//! - `rw=txn` needs `txn_ops` ≤ `keyspace`: etcd rejects a transaction that puts one key twice.
//! - `count_only` and `keys_only` exclude each other.
//! - `paginate` needs `limit` > 0.
//! - `time_based` needs `runtime`.
//! - A reporting group made only of `rw=watch` jobs without `runtime` or `total` would never end.
//!
//! # Overrides
//!
//! [`apply_override`] applies `key=value` (or a bare boolean key) from the command line, e.g.
//! `--set clients=8`, to every job, with the same parsing and rules; its errors name the file
//! `--set` and line 0.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

/// The operation a job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rw {
    Put,
    Range,
    Txn,
    Mixed,
    Watch,
    Cas,
    Keepalive,
}

impl Rw {
    /// The canonical `rw=` value.
    pub fn name(self) -> &'static str {
        match self {
            Rw::Put => "put",
            Rw::Range => "range",
            Rw::Txn => "txn",
            Rw::Mixed => "mixed",
            Rw::Watch => "watch",
            Rw::Cas => "cas",
            Rw::Keepalive => "keepalive",
        }
    }
}

/// Which key each operation picks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    Uniform,
    Sequential,
    /// Zipf with exponent θ > 0.
    Zipf(f64),
}

/// Consistency of range reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    Linearizable,
    Serializable,
}

/// One job of a profile, with `[global]` defaults and overrides applied. See the module
/// documentation for the keys.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    /// The section name.
    pub name: String,
    /// The line of the `[section]` header (1-based; 0 when not from a file).
    pub line: usize,
    /// Reporting group, 0-based: one more at each `stonewall` job after the first job.
    pub group: usize,
    pub rw: Rw,
    pub rwmixread: u8,
    pub clients: usize,
    pub conns: usize,
    pub key_size: usize,
    pub value_size: usize,
    pub keyspace: u64,
    pub key_prefix: String,
    pub distribution: Distribution,
    /// Operations per second for the whole job; 0 = unlimited.
    pub rate: u64,
    pub runtime: Option<Duration>,
    pub time_based: bool,
    pub ramp_time: Duration,
    /// Measured operations, resolved from `total_given`, `runtime`, `time_based` and `rw`:
    /// `None` means no limit.
    pub total: Option<u64>,
    /// `total` as the file (or an override) gave it. Kept because the resolved `total` cannot tell
    /// an explicit `total=10000` from the default, and an override of `runtime` must re-resolve it.
    pub total_given: Option<u64>,
    pub consistency: Consistency,
    pub txn_ops: usize,
    pub limit: i64,
    pub paginate: bool,
    pub prefix: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub watchers: usize,
    pub streams: usize,
    pub prev_kv: bool,
    pub lease_ttl: Option<i64>,
    pub lease_reuse: Duration,
    pub target_leader: bool,
    pub stonewall: bool,
    pub numjobs: usize,
    pub group_reporting: bool,
    pub description: String,
}

const DEFAULT_TOTAL: u64 = 10_000;
const MIB: u64 = 1024 * 1024;
const MAX_KEY_SIZE: u64 = MIB;
const MAX_VALUE_SIZE: u64 = 64 * MIB;

impl JobSpec {
    /// A job with every key at its default.
    pub fn defaults(name: &str, line: usize) -> JobSpec {
        JobSpec {
            name: name.to_string(),
            line,
            group: 0,
            rw: Rw::Put,
            rwmixread: 50,
            clients: 1,
            conns: 1,
            key_size: 8,
            value_size: 8,
            keyspace: 10_000,
            key_prefix: String::new(),
            distribution: Distribution::Uniform,
            rate: 0,
            runtime: None,
            time_based: false,
            ramp_time: Duration::ZERO,
            total: Some(DEFAULT_TOTAL),
            total_given: None,
            consistency: Consistency::Linearizable,
            txn_ops: 1,
            limit: 0,
            paginate: false,
            prefix: false,
            keys_only: false,
            count_only: false,
            watchers: 100,
            streams: 10,
            prev_kv: false,
            lease_ttl: None,
            lease_reuse: Duration::from_secs(1),
            target_leader: false,
            stonewall: false,
            numjobs: 1,
            group_reporting: false,
            description: String::new(),
        }
    }

    fn resolve_total(&mut self) {
        self.total = if self.time_based {
            None
        } else if let Some(total) = self.total_given {
            Some(total)
        } else if self.runtime.is_some() || self.rw == Rw::Watch {
            None
        } else {
            Some(DEFAULT_TOTAL)
        };
    }

    /// Rules between keys of this job alone.
    fn check(&self) -> Result<(), String> {
        let job = &self.name;
        if self.rw == Rw::Txn && self.txn_ops as u64 > self.keyspace {
            return Err(format!(
                "job {job:?}: txn_ops ({}) is larger than keyspace ({}): a txn cannot put one key twice",
                self.txn_ops, self.keyspace
            ));
        }
        if self.count_only && self.keys_only {
            return Err(format!(
                "job {job:?}: count_only and keys_only exclude each other"
            ));
        }
        if self.paginate && self.limit <= 0 {
            return Err(format!("job {job:?}: paginate needs limit > 0"));
        }
        if self.time_based && self.runtime.is_none() {
            return Err(format!("job {job:?}: time_based needs runtime"));
        }
        Ok(())
    }

    fn is_endless_watch(&self) -> bool {
        self.rw == Rw::Watch && self.runtime.is_none() && self.total.is_none()
    }
}

/// A parsed job file: its jobs in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub jobs: Vec<JobSpec>,
}

/// A job-file error, at a 1-based line of `file` (line 0: the file as a whole, or an override).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{file}:{line}: {message}")]
pub struct ProfileError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Parses a job file; `file` only names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Profile, ProfileError> {
    let error = |line: usize, message: String| ProfileError {
        file: file.to_string(),
        line,
        message,
    };
    enum Section {
        None,
        Global,
        Job,
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut section = Section::None;
    let mut global = JobSpec::defaults("global", 0);
    let mut jobs: Vec<JobSpec> = Vec::new();
    let mut last_line = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        last_line = line;
        let content = strip_comment(raw).trim();
        if content.is_empty() || content.starts_with(';') || content.starts_with('#') {
            continue;
        }
        if let Some(header) = content.strip_prefix('[') {
            let name = header
                .strip_suffix(']')
                .ok_or_else(|| error(line, format!("section header {content:?} lacks its ']'")))?
                .trim();
            if name.is_empty() {
                return Err(error(line, "empty section name".to_string()));
            }
            if name == "global" {
                section = Section::Global;
                continue;
            }
            if let Some(first) = jobs.iter().find(|job| job.name == name) {
                return Err(error(
                    line,
                    format!("duplicate job {name:?} (first at line {})", first.line),
                ));
            }
            let mut job = global.clone();
            job.name = name.to_string();
            job.line = line;
            jobs.push(job);
            section = Section::Job;
            continue;
        }
        let (key, value) = split_assignment(content).map_err(|message| error(line, message))?;
        let spec = match section {
            Section::None => {
                return Err(error(
                    line,
                    format!("key {key:?} before any section ([global] or a job)"),
                ));
            }
            Section::Global => &mut global,
            // A job section always has its job pushed last.
            Section::Job => jobs.last_mut().expect("job section without its job"),
        };
        set(spec, key, value.as_deref()).map_err(|message| error(line, message))?;
    }
    if jobs.is_empty() {
        return Err(error(
            last_line.max(1),
            "no job: every section but [global] is a job".to_string(),
        ));
    }
    let mut profile = Profile { jobs };
    finish(&mut profile).map_err(|(line, message)| error(line, message))?;
    Ok(profile)
}

/// Reads and parses a job file.
pub fn load(path: &Path) -> Result<Profile, ProfileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| ProfileError {
        file: file.clone(),
        line: 0,
        message: format!("cannot read: {err}"),
    })?;
    parse(&text, &file)
}

/// Apply a `key=value` override from the command line (e.g. `--set clients=8`), to every job,
/// with the same parsing and errors (file "--set", line 0). The profile is left unchanged on error.
pub fn apply_override(profile: &mut Profile, assignment: &str) -> Result<(), ProfileError> {
    let error = |message: String| ProfileError {
        file: "--set".to_string(),
        line: 0,
        message,
    };
    let (key, value) = split_assignment(assignment.trim()).map_err(error)?;
    let mut changed = profile.clone();
    for job in &mut changed.jobs {
        set(job, key, value.as_deref()).map_err(error)?;
    }
    finish(&mut changed).map_err(|(_, message)| error(message))?;
    *profile = changed;
    Ok(())
}

/// Everything that needs whole jobs: groups, `total`, rules between keys. Errors carry the line
/// of the job's header.
fn finish(profile: &mut Profile) -> Result<(), (usize, String)> {
    let mut group = 0;
    for (index, job) in profile.jobs.iter_mut().enumerate() {
        if index > 0 && job.stonewall {
            group += 1;
        }
        job.group = group;
        job.resolve_total();
        job.check().map_err(|message| (job.line, message))?;
    }
    for group in 0..=group {
        let mut members = profile.jobs.iter().filter(|job| job.group == group);
        let first = members.clone().next().expect("groups are contiguous");
        if members.all(JobSpec::is_endless_watch) {
            return Err((
                first.line,
                format!(
                    "job {:?}: its reporting group has only watch jobs without runtime or total, \
                     which would never end",
                    first.name
                ),
            ));
        }
    }
    Ok(())
}

/// Cuts a comment that starts with `;` or `#` after whitespace.
fn strip_comment(line: &str) -> &str {
    let mut previous_blank = false;
    for (index, c) in line.char_indices() {
        if (c == ';' || c == '#') && previous_blank {
            return &line[..index];
        }
        previous_blank = c.is_whitespace();
    }
    line
}

/// Splits `key=value` (value with `${VAR}` expanded) or a bare `key` (value `None`).
fn split_assignment(content: &str) -> Result<(&str, Option<Cow<'_, str>>), String> {
    let (key, value) = match content.split_once('=') {
        Some((key, value)) => (key.trim(), Some(expand_env(value.trim())?)),
        None => (content.trim(), None),
    };
    if key.is_empty() {
        return Err(format!("missing key in {content:?}"));
    }
    Ok((key, value))
}

fn expand_env(value: &str) -> Result<Cow<'_, str>, String> {
    if !value.contains("${") {
        return Ok(Cow::Borrowed(value));
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated ${{ in {value:?}"))?;
        let name = &after[..end];
        if name.is_empty() {
            return Err(format!("empty ${{}} in {value:?}"));
        }
        match std::env::var(name) {
            Ok(expanded) => out.push_str(&expanded),
            Err(std::env::VarError::NotPresent) => {
                return Err(format!("environment variable {name:?} is not set"));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("environment variable {name:?} is not UTF-8"));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

const POSITIVE: &str = "expected a positive integer";
const NON_NEGATIVE: &str = "expected a non-negative integer";
const TIME: &str = "expected a time such as 10, 500ms, 1.5s or 2m";

/// Sets one key of a job; `value` is `None` for a bare key. The error is the message only: the
/// caller knows the file and line.
fn set(spec: &mut JobSpec, key: &str, value: Option<&str>) -> Result<(), String> {
    let bad = |expected: &str| format!("bad value {:?} for {key}: {expected}", value.unwrap_or(""));
    if let Some(field) = bool_field(spec, key) {
        *field = match value {
            None => true,
            Some(text) => {
                parse_bool(text).ok_or_else(|| bad("expected 1/0, true/false, yes/no or on/off"))?
            }
        };
        return Ok(());
    }
    if !is_key(key) {
        return Err(format!("unknown key {key:?}"));
    }
    let Some(text) = value else {
        return Err(format!(
            "missing value for {key}: only boolean keys may stand alone"
        ));
    };
    match key {
        "rw" | "readwrite" => {
            spec.rw = parse_rw(text)
                .ok_or_else(|| bad("expected put, range, txn, mixed, watch, cas or keepalive"))?;
        }
        "rwmixread" | "rwmixwrite" => {
            let percent = text
                .parse::<u8>()
                .ok()
                .filter(|percent| *percent <= 100)
                .ok_or_else(|| bad("expected an integer from 0 to 100"))?;
            spec.rwmixread = if key == "rwmixread" {
                percent
            } else {
                100 - percent
            };
        }
        "clients" => spec.clients = positive(text).ok_or_else(|| bad(POSITIVE))?,
        "conns" => spec.conns = positive(text).ok_or_else(|| bad(POSITIVE))?,
        "key_size" => {
            spec.key_size = parse_size(text)
                .filter(|size| (1..=MAX_KEY_SIZE).contains(size))
                .ok_or_else(|| bad("expected a size from 1 to 1MiB, such as 16 or 1k"))?
                as usize;
        }
        "value_size" | "val_size" => {
            spec.value_size = parse_size(text)
                .filter(|size| *size <= MAX_VALUE_SIZE)
                .ok_or_else(|| bad("expected a size from 0 to 64MiB, such as 256 or 4k"))?
                as usize;
        }
        "keyspace" => {
            spec.keyspace = parse_size(text)
                .filter(|size| *size > 0)
                .ok_or_else(|| bad("expected a positive integer, such as 10000 or 64k"))?;
        }
        "key_prefix" => spec.key_prefix = text.to_string(),
        "distribution" | "random_distribution" => {
            spec.distribution = parse_distribution(text).ok_or_else(|| {
                bad("expected uniform, sequential or zipf:θ with θ > 0, such as zipf:1.2")
            })?;
        }
        "rate" | "rate_iops" => spec.rate = text.parse().map_err(|_| bad(NON_NEGATIVE))?,
        "runtime" => {
            let runtime = parse_time(text).ok_or_else(|| bad(TIME))?;
            spec.runtime = (!runtime.is_zero()).then_some(runtime);
        }
        "ramp_time" => spec.ramp_time = parse_time(text).ok_or_else(|| bad(TIME))?,
        "lease_reuse" => spec.lease_reuse = parse_time(text).ok_or_else(|| bad(TIME))?,
        "total" => {
            spec.total_given = Some(parse_count(text).filter(|count| *count > 0).ok_or_else(
                || bad("expected a positive integer, such as 10000, 10k or 1m (k = 1000)"),
            )?);
        }
        "consistency" => {
            spec.consistency = parse_consistency(text)
                .ok_or_else(|| bad("expected l, s, linearizable or serializable"))?;
        }
        "txn_ops" => spec.txn_ops = positive(text).ok_or_else(|| bad(POSITIVE))?,
        "limit" => {
            spec.limit = text
                .parse::<i64>()
                .ok()
                .filter(|limit| *limit >= 0)
                .ok_or_else(|| bad(NON_NEGATIVE))?;
        }
        "watchers" => spec.watchers = positive(text).ok_or_else(|| bad(POSITIVE))?,
        "streams" => spec.streams = positive(text).ok_or_else(|| bad(POSITIVE))?,
        "lease_ttl" => {
            let ttl = text
                .parse::<i64>()
                .ok()
                .filter(|ttl| *ttl >= 0)
                .ok_or_else(|| bad("expected a non-negative number of seconds"))?;
            spec.lease_ttl = (ttl > 0).then_some(ttl);
        }
        "numjobs" => spec.numjobs = positive(text).ok_or_else(|| bad(POSITIVE))?,
        "description" => spec.description = text.to_string(),
        _ => unreachable!("is_key and set disagree on {key:?}"),
    }
    Ok(())
}

/// The non-boolean keys, aliases included (booleans are in [`bool_field`]).
fn is_key(key: &str) -> bool {
    matches!(
        key,
        "rw" | "readwrite"
            | "rwmixread"
            | "rwmixwrite"
            | "clients"
            | "conns"
            | "key_size"
            | "value_size"
            | "val_size"
            | "keyspace"
            | "key_prefix"
            | "distribution"
            | "random_distribution"
            | "rate"
            | "rate_iops"
            | "runtime"
            | "ramp_time"
            | "lease_reuse"
            | "total"
            | "consistency"
            | "txn_ops"
            | "limit"
            | "watchers"
            | "streams"
            | "lease_ttl"
            | "numjobs"
            | "description"
    )
}

fn bool_field<'a>(spec: &'a mut JobSpec, key: &str) -> Option<&'a mut bool> {
    Some(match key {
        "time_based" => &mut spec.time_based,
        "paginate" => &mut spec.paginate,
        "prefix" => &mut spec.prefix,
        "keys_only" => &mut spec.keys_only,
        "count_only" => &mut spec.count_only,
        "prev_kv" => &mut spec.prev_kv,
        "target_leader" => &mut spec.target_leader,
        "stonewall" | "wait_for_previous" => &mut spec.stonewall,
        "group_reporting" => &mut spec.group_reporting,
        _ => return None,
    })
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_rw(text: &str) -> Option<Rw> {
    Some(match text.to_ascii_lowercase().as_str() {
        "put" => Rw::Put,
        "range" => Rw::Range,
        "txn" | "txn-put" => Rw::Txn,
        "mixed" => Rw::Mixed,
        "watch" => Rw::Watch,
        "cas" | "stm" => Rw::Cas,
        "keepalive" | "lease-keepalive" => Rw::Keepalive,
        _ => return None,
    })
}

fn parse_consistency(text: &str) -> Option<Consistency> {
    match text.to_ascii_lowercase().as_str() {
        "l" | "linearizable" => Some(Consistency::Linearizable),
        "s" | "serializable" => Some(Consistency::Serializable),
        _ => None,
    }
}

fn parse_distribution(text: &str) -> Option<Distribution> {
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        // fio calls the uniform distribution "random".
        "uniform" | "random" => Some(Distribution::Uniform),
        "sequential" => Some(Distribution::Sequential),
        _ => {
            let theta: f64 = lower.strip_prefix("zipf:")?.trim().parse().ok()?;
            (theta.is_finite() && theta > 0.0).then_some(Distribution::Zipf(theta))
        }
    }
}

fn positive(text: &str) -> Option<usize> {
    text.parse().ok().filter(|n| *n > 0)
}

/// Splits `text` into its leading ASCII digits and the (lowercased) suffix after them.
fn split_number(text: &str) -> Option<(u64, String)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number = text[..end].parse().ok()?;
    Some((number, text[end..].trim().to_ascii_lowercase()))
}

/// A fio size: 1024-based suffixes whatever their spelling, as with fio's default `kb_base`.
fn parse_size(text: &str) -> Option<u64> {
    let (number, suffix) = split_number(text)?;
    let unit: u64 = match suffix.as_str() {
        "" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(unit)
}

/// A count of operations: decimal suffixes, since nobody counts requests in KiB.
fn parse_count(text: &str) -> Option<u64> {
    let (number, suffix) = split_number(text)?;
    let unit: u64 = match suffix.as_str() {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        _ => return None,
    };
    number.checked_mul(unit)
}

/// A fio time; parsed in integer nanoseconds so that `1.1s` is exact. Also reads the command
/// line's Go-style durations (`5m`, `500ms`, `2s`).
pub fn parse_time(text: &str) -> Option<Duration> {
    let end = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = (&text[..end], text[end..].trim().to_ascii_lowercase());
    let unit_nanos: u128 = match suffix.as_str() {
        "us" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    // Digits past 20 are below a nanosecond even in days; dropping them keeps 10^len in a u128.
    let fraction = &fraction[..fraction.len().min(20)];
    let fraction_nanos = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<u128>().ok()? * unit_nanos / 10u128.pow(fraction.len() as u32)
    };
    let nanos = whole.checked_mul(unit_nanos)?.checked_add(fraction_nanos)?;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ProfileError {
        parse(text, "t.fio").expect_err("expected an error")
    }

    fn one(text: &str) -> JobSpec {
        let profile = parse(text, "t.fio").expect("parses");
        assert_eq!(profile.jobs.len(), 1);
        profile.jobs.into_iter().next().unwrap()
    }

    const FULL: &str = "\
; a Kubernetes-like profile
[global]
clients=4
conns = 2
key_prefix=/registry/pods/
value_size=1k   # trailing comment
runtime=10s

[writers]
rw=put
lease_ttl=60

[readers]
rw=range
consistency=s
numjobs=2
group_reporting

[global]
clients=8

[list]
stonewall
rw=range
prefix
paginate
limit=500
";

    #[test]
    fn full_profile() {
        let profile = parse(FULL, "k8s.fio").unwrap();
        let global = |name: &str, line: usize| JobSpec {
            clients: 4,
            conns: 2,
            key_prefix: "/registry/pods/".to_string(),
            value_size: 1024,
            runtime: Some(Duration::from_secs(10)),
            total: None,
            ..JobSpec::defaults(name, line)
        };
        let expected = vec![
            JobSpec {
                lease_ttl: Some(60),
                ..global("writers", 9)
            },
            JobSpec {
                rw: Rw::Range,
                consistency: Consistency::Serializable,
                numjobs: 2,
                group_reporting: true,
                ..global("readers", 13)
            },
            JobSpec {
                group: 1,
                clients: 8,
                stonewall: true,
                rw: Rw::Range,
                prefix: true,
                paginate: true,
                limit: 500,
                ..global("list", 22)
            },
        ];
        assert_eq!(profile.jobs, expected);
    }

    #[test]
    fn groups_and_total_defaults() {
        let profile = parse(
            "[a]\nstonewall\n[b]\n[c]\nwait_for_previous\ntotal=5k\n[d]\nstonewall=1\nruntime=1m\n\
             [e]\nstonewall=0\nruntime=1\ntotal=7\n[f]\nruntime=1\ntotal=7\ntime_based\n",
            "t.fio",
        )
        .unwrap();
        let groups: Vec<_> = profile.jobs.iter().map(|job| job.group).collect();
        assert_eq!(groups, [0, 0, 1, 2, 2, 2]);
        let totals: Vec<_> = profile.jobs.iter().map(|job| job.total).collect();
        assert_eq!(
            totals,
            [Some(10_000), Some(10_000), Some(5_000), None, Some(7), None]
        );
    }

    #[test]
    fn errors_name_their_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "[global]\n\n[j]\nrwmixreed=5\n",
                4,
                "unknown key \"rwmixreed\"",
            ),
            (
                "[j]\n; comment\nclients=lots\n",
                3,
                "bad value \"lots\" for clients: expected a positive integer",
            ),
            ("clients=1\n[j]\n", 1, "key \"clients\" before any section"),
            (
                "[j]\ndescription=${RETCD_BENCH_TEST_SURELY_UNSET}\n",
                2,
                "environment variable \"RETCD_BENCH_TEST_SURELY_UNSET\" is not set",
            ),
            ("[j]\ndistribution=zipf:0\n", 2, "bad value \"zipf:0\""),
            ("[j]\ndistribution=zipf:x\n", 2, "bad value \"zipf:x\""),
            ("[j]\ndistribution=zipf\n", 2, "bad value \"zipf\""),
            ("[j]\nrw=putt\n", 2, "bad value \"putt\" for rw"),
            ("[j]\nclients\n", 2, "missing value for clients"),
            (
                "[j]\nstonewall=maybe\n",
                2,
                "bad value \"maybe\" for stonewall",
            ),
            ("[j]\nkey_size=0\n", 2, "bad value \"0\" for key_size"),
            (
                "[j]\nvalue_size=65MiB\n",
                2,
                "bad value \"65MiB\" for value_size",
            ),
            ("[j]\nruntime=5x\n", 2, "bad value \"5x\" for runtime"),
            ("[j]\nrwmixread=101\n", 2, "bad value \"101\" for rwmixread"),
            ("[j]\n[j]\n", 2, "duplicate job \"j\" (first at line 1)"),
            ("[j\n", 1, "lacks its ']'"),
            (
                "[a]\n\n[b]\nrw=txn\ntxn_ops=20\nkeyspace=10\n",
                3,
                "job \"b\": txn_ops",
            ),
            ("[a]\nkeys_only\ncount_only\n", 1, "exclude each other"),
            (
                "[x]\n[a]\npaginate\n",
                2,
                "job \"a\": paginate needs limit > 0",
            ),
            ("[a]\ntime_based\n", 1, "time_based needs runtime"),
            (
                "[p]\n[w1]\nstonewall\nrw=watch\n[w2]\nrw=watch\n",
                2,
                "job \"w1\": its reporting group has only watch jobs",
            ),
            ("; nothing\n[global]\nclients=2\n", 3, "no job"),
            ("", 1, "no job"),
        ];
        for (text, line, message) in cases {
            let error = err(text);
            assert_eq!(error.file, "t.fio", "{text:?}");
            assert_eq!(error.line, *line, "{text:?}: {error}");
            assert!(
                error.message.contains(message),
                "{text:?}: {error} lacks {message:?}"
            );
        }
    }

    #[test]
    fn display() {
        assert_eq!(
            err("[global]\n[j]\nclients=lots\n").to_string(),
            "t.fio:3: bad value \"lots\" for clients: expected a positive integer"
        );
        assert_eq!(
            err("[j]\nrwmixreed=1\n").to_string(),
            "t.fio:2: unknown key \"rwmixreed\""
        );
    }

    #[test]
    fn watch_groups() {
        // A watch job without runtime ends with its group mates.
        let profile = parse("[p]\n[w]\nrw=watch\n", "t.fio").unwrap();
        assert_eq!(profile.jobs[1].total, None);
        assert_eq!(profile.jobs[1].runtime, None);
        // Bounded watch jobs may be alone.
        parse("[w]\nrw=watch\nruntime=5s\n", "t.fio").unwrap();
        parse("[w]\nrw=watch\ntotal=100\n", "t.fio").unwrap();
        assert_eq!(err("[w]\nrw=watch\n").line, 1);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("100KiB"), Some(102_400));
        assert_eq!(parse_size("2KB"), Some(2048));
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("3MiB"), Some(3 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("17"), Some(17));
        for bad in ["", "k", "1.5k", "4x", "-1", "99999999999999999999"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        let job = one("[j]\nkey_size=1k\nvalue_size=100KiB\nkeyspace=10k\nval_size=0\n");
        assert_eq!(
            (job.key_size, job.value_size, job.keyspace),
            (1024, 0, 10_240)
        );
        assert_eq!(one("[j]\nkey_size=1MiB\n").key_size, 1 << 20);
        assert_eq!(one("[j]\nvalue_size=64m\n").value_size, 64 << 20);
        assert_eq!(parse_count("10k"), Some(10_000));
        assert_eq!(parse_count("2M"), Some(2_000_000));
        assert_eq!(parse_count("2MiB"), None);
        assert_eq!(one("[j]\ntotal=1m\n").total, Some(1_000_000));
    }

    #[test]
    fn times() {
        let ms = Duration::from_millis;
        assert_eq!(parse_time("500ms"), Some(ms(500)));
        assert_eq!(parse_time("1.5s"), Some(ms(1500)));
        assert_eq!(parse_time("2m"), Some(ms(120_000)));
        assert_eq!(parse_time("10"), Some(ms(10_000)));
        assert_eq!(parse_time("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_time("1h"), Some(ms(3_600_000)));
        assert_eq!(parse_time("0.5d"), Some(ms(43_200_000)));
        assert_eq!(parse_time(".25"), Some(ms(250)));
        assert_eq!(parse_time("1.1s"), Some(ms(1100)));
        for bad in ["", ".", "s", "1.2.3", "5x", "-1", "1e3"] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
        let job = one("[j]\nruntime=1.5s\nramp_time=500ms\nlease_reuse=2m\n");
        assert_eq!(job.runtime, Some(ms(1500)));
        assert_eq!(job.ramp_time, ms(500));
        assert_eq!(job.lease_reuse, ms(120_000));
        assert_eq!(job.total, None);
        // fio's runtime=0: no limit, so the default total is back.
        let job = one("[j]\nruntime=0\n");
        assert_eq!((job.runtime, job.total), (None, Some(10_000)));
    }

    #[test]
    fn bools() {
        let job = one("[j]\nprefix\nkeys_only=yes\nprev_kv=ON\ntarget_leader=true\n");
        assert!(job.prefix && job.keys_only && job.prev_kv && job.target_leader);
        let job = one(
            "[global]\nprefix\nkeys_only\nprev_kv\n[j]\nprefix=0\nkeys_only=off\nprev_kv=false\n",
        );
        assert!(!job.prefix && !job.keys_only && !job.prev_kv);
        assert!(!one("[j]\ngroup_reporting=no\n").group_reporting);
    }

    #[test]
    fn comments() {
        let job = one(
            "# header comment\n   ; indented comment\n[j] ; job comment\n\
             clients = 3 ; why three\nkey_prefix=/a#b;c # comment\n\tdescription = a b  \n",
        );
        assert_eq!(job.name, "j");
        assert_eq!(job.clients, 3);
        assert_eq!(job.key_prefix, "/a#b;c");
        assert_eq!(job.description, "a b");
        assert_eq!(one("\u{feff}[j]\r\nclients=2\r\n").clients, 2);
    }

    #[test]
    fn aliases() {
        let job = one(
            "[j]\nreadwrite=txn-put\nval_size=16\nrandom_distribution=zipf:1.2\nrate_iops=100\n\
             wait_for_previous\n",
        );
        assert_eq!(job.rw, Rw::Txn);
        assert_eq!(job.value_size, 16);
        assert_eq!(job.distribution, Distribution::Zipf(1.2));
        assert_eq!(job.rate, 100);
        assert!(job.stonewall);
        assert_eq!(one("[j]\nrw=stm\n").rw, Rw::Cas);
        assert_eq!(one("[j]\nrw=lease-keepalive\n").rw, Rw::Keepalive);
        assert_eq!(one("[j]\nrwmixwrite=30\n").rwmixread, 70);
        assert_eq!(
            one("[j]\ndistribution=sequential\n").distribution,
            Distribution::Sequential
        );
        assert_eq!(
            one("[j]\ndistribution=random\n").distribution,
            Distribution::Uniform
        );
        assert_eq!(
            one("[j]\nconsistency=serializable\n").consistency,
            Consistency::Serializable
        );
        assert_eq!(
            one("[j]\nconsistency=l\n").consistency,
            Consistency::Linearizable
        );
        for rw in [
            Rw::Put,
            Rw::Range,
            Rw::Txn,
            Rw::Mixed,
            Rw::Watch,
            Rw::Cas,
            Rw::Keepalive,
        ] {
            assert_eq!(parse_rw(rw.name()), Some(rw));
        }
    }

    #[test]
    fn env_vars() {
        // Setting a variable is unsafe in edition 2024, so borrow one that is already set.
        let Some((name, value)) = std::env::vars()
            .find(|(name, _)| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        else {
            return;
        };
        let job = one(&format!("[j]\ndescription=<${{{name}}}>\n"));
        assert_eq!(job.description, format!("<{value}>"));
        assert!(
            err("[j]\ndescription=${OOPS\n")
                .message
                .contains("unterminated")
        );
    }

    #[test]
    fn overrides() {
        let mut profile = parse(FULL, "k8s.fio").unwrap();
        apply_override(&mut profile, "clients=16").unwrap();
        assert!(profile.jobs.iter().all(|job| job.clients == 16));

        // Dropping the runtime brings back the default total; an explicit total stays.
        apply_override(&mut profile, "runtime=0").unwrap();
        assert!(profile.jobs.iter().all(|job| job.total == Some(10_000)));
        apply_override(&mut profile, "total = 3k").unwrap();
        apply_override(&mut profile, "runtime=1m").unwrap();
        assert!(profile.jobs.iter().all(|job| job.total == Some(3_000)));
        apply_override(&mut profile, "time_based").unwrap();
        assert!(profile.jobs.iter().all(|job| job.total.is_none()));

        // Groups follow a stonewall override.
        apply_override(&mut profile, "stonewall").unwrap();
        let groups: Vec<_> = profile.jobs.iter().map(|job| job.group).collect();
        assert_eq!(groups, [0, 1, 2]);

        let before = profile.clone();
        let error = apply_override(&mut profile, "clients=lots").unwrap_err();
        assert_eq!(
            error.to_string(),
            "--set:0: bad value \"lots\" for clients: expected a positive integer"
        );
        assert_eq!(
            apply_override(&mut profile, "nope=1")
                .unwrap_err()
                .to_string(),
            "--set:0: unknown key \"nope\""
        );
        // Rules between keys are checked again, and a failed override changes nothing.
        let error = apply_override(&mut profile, "limit=0").unwrap_err();
        assert_eq!((error.file.as_str(), error.line), ("--set", 0));
        assert!(
            error
                .message
                .contains("job \"list\": paginate needs limit > 0")
        );
        assert_eq!(profile, before);
    }
}
