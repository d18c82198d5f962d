//! The progress bar shown on stderr while a benchmark runs (as etcd's benchmark shows one), only
//! when stderr is a terminal so that logs and pipes stay clean.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How far the run should go: a count of operations, a duration, or neither (then only the count
/// so far is shown).
#[derive(Clone, Copy, Debug, Default)]
pub struct Goal {
    pub ops: Option<u64>,
    pub time: Option<Duration>,
}

/// Redraws the bar every 200 ms until dropped.
pub struct Bar {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Bar {
    pub fn start(done: Arc<AtomicU64>, goal: Goal) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar { task: None };
        }
        let start = Instant::now();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let n = done.load(Ordering::Relaxed);
                let elapsed = start.elapsed();
                eprint!("\r{}", line(n, elapsed, goal));
                let _ = std::io::stderr().flush();
            }
        });
        Bar { task: Some(task) }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            eprint!("\r{:78}\r", "");
        }
    }
}

/// One frame of the bar.
pub fn line(done: u64, elapsed: Duration, goal: Goal) -> String {
    const WIDTH: usize = 40;
    let fraction = match (goal.ops, goal.time) {
        (Some(total), _) if total > 0 => Some(done as f64 / total as f64),
        (_, Some(t)) if !t.is_zero() => Some(elapsed.as_secs_f64() / t.as_secs_f64()),
        _ => None,
    };
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    match fraction {
        Some(f) => {
            let f = f.clamp(0.0, 1.0);
            let filled = (f * WIDTH as f64) as usize;
            let total = goal.ops.map_or(String::new(), |t| format!(" / {t}"));
            format!(
                "{done}{total} [{}{}] {:5.1}% {:.0}/s {:.1}s",
                "=".repeat(filled),
                " ".repeat(WIDTH - filled),
                f * 100.0,
                rate,
                elapsed.as_secs_f64()
            )
        }
        None => format!("{done} ops {rate:.0}/s {:.1}s", elapsed.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let g = Goal {
            ops: Some(100),
            time: None,
        };
        let l = line(50, Duration::from_secs(1), g);
        assert!(l.starts_with("50 / 100 [===================="), "{l}");
        assert!(l.contains(" 50.0% 50/s 1.0s"), "{l}");
        let g = Goal {
            ops: None,
            time: Some(Duration::from_secs(4)),
        };
        assert!(line(10, Duration::from_secs(1), g).contains(" 25.0% "));
        assert_eq!(
            line(3, Duration::from_secs(3), Goal::default()),
            "3 ops 1/s 3.0s"
        );
    }
}
