//! Restoring an etcd db into the MVCC key spaces (etcd → retcd migration and `retcdutl snapshot
//! restore`): etcd's `key` bucket becomes the `k` versions and the `r` log, its compaction
//! `m compact` and a pending compaction, so the imported store answers every revision etcd
//! would; its leases, users, roles and auth state become `l`/`a`, `U`, `R` and `m auth`
//! (DESIGN.md §7.4). Only for a fresh store, before any Raft entry is applied; callers are
//! offline tools.
//!
//! Invariants: versions arrive in strictly ascending (main, sub) order (the bucket's key order)
//! and each KeyValue's mod_revision is its revision key's main; anything else refuses the whole
//! import, and the store stays as it was (the install path builds beside the published tree).

use std::sync::mpsc;

use super::*;
use crate::bbolt;
use crate::etcd_db;

/// What [`Mvcc::import_etcd`] imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// The store's current revision afterwards (etcd's currentRev).
    pub revision: i64,
    /// The compacted revision (−1: none).
    pub compacted: i64,
    /// Versions imported (puts and tombstones).
    pub versions: u64,
    /// Leases, users and roles imported.
    pub leases: u64,
    pub users: u64,
    pub roles: u64,
}

/// Entries handed from the bbolt scan to the install at most at a time.
const IN_FLIGHT: usize = 1024;

fn bad(what: String) -> MvccError {
    MvccError::Record(format!("etcd db: {what}"))
}

/// Where the import stands while the install pulls entries.
#[derive(Default)]
struct Progress {
    last: Option<(i64, i64)>,
    versions: u64,
    leases: u64,
    users: u64,
    roles: u64,
}

/// The buckets streamed into the store, in this order, and how each entry converts.
const STREAMED: [&[u8]; 4] = [
    etcd_keys::KEY_BUCKET,
    etcd_db::LEASE,
    etcd_db::AUTH_USERS,
    etcd_db::AUTH_ROLES,
];

impl Progress {
    /// The store entries of one entry of streamed bucket `bucket` (an index into [`STREAMED`]).
    fn entries(&mut self, bucket: usize, k: &[u8], v: &[u8]) -> Result<Vec<RawEntry>, MvccError> {
        let decode = |e: etcd_db::DecodeError| bad(e.0);
        Ok(match bucket {
            0 => self.convert(k, v)?.to_vec(),
            1 => {
                let id = etcd_db::decode_lease_key(k).map_err(decode)?;
                let l = etcd_db::decode_lease(v).map_err(decode)?;
                if l.id != id {
                    return Err(bad(format!(
                        "lease {id:x} holds the record of lease {:x}",
                        l.id
                    )));
                }
                let rec = LeaseRecord {
                    ttl: l.ttl,
                    remaining: l.remaining_ttl,
                };
                let bytes = rkyv::to_bytes::<rancor::Error>(&rec)
                    .expect("serializing to memory cannot fail");
                self.leases += 1;
                vec![(lease_key(id).to_vec(), bytes.to_vec())]
            }
            2 => {
                let u = etcd_db::decode_user(v).map_err(decode)?;
                self.users += 1;
                vec![(user_key(&u.name), auth::encode_user(&u))]
            }
            _ => {
                let r = etcd_db::decode_role(v).map_err(decode)?;
                self.roles += 1;
                vec![(role_key(&r.name), auth::encode_role(&r))]
            }
        })
    }

    /// The `k` and `r` entries of one entry of etcd's `key` bucket.
    fn convert(&mut self, rk: &[u8], kv: &[u8]) -> Result<[RawEntry; 2], MvccError> {
        let rev = etcd_keys::decode_revision_key(rk).map_err(|e| bad(e.0))?;
        let at = (rev.main, rev.sub);
        if self.last.is_some_and(|last| last >= at) {
            return Err(bad(format!(
                "revision {at:?} of the key bucket does not follow {:?}",
                self.last
            )));
        }
        self.last = Some(at);
        let sub = u32::try_from(rev.sub)
            .map_err(|_| bad(format!("revision {at:?}: sub-revision beyond 2^32")))?;
        let kv = etcd_keys::decode_key_value(kv)
            .map_err(|e| bad(format!("revision {at:?}: {}", e.0)))?;
        if !rev.tombstone && kv.mod_revision != rev.main {
            return Err(bad(format!(
                "revision {at:?}: its KeyValue says mod_revision {}",
                kv.mod_revision
            )));
        }
        let v = if rev.tombstone {
            Version {
                sub,
                create_revision: 0,
                version: 0,
                lease: 0,
                tombstone: true,
                value: Vec::new(),
            }
        } else {
            Version {
                sub,
                create_revision: kv.create_revision,
                version: kv.version,
                lease: kv.lease,
                tombstone: false,
                value: kv.value,
            }
        };
        let bytes = rkyv::to_bytes::<rancor::Error>(&v).expect("serializing to memory cannot fail");
        self.versions += 1;
        Ok([
            (version_key(&kv.key, rev.main), bytes.to_vec()),
            (rev_key(rev.main, sub).to_vec(), kv.key),
        ])
    }
}

/// The compacted revision etcd's `meta` bucket records: `finishedCompactRev`, raised to
/// `scheduledCompactRev` when that is higher (etcd resumes a scheduled compaction at start); −1
/// when neither is there. One scan of the bucket.
fn compacted_revision(db: &bbolt::Db, meta: Option<&bbolt::Bucket>) -> Result<i64, MvccError> {
    let Some(meta) = meta else {
        return Ok(NEVER_COMPACTED);
    };
    let mut compacted = NEVER_COMPACTED;
    let mut failed = None;
    db.scan_bucket(meta, &mut |k, v| {
        if k == etcd_db::FINISHED_COMPACT_REV || k == etcd_db::SCHEDULED_COMPACT_REV {
            match etcd_db::decode_compact_rev(v) {
                Ok(main) => compacted = compacted.max(main),
                Err(e) => {
                    failed = Some(format!("meta {}: {}", k.escape_ascii(), e.0));
                    return std::ops::ControlFlow::Break(());
                }
            }
        }
        std::ops::ControlFlow::Continue(())
    })
    .map_err(|e| bad(e.to_string()))?;
    match failed {
        Some(e) => Err(bad(e)),
        None => Ok(compacted),
    }
}

impl Mvcc {
    /// Imports etcd's `key` and `meta` buckets of `db` into this fresh store (DESIGN.md §7.4).
    pub fn import_etcd(&mut self, db: &bbolt::Db) -> Result<Imported, MvccError> {
        self.import_etcd_with_progress(db, &|_| {})
    }

    /// [`Mvcc::import_etcd`], telling `progress` the bytes (keys and values) of every entry read
    /// (from the scanning thread).
    pub fn import_etcd_with_progress(
        &mut self,
        db: &bbolt::Db,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Imported, MvccError> {
        if self.rev != 1 || self.applied != (0, 0) || self.compacted != NEVER_COMPACTED {
            return Err(bad(format!(
                "importing needs a fresh store; this one is at revision {}, applied index {}",
                self.rev, self.applied.0
            )));
        }
        let buckets = db.buckets().map_err(|e| bad(e.to_string()))?;
        let find = |name: &[u8]| buckets.iter().find(|b| b.name == name);
        if find(etcd_keys::KEY_BUCKET).is_none() {
            return Err(bad("no `key` bucket: not an etcd db".to_string()));
        }
        let compacted = compacted_revision(db, find(etcd_db::META))?;
        let auth_meta = auth_meta(db, find(etcd_db::AUTH))?;
        let streamed: Vec<(usize, &bbolt::Bucket)> = STREAMED
            .iter()
            .enumerate()
            .filter_map(|(i, name)| find(name).map(|b| (i, b)))
            .collect();
        let (tx, rx) = mpsc::sync_channel::<Result<Vec<RawEntry>, MvccError>>(IN_FLIGHT);
        let installed = std::thread::scope(|s| {
            let scan = s.spawn(move || {
                let mut convert = Progress::default();
                for (i, bucket) in streamed {
                    let mut stopped = false;
                    let r = db.scan_bucket(bucket, &mut |k, v| {
                        progress((k.len() + v.len()) as u64);
                        let item = convert.entries(i, k, v);
                        let failed = item.is_err();
                        // The install stopped pulling (it failed): stop scanning.
                        if tx.send(item).is_err() || failed {
                            stopped = true;
                            return std::ops::ControlFlow::Break(());
                        }
                        std::ops::ControlFlow::Continue(())
                    });
                    if stopped {
                        break;
                    }
                    if let Err(e) = r {
                        let _ = tx.send(Err(bad(e.to_string())));
                        break;
                    }
                }
                convert
            });
            let mut pending: Vec<RawEntry> = auth_meta.into_iter().collect();
            let entries = std::iter::from_fn(|| {
                loop {
                    if let Some(e) = pending.pop() {
                        return Some(Ok(e));
                    }
                    match rx.recv() {
                        Ok(Ok(batch)) => pending = batch,
                        Ok(Err(e)) => return Some(Err(e.to_string())),
                        Err(_) => return None,
                    }
                }
            });
            let r = self.install_with(entries, 0, InstallBatch::default());
            drop(rx);
            let converted = scan.join().expect("the bbolt scan thread panicked");
            (r, converted)
        });
        let (r, converted) = installed;
        r?;
        // The revisions are known once the scan ended: a second commit (the tool that imports
        // builds in a temporary dir and renames it into place only when all of it is durable).
        let revision = converted
            .last
            .map_or(1, |(main, _)| main)
            .max(compacted)
            .max(1);
        let compaction = (compacted >= 0).then_some(PendingCompaction {
            next: (0, 0),
            target: compacted,
        });
        self.rev = revision;
        self.compacted = compacted;
        self.compaction = compaction;
        let tag = self.tag();
        let mut txn = self.store.begin();
        txn.put(META_REV, &u64s(&[revision as u64, 0]))?;
        txn.put(META_APPLIED, &u64s(&[0, 0]))?;
        txn.put(META_COMPACT, &u64s(&[compacted as u64]))?;
        if let Some(c) = &compaction {
            txn.put(META_COMPACTION, &c.encode())?;
        }
        txn.commit(tag)?;
        self.attach_leased_keys()?;
        self.store.sync()?;
        Ok(Imported {
            revision,
            compacted,
            versions: converted.versions,
            leases: converted.leases,
            users: converted.users,
            roles: converted.roles,
        })
    }

    /// Writes the `a` attachment of every key whose newest version is a put with a lease
    /// (§4.5), as the apply keeps them: one pass over `k` in key order (each key's newest version
    /// first), written in bounded transactions.
    fn attach_leased_keys(&mut self) -> Result<(), MvccError> {
        let snap = self.store.reader().snapshot();
        let mut cur = snap.cursor();
        cur.seek(b"k")?;
        let mut previous: Option<Vec<u8>> = None;
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let tag = self.tag();
        loop {
            let at_end = !cur.valid() || cur.key().first() != Some(&b'k');
            if at_end || batch.len() >= COMPACTION_BATCH {
                let mut txn = self.store.begin();
                for a in batch.drain(..) {
                    txn.put(&a, &[])?;
                }
                txn.commit(tag)?;
            }
            if at_end {
                return Ok(());
            }
            let (key, _) = split_version_key(cur.key())?;
            if previous.as_deref() != Some(key.as_slice()) {
                let v = decode_version(cur.value())?;
                if !v.tombstone && v.lease.to_native() != 0 {
                    batch.push(attach_key(v.lease.to_native(), &key));
                }
                previous = Some(key);
            }
            cur.advance()?;
        }
    }
}

/// `m auth` from etcd's `auth` bucket (absent: auth never enabled, revision 1 as etcd starts).
fn auth_meta(
    db: &bbolt::Db,
    bucket: Option<&bbolt::Bucket>,
) -> Result<Option<RawEntry>, MvccError> {
    let Some(bucket) = bucket else {
        return Ok(None);
    };
    let (mut enabled, mut revision) = (false, 1u64);
    let mut failed = None;
    db.scan_bucket(bucket, &mut |k, v| {
        let r = match k {
            etcd_db::AUTH_ENABLED => etcd_db::decode_auth_enabled(v).map(|e| enabled = e),
            etcd_db::AUTH_REVISION => etcd_db::decode_u64(v).map(|r| revision = r),
            _ => Ok(()),
        };
        if let Err(e) = r {
            failed = Some(e.0);
            return std::ops::ControlFlow::Break(());
        }
        std::ops::ControlFlow::Continue(())
    })
    .map_err(|e| bad(e.to_string()))?;
    if let Some(e) = failed {
        return Err(bad(format!("auth bucket: {e}")));
    }
    Ok(Some((
        META_AUTH.to_vec(),
        u64s(&[u64::from(enabled), revision]),
    )))
}
