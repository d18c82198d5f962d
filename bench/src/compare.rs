//! Side-by-side tables of two stores' results: reads the JSON that `run --output json` writes
//! (files named `LABEL-ROUND-PROFILE.json`, rounds run A B A B so drift cancels) and prints, per
//! profile, job and result class, each store's mean throughput and latency over its rounds and
//! the contender ÷ baseline ratios.
//!
//! Invariants: a row is printed only when both stores have it in every round they ran; a
//! missing row is reported, never silently averaged over fewer rounds.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// (profile, job, class) → store → one entry per round: (ops/s, p50 s, p99 s, errors).
type Table = BTreeMap<(String, usize, String, String), BTreeMap<String, Vec<Round>>>;

#[derive(Clone, Copy, Debug)]
struct Round {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

fn parse_name(path: &std::path::Path) -> Result<(String, u32, String), String> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: not a results file", path.display()))?;
    let mut parts = stem.splitn(3, '-');
    let (Some(label), Some(round), Some(profile)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "{}: expected LABEL-ROUND-PROFILE.json",
            path.display()
        ));
    };
    let round = round
        .parse()
        .map_err(|_| format!("{}: round {round:?} is not a number", path.display()))?;
    Ok((label.to_string(), round, profile.to_string()))
}

fn read(files: &[PathBuf]) -> Result<Table, String> {
    let mut table = Table::new();
    for path in files {
        let (label, _round, profile) = parse_name(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let jobs = v["jobs"]
            .as_array()
            .ok_or_else(|| format!("{}: no \"jobs\"", path.display()))?;
        for (index, job) in jobs.iter().enumerate() {
            let name = job["name"].as_str().unwrap_or("?").to_string();
            let Some(classes) = job["classes"].as_object() else {
                continue;
            };
            for (class, s) in classes {
                let pct = |p: f64| {
                    s["percentiles"].as_array().and_then(|a| {
                        a.iter()
                            .find(|e| e["p"].as_f64() == Some(p))
                            .and_then(|e| e["s"].as_f64())
                    })
                };
                let round = Round {
                    rps: s["rps"].as_f64().unwrap_or(0.0),
                    p50: pct(50.0).unwrap_or(0.0),
                    p99: pct(99.0).unwrap_or(0.0),
                    errors: s["error_count"].as_u64().unwrap_or(0),
                };
                table
                    .entry((profile.clone(), index, name.clone(), class.clone()))
                    .or_default()
                    .entry(label.clone())
                    .or_default()
                    .push(round);
            }
        }
    }
    Ok(table)
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0u32), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / f64::from(n) }
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

/// Milliseconds, or a dash where etcd's percentile rule has no sample (p99 of fewer than 100).
fn ms(seconds: f64) -> String {
    if seconds > 0.0 {
        format!("{:.3}", seconds * 1e3)
    } else {
        "—".into()
    }
}

/// The Markdown table comparing `contender` with `baseline` over `files`.
pub fn markdown(baseline: &str, contender: &str, files: &[PathBuf]) -> Result<String, String> {
    let table = read(files)?;
    if table.is_empty() {
        return Err("no results to compare".into());
    }
    let mut out = format!(
        "| profile | job | op | {baseline} ops/s | {contender} ops/s | throughput {contender} ÷ {baseline} | \
         {baseline} p50 ms | {contender} p50 ms | {baseline} p99 ms | {contender} p99 ms | \
         p99 {baseline} ÷ {contender} | rounds (ops/s) |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    );
    let mut missing = Vec::new();
    for ((profile, _, job, class), stores) in &table {
        let (Some(a), Some(b)) = (stores.get(baseline), stores.get(contender)) else {
            missing.push(format!("{profile}/{job}/{class}"));
            continue;
        };
        let (a_rps, b_rps) = (mean(a.iter().map(|r| r.rps)), mean(b.iter().map(|r| r.rps)));
        let (a50, b50) = (mean(a.iter().map(|r| r.p50)), mean(b.iter().map(|r| r.p50)));
        let (a99, b99) = (mean(a.iter().map(|r| r.p99)), mean(b.iter().map(|r| r.p99)));
        let errors: u64 = a.iter().chain(b).map(|r| r.errors).sum();
        let rounds = |v: &[Round]| {
            v.iter()
                .map(|r| format!("{:.0}", r.rps))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let op = if errors > 0 {
            format!("{class} (**{errors} errors**)")
        } else {
            class.clone()
        };
        out.push_str(&format!(
            "| {profile} | {job} | {op} | {a_rps:.0} | {b_rps:.0} | **{}** | {} | {} | {} | {} | {} | {baseline}: {}; {contender}: {} |\n",
            ratio(b_rps, a_rps),
            ms(a50),
            ms(b50),
            ms(a99),
            ms(b99),
            ratio(a99, b99),
            rounds(a),
            rounds(b),
        ));
    }
    if !missing.is_empty() {
        out.push_str(&format!(
            "\nMissing in one of the stores: {}\n",
            missing.join(", ")
        ));
    }
    Ok(out)
}

/// Requests (every class but watch events) in one results file.
fn requests_in(path: &std::path::Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0;
    for job in v["jobs"].as_array().into_iter().flatten() {
        for (class, st) in job["classes"].as_object().into_iter().flatten() {
            if class != "event" {
                n += st["count"].as_u64().unwrap_or(0) + st["error_count"].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(n)
}

/// CPU time per request of each store's server and of the generator, from `cpu` (lines
/// `LABEL ROUND PROFILE SERVER_CPU_SECONDS GENERATOR_CPU_SECONDS`, one per results file). On a
/// machine where the generator and the server share the cores, CPU per request is the measure
/// that their competition does not distort.
pub fn cpu_markdown(
    baseline: &str,
    contender: &str,
    files: &[PathBuf],
    cpu: &std::path::Path,
) -> Result<String, String> {
    let text = std::fs::read_to_string(cpu).map_err(|e| format!("{}: {e}", cpu.display()))?;
    // profile → label → (server s, generator s, requests) summed over rounds.
    let mut sums: BTreeMap<String, BTreeMap<String, (f64, f64, u64)>> = BTreeMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || {
            format!(
                "{}:{}: expected LABEL ROUND PROFILE SERVER_S GENERATOR_S",
                cpu.display(),
                i + 1
            )
        };
        let [label, round, profile, server, generator] = f[..] else {
            return Err(bad());
        };
        let (server, generator): (f64, f64) = (
            server.parse().map_err(|_| bad())?,
            generator.parse().map_err(|_| bad())?,
        );
        let name = format!("{label}-{round}-{profile}.json");
        let Some(path) = files.iter().find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_str() == Some(name.as_str()))
        }) else {
            continue;
        };
        let e = sums
            .entry(profile.to_string())
            .or_default()
            .entry(label.to_string())
            .or_default();
        e.0 += server;
        e.1 += generator;
        e.2 += requests_in(path)?;
    }
    let per = |e: &(f64, f64, u64), server: bool| {
        if e.2 == 0 {
            0.0
        } else {
            (if server { e.0 } else { e.1 }) / e.2 as f64 * 1e6
        }
    };
    let mut out = format!(
        "| profile | {baseline} server µs CPU / request | {contender} server µs CPU / request | {baseline} ÷ {contender} | \
         generator µs CPU / request ({baseline} runs, {contender} runs) |\n|---|---:|---:|---:|---|\n"
    );
    for (profile, stores) in &sums {
        let (Some(a), Some(b)) = (stores.get(baseline), stores.get(contender)) else {
            continue;
        };
        let (sa, sb) = (per(a, true), per(b, true));
        out.push_str(&format!(
            "| {profile} | {sa:.1} | {sb:.1} | **{}** | {:.1}, {:.1} |\n",
            ratio(sa, sb),
            per(a, false),
            per(b, false)
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, rps: f64, p99: f64) -> PathBuf {
        let v = serde_json::json!({"profile": "p", "jobs": [{"name": "w", "classes": {"op": {
            "rps": rps, "error_count": 0,
            "percentiles": [{"p": 50.0, "s": p99 / 2.0}, {"p": 99.0, "s": p99}]}}}]});
        let path = dir.join(name);
        std::fs::write(&path, v.to_string()).unwrap();
        path
    }

    #[test]
    fn ratios_over_rounds() {
        let dir = std::env::temp_dir().join(format!("retcd-bench-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = vec![
            write(&dir, "etcd-1-p.json", 1000.0, 0.004),
            write(&dir, "retcd-1-p.json", 3000.0, 0.002),
            write(&dir, "etcd-2-p.json", 1200.0, 0.004),
            write(&dir, "retcd-2-p.json", 3600.0, 0.002),
        ];
        let md = markdown("etcd", "retcd", &files).unwrap();
        let row = md.lines().nth(2).unwrap();
        assert_eq!(
            row,
            "| p | w | op | 1100 | 3300 | **3.00×** | 2.000 | 1.000 | 4.000 | 2.000 | 2.00× | etcd: 1000 1200; retcd: 3000 3600 |"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpu_per_request() {
        let dir = std::env::temp_dir().join(format!("retcd-bench-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = Vec::new();
        for (name, count) in [("etcd-1-p.json", 1000), ("retcd-1-p.json", 2000)] {
            let v = serde_json::json!({"jobs": [{"name": "w", "classes": {
                "op": {"count": count, "error_count": 0}, "event": {"count": 99999}}}]});
            std::fs::write(dir.join(name), v.to_string()).unwrap();
            files.push(dir.join(name));
        }
        let cpu = dir.join("cpu.txt");
        std::fs::write(&cpu, "etcd 1 p 0.1 0.02\nretcd 1 p 0.05 0.04\n").unwrap();
        let md = cpu_markdown("etcd", "retcd", &files, &cpu).unwrap();
        assert_eq!(
            md.lines().nth(2).unwrap(),
            "| p | 100.0 | 25.0 | **4.00×** | 20.0, 20.0 |"
        );
        std::fs::write(&cpu, "etcd 1 p\n").unwrap();
        assert!(
            cpu_markdown("etcd", "retcd", &files, &cpu)
                .unwrap_err()
                .contains("cpu.txt:1:")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_must_say_store_round_profile() {
        assert!(parse_name(std::path::Path::new("etcd.json")).is_err());
        assert_eq!(
            parse_name(std::path::Path::new("/x/retcd-2-k8s-mix.json")).unwrap(),
            ("retcd".to_string(), 2, "k8s-mix".to_string())
        );
    }
}
