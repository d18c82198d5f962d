//! Latency statistics and every report retcd-bench prints: etcd's `benchmark` text (byte for
//! byte what etcd's `pkg/report` prints), fio-style blocks, JSON, CSV and one self-contained
//! HTML page.
//!
//! Each client task fills its own [`Recorder`], so the hot path touches no shared state; the
//! recorders are merged when the measured phase ends and [`Stats::new`] does all sorting and
//! arithmetic once, which leaves every renderer a pure function of a [`Stats`].
//!
//! Invariants of a [`Stats`] built by [`Stats::new`] (the renderers rely on them):
//! - `lats` holds exactly the successful latencies, in seconds, sorted ascending;
//! - `fastest`, `slowest`, `average` and `stddev` are 0 without successes and `rps` is 0 when
//!   `total` is zero, so no report ever shows NaN or infinity;
//! - `series` covers every second from the first to the last one holding a sample, gaps filled
//!   with zero points, so etcd's `--sample` CSV and the plots have an evenly spaced time axis.
//!
//! Percentiles come in two kinds on purpose. [`Stats::percentile`] and [`Stats::percentiles`]
//! follow etcd's rule, quirks included (0 when too few samples reach a percentile), because
//! their numbers must match etcd's. The per-second series, the fio block and the HTML
//! histogram use nearest rank, which never reports 0 for a non-empty set.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

/// Writing into a `String` cannot fail, so the `fmt::Result` carries nothing worth handling.
macro_rules! w {
    ($($arg:tt)*) => {{
        let _ = write!($($arg)*);
    }};
}

/// One successful request: when it started (offset from the start of the measured phase) and
/// how long it took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub start: Duration,
    pub latency: Duration,
}

/// What one client task records; merged at the end (no locks or channels on the hot path).
#[derive(Default, Debug, Clone)]
pub struct Recorder {
    pub samples: Vec<Sample>,
    pub errors: BTreeMap<String, u64>,
}

impl Recorder {
    /// Preallocating the expected request count keeps reallocation out of the measured phase.
    pub fn with_capacity(n: usize) -> Self {
        Recorder {
            samples: Vec::with_capacity(n),
            errors: BTreeMap::new(),
        }
    }

    pub fn ok(&mut self, start: Duration, latency: Duration) {
        self.samples.push(Sample { start, latency });
    }

    /// Counts per distinct message, as etcd's error distribution does.
    pub fn err(&mut self, message: impl Into<String>) {
        *self.errors.entry(message.into()).or_insert(0) += 1;
    }

    pub fn merge(&mut self, other: Recorder) {
        if self.samples.is_empty() {
            // Taking the other buffer whole avoids copying the first recorder merged in.
            self.samples = other.samples;
        } else {
            self.samples.extend(other.samples);
        }
        for (message, n) in other.errors {
            *self.errors.entry(message).or_insert(0) += n;
        }
    }

    /// Successes plus errors.
    pub fn len(&self) -> usize {
        self.samples.len() + self.errors.values().sum::<u64>() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One second of the run (for `--sample` and the HTML plots). Latencies are in seconds; a
/// second without samples between the first and the last has count 0 and zero latencies.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SecondPoint {
    pub second: u64,
    pub count: u64,
    pub min: f64,
    pub avg: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The percentiles etcd's report prints (etcd itself stops at 99.9; by the same rule 99.99
/// needs at least 10 000 samples).
pub const PERCENTILES: [f64; 9] = [10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99];

/// fio's default `percentile_list`.
const FIO_PERCENTILES: [f64; 17] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

/// The outcome of one measured phase. Build it with [`Stats::new`]: the renderers assume the
/// invariants listed in the module documentation.
#[derive(Clone, Debug)]
pub struct Stats {
    pub name: String,
    /// Wall time of the measured phase, as the caller measured it.
    pub total: Duration,
    /// Successful latencies in seconds, sorted ascending.
    pub lats: Vec<f64>,
    pub fastest: f64,
    pub slowest: f64,
    pub average: f64,
    /// Population standard deviation (divides by n), as etcd computes it.
    pub stddev: f64,
    /// Successes per second of `total`.
    pub rps: f64,
    pub errors: BTreeMap<String, u64>,
    pub series: Vec<SecondPoint>,
}

impl Stats {
    pub fn new(name: impl Into<String>, rec: Recorder, total: Duration) -> Stats {
        let (mut samples, errors) = (rec.samples, rec.errors);
        let series = per_second(&mut samples);
        let mut lats: Vec<f64> = samples.iter().map(|s| s.latency.as_secs_f64()).collect();
        drop(samples);
        lats.sort_unstable_by(f64::total_cmp);
        let n = lats.len() as f64;
        let (fastest, slowest, average, stddev) = match (lats.first(), lats.last()) {
            (Some(&fastest), Some(&slowest)) => {
                let average = lats.iter().sum::<f64>() / n;
                let var = lats
                    .iter()
                    .map(|x| (x - average) * (x - average))
                    .sum::<f64>()
                    / n;
                (fastest, slowest, average, var.sqrt())
            }
            _ => (0.0, 0.0, 0.0, 0.0),
        };
        let secs = total.as_secs_f64();
        let rps = if secs > 0.0 { n / secs } else { 0.0 };
        Stats {
            name: name.into(),
            total,
            lats,
            fastest,
            slowest,
            average,
            stddev,
            rps,
            errors,
            series,
        }
    }

    /// Successes.
    pub fn count(&self) -> u64 {
        self.lats.len() as u64
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// etcd's percentile rule (pkg/report/report.go): walk the sorted latencies; the p-th
    /// percentile is `lats[i]` for the first `i` with `i*100/n >= p`. 0 when there are no
    /// samples or no index reaches `p` (etcd then omits the line).
    pub fn percentile(&self, p: f64) -> f64 {
        etcd_index(self.lats.len(), p).map_or(0.0, |i| self.lats[i])
    }

    /// `(p, seconds)` for [`PERCENTILES`], by etcd's exact loop: it moves to the next
    /// percentile only after consuming a sample, so when two percentiles reach the same index
    /// the later one takes the next sample, or 0. That happens only with 2 to 4 samples (checked
    /// exhaustively up to 30 000), the one place this differs from [`Stats::percentile`]; it is
    /// kept so the etcd text matches etcd.
    pub fn percentiles(&self) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = PERCENTILES.iter().map(|&p| (p, 0.0)).collect();
        let (n, mut j) = (self.lats.len(), 0);
        for (i, &lat) in self.lats.iter().enumerate() {
            if j == out.len() {
                break;
            }
            if i as f64 * 100.0 / n as f64 >= out[j].0 {
                out[j].1 = lat;
                j += 1;
            }
        }
        out
    }

    /// etcd's histogram: 11 buckets; bucket i (i<10) upper bound = fastest +
    /// i*(slowest-fastest)/10, bucket 10 = slowest; each latency counted in the first bucket
    /// whose bound is >= it.
    pub fn histogram(&self) -> Vec<(f64, u64)> {
        let step = (self.slowest - self.fastest) / 10.0;
        let mut buckets: Vec<(f64, u64)> = (0..10)
            .map(|i| (self.fastest + step * f64::from(i), 0))
            .chain([(self.slowest, 0)])
            .collect();
        for &lat in &self.lats {
            let i = buckets.iter().position(|&(le, _)| lat <= le).unwrap_or(10);
            buckets[i].1 += 1;
        }
        buckets
    }

    /// etcd's benchmark report text, byte for byte in etcd's layout. `precise` = etcd's
    /// `--precise` (Go `%g` instead of `%4.4f`); `sample` = append the per-second CSV as etcd's
    /// `--sample` does (second offsets instead of unix seconds, latencies in ms).
    pub fn render_etcd(&self, precise: bool, sample: bool) -> String {
        let num = |x: f64| if precise { go_g(x) } else { format!("{x:.4}") };
        let mut s = String::new();
        if !self.lats.is_empty() {
            s.push_str("\nSummary:\n");
            let secs = [
                ("Total", self.total.as_secs_f64()),
                ("Slowest", self.slowest),
                ("Fastest", self.fastest),
                ("Average", self.average),
                ("Stddev", self.stddev),
            ];
            for (label, v) in secs {
                w!(s, "  {label}:\t{} secs.\n", num(v));
            }
            w!(s, "  Requests/sec:\t{}\n", num(self.rps));
            s.push_str("\nResponse time histogram:\n");
            let hist = self.histogram();
            let max = hist.iter().map(|b| b.1).max().unwrap_or(0).max(1);
            for (le, count) in hist {
                let bar = "∎".repeat((count * 40 / max) as usize);
                w!(s, "  {} [{count}]\t|{bar}\n", num(le));
            }
            s.push_str("\nLatency distribution:\n");
            for (p, v) in self.percentiles().into_iter().filter(|&(_, v)| v > 0.0) {
                w!(s, "  {}% in {} secs.\n", go_g(p), num(v));
            }
            if sample {
                s.push_str("\nSample in one second (unix latency throughput):\n");
                s.push_str(
                    "UNIX-SECOND,MIN-LATENCY-MS,AVG-LATENCY-MS,MAX-LATENCY-MS,AVG-THROUGHPUT\n",
                );
                for p in &self.series {
                    let (min, avg, max) = (p.min * 1e3, p.avg * 1e3, p.max * 1e3);
                    w!(s, "{},{min:.3},{avg:.3},{max:.3},{}\n", p.second, p.count);
                }
                // etcd prints the CSV with "%v\n", so a blank line follows it.
                s.push('\n');
            }
        }
        if !self.errors.is_empty() {
            s.push_str("\nError distribution:\n");
            for (message, n) in &self.errors {
                w!(s, "  [{n}]\t{message}\n");
            }
        }
        s
    }

    /// fio-style block for one job or group; percentiles are fio's default list, by nearest
    /// rank. Latencies are in usec, or in msec once even the fastest reaches 10 ms: like fio,
    /// the switch keys on the low end, since a few slow outliers must not round the whole
    /// distribution down to `[0]` msec.
    pub fn render_fio(&self, header: &str) -> String {
        let mut s = String::new();
        let runtime = self.total.as_millis();
        w!(
            s,
            "{header}: ops={}, errors={}, runtime={runtime}msec\n",
            self.count(),
            self.error_count()
        );
        w!(s, "  iops={:.1}\n", self.rps);
        if !self.lats.is_empty() {
            let (unit, scale) = if self.fastest >= 0.010 {
                ("msec", 1e3)
            } else {
                ("usec", 1e6)
            };
            let (min, max) = (self.fastest * scale, self.slowest * scale);
            let (avg, dev) = (self.average * scale, self.stddev * scale);
            w!(
                s,
                "  lat ({unit}): min={min:.0}, max={max:.0}, avg={avg:.2}, stdev={dev:.2}\n"
            );
            w!(s, "  lat percentiles ({unit}):\n");
            let rows: Vec<&[f64]> = FIO_PERCENTILES.chunks(4).collect();
            for (r, row) in rows.iter().enumerate() {
                let cells: Vec<String> = row
                    .iter()
                    .map(|&p| format!(" {p:>5.2}th=[{:>5.0}]", nearest_rank(&self.lats, p) * scale))
                    .collect();
                let end = if r + 1 == rows.len() { "" } else { "," };
                w!(s, "   |{}{end}\n", cells.join(","));
            }
        }
        for (message, n) in &self.errors {
            w!(s, "  error: [{n}] {message}\n");
        }
        s
    }

    pub fn to_json(&self) -> Value {
        let pcts = self.percentiles().into_iter();
        let pcts: Vec<Value> = pcts.map(|(p, s)| json!({"p": p, "s": s})).collect();
        let hist = self.histogram().into_iter();
        let hist: Vec<Value> = hist
            .map(|(le, n)| json!({"le_s": le, "count": n}))
            .collect();
        json!({
            "name": self.name,
            "count": self.count(),
            "errors": self.errors,
            "error_count": self.error_count(),
            "total_s": self.total.as_secs_f64(),
            "fastest_s": self.fastest,
            "slowest_s": self.slowest,
            "average_s": self.average,
            "stddev_s": self.stddev,
            "rps": self.rps,
            "percentiles": pcts,
            "histogram": hist,
            "series": self.series,
        })
    }

    /// Without a line terminator, like [`Stats::csv_row`].
    pub fn csv_header() -> &'static str {
        "name,count,errors,total_s,rps,average_s,stddev_s,fastest_s,slowest_s,\
         p10_s,p25_s,p50_s,p75_s,p90_s,p95_s,p99_s,p99.9_s,p99.99_s"
    }

    /// One row matching [`Stats::csv_header`]; percentiles are etcd's, as in the text report.
    pub fn csv_row(&self) -> String {
        let mut row = csv_field(&self.name);
        w!(row, ",{},{}", self.count(), self.error_count());
        w!(row, ",{},{}", self.total.as_secs_f64(), self.rps);
        let rest = [self.average, self.stddev, self.fastest, self.slowest];
        let pcts = self.percentiles().into_iter().map(|(_, v)| v);
        for v in rest.into_iter().chain(pcts) {
            w!(row, ",{v}");
        }
        row
    }
}

/// First index `i` of `n` sorted samples with `i*100/n >= p`, computed in the same floating
/// point expression as etcd so boundary cases (`i*100/n == p`) agree; the estimate is O(1) and
/// the two loops only correct its rounding.
fn etcd_index(n: usize, p: f64) -> Option<usize> {
    let current = |i: usize| i as f64 * 100.0 / n as f64;
    let mut i = ((p * n as f64 / 100.0).max(0.0) as usize).min(n);
    while i > 0 && current(i - 1) >= p {
        i -= 1;
    }
    while i < n && current(i) < p {
        i += 1;
    }
    (i < n).then_some(i)
}

/// Smallest value with at least p% of `sorted` at or below it; 0 only for an empty slice.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // p like 99.9 has no exact binary form; the epsilon keeps p*n/100 = 999.0000000001 at 999.
    let rank = (p * sorted.len() as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Buckets samples by the second they started in (as etcd's `--sample` does), filling gaps.
fn per_second(samples: &mut [Sample]) -> Vec<SecondPoint> {
    samples.sort_unstable_by_key(|s| (s.start.as_secs(), s.latency));
    let mut out: Vec<SecondPoint> = Vec::new();
    let mut lats: Vec<f64> = Vec::new();
    for group in samples.chunk_by(|a, b| a.start.as_secs() == b.start.as_secs()) {
        let second = group[0].start.as_secs();
        let from = out.last().map_or(second, |p| p.second + 1);
        out.extend((from..second).map(|second| SecondPoint {
            second,
            ..Default::default()
        }));
        lats.clear();
        lats.extend(group.iter().map(|s| s.latency.as_secs_f64()));
        out.push(SecondPoint {
            second,
            count: lats.len() as u64,
            min: lats[0],
            avg: lats.iter().sum::<f64>() / lats.len() as f64,
            p50: nearest_rank(&lats, 50.0),
            p99: nearest_rank(&lats, 99.0),
            max: lats[lats.len() - 1],
        });
    }
    out
}

/// Go's `%g` (and `%v`) for a float64: shortest round-trip digits, exponent form when the
/// decimal exponent is < -4 or >= 6 (Go's strconv uses 6, not 21, for the shortest precision:
/// `fmt.Sprintf("%g", 1e6)` is `1e+06`), exponent with a sign and at least two digits.
pub fn go_g(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` and `{}` both print the shortest round-trip digits; only the layout differs.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{x}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
margin:2em auto;max-width:1800px;padding:0 1.5em;color:#222;background:#fff}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.3em}\
table{border-collapse:collapse;margin:.8em 0;font-variant-numeric:tabular-nums}\
th,td{border:1px solid #ddd;padding:.35em .8em;text-align:right}th{background:#f4f6f8;font-weight:600}\
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:1em}.err{color:#b00020}\
figure{margin:0;border:1px solid #e3e3e3;border-radius:6px;padding:.5em;background:#fcfcfc}\
figcaption{font-size:.9em;text-align:center;color:#444;margin-top:.3em}\
svg{display:block;width:100%;height:auto}svg text{font-size:11px;fill:#333}\
.grid{stroke:#e6e6e6}.axis{stroke:#666}.bar{fill:#4c78a8}.bar:hover{fill:#f58518}";

/// Plot geometry shared by every chart, in SVG user units.
const W: f64 = 480.0;
const H: f64 = 300.0;
const X0: f64 = 64.0;
const X1: f64 = W - 16.0;
const Y0: f64 = 30.0;
const Y1: f64 = H - 46.0;

/// One self-contained HTML5 page (inline SVG and CSS only) with, for each run, a summary
/// table, throughput and p50/p99 latency over time, and a latency histogram.
pub fn render_html(title: &str, runs: &[&Stats]) -> String {
    let t = esc(title);
    let mut h = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>{t}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{t}</h1>\n"
    );
    if runs.is_empty() {
        h.push_str("<p>No runs.</p>\n");
    }
    for s in runs {
        w!(h, "<section>\n<h2>{}</h2>\n<table>\n<tr>", esc(&s.name));
        h.push_str(
            "<th>count</th><th>errors</th><th>req/s</th><th>avg</th><th>p50</th><th>p90</th>\
             <th>p99</th><th>p99.9</th><th>p99.99</th><th>slowest</th></tr>\n<tr>",
        );
        w!(h, "<td>{}</td><td>{}</td>", s.count(), s.error_count());
        w!(h, "<td>{:.1}</td>", s.rps);
        let p = s.percentiles();
        for v in [s.average, p[2].1, p[4].1, p[6].1, p[7].1, p[8].1, s.slowest] {
            // etcd's rule gives 0 where there are too few samples for the percentile.
            let text = if v > 0.0 {
                format!("{:.3} ms", v * 1e3)
            } else {
                "n/a".into()
            };
            w!(h, "<td>{text}</td>");
        }
        h.push_str("</tr>\n</table>\n");
        if !s.errors.is_empty() {
            h.push_str("<ul class=\"err\">\n");
            for (message, n) in &s.errors {
                w!(h, "<li>[{n}] {}</li>\n", esc(message));
            }
            h.push_str("</ul>\n");
        }
        if s.lats.is_empty() {
            h.push_str("<p>No successful requests.</p>\n</section>\n");
            continue;
        }
        let pts = |f: &dyn Fn(&SecondPoint) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
            s.series.iter().map(|p| (p.second as f64, f(p))).collect()
        };
        // An empty second has no latency: the lines break there rather than dive to 0.
        let lat = |v: f64, p: &SecondPoint| (p.count > 0).then_some(v * 1e3);
        let rate = [("requests/s", "#1f77b4", pts(&|p| Some(p.count as f64)))];
        let p50 = ("p50", "#2ca02c", pts(&|p| lat(p.p50, p)));
        let p99 = ("p99", "#d62728", pts(&|p| lat(p.p99, p)));
        let (rate, lat) = (
            line_chart("requests/s", &rate),
            line_chart("latency (ms)", &[p50, p99]),
        );
        h.push_str("<div class=\"charts\">\n");
        figure(&mut h, "Throughput over time", &rate);
        figure(&mut h, "Latency over time", &lat);
        figure(&mut h, "Latency histogram", &histogram_chart(&s.lats));
        h.push_str("</div>\n</section>\n");
    }
    h.push_str("</body>\n</html>\n");
    h
}

fn figure(h: &mut String, caption: &str, svg: &str) {
    let caption = esc(caption);
    w!(
        h,
        "<figure>\n{svg}<figcaption>{caption}</figcaption>\n</figure>\n"
    );
}

fn line(s: &mut String, class: &str, (x1, y1): (f64, f64), (x2, y2): (f64, f64)) {
    w!(
        s,
        "<line class=\"{class}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\"/>\n"
    );
}

/// `attrs` are extra raw attributes (anchor, rotation); `body` is escaped here.
fn text(s: &mut String, (x, y): (f64, f64), attrs: &str, body: &str) {
    w!(
        s,
        "<text x=\"{x:.1}\" y=\"{y:.1}\" {attrs}>{}</text>\n",
        esc(body)
    );
}

const END: &str = "text-anchor=\"end\"";
const MIDDLE: &str = "text-anchor=\"middle\"";

/// 1-2-5 tick positions covering `[lo, hi]` (`hi > lo`), and their spacing.
fn nice_ticks(lo: f64, hi: f64) -> (Vec<f64>, f64) {
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let steps = [1.0, 2.0, 5.0, 10.0].map(|m| m * mag);
    let step = steps.into_iter().find(|&s| s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), step)
}

/// Enough decimals to tell ticks `step` apart, no more.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).clamp(0.0, 9.0) as usize;
    format!("{v:.decimals$}")
}

/// Three significant digits, for bucket edges that fall between round numbers.
fn sig3(v: f64) -> String {
    if v <= 0.0 {
        return "0".into();
    }
    let decimals = (2.0 - v.log10().floor()).clamp(0.0, 9.0) as usize;
    format!("{v:.decimals$}")
}

/// Opens the SVG and draws grid, axes and labels; the y axis runs from 0 to the first tick
/// at or above `ymax`, which is returned so callers scale their data to it.
fn axes(s: &mut String, xticks: &[(f64, String)], ymax: f64, x_label: &str, y_label: &str) -> f64 {
    w!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" "
    );
    w!(
        s,
        "viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">\n",
        esc(y_label)
    );
    let (step, top) = if ymax > 0.0 {
        let (_, step) = nice_ticks(0.0, ymax);
        (step, (ymax / step - 1e-9).ceil().max(1.0) * step)
    } else {
        (1.0, 1.0)
    };
    for k in 0..=(top / step).round() as i64 {
        let v = k as f64 * step;
        let y = Y1 - v / top * (Y1 - Y0);
        line(s, "grid", (X0, y), (X1, y));
        text(s, (X0 - 6.0, y + 4.0), END, &tick_label(v, step));
    }
    for (x, label) in xticks {
        line(s, "axis", (*x, Y1), (*x, Y1 + 5.0));
        text(s, (*x, Y1 + 18.0), MIDDLE, label);
    }
    line(s, "axis", (X0, Y1), (X1, Y1));
    line(s, "axis", (X0, Y0), (X0, Y1));
    text(s, ((X0 + X1) / 2.0, H - 8.0), MIDDLE, x_label);
    // rotate(-90) maps (x, y) to (y, -x): this lands at (16, middle of the plot).
    let rotated = format!("{MIDDLE} transform=\"rotate(-90)\"");
    text(s, (-(Y0 + Y1) / 2.0, 16.0), &rotated, y_label);
    top
}

type Line<'a> = (&'a str, &'a str, Vec<(f64, Option<f64>)>);

/// Lines over seconds with a legend; `None` values leave gaps, and a point with no
/// neighbour gets a dot so it stays visible.
fn line_chart(y_label: &str, lines: &[Line]) -> String {
    let xs = || lines.iter().flat_map(|l| l.2.iter().map(|p| p.0));
    let xmin = xs().fold(0.0, f64::min);
    let xmax = xs().fold(xmin + 1.0, f64::max);
    let ys = lines.iter().flat_map(|l| l.2.iter().filter_map(|p| p.1));
    let (xt, xstep) = nice_ticks(xmin, xmax);
    let px = |x: f64| X0 + (x - xmin) / (xmax - xmin) * (X1 - X0);
    // Points sit on whole seconds, so fractional ticks would label nothing.
    let whole = xt.iter().filter(|x| x.fract() == 0.0);
    let xticks: Vec<_> = whole
        .map(|&x| (px(x), tick_label(x, xstep.max(1.0))))
        .collect();
    let mut s = String::new();
    let top = axes(&mut s, &xticks, ys.fold(0.0, f64::max), "time (s)", y_label);
    let py = |y: f64| Y1 - y / top * (Y1 - Y0);
    for (k, (label, color, pts)) in lines.iter().enumerate() {
        let (mut d, mut dots) = (String::new(), String::new());
        for run in pts.split(|p| p.1.is_none()).filter(|r| !r.is_empty()) {
            for (i, &(x, y)) in run.iter().enumerate() {
                let cmd = if i == 0 { 'M' } else { 'L' };
                w!(d, "{cmd}{:.1} {:.1} ", px(x), py(y.unwrap_or(0.0)));
            }
            if let [(x, Some(y))] = run {
                let (cx, cy) = (px(*x), py(*y));
                w!(
                    dots,
                    "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"2.5\" fill=\"{color}\"/>"
                );
            }
        }
        let d = d.trim_end();
        w!(
            s,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\"/>{dots}\n"
        );
        let lx = X0 + 10.0 + 90.0 * k as f64;
        let ly = Y0 - 17.0;
        w!(
            s,
            "<rect x=\"{lx}\" y=\"{ly}\" width=\"14\" height=\"3\" fill=\"{color}\"/>\n"
        );
        text(&mut s, (lx + 18.0, Y0 - 12.0), "", label);
    }
    s.push_str("</svg>\n");
    s
}

/// 40 bars of equal width over log-spaced buckets when latencies span a decade or more (a
/// linear axis would crush the body of the distribution into one bar), linear ones otherwise.
fn histogram_chart(lats: &[f64]) -> String {
    const N: usize = 40;
    let (lo, hi) = (lats[0], lats[lats.len() - 1]);
    let log = lo > 0.0 && hi / lo >= 10.0;
    // Identical latencies still need a bucket width to divide by.
    let hi = if hi > lo { hi } else { lo + lo.max(1e-6) * 0.1 };
    // Buckets are equal steps of `to(x)` (ln x or x) between `to(lo)` and `to(hi)`.
    let to = |x: f64| if log { x.ln() } else { x };
    let from = |t: f64| if log { t.exp() } else { t };
    let (a, b) = (to(lo), to(hi));
    let edge = |k: usize| from(a + (b - a) * k as f64 / N as f64);
    let mut counts = [0u64; N];
    for &x in lats {
        counts[((to(x) - a) / (b - a) * N as f64).clamp(0.0, (N - 1) as f64) as usize] += 1;
    }
    let bw = (X1 - X0) / N as f64;
    let ticks = (0..=N).step_by(8);
    let xticks: Vec<_> = ticks
        .map(|k| (X0 + bw * k as f64, sig3(edge(k) * 1e3)))
        .collect();
    let x_label = format!("latency (ms{})", if log { ", log scale" } else { "" });
    let mut s = String::new();
    let max = counts.iter().copied().max().unwrap_or(0) as f64;
    let top = axes(&mut s, &xticks, max, &x_label, "requests");
    for (k, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        let (x, bh) = (X0 + bw * k as f64 + 0.5, n as f64 / top * (Y1 - Y0));
        let (y, width) = (Y1 - bh, bw - 1.0);
        w!(
            s,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{width:.1}\" height=\"{bh:.1}\">"
        );
        let (a, b) = (sig3(edge(k) * 1e3), sig3(edge(k + 1) * 1e3));
        w!(s, "<title>{a}–{b} ms: {n}</title></rect>\n");
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn stats_of(lat_ms: impl IntoIterator<Item = u64>, total: Duration) -> Stats {
        let mut rec = Recorder::default();
        for (i, l) in lat_ms.into_iter().enumerate() {
            rec.ok(ms(i as u64), ms(l));
        }
        Stats::new("t", rec, total)
    }

    #[test]
    fn percentiles_follow_etcd_rule() {
        // n = 1000: the first i with i*100/1000 >= p is i = 10p, whose latency is i+1 ms; p99.9
        // lands on the last sample and no index reaches 99.99.
        let s = stats_of(1..=1000, Duration::from_secs(1));
        let want = [0.101, 0.251, 0.501, 0.751, 0.901, 0.951, 0.991, 1.0, 0.0];
        for (i, &(p, v)) in s.percentiles().iter().enumerate() {
            assert_eq!((p, v), (PERCENTILES[i], want[i]));
            assert_eq!(s.percentile(p), want[i], "p{p}");
        }
        // One sample: i = 0 is 0% < 10%, so etcd prints no percentile at all.
        let one = stats_of([7], Duration::from_secs(1));
        assert!(one.percentiles().iter().all(|&(_, v)| v == 0.0));
        assert_eq!(one.percentile(50.0), 0.0);
        // Three samples: i = 1 is 33%, i = 2 is 67%; etcd's loop hands p25 the next sample.
        let three = stats_of([10, 20, 30], Duration::from_secs(1));
        let got: Vec<f64> = three.percentiles().iter().map(|p| p.1).collect();
        assert_eq!(got, [0.02, 0.03, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let single = [10.0, 25.0, 50.0, 75.0].map(|p| three.percentile(p));
        assert_eq!(single, [0.02, 0.02, 0.03, 0.0]);
        let empty = Stats::new("e", Recorder::default(), Duration::from_secs(1));
        assert!(empty.percentiles().iter().all(|&(_, v)| v == 0.0));
        assert_eq!(empty.percentile(10.0), 0.0);
    }

    #[test]
    fn summary_numbers() {
        // Mean 5 ms, population stddev exactly 2 ms (sum of squared deviations 32, n = 8).
        let s = stats_of([2, 4, 4, 4, 5, 5, 7, 9], Duration::from_secs(4));
        assert_eq!(
            (s.fastest, s.slowest, s.count(), s.rps),
            (0.002, 0.009, 8, 2.0)
        );
        assert!((s.average - 0.005).abs() < 1e-15 && (s.stddev - 0.002).abs() < 1e-15);
        let mut rec = Recorder::with_capacity(1);
        rec.err("x");
        rec.err("x");
        rec.ok(ms(0), ms(1));
        let mut all = Recorder::default();
        all.merge(rec.clone());
        all.merge(rec);
        assert_eq!((all.len(), all.errors["x"]), (6, 4));
        let s = Stats::new("z", all, Duration::ZERO);
        assert_eq!((s.rps, s.count(), s.error_count()), (0.0, 2, 4));
    }

    #[test]
    fn histogram_buckets() {
        let h = stats_of(1..=10, Duration::from_secs(1)).histogram();
        let counts: Vec<u64> = h.iter().map(|b| b.1).collect();
        // Bounds step 0.9 ms from 1 ms: 2 ms first fits under 2.8 ms, leaving 1.9 ms empty.
        assert_eq!(counts, [1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(counts.iter().sum::<u64>(), 10);
        for (i, &(le, _)) in h.iter().enumerate() {
            assert!(
                (le - (0.001 + 0.0009 * i as f64)).abs() < 1e-15,
                "bucket {i}"
            );
        }
        assert_eq!((h[0].0, h[10].0), (0.001, 0.010));
    }

    #[test]
    fn etcd_text_exact() {
        let mut rec = Recorder::default();
        for l in 1..=10u64 {
            // 1..=5 ms start in second 0, 6..=10 ms in second 2; second 1 stays empty.
            rec.ok(if l <= 5 { ms(100 * l) } else { ms(2000 + l) }, ms(l));
        }
        rec.err("boom");
        rec.err("boom");
        rec.err("a<b");
        let s = Stats::new("etcd", rec, Duration::from_secs(2));
        let b = "∎".repeat(40);
        let want = format!(
            "\nSummary:\n  Total:\t2.0000 secs.\n  Slowest:\t0.0100 secs.\n  Fastest:\t0.0010 secs.\n  \
             Average:\t0.0055 secs.\n  Stddev:\t0.0029 secs.\n  Requests/sec:\t5.0000\n\
             \nResponse time histogram:\n  0.0010 [1]\t|{b}\n  0.0019 [0]\t|\n  0.0028 [1]\t|{b}\n  \
             0.0037 [1]\t|{b}\n  0.0046 [1]\t|{b}\n  0.0055 [1]\t|{b}\n  0.0064 [1]\t|{b}\n  \
             0.0073 [1]\t|{b}\n  0.0082 [1]\t|{b}\n  0.0091 [1]\t|{b}\n  0.0100 [1]\t|{b}\n\
             \nLatency distribution:\n  10% in 0.0020 secs.\n  25% in 0.0040 secs.\n  \
             50% in 0.0060 secs.\n  75% in 0.0090 secs.\n  90% in 0.0100 secs.\n\
             \nSample in one second (unix latency throughput):\n\
             UNIX-SECOND,MIN-LATENCY-MS,AVG-LATENCY-MS,MAX-LATENCY-MS,AVG-THROUGHPUT\n\
             0,1.000,3.000,5.000,5\n1,0.000,0.000,0.000,0\n2,6.000,8.000,10.000,5\n\n\
             \nError distribution:\n  [1]\ta<b\n  [2]\tboom\n"
        );
        assert_eq!(s.render_etcd(false, true), want);
        let precise = s.render_etcd(true, false);
        assert!(precise.contains("  Slowest:\t0.01 secs.\n  Fastest:\t0.001 secs.\n"));
        assert!(precise.contains("  10% in 0.002 secs.\n") && !precise.contains("Sample"));
        let errors = Recorder {
            errors: s.errors.clone(),
            ..Default::default()
        };
        let errors_only = Stats::new("e", errors, ms(1)).render_etcd(false, true);
        assert_eq!(
            errors_only,
            "\nError distribution:\n  [1]\ta<b\n  [2]\tboom\n"
        );
    }

    #[test]
    fn go_g_matches_go() {
        let xs = [
            0.5, 0.0012345, 1.234e-05, 12.0, 1e21, 1e6, 123456.0, 0.0001, 99.99, 0.0, 1e100,
        ];
        let want = [
            "0.5",
            "0.0012345",
            "1.234e-05",
            "12",
            "1e+21",
            "1e+06",
            "123456",
            "0.0001",
            "99.99",
            "0",
            "1e+100",
        ];
        for (x, want) in xs.into_iter().zip(want) {
            assert_eq!(go_g(x), want, "{x}");
        }
    }

    #[test]
    fn series_fills_empty_seconds() {
        let mut rec = Recorder::default();
        for (start, lat) in [(1500, 4), (1200, 2), (4100, 8)] {
            rec.ok(ms(start), ms(lat));
        }
        let s = Stats::new("s", rec, Duration::from_secs(5));
        let got: Vec<_> = s
            .series
            .iter()
            .map(|p| (p.second, p.count, p.min, p.avg))
            .collect();
        let want = [
            (1, 2, 0.002, 0.003),
            (2, 0, 0.0, 0.0),
            (3, 0, 0.0, 0.0),
            (4, 1, 0.008, 0.008),
        ];
        assert_eq!(got, want);
        let tails: Vec<_> = s.series.iter().map(|p| (p.p50, p.p99, p.max)).collect();
        assert_eq!(tails[0], (0.002, 0.004, 0.004));
        assert_eq!(tails[2], (0.0, 0.0, 0.0));
    }

    #[test]
    fn html_csv_json_fio() {
        let mut rec = Recorder::default();
        for i in 0..3000u64 {
            let outlier = if i % 97 == 0 { 20_000 } else { 0 };
            rec.ok(ms(i), Duration::from_micros(100 + i % 700 + outlier));
        }
        rec.err("bad <thing> & co");
        let s = Stats::new("a<b&c \"q\"", rec, Duration::from_secs(3));
        let empty = Stats::new("empty", Recorder::default(), ms(1));
        let html = render_html("t <&>", &[&s, &empty]);
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<title>t &lt;&amp;&gt;</"));
        assert!(html.contains("<h2>a&lt;b&amp;c &quot;q&quot;</h2>") && !html.contains("a<b"));
        assert!(html.contains("bad &lt;thing&gt; &amp; co") && html.contains("log scale"));
        assert_eq!(
            (html.matches("<svg").count(), html.matches("</svg>").count()),
            (3, 3)
        );

        let header_cols = Stats::csv_header().split(',').count();
        assert_eq!((header_cols, s.csv_row().split(',').count()), (18, 18));
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");

        let j = s.to_json();
        assert_eq!(
            (j["count"].as_u64(), j["error_count"].as_u64()),
            (Some(3000), Some(1))
        );
        let len = |k: &str| j[k].as_array().map(Vec::len);
        assert_eq!(
            (len("percentiles"), len("histogram"), len("series")),
            (Some(9), Some(11), Some(3))
        );
        assert_eq!(j["percentiles"][2]["p"].as_f64(), Some(50.0));

        let fio = s.render_fio("job1");
        let lines: Vec<&str> = fio.lines().collect();
        assert_eq!(lines[0], "job1: ops=3000, errors=1, runtime=3000msec");
        assert_eq!(lines[1], "  iops=1000.0");
        assert!(lines[2].starts_with("  lat (usec): min=100, max=20779, avg="));
        assert_eq!(lines[3], "  lat percentiles (usec):");
        let p1 = "   |  1.00th=[  106],  5.00th=[  130], 10.00th=[  160], 20.00th=[  221],";
        let p99 = "   | 99.00th=[20100], 99.50th=[20425], 99.90th=[20716], 99.95th=[20758],";
        assert_eq!(
            [lines[4], lines[7], lines[8]],
            [p1, p99, "   | 99.99th=[20779]"]
        );
        assert_eq!(lines[9], "  error: [1] bad <thing> & co");
        let usec = stats_of([1, 2, 3], Duration::from_secs(1)).render_fio("j");
        assert!(usec.contains("  lat (usec): min=1000, max=3000, avg=2000.00, stdev=816.50\n"));
        let msec = stats_of([10, 20, 30], Duration::from_secs(1)).render_fio("j");
        assert!(msec.contains("  lat (msec): min=10, max=30, avg=20.00, stdev=8.16\n"));
        assert!(msec.contains("   | 99.00th=[   30], 99.50th=[   30]"));
    }
}
