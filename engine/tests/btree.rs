//! Page store tests: the B+tree against a BTreeMap model, snapshots, reopen, corruption detection.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{Rng, db_path, store_options};
use retcd_engine::btree::{self, PageStore};
use retcd_engine::page::{self, Meta};

fn open_store(dir: &Path) -> PageStore {
    PageStore::open(&store_options(dir)).unwrap()
}

/// 20 durable commits, each rewriting the keys `k000000..k002000` with the value
/// `{prefix}{round}`.
fn rewrite_2000_keys(store: &mut PageStore, prefix: &str) {
    for round in 0..20 {
        let mut txn = store.begin();
        for i in 0..2000u32 {
            txn.put(
                format!("k{i:06}").as_bytes(),
                format!("{prefix}{round}").as_bytes(),
            )
            .unwrap();
        }
        txn.commit([0; 4]).unwrap();
        store.sync().unwrap();
    }
}

fn snapshot_contents(store: &PageStore) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let snap = store.reader().snapshot();
    let mut c = snap.cursor();
    c.seek(b"").unwrap();
    let mut out = BTreeMap::new();
    while c.valid() {
        out.insert(c.key().to_vec(), c.value().to_vec());
        c.advance().unwrap();
    }
    out
}

#[test]
fn random_ops_match_model_across_commits_syncs_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut store = open_store(dir.path());
    for round in 0..60 {
        let mut txn = store.begin();
        for _ in 0..200 {
            let k = format!("key{:05}", rng.next() % 3000).into_bytes();
            if rng.next().is_multiple_of(4) {
                let present = txn.delete(&k).unwrap();
                assert_eq!(present, model.remove(&k).is_some());
            } else {
                let len = match rng.next() % 50 {
                    0 => 5000 + (rng.next() % 20000) as usize, // overflow nodes
                    _ => (rng.next() % 200) as usize,
                };
                let v = vec![(round % 251) as u8; len];
                txn.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        txn.commit([round, 0, 0, 0]).unwrap();
        if round % 7 == 0 {
            store.sync().unwrap();
        }
        if round % 20 == 19 {
            store.sync().unwrap();
            drop(store);
            store = open_store(dir.path());
        }
        assert_eq!(snapshot_contents(&store), model, "round {round}");
        assert_pages_accounted(&store, &format!("round {round}"));
    }
    // Point lookups and seeks between keys.
    let snap = store.reader().snapshot();
    for (k, v) in model.iter().take(100) {
        assert_eq!(btree::get(&snap, k).unwrap(), Some(v.as_slice()));
    }
    assert_eq!(btree::get(&snap, b"nope").unwrap(), None);
}

#[test]
fn old_snapshot_survives_later_commits_and_page_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path());
    let mut txn = store.begin();
    for i in 0..2000u32 {
        txn.put(format!("k{i:06}").as_bytes(), b"old").unwrap();
    }
    txn.commit([0; 4]).unwrap();
    let old = store.reader().snapshot();
    rewrite_2000_keys(&mut store, "new");
    let mut c = old.cursor();
    c.seek(b"").unwrap();
    let mut n = 0;
    while c.valid() {
        assert_eq!(c.value(), b"old");
        n += 1;
        c.advance().unwrap();
    }
    assert_eq!(n, 2000);
    drop(c);
    drop(old);
    // With the old reader gone, space is reused instead of growing forever.
    let before = store.high_water();
    rewrite_2000_keys(&mut store, "again");
    assert!(
        store.high_water() <= before + 200,
        "{} -> {}",
        before,
        store.high_water()
    );
}

#[test]
fn unsynced_commits_are_lost_but_the_durable_state_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path());
    let mut txn = store.begin();
    txn.put(b"durable", b"1").unwrap();
    txn.commit([0; 4]).unwrap();
    store.sync().unwrap();
    let mut txn = store.begin();
    txn.put(b"soft", b"2").unwrap();
    txn.commit([0; 4]).unwrap();
    drop(store); // no sync: like a crash after a soft commit
    let store = open_store(dir.path());
    let got = snapshot_contents(&store);
    assert_eq!(
        got.into_iter().collect::<Vec<_>>(),
        vec![(b"durable".to_vec(), b"1".to_vec())]
    );
}

#[test]
fn flipped_byte_in_a_page_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path());
    let mut txn = store.begin();
    for i in 0..500u32 {
        txn.put(format!("k{i:06}").as_bytes(), &[7u8; 100]).unwrap();
    }
    txn.commit([0; 4]).unwrap();
    store.sync().unwrap();
    drop(store);
    let path = db_path(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Page 2 is the first tree page written (a leaf).
    bytes[2 * 4096 + 100] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let store = open_store(dir.path());
    let snap = store.reader().snapshot();
    let mut c = snap.cursor();
    let mut err = c.seek(b"").err();
    while err.is_none() && c.valid() {
        err = c.advance().err();
    }
    let msg = err.expect("corruption must be detected").to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("offset 8192"),
        "{msg}"
    );
}

#[test]
fn both_meta_pages_corrupt_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path());
    store.sync().unwrap();
    drop(store);
    let path = db_path(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    bytes[4096 + 20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let msg = PageStore::open(&store_options(dir.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("offset 0") && msg.contains("offset 4096"),
        "{msg}"
    );
}

#[test]
fn soft_commits_reuse_their_own_pages_without_a_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path());
    let mut txn = store.begin();
    for i in 0..5000u32 {
        txn.put(format!("k{i:06}").as_bytes(), &[1u8; 50]).unwrap();
    }
    txn.commit([0; 4]).unwrap();
    store.sync().unwrap();
    let before = store.high_water();
    // Many small soft commits (one put each, like a lightly loaded server) and no checkpoint.
    for i in 0..3000u32 {
        let mut txn = store.begin();
        txn.put(format!("k{:06}", (i * 7919) % 5000).as_bytes(), &[2u8; 50])
            .unwrap();
        txn.commit([0; 4]).unwrap();
    }
    // Each commit rewrites a root-to-leaf path; only the first rewrite of a durable page may not
    // be reused before the next checkpoint.
    assert!(
        store.high_water() < before + 400,
        "{before} -> {}",
        store.high_water()
    );
}

#[test]
fn a_durable_commit_in_flight_does_not_block_soft_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path());
    let mut model = BTreeMap::new();
    for round in 0..30u32 {
        let mut txn = store.begin();
        for i in 0..300u32 {
            let k = format!("k{:05}", (i * 31 + round * 17) % 2000).into_bytes();
            let v = format!("{round}").into_bytes();
            txn.put(&k, &v).unwrap();
            model.insert(k, v);
        }
        txn.commit([0; 4]).unwrap();
        if round % 3 == 0 {
            let durable = model.clone();
            let job = store.begin_sync().unwrap();
            // Soft commits while the job's I/O is "in flight".
            let mut txn = store.begin();
            for i in 0..300u32 {
                let k = format!("k{:05}", (i * 13 + round) % 2000).into_bytes();
                txn.put(&k, b"later").unwrap();
                model.insert(k, b"later".to_vec());
            }
            txn.commit([0; 4]).unwrap();
            job.run().unwrap();
            store.finish_sync(job);
            if round % 9 == 0 {
                // Crash right after the durable commit: exactly its state comes back.
                drop(store);
                store = open_store(dir.path());
                assert_eq!(snapshot_contents(&store), durable, "round {round}");
                model = durable;
            }
        }
        assert_eq!(snapshot_contents(&store), model, "round {round}");
    }
}

/// Two durable commits in a row land in different meta slots, whatever soft commits came between
/// (they advance the txn id too): a torn write of the newest meta then falls back to the durable
/// tree just before it, not to an older one whose freed pages may have been reused (DESIGN §3.1).
#[test]
fn a_torn_newest_meta_falls_back_to_the_previous_durable_tree() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path());
    let write = |store: &mut PageStore, value: &str| {
        let mut txn = store.begin();
        for i in 0..300u32 {
            txn.put(format!("k{i:04}").as_bytes(), value.as_bytes())
                .unwrap();
        }
        txn.commit([0; 4]).unwrap();
    };
    write(&mut store, "durable-1");
    store.sync().unwrap();
    // One soft commit between the two durable ones (the durable commit takes the next txn id
    // after it): the two durable commits' txn ids have the same parity.
    write(&mut store, "durable-2");
    store.sync().unwrap();
    drop(store);

    let path = db_path(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let meta = |b: &[u8], slot: usize| {
        retcd_engine::page::Meta::decode(&b[slot * 4096..(slot + 1) * 4096])
            .unwrap_or_else(|e| panic!("meta slot {slot} holds no durable meta: {e}"))
    };
    let (m0, m1) = (meta(&bytes, 0), meta(&bytes, 1));
    let newest = if m0.txn > m1.txn { 0 } else { 1 };
    // The newest meta write was torn: its checksum fails.
    bytes[newest * 4096 + 20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let store = open_store(dir.path());
    let contents = snapshot_contents(&store);
    assert_eq!(
        contents.len(),
        300,
        "the previous durable tree, not an older one"
    );
    assert!(
        contents.values().all(|v| v == b"durable-1"),
        "the previous durable tree"
    );
}

/// One process at a time: a second open of the same store (another retcd on the same data dir,
/// or an offline tool) is refused while the first holds it, and allowed once it is closed.
#[test]
fn a_store_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let msg = PageStore::open(&store_options(dir.path()))
        .err()
        .expect("a second open must be refused")
        .to_string();
    assert!(
        msg.contains("in use by another process")
            && msg.contains(&db_path(dir.path()).display().to_string()),
        "{msg}"
    );
    drop(store);
    open_store(dir.path());
}

/// The newest valid meta page of the store under `dir` and its slot.
fn newest_meta(dir: &Path) -> (usize, Meta) {
    let bytes = std::fs::read(db_path(dir)).unwrap();
    (0..2)
        .filter_map(|slot| {
            Some((
                slot,
                Meta::decode(&bytes[slot * 4096..(slot + 1) * 4096]).ok()?,
            ))
        })
        .max_by_key(|(_, m)| m.txn)
        .expect("a valid meta page")
}

/// No page below the high-water mark is lost or counted twice.
fn assert_pages_accounted(store: &PageStore, when: &str) {
    let a = store.audit().unwrap();
    assert!(a.leaked.is_empty() && a.twice.is_empty(), "{when}: {a:?}");
}

/// A root branch with one child is replaced by that child at commit. When that branch is a
/// multi-page node (its one key is longer than a page), all its pages are freed, not only the
/// first. The store starts from a file whose root is such a branch, over a leaf holding the long
/// key, written here directly: no commit of today's tree can make one (two branch entries with
/// keys over half a page never share a page, so building a root over them does not end).
#[test]
fn a_collapsed_multi_page_root_branch_frees_all_its_pages() {
    let dir = tempfile::tempdir().unwrap();
    let long = vec![b'k'; 6000];
    let mut store = open_store(dir.path());
    let mut txn = store.begin();
    txn.put(&long, b"v1").unwrap();
    txn.commit([0; 4]).unwrap();
    store.sync().unwrap();
    drop(store);

    let (slot, meta) = newest_meta(dir.path());
    let branch = meta.high_water;
    let mut buf = Vec::new();
    page::encode_node(
        &mut buf,
        branch,
        page::KIND_BRANCH,
        [(&long[..], &meta.root.to_le_bytes()[..])].into_iter(),
    );
    assert_eq!(buf.len(), 2 * 4096, "a two-page branch");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(db_path(dir.path()))
        .unwrap();
    file.write_all_at(&buf, branch * 4096).unwrap();
    let crafted = Meta {
        txn: meta.txn + 1,
        root: branch,
        high_water: branch + 2,
        ..meta
    };
    file.write_all_at(&crafted.encode(), ((1 - slot) * 4096) as u64)
        .unwrap();
    file.sync_all().unwrap();
    drop(file);

    let mut store = open_store(dir.path());
    assert_pages_accounted(&store, "opened");
    // Rewriting the value rewrites the root branch (one child, two pages) and collapses it.
    let mut txn = store.begin();
    txn.put(&long, b"v2").unwrap();
    txn.commit([0; 4]).unwrap();
    assert_eq!(
        btree::get(&store.reader().snapshot(), &long).unwrap(),
        Some(&b"v2"[..])
    );
    assert_pages_accounted(&store, "after the collapse");
    store.sync().unwrap();
    store.sync().unwrap();
    drop(store);
    let store = open_store(dir.path());
    assert_pages_accounted(&store, "reopened");
}

/// A commit that fails after it allocated pages gives them back: here it writes the new root
/// branch, then finds the corrupt page of the one child left while collapsing the root. The
/// store's free pages and high-water mark are as before the txn, and its pages are reused. A
/// txn dropped without commit takes no page.
#[test]
fn a_failed_commit_gives_back_the_pages_it_took() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path());
    // Two leaves under a root branch; a few rewrites leave free pages to allocate from.
    for round in 0..3u8 {
        let mut txn = store.begin();
        txn.put(b"a", &[round; 3000]).unwrap();
        txn.put(b"m", &[round; 3000]).unwrap();
        txn.commit([0; 4]).unwrap();
        store.sync().unwrap();
    }
    store.sync().unwrap();
    assert!(store.free_pages() > 0);
    drop(store);

    let path = db_path(dir.path());
    let (_, meta) = newest_meta(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let root = page::PageView::parse(&bytes, meta.high_water, meta.root, &path).unwrap();
    assert_eq!(
        (root.kind(), root.count(), root.key(1)),
        (page::KIND_BRANCH, 2, &b"m"[..])
    );
    let m_leaf = root.child(1);
    bytes[m_leaf as usize * 4096 + 2000] ^= 1;
    std::fs::write(&path, &bytes).unwrap();

    let mut store = open_store(dir.path());
    let before = (store.high_water(), store.free_pages());
    {
        let mut txn = store.begin();
        txn.put(b"b", &[9; 3000]).unwrap();
    }
    assert_eq!(
        (store.high_water(), store.free_pages()),
        before,
        "dropped txn"
    );

    let mut txn = store.begin();
    assert!(txn.delete(b"a").unwrap());
    let err = txn
        .commit([0; 4])
        .expect_err("the corrupt leaf fails the commit");
    assert!(
        err.to_string()
            .contains(&format!("offset {}", m_leaf * 4096)),
        "{err}"
    );
    assert_eq!(
        (store.high_water(), store.free_pages()),
        before,
        "failed commit"
    );
    // The tree is the one before the txn, and the store goes on.
    let snap = store.reader().snapshot();
    assert_eq!(btree::get(&snap, b"a").unwrap(), Some(&[2u8; 3000][..]));
    drop(snap);
    let mut txn = store.begin();
    txn.put(b"b", &[9; 3000]).unwrap();
    txn.commit([0; 4]).unwrap();
    assert_eq!(
        btree::get(&store.reader().snapshot(), b"b").unwrap(),
        Some(&[9u8; 3000][..])
    );
}
