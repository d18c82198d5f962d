//! etcd's health endpoints (server/etcdserver/api/etcdhttp/health.go, v3.6; `/health` as in
//! 3.5):
//!
//! - `/health`: `{"health":"true","reason":""}`, or 503 with the first failing check: an alarm
//!   not named by `?exclude=` ("ALARM NOSPACE"), no leader ("RAFT NO LEADER", skipped with
//!   `?serializable=true`), a failing read ("RANGE ERROR:<error>", linearizable unless
//!   `?serializable=true`).
//! - `/livez` (serializable_read) and `/readyz` (data_corruption, serializable_read,
//!   linearizable_read, non_learner): `ok`, with `?verbose` each check's `[+]name ok` first;
//!   503 with every check's line when one fails; `?exclude=name` skips a check;
//!   `/livez/<check>` and `/readyz/<check>` run one.
//!
//! The reads are a one-key, keys-only Range as root (etcd's `AuthStore().WithRoot`), so the
//! endpoints answer with auth enabled.

use http::{Method, Response, StatusCode};

use super::{Body, Query, error, method_not_allowed, nosniff, text};
use crate::context::Ctx;
use crate::kv::{linearizable, mvcc_status};

/// `/health`.
pub async fn health(ctx: &Ctx, method: &Method, query: &Query) -> Response<Body> {
    if method != Method::GET {
        return method_not_allowed();
    }
    let excluded = query.all("exclude");
    let serializable = query.get("serializable") == Some("true");
    let reason = if let Some(alarm) = alarms(ctx).into_iter().find(|a| !excluded.contains(a)) {
        Some(format!("ALARM {alarm}"))
    } else if !serializable && ctx.status.leader() == 0 {
        Some("RAFT NO LEADER".to_string())
    } else {
        read(ctx, serializable)
            .await
            .err()
            .map(|e| format!("RANGE ERROR:{e}"))
    };
    match reason {
        None => {
            super::HEALTH_SUCCESS.inc();
            text(r#"{"health":"true","reason":""}"#.to_string())
        }
        Some(reason) => {
            super::HEALTH_FAILURES.inc();
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(r#"{{"health":"false","reason":"{reason}"}}"#),
            )
        }
    }
}

/// The alarms raised, by etcd's names.
fn alarms(ctx: &Ctx) -> Vec<&'static str> {
    ctx.status
        .alarms()
        .iter()
        .map(|a| retcd_engine::etcd_db::alarm_name(a.alarm))
        .collect()
}

/// etcd's health read: a one-key Range, keys only.
async fn read(ctx: &Ctx, serializable: bool) -> Result<(), String> {
    if !serializable {
        linearizable(ctx)
            .await
            .map_err(|s| s.message().to_string())?;
    }
    let req = retcd_engine::request::RangeRequest {
        key: b"health".to_vec(),
        limit: 1,
        keys_only: true,
        ..Default::default()
    };
    ctx.reader
        .range(&req)
        .map(|_| ())
        .map_err(|e| mvcc_status(e).message().to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    DataCorruption,
    SerializableRead,
    LinearizableRead,
    NonLearner,
}

impl Check {
    fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
            Check::NonLearner => "non_learner",
        }
    }

    async fn run(self, ctx: &Ctx) -> Result<(), String> {
        match self {
            // No CORRUPT alarm is raised yet.
            Check::DataCorruption => Ok(()),
            Check::SerializableRead => read(ctx, true).await,
            Check::LinearizableRead => read(ctx, false).await,
            Check::NonLearner if ctx.status.is_learner() => {
                Err("not supported for learner".to_string())
            }
            Check::NonLearner => Ok(()),
        }
    }
}

/// `/livez` or `/readyz`, whole or one check.
pub struct Probe {
    path: &'static str,
    checks: &'static [Check],
    /// `/livez/<check>`: only this one, and `?exclude=` does not apply.
    only: Option<Check>,
}

const LIVEZ: &[Check] = &[Check::SerializableRead];
const READYZ: &[Check] = &[
    Check::DataCorruption,
    Check::SerializableRead,
    Check::LinearizableRead,
    Check::NonLearner,
];

impl Probe {
    /// The probe served at `path`, if any.
    pub fn of(path: &str) -> Option<Probe> {
        let (root, checks) = [("/livez", LIVEZ), ("/readyz", READYZ)]
            .into_iter()
            .find(|(root, _)| path.starts_with(root))?;
        let only = match &path[root.len()..] {
            "" => None,
            sub => Some(
                *checks
                    .iter()
                    .find(|c| sub.strip_prefix('/') == Some(c.name()))?,
            ),
        };
        Some(Probe {
            path: root,
            checks,
            only,
        })
    }

    pub async fn answer(&self, ctx: &Ctx, method: &Method, query: &Query) -> Response<Body> {
        if method != Method::GET {
            return method_not_allowed();
        }
        let excluded = query.all("exclude");
        let run: Vec<Check> = match self.only {
            Some(c) => vec![c],
            None => {
                let unknown: Vec<&str> = excluded
                    .iter()
                    .filter(|e| !self.checks.iter().any(|c| c.name() == **e))
                    .copied()
                    .collect();
                if !unknown.is_empty() {
                    tracing::warn!(path = self.path, missing_health_checks = ?unknown, "some health checks cannot be excluded");
                }
                self.checks
                    .iter()
                    .copied()
                    .filter(|c| !excluded.contains(&c.name()))
                    .collect()
            }
        };
        let mut lines = String::new();
        let mut failed = false;
        for c in run {
            match c.run(ctx).await {
                Ok(()) => lines.push_str(&format!("[+]{} ok\n", c.name())),
                Err(e) => {
                    failed = true;
                    lines.push_str(&format!("[-]{} failed: {e}\n", c.name()));
                }
            }
        }
        if failed {
            // Go's http.Error adds a newline to the lines (each ends with one already).
            return error(StatusCode::SERVICE_UNAVAILABLE, &lines);
        }
        let mut body = if query.has("verbose") {
            lines
        } else {
            String::new()
        };
        body.push_str("ok\n");
        nosniff(text(body))
    }
}
