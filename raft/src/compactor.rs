//! Automatic compaction: etcd 3.5's `--auto-compaction-mode` / `--auto-compaction-retention`
//! (etcd's `server/etcdserver/api/v3compactor`), on the sequencer core.
//!
//! This module owns *when* a member compacts and *to which revision*; the compaction itself is
//! an ordinary Compact request (physical = false) proposed through Raft, so every member applies
//! it at the same place in the log, and its deletions then run in bounded batches between the
//! sequencer's rounds like any client's compaction (engine/DESIGN.md §4.9).
//!
//! Two parts:
//! * [`Schedule`]: etcd's two compactor loops rewritten as a deterministic, I/O-free state
//!   machine. It is fed `(now, current revision, is leader)` on every sequencer tick and answers
//!   "compact to R" at most once per proposal; the outcome comes back through
//!   [`Schedule::finished`]. Unit-tested below with made-up instants, no clock, no sockets.
//! * [`AutoCompactor`]: the sequencer's glue. It proposes what the schedule asks for, watches the
//!   proposal's reply without waiting for it (the sequencer never blocks on it) and logs etcd's
//!   messages.
//!
//! etcd's behaviour, kept here:
//! * periodic (retention `P`): the current revision is sampled every `min(P, 1h) / 10`; the
//!   first compaction comes once `P` has passed since the start, later ones every
//!   `min(P, 1h)` after the last success, each to the oldest sample in a window of
//!   `P / (min(P, 1h) / 10) + 1` samples (the revision of about `P` ago). A failed attempt is
//!   retried at the next sample. Samples go on while the member is not the leader (etcd's
//!   `Pause` only skips the compaction step), so a member that becomes leader compacts to the
//!   revision of `P` ago, never to an older one it recorded before.
//! * revision (retention `N` revisions): every 5 min (`revision_interval`), the leader compacts
//!   to `current − N` when that is positive and differs from the last revision it compacted to.
//! * only the leader proposes (etcd pauses a follower's compactor and resumes it on the
//!   leader); "required revision has been compacted" counts as success, as in etcd.
//!
//! Invariants: at most one compaction of this member is in flight; while it is, the schedule
//! neither samples nor asks again (etcd's loop is blocked in its `Compact` call meanwhile); every
//! proposal is answered (applied, failed or timed out by the core), so the schedule always
//! resumes. Only [`crate::sequencer`] calls this: [`AutoCompactor::duties`] on each tick once
//! the member serves, [`AutoCompactor::collect`] after each round of applies.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use retcd_engine::mvcc::MvccError;
use retcd_engine::request::{CompactRequest, Request};
use tracing::{info, warn};

use crate::core::{Core, Proposal};
use crate::reply::ProposeError;

/// etcd's revision-mode check interval (`revInterval`).
pub const REVISION_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// etcd's `retryDivisor`: a periodic compactor samples ten times per compaction interval.
const RETRY_DIVISOR: u32 = 10;

/// The longest compaction interval of periodic mode (longer retentions compact hourly).
const MAX_COMPACT_INTERVAL: Duration = Duration::from_secs(3600);

/// What `--auto-compaction-mode` and `--auto-compaction-retention` ask for (a zero retention
/// means no automatic compaction and is represented by no `Retention` at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// `periodic`: keep this much time of history.
    Periodic(Duration),
    /// `revision`: keep this many revisions.
    Revisions(i64),
}

/// How a proposed compaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied.
    Done,
    /// Refused because the store was already compacted at or beyond it: success for etcd.
    AlreadyCompacted,
    /// Anything else (no leader, timeout, dropped proposal, …): retried later.
    Failed,
}

/// etcd's two compactor loops as a state machine (see the module documentation).
#[derive(Debug)]
pub struct Schedule {
    mode: Mode,
    /// When the loop next wakes up; `None`: at the next poll, which starts a loop iteration
    /// (etcd's top of loop: after the start and after each compaction attempt).
    next_wake: Option<Instant>,
    /// The revision proposed and not answered yet.
    in_flight: Option<i64>,
}

#[derive(Debug)]
enum Mode {
    Periodic {
        period: Duration,
        /// `min(period, 1h) / 10`: how often a revision is sampled (and a failure retried).
        retry: Duration,
        /// `min(period, 1h)`: the time between compactions after the first.
        compact_interval: Duration,
        /// How many samples are kept: the oldest is the revision of `period` ago.
        window: usize,
        samples: VecDeque<i64>,
        /// `period` until the first compaction attempt, then `compact_interval`.
        base_interval: Duration,
        /// The start, then the end of the last successful compaction.
        last_success: Option<Instant>,
    },
    Revision {
        retention: i64,
        interval: Duration,
        /// The last revision compacted to (0: none yet).
        prev: i64,
    },
}

impl Schedule {
    /// A schedule for `retention`; `revision_interval` is etcd's 5 min ([`REVISION_INTERVAL`])
    /// except in tests. Periodic retentions must be positive.
    pub fn new(retention: Retention, revision_interval: Duration) -> Schedule {
        let mode = match retention {
            Retention::Periodic(period) => {
                let compact_interval = period.min(MAX_COMPACT_INTERVAL);
                // A retention under 10 ns would make the sample interval 0: one nanosecond keeps
                // the arithmetic defined (the sequencer's tick is the real floor anyway).
                let retry = (compact_interval / RETRY_DIVISOR).max(Duration::from_nanos(1));
                let window = (period.as_nanos() / retry.as_nanos()) as usize + 1;
                Mode::Periodic {
                    period,
                    retry,
                    compact_interval,
                    window,
                    samples: VecDeque::with_capacity(window.min(4096) + 1),
                    base_interval: period,
                    last_success: None,
                }
            }
            Retention::Revisions(retention) => Mode::Revision {
                retention,
                interval: revision_interval,
                prev: 0,
            },
        };
        Schedule {
            mode,
            next_wake: None,
            in_flight: None,
        }
    }

    /// Called on every tick with the member's current revision and whether it leads. Returns
    /// the revision to compact to when a compaction is due now; the caller proposes it and
    /// reports its end through [`Schedule::finished`].
    pub fn poll(&mut self, now: Instant, revision: i64, leader: bool) -> Option<i64> {
        if self.in_flight.is_some() {
            return None;
        }
        let Some(wake) = self.next_wake else {
            // Top of etcd's loop.
            match &mut self.mode {
                Mode::Periodic {
                    retry,
                    window,
                    samples,
                    last_success,
                    ..
                } => {
                    last_success.get_or_insert(now);
                    record(samples, *window, revision);
                    self.next_wake = Some(now + *retry);
                }
                Mode::Revision { interval, .. } => self.next_wake = Some(now + *interval),
            }
            return None;
        };
        if now < wake {
            return None;
        }
        let target = match &mut self.mode {
            Mode::Periodic {
                period,
                retry,
                compact_interval,
                window,
                samples,
                base_interval,
                last_success,
            } => {
                let since = now.saturating_duration_since(last_success.unwrap_or(now));
                if !leader || since < *base_interval {
                    // Paused or not due: sample and sleep again.
                    record(samples, *window, revision);
                    self.next_wake = Some(now + *retry);
                    return None;
                }
                // After the first attempt (whatever its outcome), the interval shrinks from the
                // retention to at most an hour.
                if *base_interval == *period {
                    *base_interval = *compact_interval;
                }
                *samples.front().expect("sampled at the start")
            }
            Mode::Revision {
                retention,
                interval,
                prev,
            } => {
                let target = revision - *retention;
                if !leader || target <= 0 || target == *prev {
                    self.next_wake = Some(now + *interval);
                    return None;
                }
                target
            }
        };
        self.in_flight = Some(target);
        self.next_wake = None;
        Some(target)
    }

    /// The compaction asked for by the last [`Schedule::poll`] ended at `now`.
    pub fn finished(&mut self, now: Instant, outcome: Outcome) {
        let Some(target) = self.in_flight.take() else {
            return;
        };
        let ok = matches!(outcome, Outcome::Done | Outcome::AlreadyCompacted);
        match &mut self.mode {
            Mode::Periodic { last_success, .. } => {
                if ok {
                    *last_success = Some(now);
                }
                // The next poll samples and sleeps a retry interval (etcd's top of loop).
                self.next_wake = None;
            }
            Mode::Revision { interval, prev, .. } => {
                if ok {
                    *prev = target;
                }
                self.next_wake = Some(now + *interval);
            }
        }
    }

    /// The revision proposed and not answered yet.
    pub fn in_flight(&self) -> Option<i64> {
        self.in_flight
    }
}

/// Appends a sample, dropping the oldest beyond `window` (one per sample, as etcd does).
fn record(samples: &mut VecDeque<i64>, window: usize, revision: i64) {
    samples.push_back(revision);
    if samples.len() > window {
        samples.pop_front();
    }
}

/// The sequencer's automatic compaction: a [`Schedule`] and the reply of its proposal in flight.
pub struct AutoCompactor {
    retention: Retention,
    schedule: Schedule,
    /// The proposal in flight: when it was proposed and where its outcome arrives.
    waiting: Option<(
        Instant,
        flume::Receiver<Result<retcd_engine::mvcc::WriteResult, ProposeError>>,
    )>,
}

impl AutoCompactor {
    pub fn new(retention: Retention, revision_interval: Duration) -> AutoCompactor {
        // etcd names its settings in its start-up line; an operator looking for why history
        // disappears finds them here.
        match retention {
            Retention::Periodic(p) => info!(compact_period = ?p, "auto periodic compaction on"),
            Retention::Revisions(n) => info!(
                revision_compaction_retention = n,
                check_interval = ?revision_interval,
                "auto revision compaction on"
            ),
        }
        AutoCompactor {
            retention,
            schedule: Schedule::new(retention, revision_interval),
            waiting: None,
        }
    }

    /// Takes the outcome of the proposal in flight if it has come (a channel read, never a
    /// wait). The sequencer calls it after each round's applies, so that the time it took and
    /// the schedule's restart are not rounded up to the next tick.
    pub fn collect(&mut self, now: Instant) {
        if let Some((since, rx)) = &self.waiting {
            let outcome = match rx.try_recv() {
                Ok(Ok(_)) => Some(Ok(())),
                Ok(Err(e)) => Some(Err(e)),
                Err(flume::TryRecvError::Empty) => None,
                // The core answers every waiter; a dropped sender is a shutdown.
                Err(flume::TryRecvError::Disconnected) => Some(Err(ProposeError::Stopped)),
            };
            if let Some(outcome) = outcome {
                let took = now.saturating_duration_since(*since);
                self.waiting = None;
                let revision = self.schedule.in_flight().unwrap_or_default();
                let outcome = match outcome {
                    Ok(()) => Outcome::Done,
                    Err(ProposeError::Apply(MvccError::Compacted)) => Outcome::AlreadyCompacted,
                    Err(e) => {
                        self.log_failure(revision, &e);
                        Outcome::Failed
                    }
                };
                if outcome != Outcome::Failed {
                    self.log_completed(revision, took);
                }
                self.schedule.finished(now, outcome);
            }
        }
    }

    /// One tick's work: collect the outcome of the proposal in flight, then propose the
    /// compaction the schedule asks for, if any. Never waits.
    pub fn duties(&mut self, core: &mut Core, now: Instant) {
        self.collect(now);
        let Some(revision) = self
            .schedule
            .poll(now, core.mvcc().revision(), core.is_leader())
        else {
            return;
        };
        self.log_start(revision);
        let (tx, rx) = flume::bounded(1);
        let data = Request::Compact(CompactRequest {
            revision,
            physical: false,
        })
        .encode();
        core.propose(Proposal { data, reply: tx }, now);
        self.waiting = Some((now, rx));
    }

    // etcd 3.5's log lines (zap messages and fields), one pair per mode.
    fn log_start(&self, revision: i64) {
        match self.retention {
            Retention::Periodic(p) => info!(
                revision,
                compact_period = ?p,
                "starting auto periodic compaction"
            ),
            Retention::Revisions(n) => info!(
                revision,
                revision_compaction_retention = n,
                "starting auto revision compaction"
            ),
        }
    }

    fn log_completed(&self, revision: i64, took: Duration) {
        match self.retention {
            Retention::Periodic(p) => info!(
                revision,
                compact_period = ?p,
                ?took,
                "completed auto periodic compaction"
            ),
            Retention::Revisions(n) => info!(
                revision,
                revision_compaction_retention = n,
                ?took,
                "completed auto revision compaction"
            ),
        }
    }

    fn log_failure(&self, revision: i64, error: &ProposeError) {
        match (self.retention, &self.schedule.mode) {
            (Retention::Periodic(p), Mode::Periodic { retry, .. }) => warn!(
                revision,
                compact_period = ?p,
                retry_interval = ?retry,
                %error,
                "failed auto periodic compaction"
            ),
            (Retention::Revisions(n), Mode::Revision { interval, .. }) => warn!(
                revision,
                revision_compaction_retention = n,
                retry_interval = ?interval,
                %error,
                "failed auto revision compaction"
            ),
            _ => unreachable!("the schedule is built from the retention"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    /// Drives a schedule the way the sequencer does: a poll every `tick`, the revision growing
    /// by `rate` per second of simulated time, each proposal answered at once with `outcome`.
    struct Driver {
        schedule: Schedule,
        start: Instant,
        now: Instant,
        tick: Duration,
        rate: i64,
        leader: bool,
        outcome: Outcome,
        /// (time since start, revision compacted to).
        compactions: Vec<(Duration, i64)>,
    }

    impl Driver {
        fn new(retention: Retention, tick: Duration, rate: i64) -> Driver {
            let start = Instant::now();
            Driver {
                schedule: Schedule::new(retention, REVISION_INTERVAL),
                start,
                now: start,
                tick,
                rate,
                leader: true,
                outcome: Outcome::Done,
                compactions: Vec::new(),
            }
        }

        fn revision_at(&self, t: Duration) -> i64 {
            1 + self.rate * t.as_millis() as i64 / 1000
        }

        fn elapsed(&self) -> Duration {
            self.now - self.start
        }

        /// Polls every tick until `until` (time since start) has passed.
        fn run_until(&mut self, until: Duration) {
            while self.elapsed() < until {
                let rev = self.revision_at(self.elapsed());
                if let Some(r) = self.schedule.poll(self.now, rev, self.leader) {
                    self.compactions.push((self.elapsed(), r));
                    self.schedule.finished(self.now, self.outcome);
                }
                self.now += self.tick;
            }
        }
    }

    #[test]
    fn periodic_one_hour_compacts_hourly_to_the_revision_of_an_hour_ago() {
        // A revision per second, polled every second: samples every 6 min, window of 11.
        let mut d = Driver::new(Retention::Periodic(HOUR), Duration::from_secs(1), 1);
        d.run_until(HOUR - Duration::from_secs(1));
        assert!(d.compactions.is_empty(), "{:?}", d.compactions);
        d.run_until(5 * HOUR + MIN);
        let times: Vec<u64> = d.compactions.iter().map(|(t, _)| t.as_secs()).collect();
        // The first after one retention, then one per hour after the last success; each wake
        // comes one poll after the sample time (the tick), so the hours drift by a second.
        assert_eq!(times.len(), 5, "{:?}", d.compactions);
        assert_eq!(times[0], 3600);
        for w in times.windows(2) {
            assert!((3600..=3602).contains(&(w[1] - w[0])), "{times:?}");
        }
        // First: the sample taken at the start (an hour ago). Later: the oldest of 11 samples,
        // i.e. 66 min before the compaction (etcd's window holds P/retry + 1 samples).
        assert_eq!(d.compactions[0].1, 1);
        for (t, r) in &d.compactions[1..] {
            let age = t.as_secs() as i64 - (r - 1);
            assert!((60 * 60..=67 * 60).contains(&age), "{t:?} {r}");
        }
    }

    #[test]
    fn periodic_ten_hours_compacts_hourly_keeping_ten_hours() {
        let mut d = Driver::new(Retention::Periodic(10 * HOUR), Duration::from_secs(10), 1);
        d.run_until(10 * HOUR - MIN);
        assert!(d.compactions.is_empty());
        d.run_until(13 * HOUR);
        assert_eq!(d.compactions.len(), 3, "{:?}", d.compactions);
        // Every hour (min(P, 1h)), each to the revision of about ten hours ago.
        for (t, r) in &d.compactions {
            let age = t.as_secs() as i64 - (r - 1);
            assert!((10 * 3600..=10 * 3600 + 7 * 60).contains(&age), "{t:?} {r}");
        }
        let gap = d.compactions[1].0 - d.compactions[0].0;
        assert!(gap >= HOUR && gap <= HOUR + MIN, "{gap:?}");
    }

    #[test]
    fn periodic_short_retention_compacts_every_retention() {
        // "2s": samples every 200 ms, a compaction every 2 s to the revision of ~2 s ago.
        let mut d = Driver::new(
            Retention::Periodic(Duration::from_secs(2)),
            Duration::from_millis(100),
            100,
        );
        d.run_until(Duration::from_secs(20));
        assert!(
            (8..=10).contains(&d.compactions.len()),
            "{:?}",
            d.compactions
        );
        assert!(d.compactions[0].0 >= Duration::from_secs(2));
        for (t, r) in &d.compactions {
            // At 100 revisions a second, the compacted revision is 2.0–2.5 s old.
            let age_ms = t.as_millis() as i64 - (r - 1) * 10;
            assert!((2000..=2500).contains(&age_ms), "{t:?} {r}");
        }
        // "5m": every 5 min, to the revision of 5–5.5 min ago.
        let mut d = Driver::new(Retention::Periodic(5 * MIN), Duration::from_secs(1), 1);
        d.run_until(31 * MIN);
        assert_eq!(d.compactions.len(), 6, "{:?}", d.compactions);
        for (t, r) in &d.compactions {
            let age = t.as_secs() as i64 - (r - 1);
            assert!((300..=335).contains(&age), "{t:?} {r}");
        }
    }

    #[test]
    fn periodic_failure_is_retried_at_the_next_sample() {
        let mut d = Driver::new(Retention::Periodic(HOUR), Duration::from_secs(1), 1);
        d.outcome = Outcome::Failed;
        d.run_until(HOUR + 13 * MIN);
        // At 60 min, then every 6 min (the retry interval).
        let times: Vec<u64> = d
            .compactions
            .iter()
            .map(|(t, _)| t.as_secs() / 60)
            .collect();
        assert_eq!(times, [60, 66, 72], "{:?}", d.compactions);
        // Once one succeeds, the next waits an hour.
        d.outcome = Outcome::AlreadyCompacted;
        d.run_until(HOUR + 19 * MIN);
        let n = d.compactions.len();
        d.outcome = Outcome::Done;
        d.run_until(2 * HOUR + 17 * MIN);
        assert_eq!(d.compactions.len(), n, "{:?}", d.compactions);
        d.run_until(2 * HOUR + 20 * MIN);
        assert_eq!(d.compactions.len(), n + 1, "{:?}", d.compactions);
    }

    #[test]
    fn periodic_pauses_on_a_follower_and_resumes_with_the_revision_of_a_retention_ago() {
        let mut d = Driver::new(Retention::Periodic(HOUR), Duration::from_secs(1), 1);
        d.leader = false;
        d.run_until(3 * HOUR);
        assert!(d.compactions.is_empty(), "a follower never compacts");
        d.leader = true;
        d.run_until(3 * HOUR + 7 * MIN);
        // Due long ago: compacts at the next wake, to a sample of about an hour ago (samples
        // went on while following), not to anything recorded earlier.
        assert_eq!(d.compactions.len(), 1, "{:?}", d.compactions);
        let (t, r) = d.compactions[0];
        assert!(t <= 3 * HOUR + 6 * MIN + Duration::from_secs(3), "{t:?}");
        let age = t.as_secs() as i64 - (r - 1);
        assert!((60 * 60..=67 * 60).contains(&age), "{t:?} {r}");
        // Leadership lost again: nothing more.
        d.leader = false;
        d.run_until(6 * HOUR);
        assert_eq!(d.compactions.len(), 1);
    }

    #[test]
    fn nothing_is_asked_while_a_compaction_is_in_flight() {
        let mut s = Schedule::new(
            Retention::Periodic(Duration::from_secs(1)),
            REVISION_INTERVAL,
        );
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(s.poll(t0, 10, true), None);
        let mut asked = None;
        for i in 1..=20 {
            if let Some(r) = s.poll(t0 + ms(100 * i), 10 + i as i64, true) {
                asked = Some((i, r));
                break;
            }
        }
        let (i, r) = asked.expect("due after a second");
        assert_eq!((i, r), (10, 10));
        for j in 0..100 {
            assert_eq!(s.poll(t0 + ms(1000 + 100 * j), 100, true), None);
        }
        assert_eq!(s.in_flight(), Some(10));
        s.finished(t0 + ms(20_000), Outcome::Done);
        assert_eq!(s.in_flight(), None);
        // The loop starts over from the answer: a sample now, the next compaction a period later.
        assert_eq!(s.poll(t0 + ms(20_000), 200, true), None);
        assert_eq!(s.poll(t0 + ms(20_900), 210, true), None);
        assert!(s.poll(t0 + ms(21_000), 220, true).is_some());
    }

    #[test]
    fn revision_mode_compacts_every_interval_to_current_minus_retention() {
        let mut s = Schedule::new(Retention::Revisions(10), REVISION_INTERVAL);
        let t0 = Instant::now();
        assert_eq!(s.poll(t0, 5, true), None);
        // Nothing before the first interval.
        assert_eq!(s.poll(t0 + 4 * MIN, 500, true), None);
        // Not positive yet: skipped.
        assert_eq!(s.poll(t0 + 5 * MIN, 8, true), None);
        assert_eq!(s.poll(t0 + 10 * MIN, 100, true), Some(90));
        s.finished(t0 + 10 * MIN, Outcome::Done);
        // Same revision as last time: skipped.
        assert_eq!(s.poll(t0 + 15 * MIN, 100, true), None);
        // Five minutes after the last check, not before.
        assert_eq!(s.poll(t0 + 19 * MIN, 300, true), None);
        assert_eq!(s.poll(t0 + 20 * MIN, 300, true), Some(290));
        // A failure is retried an interval later, to the revision current then.
        s.finished(t0 + 20 * MIN, Outcome::Failed);
        assert_eq!(s.poll(t0 + 24 * MIN, 300, true), None);
        assert_eq!(s.poll(t0 + 25 * MIN, 301, true), Some(291));
        s.finished(t0 + 25 * MIN, Outcome::AlreadyCompacted);
        assert_eq!(s.poll(t0 + 30 * MIN, 301, true), None);
    }

    #[test]
    fn revision_mode_pauses_on_a_follower() {
        let mut s = Schedule::new(Retention::Revisions(10), Duration::from_secs(1));
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        assert_eq!(s.poll(t0, 50, false), None);
        for i in 1..100 {
            assert_eq!(s.poll(t0 + i * sec, 50 + i as i64, false), None);
        }
        // Leader again: at the next check, to the revision current then minus the retention.
        assert_eq!(s.poll(t0 + 100 * sec, 150, true), Some(140));
    }

    #[test]
    fn window_and_intervals_are_etcds() {
        let shape =
            |p: Duration| match Schedule::new(Retention::Periodic(p), REVISION_INTERVAL).mode {
                Mode::Periodic {
                    retry,
                    compact_interval,
                    window,
                    ..
                } => (retry, compact_interval, window),
                Mode::Revision { .. } => unreachable!(),
            };
        assert_eq!(shape(HOUR), (6 * MIN, HOUR, 11));
        assert_eq!(shape(24 * HOUR), (6 * MIN, HOUR, 241));
        assert_eq!(
            shape(Duration::from_secs(5)),
            (Duration::from_millis(500), Duration::from_secs(5), 11)
        );
        assert_eq!(shape(59 * MIN), (Duration::from_secs(354), 59 * MIN, 11));
    }
}
