//! Power-loss crash tests (engine/DESIGN.md §6): a single member's write path — WAL group commit,
//! apply into the page store, checkpoints that make the page store durable and release WAL
//! segments — driven under a [`PowerLoss`] recorder that cuts the power at a seeded operation
//! and then keeps, drops or tears (at 512-byte sectors) whatever was not synced.
//!
//! After every restart: every acknowledged write is there with its revision, and nothing else
//! is, except a prefix of the one batch that was in flight (its outcome was never reported, so
//! either is right, as for etcd) — never a write beyond it, never part of a Txn.
//!
//! `RETCD_POWER_LOSS_CYCLES` (default 1,000) and `RETCD_POWER_LOSS_SEED` (default: fixed) make the
//! same test a soak: `RETCD_POWER_LOSS_CYCLES=100000 cargo test --release -p retcd-engine --test
//! power_loss`. A failure names the seed and the cycle; rerunning with that seed replays it.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use common::{Rng, store_options};
use glommio::{LocalExecutorBuilder, Placement};
use retcd_engine::disk::{Loss, PowerLoss};
use retcd_engine::mvcc::{Applied, Mvcc, MvccError};
use retcd_engine::request::{
    CompactRequest, DeleteRangeRequest, PutRequest, RangeRequest, Request, RequestOp, TxnRequest,
};
use retcd_engine::wal::{Preallocate, Record, Wal, WalError, WalOptions};

/// Small segments, so that rollovers and releases happen every few cycles.
const SEGMENT_SIZE: u64 = 64 << 10;
const KEYS: u64 = 48;

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("executor");
    ex.run(f());
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One client operation; each takes exactly one revision.
#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// Puts of distinct keys in one revision.
    Txn(Vec<(Vec<u8>, Vec<u8>)>),
}

impl Op {
    fn request(&self) -> Request {
        let put = |k: &Vec<u8>, v: &Vec<u8>| PutRequest {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        };
        match self {
            Op::Put(k, v) => Request::Put(put(k, v)),
            Op::Delete(k) => Request::DeleteRange(DeleteRangeRequest {
                key: k.clone(),
                ..Default::default()
            }),
            Op::Txn(puts) => Request::Txn(TxnRequest {
                compare: Vec::new(),
                success: puts
                    .iter()
                    .map(|(k, v)| RequestOp::Put(put(k, v)))
                    .collect(),
                failure: Vec::new(),
            }),
        }
    }
}

/// The expected state: key → (value, mod revision), and the current revision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Model {
    rev: i64,
    keys: BTreeMap<Vec<u8>, (Vec<u8>, i64)>,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        self.rev += 1;
        match op {
            Op::Put(k, v) => {
                self.keys.insert(k.clone(), (v.clone(), self.rev));
            }
            Op::Delete(k) => {
                assert!(self.keys.remove(k).is_some(), "a delete of a missing key");
            }
            Op::Txn(puts) => {
                for (k, v) in puts {
                    self.keys.insert(k.clone(), (v.clone(), self.rev));
                }
            }
        }
    }
}

fn key(rng: &mut Rng) -> Vec<u8> {
    format!("k{:03}", rng.below(KEYS)).into_bytes()
}

fn value(rng: &mut Rng, rev: i64) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 3000 + rng.below(9000),
        1..=3 => 300 + rng.below(700),
        _ => 8 + rng.below(60),
    } as usize;
    let tag = format!("r{rev}:");
    let mut v = tag.into_bytes();
    v.resize(len.max(v.len()), b'a' + (rev % 26) as u8);
    v
}

/// A random op valid on `model` (which it advances).
fn next_op(rng: &mut Rng, model: &mut Model) -> Op {
    let rev = model.rev + 1;
    let op = match rng.below(10) {
        0 | 1 if !model.keys.is_empty() => {
            let i = rng.below(model.keys.len() as u64) as usize;
            Op::Delete(model.keys.keys().nth(i).cloned().expect("in range"))
        }
        2 => {
            let mut puts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for _ in 0..2 + rng.below(3) {
                let k = key(rng);
                if puts.iter().all(|(p, _)| *p != k) {
                    puts.push((k, value(rng, rev)));
                }
            }
            Op::Txn(puts)
        }
        _ => Op::Put(key(rng), value(rng, rev)),
    };
    model.apply(&op);
    op
}

/// A single member's storage, driven the way the sequencer drives it (DESIGN §2.4, §3.3).
struct Member {
    wal: Wal,
    mvcc: Mvcc,
    /// Index of the last entry in the WAL.
    last: u64,
}

/// Why a step of the member failed (after a power cut: the I/O error it caused).
enum Failure {
    Wal(WalError),
    Mvcc(MvccError),
    /// The WAL does not continue where the page store's state ends.
    Gap {
        after: u64,
        next: u64,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Wal(e) => write!(f, "{e}"),
            Failure::Mvcc(e) => write!(f, "{e}"),
            Failure::Gap { after, next } => write!(
                f,
                "the WAL skips from entry {after} to {next}: entries were lost"
            ),
        }
    }
}

impl From<WalError> for Failure {
    fn from(e: WalError) -> Failure {
        Failure::Wal(e)
    }
}

impl From<MvccError> for Failure {
    fn from(e: MvccError) -> Failure {
        Failure::Mvcc(e)
    }
}

/// `reqs` as the committed entries `first..`, in term 1 (a single member's log).
fn entries_from(first: u64, reqs: &[Request]) -> Vec<Applied<'_>> {
    reqs.iter()
        .enumerate()
        .map(|(i, req)| Applied {
            index: first + i as u64,
            term: 1,
            request: Some(req),
            caller: None,
            membership: None,
        })
        .collect()
}

fn wal_dir(dir: &Path) -> PathBuf {
    dir.join("member/wal")
}

impl Member {
    /// Opens the store and replays the WAL after the page store's applied index, as recovery
    /// does (raft/src/log.rs: a single member's log has no overwrites).
    async fn open(dir: &Path) -> Result<Member, Failure> {
        Member::open_with(dir, Preallocate::Reserve).await
    }

    async fn open_with(dir: &Path, preallocate: Preallocate) -> Result<Member, Failure> {
        let (mut wal, recovered) = Wal::open(WalOptions {
            dir: wal_dir(dir),
            segment_size: SEGMENT_SIZE,
            preallocate,
        })
        .await?;
        // The spare is prepared before anything else happens, so every run of a seed sees the
        // same operations.
        wal.wait_for_spare().await?;
        let mut mvcc = Mvcc::open(&store_options(dir))?;
        let applied = mvcc.applied().0;
        let mut entries: Vec<(u64, Request)> = Vec::new();
        let mut last = applied;
        for r in &recovered.records {
            if let Record::Entry { index, data, .. } = r {
                if *index <= applied {
                    continue;
                }
                if *index != last + 1 {
                    return Err(Failure::Gap {
                        after: last,
                        next: *index,
                    });
                }
                last = *index;
                entries.push((*index, Request::decode(data).expect("entry decodes")));
            }
        }
        let batch: Vec<Applied<'_>> = entries
            .iter()
            .map(|(index, req)| Applied {
                index: *index,
                term: 1,
                request: Some(req),
                caller: None,
                membership: None,
            })
            .collect();
        for r in mvcc.apply(&batch)? {
            r?;
        }
        Ok(Member { wal, mvcc, last })
    }

    /// Appends `ops` as one group commit and applies them: `Ok` is the acknowledgement.
    async fn write(&mut self, ops: &[Op]) -> Result<(), Failure> {
        let reqs: Vec<Request> = ops.iter().map(Op::request).collect();
        self.commit(reqs).await?;
        // One deletion batch of a pending compaction per round, as the sequencer runs them.
        if self.mvcc.compaction_pending() {
            self.mvcc.compact_step()?;
        }
        Ok(())
    }

    /// Compacts at a revision between the compacted and the current one (changes no key's
    /// latest version; its deletion runs in batches after, DESIGN §4.9).
    async fn compact(&mut self, rng: &mut Rng) -> Result<(), Failure> {
        let (from, to) = (self.mvcc.compacted().max(1), self.mvcc.revision());
        if to <= from {
            return Ok(());
        }
        let revision = from + 1 + rng.below((to - from) as u64) as i64;
        self.commit(vec![Request::Compact(CompactRequest {
            revision,
            physical: false,
        })])
        .await
    }

    async fn commit(&mut self, reqs: Vec<Request>) -> Result<(), Failure> {
        let first = self.last + 1;
        let records: Vec<Record> = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| Record::Entry {
                index: first + i as u64,
                term: 1,
                entry_type: 0,
                data: r.encode().into(),
            })
            .collect();
        self.wal.append(&records).await?;
        self.last += reqs.len() as u64;
        self.wal.wait_for_spare().await?;
        let batch = entries_from(first, &reqs);
        for r in self.mvcc.apply(&batch)? {
            r?;
        }
        Ok(())
    }

    /// A checkpoint (ARCHITECTURE "A Put", step 8): page store durable, then the Checkpoint
    /// record, then old segments released.
    async fn checkpoint(&mut self) -> Result<(), Failure> {
        let (index, term) = self.mvcc.applied();
        self.mvcc.sync()?;
        self.wal
            .append(&[Record::Checkpoint { index, term }])
            .await?;
        self.wal.release_to(index).await?;
        Ok(())
    }

    fn state(&self) -> Model {
        let r = self
            .mvcc
            .reader()
            .range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            })
            .expect("range over everything");
        Model {
            rev: self.mvcc.revision(),
            keys: r
                .kvs
                .into_iter()
                .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
                .collect(),
        }
    }

    async fn close(self) {
        let _ = self.wal.close().await;
    }
}

/// Says where a run was when something panicked (the engine's own assertions included), so the
/// seed and cycle that reproduce it are always printed.
struct Context(String);

impl Drop for Context {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("power loss: failed at {}", self.0);
        }
    }
}

fn loss_of(rng: &mut Rng) -> Loss {
    match rng.below(7) {
        0 => Loss::DropAll,
        1 => Loss::KeepAll,
        2 => Loss::TornLast { unit: 512 },
        3 => Loss::TornLast { unit: 4096 },
        4 => Loss::Garble { name: "db" },
        _ => Loss::Sectors {
            percent: rng.below(101) as u8,
        },
    }
}

/// Runs `cycles` crash cycles from `seed` in `dir`; panics with the seed and cycle on a failure.
async fn crash_cycles(dir: &Path, seed: u64, cycles: u64) -> (u64, u64) {
    let power = PowerLoss::install(dir);
    let mut rng = Rng(seed | 1);
    let mut acked = Model {
        rev: 1,
        keys: BTreeMap::new(),
    };
    let (mut cuts, mut torn) = (0u64, 0u64);
    // The newest acknowledged compaction: it survives like any acknowledged write.
    let mut compacted = -1;
    // Both ways of preallocating a segment, one cycle each.
    let how = |cycle: u64| {
        if cycle.is_multiple_of(2) {
            Preallocate::Reserve
        } else {
            Preallocate::ZeroFill
        }
    };
    let mut member = match Member::open_with(dir, how(0)).await {
        Ok(m) => m,
        Err(e) => panic!("a fresh store does not open: {e}"),
    };
    let mut context = Context(String::new());
    for cycle in 0..cycles {
        let ctx = format!("seed {seed}, cycle {cycle}");
        context.0.clone_from(&ctx);
        // Where this cycle's power cut falls, in I/O operations from now (most cycles end
        // inside a write, some between writes).
        let budget = 1 + rng.below(60);
        power.cut_after(budget);
        let mut in_flight: Vec<Op> = Vec::new();
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > 40 {
                power.cut_now();
                break;
            }
            if rng.below(8) == 0 {
                if member.checkpoint().await.is_err() {
                    break;
                }
                continue;
            }
            if rng.below(12) == 0 {
                if member.compact(&mut rng).await.is_err() {
                    break;
                }
                compacted = member.mvcc.compacted();
                continue;
            }
            let mut next = acked.clone();
            let ops: Vec<Op> = (0..1 + rng.below(4))
                .map(|_| next_op(&mut rng, &mut next))
                .collect();
            match member.write(&ops).await {
                Ok(()) => acked = next,
                Err(_) => {
                    in_flight = ops;
                    break;
                }
            }
        }
        assert!(power.is_cut(), "{ctx}: the power is off");
        cuts += 1;
        member.close().await;
        let loss = loss_of(&mut rng);
        let report = power
            .recover(loss, rng.next())
            .unwrap_or_else(|e| panic!("{ctx}: resolving the disk: {e}"));
        if report.sectors_lost > 0 {
            torn += 1;
        }
        member = match Member::open_with(dir, how(cycle + 1)).await {
            Ok(m) => m,
            Err(e) => panic!("{ctx}: recovery after {loss:?} ({report:?}) failed: {e}"),
        };
        // What is there must be the acknowledged state plus a prefix of the batch in flight.
        let got = member.state();
        let mut expect = acked.clone();
        let mut matched = got == expect;
        for op in &in_flight {
            if matched {
                break;
            }
            expect.apply(op);
            matched = got == expect;
        }
        if !matched {
            let lost: Vec<_> = acked
                .keys
                .iter()
                .filter(|(k, v)| got.keys.get(*k) != Some(v))
                .map(|(k, (_, rev))| (String::from_utf8_lossy(k).into_owned(), *rev))
                .take(5)
                .collect();
            panic!(
                "{ctx}: after {loss:?} ({report:?}) the store is at revision {} (acknowledged {}, {} in flight); keys differing from the acknowledged state (key, rev): {lost:?}",
                got.rev,
                acked.rev,
                in_flight.len()
            );
        }
        assert!(
            member.mvcc.compacted() >= compacted,
            "{ctx}: compacted at {} after the restart, acknowledged at {compacted}",
            member.mvcc.compacted()
        );
        compacted = member.mvcc.compacted();
        acked = got;
    }
    member.close().await;
    drop(context);
    (cuts, torn)
}

#[test]
fn acknowledged_writes_survive_power_loss() {
    let seed = env_u64("RETCD_POWER_LOSS_SEED", 0x5eed_0001);
    let cycles = env_u64("RETCD_POWER_LOSS_CYCLES", 1000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    run(|| async move {
        let (cuts, torn) = crash_cycles(&dir, seed, cycles).await;
        assert_eq!(cuts, cycles);
        // The seeds must actually tear things, or the test proves little.
        assert!(
            torn * 4 >= cycles,
            "only {torn} of {cycles} cycles lost any sector"
        );
        eprintln!("power loss: seed {seed}: {cycles} cycles, {torn} with lost or torn sectors");
    });
}

/// Copies every file under `from` into `to` (a scratch copy to damage).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

fn flip(path: &Path, offset: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).expect("read");
    b[0] ^= mask;
    f.write_all_at(&b, offset).expect("write");
}

/// Synced data that changes on disk afterwards (a flipped bit anywhere in a WAL record or a
/// page) is reported — the file and an offset at or before the damage — and never served: the
/// store either refuses to open, fails the read, or serves exactly the acknowledged state (when
/// the damage lies in a page nothing reaches).
#[test]
fn damage_to_synced_data_is_reported_never_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    run(|| async move {
        let mut rng = Rng(0x5eed_0002);
        let mut model = Model {
            rev: 1,
            keys: BTreeMap::new(),
        };
        let mut member = match Member::open(&dir).await {
            Ok(m) => m,
            Err(e) => panic!("a fresh store does not open: {e}"),
        };
        for i in 0..120 {
            let ops: Vec<Op> = (0..1 + rng.below(3))
                .map(|_| next_op(&mut rng, &mut model))
                .collect();
            if let Err(e) = member.write(&ops).await {
                panic!("write {i}: {e}");
            }
            if i % 25 == 24
                && let Err(e) = member.checkpoint().await
            {
                panic!("checkpoint {i}: {e}");
            }
        }
        member.close().await;
        let (mut wal_refused, mut db_reported, mut db_unreached) = (0, 0, 0);
        for round in 0..60u64 {
            let ctx = format!("round {round}");
            let scratch = tmp.path().join(format!("scratch-{round}"));
            copy_dir(&dir, &scratch);
            let mask = 1u8 << rng.below(8);
            if round % 2 == 0 {
                // A byte inside the records of a WAL segment.
                let mut segs: Vec<PathBuf> = std::fs::read_dir(wal_dir(&scratch))
                    .expect("wal dir")
                    .map(|e| e.expect("entry").path())
                    .filter(|p| p.extension().is_some_and(|x| x == "wal"))
                    .collect();
                segs.sort();
                let seg = &segs[rng.below(segs.len() as u64) as usize];
                let bytes = std::fs::read(seg).expect("read segment");
                let end = bytes.iter().rposition(|&b| b != 0).expect("records") as u64;
                let at = rng.below(end + 1);
                flip(seg, at, mask);
                match Member::open(&scratch).await {
                    Err(Failure::Wal(WalError::Corrupt { file, offset, .. })) => {
                        assert_eq!(&file, seg, "{ctx}");
                        assert!(offset <= at, "{ctx}: reported {offset}, damaged {at}");
                        wal_refused += 1;
                    }
                    Err(e) => panic!("{ctx}: flipped byte {at} of {}: {e}", seg.display()),
                    Ok(m) => panic!(
                        "{ctx}: opened over a flipped byte {at} of {} (state at {})",
                        seg.display(),
                        m.state().rev
                    ),
                }
            } else {
                // A byte of a page below the high-water mark.
                let db = common::db_path(&scratch);
                let len = std::fs::metadata(&db).expect("db").len();
                let used = std::fs::read(&db)
                    .expect("read db")
                    .chunks(4096)
                    .rposition(|p| p.iter().any(|&b| b != 0))
                    .expect("pages") as u64
                    + 1;
                assert!(used * 4096 <= len);
                let at = rng.below(used * 4096);
                flip(&db, at, mask);
                let opened = Member::open(&scratch).await;
                match opened {
                    Err(Failure::Mvcc(MvccError::Store(
                        retcd_engine::page::StoreError::Corrupt { file, offset, .. },
                    ))) => {
                        assert_eq!(file, db, "{ctx}");
                        assert!(offset <= at, "{ctx}: reported {offset}, damaged {at}");
                        db_reported += 1;
                    }
                    Err(Failure::Gap { .. }) if at < 2 * 4096 => {
                        // The newest meta page was damaged: the older one's tree is older than
                        // what the WAL still holds, and recovery says so.
                        db_reported += 1;
                    }
                    Err(e) => panic!("{ctx}: flipped byte {at} of the db: {e}"),
                    Ok(m) => {
                        let read = m.mvcc.reader().range(&RangeRequest {
                            key: vec![0],
                            range_end: vec![0],
                            ..Default::default()
                        });
                        match read {
                            Err(MvccError::Store(retcd_engine::page::StoreError::Corrupt {
                                file,
                                offset,
                                ..
                            })) => {
                                assert_eq!(file, db, "{ctx}");
                                assert!(offset <= at, "{ctx}: reported {offset}, damaged {at}");
                                db_reported += 1;
                            }
                            Err(e) => panic!("{ctx}: flipped byte {at} of the db: {e}"),
                            Ok(_) => {
                                assert_eq!(m.state(), model, "{ctx}: flipped byte {at} of the db");
                                db_unreached += 1;
                            }
                        }
                        m.close().await;
                    }
                }
            }
            std::fs::remove_dir_all(&scratch).expect("rm scratch");
        }
        eprintln!(
            "damage: WAL refused {wal_refused}, db reported {db_reported}, db unreached {db_unreached}"
        );
        assert_eq!(wal_refused, 30);
        assert!(db_reported >= 10, "{db_reported} db flips reported");
    });
}

/// Puts `keys` as one entry each (indexes from the store's applied index + 1), one transaction.
fn put_entries(m: &mut Mvcc, keys: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) {
    let first = m.applied().0 + 1;
    let reqs: Vec<Request> = keys
        .map(|(key, value)| {
            Request::Put(PutRequest {
                key,
                value,
                ..Default::default()
            })
        })
        .collect();
    let entries = entries_from(first, &reqs);
    for r in m.apply(&entries).expect("apply") {
        r.expect("a put");
    }
}

/// A power cut at any I/O operation of a Raft snapshot's install — the transactions that build
/// the new tree beside the published one, the switch, the durable commit after it — recovers
/// exactly the old state or exactly the new one, never a mix, with this member's identity, and
/// every page of the store accounted for (no page of the half-built tree lost, none in use twice;
/// DESIGN.md §4.7). Small install batches, so that most cuts fall between two of them.
#[test]
fn power_loss_during_a_snapshot_install() {
    use retcd_engine::mvcc::InstallBatch;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng(0x5eed_0003);
    let value = |rng: &mut Rng, tag: &str| {
        let mut v = tag.as_bytes().to_vec();
        v.resize(50 + rng.below(700) as usize, b'x');
        v
    };
    // The snapshot: another member's state.
    let mut src = Mvcc::open(&common::store_options(&tmp.path().join("src"))).expect("open");
    for round in 0..3 {
        let keys: Vec<_> = (0..150)
            .map(|i| {
                (
                    format!("s{i:04}").into_bytes(),
                    value(&mut rng, &format!("{round}")),
                )
            })
            .collect();
        put_entries(&mut src, keys.into_iter());
    }
    let new_state = common::state_entries(&src);
    let index = src.applied().0;
    drop(src);
    // This member before the install: its own state, durable, and its identity.
    let base = tmp.path().join("base");
    let mut old = Mvcc::open(&common::store_options(&base)).expect("open");
    old.set_local_identity(7, 9).expect("identity");
    let keys: Vec<_> = (0..120)
        .map(|i| (format!("o{i:04}").into_bytes(), value(&mut rng, "old")))
        .collect();
    put_entries(&mut old, keys.into_iter());
    old.sync().expect("sync");
    let old_state = common::state_entries(&old);
    drop(old);
    let batch = InstallBatch {
        bytes: 8 << 10,
        entries: 64,
    };
    let install = |dir: &Path| -> Result<(), MvccError> {
        let mut m = Mvcc::open(&common::store_options(dir))?;
        m.install_with(new_state.iter().cloned().map(Ok::<_, String>), index, batch)?;
        m.sync()
    };
    // How many I/O operations a whole install takes.
    let dry = tmp.path().join("dry");
    copy_dir(&base, &dry);
    let ops = {
        let power = PowerLoss::install(&dry);
        install(&dry).expect("an install without a cut");
        power.ops()
    };
    assert!(
        ops > 40,
        "only {ops} operations: too few batches to cut between"
    );
    let (mut olds, mut news) = (0, 0);
    for cycle in 0..120u64 {
        let ctx = format!("cycle {cycle}");
        let dir = tmp.path().join(format!("c{cycle}"));
        copy_dir(&base, &dir);
        let power = PowerLoss::install(&dir);
        // Half the cuts among the last operations: the switch's durable commit.
        let at = if cycle % 2 == 0 {
            1 + rng.below(ops + 2)
        } else {
            ops.saturating_sub(8) + rng.below(10)
        };
        power.cut_after(at);
        let finished = install(&dir).is_ok();
        power.cut_now();
        let loss = loss_of(&mut rng);
        let report = power
            .recover(loss, rng.next())
            .unwrap_or_else(|e| panic!("{ctx}: resolving the disk: {e}"));
        drop(power);
        let m = Mvcc::open(&common::store_options(&dir))
            .unwrap_or_else(|e| panic!("{ctx}: reopening after {loss:?} ({report:?}): {e}"));
        let got = common::state_entries(&m);
        if got == new_state {
            assert_eq!(m.applied().0, index, "{ctx}");
            news += 1;
        } else {
            assert!(
                !finished,
                "{ctx}: the install was durable, then {loss:?} ({report:?}) lost it"
            );
            assert!(
                got == old_state,
                "{ctx}: after {loss:?} ({report:?}) the state is neither the old one nor the new one ({} entries; old {}, new {})",
                got.len(),
                old_state.len(),
                new_state.len()
            );
            olds += 1;
        }
        assert_eq!(m.local_identity().expect("identity"), Some((7, 9)), "{ctx}");
        let a = m.audit().expect("audit");
        assert!(
            a.leaked.is_empty() && a.twice.is_empty(),
            "{ctx}: after {loss:?} ({report:?}): {a:?}"
        );
        drop(m);
        std::fs::remove_dir_all(&dir).expect("remove");
    }
    assert!(
        olds > 0 && news > 0,
        "old {olds}, new {news}: the cuts missed a side"
    );
    eprintln!("snapshot install: {ops} operations; recovered old {olds}, new {news}");
}
