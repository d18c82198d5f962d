//! `check perf` and `check datascale`: etcdctl's load checks. perf puts random 256-byte keys
//! with 1 KiB values under a prefix at the load's rate for 60 s through its number of clients,
//! then judges throughput, slowest request and standard deviation; datascale puts its number of
//! 512 + 512-byte pairs and reports how much the server's resident memory grew (from its
//! `/metrics`). Both delete their prefix afterwards, and compact and defragment if asked.

use std::rc::Rc;
use std::time::{Duration, Instant};

use retcd_net::pb::etcdserverpb::{
    CompactionRequest, DefragmentRequest, DeleteRangeRequest, PutRequest, RangeRequest,
};

use super::client::{Client, connect, connect_endpoint};
use super::flags::{Kind, Parsed, Spec, spec};
use super::print::{self, Printed, Printer};
use super::usage::{About, about};
use super::{Cmd, runtime};
use crate::output::{Failure, exit};

pub const COMMANDS: &[Cmd] = &[
    Cmd {
        about: about(
            "check perf",
            "[options]",
            "Check the performance of the etcd cluster",
        ),
        flags: PERF,
        run: perf,
    },
    Cmd {
        about: About {
            long: Some(
                "If no endpoint is provided, localhost will be used. If multiple endpoints are \
                 provided, first endpoint will be used.",
            ),
            ..about(
                "check datascale",
                "[options]",
                "Check the memory usage of holding data for different workloads on a given server endpoint.",
            )
        },
        flags: DATASCALE,
        run: datascale,
    },
];

const PERF: &[Spec] = &[
    spec(
        "load",
        Kind::Str,
        "s",
        "The performance check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)",
    ),
    spec(
        "prefix",
        Kind::Str,
        "/etcdctl-check-perf/",
        "The prefix for writing the performance check's keys.",
    ),
    spec(
        "auto-compact",
        Kind::Bool,
        "false",
        "Compact storage with last revision after test is finished.",
    ),
    spec(
        "auto-defrag",
        Kind::Bool,
        "false",
        "Defragment storage after test is finished.",
    ),
];

const DATASCALE: &[Spec] = &[
    spec(
        "load",
        Kind::Str,
        "s",
        "The datascale check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)",
    ),
    spec(
        "prefix",
        Kind::Str,
        "/etcdctl-check-datascale/",
        "The prefix for writing the datascale check's keys.",
    ),
    PERF[2],
    PERF[3],
];

/// etcdctl's load names and their (limit, clients): puts per second for perf, keys for
/// datascale.
fn load(p: &Parsed, table: [(i64, usize); 4]) -> Result<(i64, usize), Failure> {
    let i = match p.str("load") {
        "s" | "small" => 0,
        "m" | "medium" => 1,
        "l" | "large" => 2,
        "xl" | "xLarge" => 3,
        other => {
            return Err(Failure {
                code: exit::BAD_FEATURE,
                message: format!("unknown load option {other}"),
            });
        }
    };
    Ok(table[i])
}

/// How long perf loads: etcdctl's 60 s (RETCDCTL_CHECK_PERF_SECONDS shortens it for tests).
fn perf_seconds() -> u64 {
    std::env::var("RETCDCTL_CHECK_PERF_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// A random key under `prefix`: Go's binary.PutVarint of a random int63 into 256 bytes.
fn random_key(prefix: &str, size: usize, seed: &mut u64) -> Vec<u8> {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    let mut k = vec![0u8; size];
    let mut x = ((*seed >> 1) as i64 as u64) << 1; // zig-zag of a non-negative value
    for b in k.iter_mut() {
        if x < 0x80 {
            *b = x as u8;
            break;
        }
        *b = (x as u8) | 0x80;
        x >>= 7;
    }
    let mut key = prefix.as_bytes().to_vec();
    key.extend(k);
    key
}

async fn ensure_empty(c: &Client, prefix: &str) -> Result<(), Failure> {
    let (key, range_end) = retcd_net::keys::prefix_range(prefix.as_bytes());
    let mut kv = c.kv();
    let r = c
        .call(kv.range(c.request(RangeRequest {
            key,
            range_end,
            limit: 1,
            ..Default::default()
        })))
        .await
        .map_err(Failure::error)?;
    if !r.kvs.is_empty() {
        return Err(Failure {
            code: exit::INVALID_INPUT,
            message: format!(
                "prefix {} has keys. Delete with etcdctl del --prefix {prefix} first",
                print::go_quote(prefix.as_bytes())
            ),
        });
    }
    Ok(())
}

/// Deletes the prefix, then compacts and defragments as asked (etcdctl's compact and defrag
/// helpers, with their lines).
async fn clean_up(p: &Parsed, c: &Client, prefix: &str) -> Result<(), Failure> {
    let (key, range_end) = retcd_net::keys::prefix_range(prefix.as_bytes());
    let mut kv = c.kv();
    let d = c
        .call(kv.delete_range(c.request(DeleteRangeRequest {
            key,
            range_end,
            prev_kv: false,
        })))
        .await
        .map_err(Failure::error)?;
    if p.bool("auto-compact") {
        let rev = d.header.as_ref().map_or(0, |h| h.revision);
        print::emit(format!("Compacting with revision {rev}\n").as_bytes());
        c.call(kv.compact(c.request(CompactionRequest {
            revision: rev,
            physical: true,
        })))
        .await
        .map_err(Failure::error)?;
        print::emit(format!("Compacted with revision {rev}\n").as_bytes());
    }
    if p.bool("auto-defrag") {
        for ep in p.list("endpoints") {
            print::emit(format!("Defragmenting {}\n", print::go_quote(ep.as_bytes())).as_bytes());
            let e = connect_endpoint(p, &ep).await?;
            let mut m = e.maintenance();
            e.call(m.defragment(e.request(DefragmentRequest {})))
                .await
                .map_err(Failure::error)?;
            print::emit(format!("Defragmented {}\n", print::go_quote(ep.as_bytes())).as_bytes());
        }
    }
    Ok(())
}

/// What the clients measured.
#[derive(Default)]
struct Stats {
    latencies: Vec<f64>,
    errors: std::collections::BTreeMap<String, u64>,
}

/// A load: `value` put under random keys of `key_size` bytes below `prefix` through `clients`
/// clients, at most `rate` per second (0: as fast as they go), until `until` or `count` puts.
struct Load<'a> {
    prefix: &'a str,
    key_size: usize,
    value: Vec<u8>,
    clients: usize,
    rate: f64,
    until: Option<Instant>,
    count: Option<u64>,
}

async fn load_puts(p: &Parsed, l: Load<'_>, mut on_put: impl FnMut()) -> Result<Stats, Failure> {
    let Load {
        prefix,
        key_size,
        value,
        clients,
        rate,
        until,
        count,
    } = l;
    let mut conns = Vec::new();
    // A connection per 10 clients keeps HTTP/2 streams cheap; etcdctl dials one per client.
    for _ in 0..clients.div_ceil(10) {
        conns.push(Rc::new(connect(p).await?));
    }
    let (tx, rx) = async_channel(clients);
    let stats = Rc::new(std::cell::RefCell::new(Stats::default()));
    let mut workers = Vec::new();
    for i in 0..clients {
        let c = conns[i % conns.len()].clone();
        let rx = rx.clone();
        let stats = stats.clone();
        workers.push(async move {
            let mut kv = c.kv();
            while let Ok(req) = rx.recv().await {
                let start = Instant::now();
                let r = c.call(kv.put(c.request(req))).await;
                let mut s = stats.borrow_mut();
                match r {
                    Ok(_) => s.latencies.push(start.elapsed().as_secs_f64()),
                    Err(e) => *s.errors.entry(e).or_default() += 1,
                }
            }
        });
    }
    let producer = async {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ std::process::id() as u64;
        let started = Instant::now();
        let mut n = 0u64;
        loop {
            if until.is_some_and(|u| Instant::now() >= u) || count.is_some_and(|c| n >= c) {
                break;
            }
            if rate > 0.0 {
                let due = started + Duration::from_secs_f64(n as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let req = PutRequest {
                key: random_key(prefix, key_size, &mut seed),
                value: value.clone(),
                ..Default::default()
            };
            if tx.send(req).await.is_err() {
                break;
            }
            n += 1;
            on_put();
        }
        tx.close();
    };
    let all = async {
        let mut set = Vec::new();
        for w in workers {
            set.push(w);
        }
        join_all(set).await;
    };
    tokio::join!(producer, all);
    Ok(Rc::try_unwrap(stats)
        .map(std::cell::RefCell::into_inner)
        .unwrap_or_default())
}

/// A bounded multi-consumer queue on tokio's primitives.
fn async_channel<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tokio::sync::mpsc::channel(cap.max(1));
    let rx = Rc::new(tokio::sync::Mutex::new(rx));
    (Sender(Some(tx)), Receiver(rx))
}

struct Sender<T>(Option<tokio::sync::mpsc::Sender<T>>);

impl<T> Sender<T> {
    async fn send(&self, v: T) -> Result<(), ()> {
        match &self.0 {
            Some(tx) => tx.send(v).await.map_err(|_| ()),
            None => Err(()),
        }
    }
    fn close(mut self) {
        self.0.take();
    }
}

struct Receiver<T>(Rc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<T>>>);

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver(self.0.clone())
    }
}

impl<T> Receiver<T> {
    async fn recv(&self) -> Result<T, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}

async fn join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

/// A progress bar on stdout while on a terminal (etcdctl draws pb's bar).
struct Bar {
    total: u64,
    done: u64,
    tty: bool,
}

impl Bar {
    fn new(total: u64) -> Bar {
        use std::io::IsTerminal;
        Bar {
            total: total.max(1),
            done: 0,
            tty: std::io::stdout().is_terminal(),
        }
    }
    fn set(&mut self, done: u64) {
        self.done = done.min(self.total);
        if self.tty {
            let width = 40;
            let filled = (self.done * width / self.total) as usize;
            print::emit(
                format!(
                    "\r{} / {} [{}{}] {}%",
                    self.done,
                    self.total,
                    "=".repeat(filled),
                    " ".repeat(width as usize - filled),
                    self.done * 100 / self.total
                )
                .as_bytes(),
            );
        }
    }
    fn finish(&mut self) {
        self.set(self.total);
        if self.tty {
            print::emit(b"\n");
        }
    }
}

fn report_errors(s: &Stats) -> bool {
    if s.errors.is_empty() {
        return true;
    }
    print::emit(b"FAIL: too many errors\n");
    for (e, n) in &s.errors {
        print::emit(format!("FAIL: ERROR({e}) -> {n}\n").as_bytes());
    }
    false
}

fn perf(p: &Parsed, _printer: &mut Printer) -> Result<Printed, Failure> {
    let (limit, clients) = load(p, [(150, 50), (1000, 200), (8000, 500), (15000, 1000)])?;
    let prefix = p.str("prefix").to_string();
    let seconds = perf_seconds();
    let rt = runtime()?;
    let ok = rt.block_on(async {
        let c = connect(p).await?;
        ensure_empty(&c, &prefix).await?;
        let mut bar = Bar::new(seconds);
        let started = Instant::now();
        let until = started + Duration::from_secs(seconds);
        let load = Load {
            prefix: &prefix,
            key_size: 256,
            value: vec![0u8; 1024],
            clients,
            rate: limit as f64,
            until: Some(until),
            count: None,
        };
        let stats = load_puts(p, load, || bar.set(started.elapsed().as_secs())).await?;
        bar.finish();
        let elapsed = started.elapsed().as_secs_f64();
        clean_up(p, &c, &prefix).await?;
        let mut ok = report_errors(&stats);
        let n = stats.latencies.len() as f64;
        let rps = n / elapsed;
        if rps / limit as f64 <= 0.9 {
            print::emit(
                format!("FAIL: Throughput too low: {} writes/s\n", rps as i64 + 1).as_bytes(),
            );
            ok = false;
        } else {
            print::emit(format!("PASS: Throughput is {} writes/s\n", rps as i64 + 1).as_bytes());
        }
        let slowest = stats.latencies.iter().cloned().fold(0.0, f64::max);
        if slowest > 0.5 {
            print::emit(format!("Slowest request took too long: {slowest:.6}s\n").as_bytes());
            ok = false;
        } else {
            print::emit(format!("PASS: Slowest request took {slowest:.6}s\n").as_bytes());
        }
        let mean = stats.latencies.iter().sum::<f64>() / n.max(1.0);
        let var = stats
            .latencies
            .iter()
            .map(|l| (l - mean) * (l - mean))
            .sum::<f64>()
            / n.max(1.0);
        let stddev = var.sqrt();
        if stddev > 0.1 {
            print::emit(format!("Stddev too high: {stddev:.6}s\n").as_bytes());
            ok = false;
        } else {
            print::emit(format!("PASS: Stddev is {stddev:.6}s\n").as_bytes());
        }
        Ok::<bool, Failure>(ok)
    })?;
    if ok {
        print::emit(b"PASS\n");
        Ok(Printed::Out(Vec::new()))
    } else {
        print::emit(b"FAIL\n");
        Err(Failure {
            code: exit::ERROR,
            message: String::new(),
        })
    }
}

/// `process_resident_memory_bytes` from the endpoint's `/metrics` (0 when it cannot be read).
fn resident_memory(ep: &str) -> f64 {
    use std::io::{Read, Write};
    let host = ep.strip_prefix("http://").unwrap_or(ep);
    if host.starts_with("https://") {
        return 0.0;
    }
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return 0.0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0.0;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn datascale(p: &Parsed, _printer: &mut Printer) -> Result<Printed, Failure> {
    let (limit, clients) = load(
        p,
        [
            (10_000, 50),
            (100_000, 200),
            (1_000_000, 500),
            (3_000_000, 1000),
        ],
    )?;
    let prefix = p.str("prefix").to_string();
    let eps = p.list("endpoints");
    let ep = eps
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:2379".into());
    let p = &p.with("endpoints", &ep);
    let rt = runtime()?;
    rt.block_on(async {
        let c = connect(p).await?;
        ensure_empty(&c, &prefix).await?;
        let fail = |m: &str| {
            print::emit(format!("{m}\n").as_bytes());
            Failure {
                code: exit::ERROR,
                message: String::new(),
            }
        };
        let before = resident_memory(&ep);
        if before == 0.0 {
            return Err(fail(
                "FAIL: Could not read process_resident_memory_bytes before the put operations.",
            ));
        }
        print::emit(
            format!(
                "Start data scale check for work load [{limit} key-value pairs, 1024 bytes per \
                 key-value, {clients} concurrent clients].\n"
            )
            .as_bytes(),
        );
        let mut bar = Bar::new(limit as u64);
        let mut done = 0u64;
        let load = Load {
            prefix: &prefix,
            key_size: 512,
            value: vec![0u8; 512],
            clients,
            rate: 0.0,
            until: None,
            count: Some(limit as u64),
        };
        let stats = load_puts(p, load, || {
            done += 1;
            bar.set(done);
        })
        .await?;
        bar.finish();
        let after = resident_memory(&ep);
        if after == 0.0 {
            return Err(fail(
                "FAIL: Could not read process_resident_memory_bytes after the put operations.",
            ));
        }
        clean_up(p, &c, &prefix).await?;
        if !report_errors(&stats) {
            return Err(Failure {
                code: exit::ERROR,
                message: String::new(),
            });
        }
        let mb = (after - before) / (1024.0 * 1024.0);
        print::emit(format!("PASS: Approximate system memory used : {mb:.2} MB.\n").as_bytes());
        Ok(())
    })?;
    Ok(Printed::Out(Vec::new()))
}
