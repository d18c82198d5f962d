//! The member's log in etcd's shape: zap's JSON encoder as etcd 3.5 configures it, one object per
//! line with `level`, `ts` (ISO 8601, UTC, milliseconds), `caller` (file:line), `msg`, then the
//! event's fields (Rust's `snake_case` field names written as etcd's `kebab-case`), so that
//! tools which read etcd's logs (jq filters, log shippers, test frameworks waiting for
//! "ready to serve client requests") read retcd's.
//!
//! Every line goes to every `--log-outputs` target, whole: stderr, stdout, files (appended;
//! with `--enable-log-rotation`, rotated as etcd's lumberjack sink does) and `systemd/journal`
//! (journald's native protocol: the line as MESSAGE, the level as PRIORITY, as etcd's journal
//! writer sends it).
//!
//! Invariant: one event is one line on each target, written under one lock, so lines from
//! different threads never interleave.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogOutput, LogRotation};

/// journald's socket for the native protocol.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Tests point the journal output at a socket of their own.
pub const JOURNAL_SOCKET_ENV: &str = "RETCD_JOURNAL_SOCKET";

/// Installs the logger `cfg` asks for as the global subscriber.
pub fn init(cfg: &Config) -> io::Result<()> {
    let mut sinks = Vec::new();
    for output in &cfg.log_outputs {
        sinks.push(match output {
            LogOutput::Stderr => Sink::Stderr,
            LogOutput::Stdout => Sink::Stdout,
            LogOutput::File(path) => Sink::File(LogFile::open(path, cfg.log_rotation)?),
            LogOutput::Journal => Sink::Journal(Journal::connect()?),
        });
    }
    let level = cfg.log_level.tracing_level();
    let layer = ZapLayer {
        sinks: Mutex::new(sinks),
    }
    .with_filter(tracing_subscriber::filter::LevelFilter::from_level(level));
    tracing_subscriber::registry().with(layer).init();
    Ok(())
}

/// Writes each event as one zap-shaped JSON line to every sink.
struct ZapLayer {
    sinks: Mutex<Vec<Sink>>,
}

impl<S: Subscriber> Layer<S> for ZapLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = zap_line(
            *meta.level(),
            &time::OffsetDateTime::now_utc(),
            &caller(meta.file(), meta.line()),
            &fields,
        );
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        for sink in sinks.iter_mut() {
            // A log line that cannot be written has nowhere to be reported.
            let _ = sink.write(&line, *meta.level());
        }
    }
}

/// An event's message and its other fields, in order, as JSON values.
#[derive(Default)]
struct Fields {
    msg: String,
    rest: Vec<(String, serde_json::Value)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            match value {
                serde_json::Value::String(s) => self.msg = s,
                other => self.msg = other.to_string(),
            }
        } else {
            self.rest.push((field.name().replace('_', "-"), value));
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, serde_json::Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, value.to_string().into());
    }
}

/// zap's level names (tracing's TRACE is below zap's lowest, debug).
fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        _ => "debug",
    }
}

/// zap's short caller: the file's directory and name, and the line ("core/apply.rs:150").
fn caller(file: Option<&str>, line: Option<u32>) -> String {
    let file = file.unwrap_or("?");
    let mut parts = file.rsplit('/');
    let name = parts.next().unwrap_or(file);
    let short = match parts.next() {
        Some(dir) => format!("{dir}/{name}"),
        None => name.to_string(),
    };
    format!("{short}:{}", line.unwrap_or(0))
}

/// One log line, newline included.
fn zap_line(level: Level, ts: &time::OffsetDateTime, caller: &str, f: &Fields) -> String {
    // In zap's order (a serde_json map would sort the keys).
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut line = format!(
        "{{\"level\":{},\"ts\":{},\"caller\":{},\"msg\":{}",
        q(level_name(level)),
        q(&zap_time(ts)),
        q(caller),
        q(&f.msg)
    );
    for (k, v) in &f.rest {
        let _ = write!(line, ",{}:{v}", q(k));
    }
    line.push_str("}\n");
    line
}

/// Now, as zap's ISO 8601 encoder writes it (for the tools, whose messages imitate etcd's
/// clients').
pub fn zap_now() -> String {
    zap_time(&time::OffsetDateTime::now_utc())
}

/// zap's ISO 8601 encoder in UTC: `2006-01-02T15:04:05.000Z`.
fn zap_time(t: &time::OffsetDateTime) -> String {
    format!("{}Z", stamp(t, ':'))
}

/// `2006-01-02T15<sep>04<sep>05.000` of `t`.
fn stamp(t: &time::OffsetDateTime, sep: char) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}{sep}{:02}{sep}{:02}.{:03}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

enum Sink {
    Stderr,
    Stdout,
    File(LogFile),
    Journal(Journal),
}

impl Sink {
    fn write(&mut self, line: &str, level: Level) -> io::Result<()> {
        match self {
            Sink::Stderr => io::stderr().lock().write_all(line.as_bytes()),
            Sink::Stdout => io::stdout().lock().write_all(line.as_bytes()),
            Sink::File(f) => f.write(line.as_bytes()),
            Sink::Journal(j) => j.send(line, level),
        }
    }
}

/// A log file, appended to; rotated when it would pass its size (lumberjack's behaviour: the full
/// file is renamed `name-<UTC time>.ext` and a new one started; backups beyond `max_backups` or
/// older than `max_age_days` are removed, 0 meaning no limit).
struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Option<LogRotation>,
}

impl LogFile {
    fn open(path: &Path, rotation: Option<LogRotation>) -> io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
        })
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        if let Some(r) = self.rotation
            && self.size > 0
            && self.size + line.len() as u64 > r.max_size_mb.saturating_mul(1 << 20)
        {
            self.rotate(r)?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self, r: LogRotation) -> io::Result<()> {
        let now = time::OffsetDateTime::now_utc();
        // Named by the millisecond; a second rotation within one takes the next free one rather
        // than replace the first's backup.
        let mut at = now;
        let mut backup = backup_name(&self.path, &at);
        while backup.exists() {
            at += time::Duration::milliseconds(1);
            backup = backup_name(&self.path, &at);
        }
        std::fs::rename(&self.path, &backup)?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        self.remove_old_backups(r, now)
    }

    /// Removes the backups beyond `max_backups` (oldest first) and those older than
    /// `max_age_days`.
    fn remove_old_backups(&self, r: LogRotation, now: time::OffsetDateTime) -> io::Result<()> {
        let (dir, stem, ext) = split_name(&self.path);
        let prefix = format!("{stem}-");
        let mut backups: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let stamp = name.strip_prefix(&prefix)?.strip_suffix(&ext)?.to_string();
                // lumberjack's stamp: 2006-01-02T15-04-05.000
                (stamp.len() == 23 && stamp.as_bytes()[10] == b'T').then(|| (stamp, e.path()))
            })
            .collect();
        backups.sort();
        let mut remove = Vec::new();
        if r.max_backups > 0 && backups.len() as u64 > r.max_backups {
            let n = backups.len() - r.max_backups as usize;
            remove.extend(backups.drain(..n).map(|(_, p)| p));
        }
        if r.max_age_days > 0 {
            let cutoff = now - time::Duration::days(r.max_age_days as i64);
            let cutoff = backup_stamp(&cutoff);
            remove.extend(
                backups
                    .into_iter()
                    .filter(|(s, _)| *s < cutoff)
                    .map(|(_, p)| p),
            );
        }
        for p in remove {
            std::fs::remove_file(p)?;
        }
        Ok(())
    }
}

/// `dir`, the file name without its extension, and the extension (with its dot, or empty).
fn split_name(path: &Path) -> (PathBuf, String, String) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(i) if i > 0 => (dir, name[..i].to_string(), name[i..].to_string()),
        _ => (dir, name, String::new()),
    }
}

/// lumberjack's time stamp in a backup's name: `2006-01-02T15-04-05.000`.
fn backup_stamp(t: &time::OffsetDateTime) -> String {
    stamp(t, '-')
}

fn backup_name(path: &Path, t: &time::OffsetDateTime) -> PathBuf {
    let (dir, stem, ext) = split_name(path);
    dir.join(format!("{stem}-{}{ext}", backup_stamp(t)))
}

/// journald's native protocol over its datagram socket.
struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Journal {
    fn connect() -> io::Result<Journal> {
        let path = PathBuf::from(
            std::env::var(JOURNAL_SOCKET_ENV).unwrap_or_else(|_| JOURNAL_SOCKET.to_string()),
        );
        let socket = Journal::socket()?;
        socket.connect(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot log to systemd/journal: {}: {e} (is systemd-journald running?)",
                    path.display()
                ),
            )
        })?;
        Ok(Journal { socket, path })
    }

    /// A socket that never blocks the logging thread (a core): a line journald has no room
    /// for is dropped, as a datagram lost.
    fn socket() -> io::Result<UnixDatagram> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    /// The line (without its newline) as MESSAGE, syslog's priority of its level, and etcd's
    /// other two fields.
    fn send(&mut self, line: &str, level: Level) -> io::Result<()> {
        let priority = match level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        let msg = format!(
            "MESSAGE={}\nPRIORITY={priority}\nSYSLOG_IDENTIFIER=retcd\n",
            line.trim_end_matches('\n')
        );
        match self.socket.send(msg.as_bytes()) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            // journald restarted: its socket is new.
            Err(_) => {
                self.socket = Journal::socket()?;
                self.socket.connect(&self.path)?;
                self.socket.send(msg.as_bytes()).map(|_| ())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_zaps_keys_in_order() {
        let ts =
            time::OffsetDateTime::from_unix_timestamp_nanos(1_796_300_444_050_118_000).unwrap();
        let f = Fields {
            msg: "ready to serve client requests".into(),
            rest: vec![("member-id".into(), "8e9e05c52164694d".into())],
        };
        assert_eq!(
            zap_line(Level::INFO, &ts, "src/main.rs:10", &f),
            "{\"level\":\"info\",\"ts\":\"2026-12-03T12:20:44.050Z\",\"caller\":\"src/main.rs:10\",\
             \"msg\":\"ready to serve client requests\",\"member-id\":\"8e9e05c52164694d\"}\n"
        );
        assert_eq!(
            caller(Some("raft/src/core/apply.rs"), Some(7)),
            "core/apply.rs:7"
        );
        assert_eq!(caller(Some("main.rs"), None), "main.rs:0");
    }

    #[test]
    fn rotation_keeps_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("retcd.log");
        let r = LogRotation {
            max_size_mb: 1,
            max_age_days: 0,
            max_backups: 2,
        };
        let mut f = LogFile::open(&path, Some(r)).unwrap();
        let line = vec![b'x'; 300 << 10];
        for _ in 0..20 {
            f.write(&line).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[2], "retcd.log");
        assert!(names[0].starts_with("retcd-") && names[0].ends_with(".log"));
        assert!(std::fs::metadata(&path).unwrap().len() <= 1 << 20);
    }
}
