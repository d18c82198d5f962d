//! Issue 14: Patroni's etcd3 DCS layer (PyPI's patroni, in the virtualenv `.ci/setup` makes)
//! runs its HA loop's DCS calls against the JSON gateway without PostgreSQL:
//! tests/patroni/dcs_smoke.py, against real etcd first (which proves the script), then retcd.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{Kind, Server};

const SMOKE_TIMEOUT: Duration = Duration::from_secs(120);

fn smoke(s: &Server) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/patroni-venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run .ci/setup (it installs Patroni)",
        python.display()
    );
    let mut cmd = Command::new(python);
    cmd.arg(root.join("tests/patroni/dcs_smoke.py"))
        .arg(format!("127.0.0.1:{}", s.client_port()))
        // Patroni's modules would otherwise shadow the standard library's from the cwd.
        .current_dir(s.dir());
    let out = support::run_with_timeout(cmd, None, SMOKE_TIMEOUT).expect("python");
    assert!(
        out.success() && out.stdout.contains("patroni dcs smoke ok"),
        "{:?}: {out:?}",
        s.kind()
    );
}

#[test]
fn patronis_etcd3_dcs_runs_against_the_gateway() {
    let (etcd, retcd) = support::start_both(&[]);
    smoke(&etcd);
    assert_eq!(retcd.kind(), Kind::Retcd);
    smoke(&retcd);
}
