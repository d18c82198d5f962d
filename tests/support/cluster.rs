//! Multi-member clusters of real etcd or retcd processes on loopback, driven with the real
//! etcdctl: start N members with --initial-cluster, find the leader, add members, and wait
//! (bounded) for a member to catch up.

use std::time::{Duration, Instant};

use super::proxy::Proxy;
use super::{Kind, Output, Server, free_ports, run_with_timeout};

/// How long a member may take to apply what the leader applied.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub kind: Kind,
    pub members: Vec<Server>,
    /// With [`Cluster::start_proxied`]: the proxy in front of each initial member's peer port.
    pub proxies: Vec<Proxy>,
    extra_args: Vec<String>,
    tmp: tempfile::TempDir,
}

/// One row of `etcdctl endpoint status -w json`.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    pub endpoint: String,
    pub member_id: u64,
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    pub revision: i64,
    pub is_learner: bool,
}

impl Cluster {
    /// Starts `n` members (names m0, m1, …) with one --initial-cluster and waits until each
    /// serves.
    pub fn start(kind: Kind, n: usize, extra_args: &[&str]) -> Cluster {
        Cluster::start_with(kind, n, extra_args, &[], false)
    }

    /// [`Cluster::start`] with environment variables for every member (retcd's test knobs).
    pub fn start_with_env(
        kind: Kind,
        n: usize,
        extra_args: &[&str],
        envs: &[(&str, &str)],
    ) -> Cluster {
        Cluster::start_with(kind, n, extra_args, envs, false)
    }

    /// [`Cluster::start`] with a [`Proxy`] in front of every member's peer port: the members
    /// advertise the proxies, so cutting a proxy cuts its member off from the others' traffic.
    pub fn start_proxied(kind: Kind, n: usize, extra_args: &[&str]) -> Cluster {
        Cluster::start_with(kind, n, extra_args, &[], true)
    }

    fn start_with(
        kind: Kind,
        n: usize,
        extra_args: &[&str],
        envs: &[(&str, &str)],
        proxied: bool,
    ) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-cluster-", kind.label()))
            .tempdir()
            .expect("tempdir");
        let ports = free_ports(3 * n);
        let proxies: Vec<Proxy> = if proxied {
            (0..n)
                .map(|i| Proxy::start(ports[2 * n + i], ports[2 * i + 1]))
                .collect()
        } else {
            Vec::new()
        };
        let peer_url = |i: usize| match proxies.get(i) {
            Some(p) => p.url(),
            None => format!("http://127.0.0.1:{}", ports[2 * i + 1]),
        };
        let initial: Vec<String> = (0..n).map(|i| format!("m{i}={}", peer_url(i))).collect();
        let initial = initial.join(",");
        let mut members: Vec<Server> = (0..n)
            .map(|i| {
                Server::member(
                    kind,
                    &tmp.path().join(format!("m{i}")),
                    &format!("m{i}"),
                    (ports[2 * i], ports[2 * i + 1]),
                    &initial,
                    "new",
                    extra_args,
                )
            })
            .collect();
        if proxied {
            for (i, m) in members.iter_mut().enumerate() {
                m.set_advertise_peer(&peer_url(i));
            }
        }
        for m in &mut members {
            for (k, v) in envs {
                m.set_env(k, v);
            }
            m.spawn_member();
        }
        for m in &mut members {
            m.wait_member_ready();
        }
        Cluster {
            kind,
            members,
            proxies,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            tmp,
        }
    }

    /// Starts every (stopped) member, then waits until each is ready: members of a cluster must
    /// all start before any can elect a leader.
    pub fn start_all(&mut self) {
        for m in &mut self.members {
            m.spawn_member();
        }
        for m in &mut self.members {
            m.wait_member_ready();
        }
    }

    /// The endpoints of the running members, comma-separated (etcdctl's --endpoints).
    pub fn endpoints(&mut self) -> String {
        self.members
            .iter_mut()
            .filter_map(|m| m.is_running().then(|| m.endpoint()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// etcdctl against every running member.
    pub fn etcdctl(&mut self, args: &[&str]) -> Output {
        let endpoints = self.endpoints();
        etcdctl_at(&endpoints, args)
    }

    /// `endpoint status` of each running member (by index), asked one at a time.
    pub fn statuses(&mut self) -> Vec<(usize, EndpointStatus)> {
        let mut out = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            if !m.is_running() {
                continue;
            }
            let o = m.etcdctl(&["endpoint", "status", "-w", "json"]);
            if let Some(s) = parse_status(&o.stdout).into_iter().next() {
                out.push((i, s));
            }
        }
        out
    }

    /// The index of the member every running member agrees leads (bounded wait).
    pub fn leader(&mut self) -> usize {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let st = self.statuses();
            if let Some((_, first)) = st.first() {
                let leader = first.leader;
                if leader != 0
                    && st.iter().all(|(_, s)| s.leader == leader)
                    && let Some((i, _)) = st.iter().find(|(_, s)| s.member_id == leader)
                {
                    return *i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {CATCH_UP_TIMEOUT:?}: {st:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The leader every member names when asked as `user` (`--user=NAME:PASSWORD`, for a cluster
    /// with auth on, where `endpoint status` needs one), waiting (bounded) until all members
    /// agree on one — on `want` when given.
    pub fn leader_as(&self, user: &str, want: Option<u64>) -> u64 {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let leaders: Vec<Option<u64>> = self
                .members
                .iter()
                .map(|m| {
                    let st = m.etcdctl(&[user, "endpoint", "status", "-w", "json"]);
                    parse_status(&st.stdout)
                        .first()
                        .map(|s| s.leader)
                        .filter(|&l| l != 0)
                })
                .collect();
            if let Some(l) = leaders[0]
                && leaders.iter().all(|x| *x == Some(l))
                && want.is_none_or(|w| w == l)
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader (wanted {want:?}) within {CATCH_UP_TIMEOUT:?}: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running member applied at least what `member` applied when called.
    pub fn wait_caught_up(&mut self) {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let st = self.statuses();
            let max = st.iter().map(|(_, s)| s.applied_index).max().unwrap_or(0);
            if st
                .iter()
                .all(|(_, s)| s.applied_index >= max && s.revision > 0)
            {
                let rev = st[0].1.revision;
                if st.iter().all(|(_, s)| s.revision == rev) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "members did not catch up within {CATCH_UP_TIMEOUT:?}: {st:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A membership change through etcdctl, asked again while the cluster answers "unhealthy
    /// cluster": etcd refuses to change the voters until its connections to them are 5 s old
    /// (its HealthInterval). Bounded.
    pub fn reconfigure(&mut self, args: &[&str]) -> Output {
        let endpoints = self.endpoints();
        reconfigure_at(&endpoints, args)
    }

    /// `member remove` of member `i`, asked of the others (the removed member itself may stop
    /// before it answers: etcd then says "server stopped"); see [`Cluster::reconfigure`].
    pub fn member_remove(&mut self, i: usize, id: u64) -> Output {
        let endpoints: Vec<String> = self
            .members
            .iter_mut()
            .enumerate()
            .filter_map(|(j, m)| (j != i && m.is_running()).then(|| m.endpoint()))
            .collect();
        reconfigure_at(
            &endpoints.join(","),
            &["member", "remove", &format!("{id:x}")],
        )
    }

    /// `member add NAME --peer-urls=…` (a learner with `learner`), then starts the new member
    /// with --initial-cluster-state existing and an empty data dir; returns its index.
    pub fn add_member(&mut self, name: &str, learner: bool) -> usize {
        let ports = free_ports(2);
        let peer_url = format!("http://127.0.0.1:{}", ports[1]);
        let mut args = vec![
            "member".to_string(),
            "add".to_string(),
            name.to_string(),
            format!("--peer-urls={peer_url}"),
        ];
        if learner {
            args.push("--learner".to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.reconfigure(&args);
        assert!(out.success(), "member add: {out:?}");
        // etcdctl prints the new member's ETCD_INITIAL_CLUSTER.
        let initial = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no ETCD_INITIAL_CLUSTER in {out:?}"))
            .to_string();
        let extra: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        let mut m = Server::member(
            self.kind,
            &self.tmp.path().join(name),
            name,
            (ports[0], ports[1]),
            &initial,
            "existing",
            &extra,
        );
        m.spawn_member();
        if !learner {
            m.wait_member_ready();
        }
        self.members.push(m);
        self.members.len() - 1
    }

    /// The member id of member `i` (from its `endpoint status`).
    pub fn member_id(&mut self, i: usize) -> u64 {
        let m = &mut self.members[i];
        let out = m.etcdctl(&["endpoint", "status", "-w", "json"]);
        parse_status(&out.stdout)
            .first()
            .unwrap_or_else(|| panic!("no status from {}: {out:?}", m.name()))
            .member_id
    }
}

/// A membership change at `endpoints`, asked again while the answer is "unhealthy cluster"
/// (etcd's HealthInterval: 5 s after its connections came up). Bounded.
pub fn reconfigure_at(endpoints: &str, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = etcdctl_at(endpoints, args);
        if out.success() || !out.stderr.contains("unhealthy cluster") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn etcdctl_at(endpoints: &str, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(super::etcdctl_binary());
    super::remove_env_with_prefixes(&mut cmd, &["ETCDCTL_"]);
    cmd.env("ETCDCTL_API", "3");
    cmd.arg(format!("--endpoints={endpoints}"));
    cmd.args(args);
    run_with_timeout(cmd, None, super::ETCDCTL_TIMEOUT)
        .unwrap_or_else(|e| panic!("etcdctl {args:?} at {endpoints}: {e}"))
}

/// Parses `etcdctl endpoint status -w json` (an array, one object per endpoint).
pub fn parse_status(json: &str) -> Vec<EndpointStatus> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let s = &e["Status"];
                    EndpointStatus {
                        endpoint: e["Endpoint"].as_str().unwrap_or("").to_string(),
                        member_id: u(&s["header"]["member_id"]),
                        leader: u(&s["leader"]),
                        raft_term: u(&s["raftTerm"]),
                        raft_index: u(&s["raftIndex"]),
                        applied_index: u(&s["raftAppliedIndex"]),
                        revision: s["header"]["revision"].as_i64().unwrap_or(0),
                        is_learner: s["isLearner"].as_bool().unwrap_or(false),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}
