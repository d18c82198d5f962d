//! etcd's command-line output: the `--write-out` formats, the ASCII table etcdctl and etcdutl
//! draw (olekukonko/tablewriter as they configure it), go-humanize's byte sizes, and the exit
//! codes of etcd's `cobrautl`. Pure functions over strings, so every printer is testable without
//! a process.

use std::fmt;

/// etcd's exit codes (`cobrautl`): what scripts test for.
pub mod exit {
    pub const ERROR: i32 = 1;
    pub const BAD_CONNECTION: i32 = 2;
    pub const INVALID_INPUT: i32 = 3;
    pub const BAD_FEATURE: i32 = 4;
    pub const INTERRUPTED: i32 = 5;
    pub const BAD_ARGS: i32 = 128;
}

/// A failure reported as etcd reports it: `Error: <message>` on stderr and `code`.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn error(message: impl fmt::Display) -> Failure {
        Failure {
            code: exit::ERROR,
            message: message.to_string(),
        }
    }
    pub fn bad_args(message: impl fmt::Display) -> Failure {
        Failure {
            code: exit::BAD_ARGS,
            message: message.to_string(),
        }
    }
}

/// `--write-out`: etcd's output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Simple,
    Table,
    Json,
    Fields,
    Protobuf,
}

impl Format {
    /// The format's name, as `--write-out` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Simple => "simple",
            Format::Table => "table",
            Format::Json => "json",
            Format::Fields => "fields",
            Format::Protobuf => "protobuf",
        }
    }

    /// etcd's names; anything else is "unsupported output format" (exit code 4).
    pub fn parse(s: &str) -> Result<Format, Failure> {
        Ok(match s {
            "simple" => Format::Simple,
            "table" => Format::Table,
            "json" => Format::Json,
            "fields" => Format::Fields,
            "protobuf" => Format::Protobuf,
            _ => {
                return Err(Failure {
                    code: exit::BAD_FEATURE,
                    message: "unsupported output format".to_string(),
                });
            }
        })
    }
}

/// One JSON log line on stderr, as etcdutl and etcdctl log their steps (zap's info lines).
pub fn log_info(msg: &str, fields: &[(&str, &str)]) {
    let mut line = serde_json::Map::new();
    line.insert("level".into(), "info".into());
    line.insert("msg".into(), msg.into());
    for (k, v) in fields {
        line.insert((*k).into(), (*v).into());
    }
    eprintln!("{}", serde_json::Value::Object(line));
}

/// go-humanize's `Bytes`: SI units, one decimal below 10, as etcd prints sizes ("25 kB",
/// "2.1 MB").
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor();
    let unit = UNITS[(e as usize).min(UNITS.len() - 1)];
    let val = ((n as f64) / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    // Rust and Go both round an exact tie to even here ("20.5" → "20").
    if val < 10.0 {
        format!("{val:.1} {unit}")
    } else {
        format!("{val:.0} {unit}")
    }
}

/// etcd's table: a `+---+` rule, the upper-case header centred, a rule, the rows with every cell
/// right-aligned, a closing rule; one space of padding each side.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = header.iter().map(|h| h.to_uppercase()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        debug_assert_eq!(row.len(), widths.len(), "a row has a cell per column");
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let rule: String = widths.iter().fold(String::from("+"), |mut s, w| {
        s.push_str(&"-".repeat(w + 2));
        s.push('+');
        s
    });
    let mut out = String::new();
    out.push_str(&rule);
    out.push('\n');
    out.push('|');
    for (h, w) in header.iter().zip(&widths) {
        let gap = w - h.chars().count();
        let left = gap / 2;
        out.push_str(&format!(
            " {}{}{} |",
            " ".repeat(left),
            h,
            " ".repeat(gap - left)
        ));
    }
    out.push('\n');
    out.push_str(&rule);
    out.push('\n');
    for row in rows {
        out.push('|');
        for (cell, w) in row.iter().zip(&widths) {
            out.push_str(&format!(" {cell:>w$} |"));
        }
        out.push('\n');
    }
    out.push_str(&rule);
    out.push('\n');
    out
}

/// A progress bar on stderr, drawn only when stderr is a terminal (scripts and logs get nothing),
/// at most ten times a second: `[#####               ]  25% 12 MB / 48 MB`.
pub struct Progress {
    total: u64,
    done: u64,
    tty: bool,
    last: Option<std::time::Instant>,
}

impl Progress {
    pub fn new(total: u64) -> Progress {
        use std::io::IsTerminal;
        Progress {
            total: total.max(1),
            done: 0,
            tty: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        if self.tty && self.last.is_none_or(|t| t.elapsed().as_millis() >= 100) {
            self.last = Some(std::time::Instant::now());
            self.draw();
        }
    }

    fn draw(&self) {
        const WIDTH: u64 = 20;
        let done = self.done.min(self.total);
        let filled = (done * WIDTH / self.total) as usize;
        eprint!(
            "\r[{}{}] {:3}% {} / {}",
            "#".repeat(filled),
            " ".repeat(WIDTH as usize - filled),
            done * 100 / self.total,
            human_bytes(done),
            human_bytes(self.total)
        );
    }

    /// Draws the full bar and ends its line.
    pub fn finish(&mut self) {
        if self.tty {
            self.done = self.total;
            self.draw();
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_as_go_humanize() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(9), "9 B");
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1000), "1.0 kB");
        assert_eq!(human_bytes(20480), "20 kB");
        assert_eq!(human_bytes(24576), "25 kB");
        assert_eq!(human_bytes(2_101_248), "2.1 MB");
        assert_eq!(human_bytes(1 << 30), "1.1 GB");
    }

    #[test]
    fn table_as_etcdctl_draws_it() {
        let t = table(
            &["hash", "revision", "total keys", "total size"],
            &[vec![
                "e19c4878".into(),
                "2".into(),
                "5".into(),
                "25 kB".into(),
            ]],
        );
        assert_eq!(
            t,
            "+----------+----------+------------+------------+\n\
             |   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +----------+----------+------------+------------+\n\
             | e19c4878 |        2 |          5 |      25 kB |\n\
             +----------+----------+------------+------------+\n"
        );
    }

    #[test]
    fn unknown_formats_are_a_bad_feature() {
        let f = Format::parse("yaml").unwrap_err();
        assert_eq!(
            (f.code, f.message.as_str()),
            (4, "unsupported output format")
        );
    }
}
