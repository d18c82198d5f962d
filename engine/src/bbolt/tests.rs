//! Write → read round trips, the layout's invariants, input errors, and corrupt files.

use std::ops::ControlFlow;

use super::*;
use super::{
    FLAG_FREELIST, FLAG_LEAF, META_CHECKED, META_OFFSET, NO_FREELIST, PAGE_HEADER, fnv1a64,
    put_header, put_u64,
};

/// xorshift, seeded, so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Random buckets: names and keys unique and sorted per bucket, value sizes from empty to
/// several pages.
fn random_source(rng: &mut Rng, max_buckets: u64, max_entries: u64) -> MemSource {
    let mut src = MemSource::default();
    let n = rng.below(max_buckets + 1);
    let mut names = std::collections::BTreeSet::new();
    while (names.len() as u64) < n {
        let len = 1 + rng.below(12) as usize;
        names.insert(rng.bytes(len));
    }
    for name in names {
        let count = match rng.below(4) {
            0 => 0,
            1 => rng.below(5),
            _ => rng.below(max_entries + 1),
        };
        let mut keys = std::collections::BTreeSet::new();
        while (keys.len() as u64) < count {
            let len = match rng.below(50) {
                0 => 1 + rng.below(6000) as usize,
                _ => 1 + rng.below(24) as usize,
            };
            keys.insert(rng.bytes(len));
        }
        let entries = keys
            .into_iter()
            .map(|k| {
                let vlen = match rng.below(40) {
                    0 => 4096 + rng.below(20_000) as usize,
                    1 => 4000 + rng.below(200) as usize,
                    2..=5 => 0,
                    _ => rng.below(200) as usize,
                };
                (k, rng.bytes(vlen))
            })
            .collect();
        // Unsorted on purpose: the writer sorts buckets by name.
        src.buckets.insert(
            rng.below(src.buckets.len() as u64 + 1) as usize,
            (name, entries),
        );
    }
    src
}

fn write(src: &MemSource) -> Vec<u8> {
    let mut out = Vec::new();
    let summary = write_db(&mut out, src).expect("write_db");
    assert_eq!(summary.bytes, out.len() as u64);
    assert_eq!(summary.pages * PAGE_SIZE as u64, summary.bytes);
    out
}

/// Reads everything back and compares with `src`; runs `check`.
fn assert_round_trip(src: &MemSource, bytes: Vec<u8>) -> Db {
    let db = Db::from_bytes(bytes).expect("open");
    let report = db.check().expect("check");
    assert_eq!(report.unreachable, 0, "every page is reachable");
    assert_eq!(report.reachable, report.pages);
    let mut expected = src.buckets.clone();
    expected.sort();
    let total: usize = expected.iter().map(|(_, e)| e.len()).sum();
    assert_eq!(report.keys, total as u64);
    assert_eq!(report.buckets, expected.len() as u64);
    let buckets = db.buckets().expect("buckets");
    assert_eq!(
        buckets.iter().map(|b| b.name.clone()).collect::<Vec<_>>(),
        expected.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    );
    for (b, (_, entries)) in buckets.iter().zip(&expected) {
        assert_eq!(
            &db.entries(b).expect("entries"),
            entries,
            "bucket {:?}",
            b.name
        );
        let size = 16
            + entries
                .iter()
                .map(|(k, v)| 16 + k.len() + v.len())
                .sum::<usize>();
        assert_eq!(b.is_inline(), size <= 1024, "inline rule");
    }
    db
}

#[test]
fn random_round_trips() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let src = random_source(&mut rng, 12, 600);
        let bytes = write(&src);
        let db = assert_round_trip(&src, bytes);
        assert_eq!(db.meta().txid, 2);
        assert_eq!(db.meta().freelist, None);
        assert_eq!(db.meta().root, db.meta().pgid - 1);
    }
}

#[test]
fn no_buckets_and_empty_buckets() {
    let none = MemSource::default();
    let bytes = write(&none);
    assert_eq!(
        bytes.len(),
        3 * PAGE_SIZE,
        "two metas and an empty root leaf"
    );
    assert_round_trip(&none, bytes);

    let empty = MemSource {
        buckets: vec![(b"a".to_vec(), vec![]), (b"b".to_vec(), vec![])],
    };
    let bytes = write(&empty);
    // An empty bucket is 32 inline bytes: 16 zero bytes + an empty leaf header.
    let root_leaf = &bytes[2 * PAGE_SIZE..];
    assert_eq!(&root_leaf[8..12], &[0x02, 0, 2, 0]);
    let db = assert_round_trip(&empty, bytes);
    assert!(db.buckets().unwrap().iter().all(Bucket::is_inline));
}

#[test]
fn many_entries_make_a_deep_tree_and_many_buckets_a_big_root() {
    // 60,000 revision-like keys: ~900 leaves under two branch levels.
    let entries: Vec<_> = (0..60_000u64)
        .map(|i| {
            let mut k = i.to_be_bytes().to_vec();
            k.push(b'_');
            k.extend_from_slice(&0u64.to_be_bytes());
            (k, format!("value {i}").into_bytes())
        })
        .collect();
    let src = MemSource {
        buckets: vec![(b"key".to_vec(), entries)],
    };
    let bytes = write(&src);
    let root_of_key = {
        let db = Db::from_bytes(bytes.clone()).unwrap();
        let b = db.bucket(b"key").unwrap().unwrap();
        assert!(!b.is_inline());
        match b.root_view() {
            read::BucketRootView::Page(p) => p,
            read::BucketRootView::Inline => unreachable!(),
        }
    };
    assert_eq!(
        bytes[root_of_key as usize * PAGE_SIZE + 8],
        0x01,
        "root is a branch"
    );
    assert_round_trip(&src, bytes);

    // 5,000 buckets with 2 entries each: the root bucket itself spans many pages.
    let src = MemSource {
        buckets: (0..5000u32)
            .map(|i| {
                let name = format!("bucket-{i:05}").into_bytes();
                (
                    name,
                    vec![(b"a".to_vec(), vec![1]), (b"b".to_vec(), vec![])],
                )
            })
            .collect(),
    };
    assert_round_trip(&src, write(&src));
}

#[test]
fn huge_keys_and_values() {
    // Keys of the maximal size force two-element branch pages that overflow.
    let entries: Vec<_> = (0..40u8)
        .map(|i| {
            let mut k = vec![i; MAX_KEY_SIZE];
            k[MAX_KEY_SIZE - 1] = 0xFF;
            (k, vec![i; 3 * PAGE_SIZE + 7])
        })
        .collect();
    let src = MemSource {
        buckets: vec![
            (b"big".to_vec(), entries),
            (b"one".to_vec(), vec![(b"v".to_vec(), vec![7; 1 << 20])]),
        ],
    };
    assert_round_trip(&src, write(&src));
}

#[test]
fn trailer_is_sha256_of_the_db_and_verified() {
    let mut rng = Rng(77);
    let src = random_source(&mut rng, 6, 300);
    let mut sink = Sha256Trailer::new(Vec::new());
    write_db(&mut sink, &src).unwrap();
    let (mut bytes, digest) = sink.finish().unwrap();
    assert_eq!(bytes.len() % 512, 32);
    let (summary, same, same_digest) = write_snapshot(Vec::new(), &src).unwrap();
    assert_eq!((&same, same_digest), (&bytes, digest));
    // The planned size is told once, before anything is written, and is what gets written.
    let mut told = Vec::new();
    let (planned, out, _) = write_snapshot_planned(Vec::new(), &src, &mut |size| {
        told.push(size);
        Ok(())
    })
    .unwrap();
    assert_eq!(told, vec![planned.bytes]);
    assert_eq!(out, bytes);
    let refused = write_db_planned(&mut Vec::new(), &src, &mut |_| {
        Err(std::io::Error::other("no"))
    });
    assert!(matches!(refused, Err(WriteError::Io(_))));
    assert_eq!(summary.bytes + 32, bytes.len() as u64);
    let db = Db::from_bytes(bytes.clone()).unwrap();
    assert_eq!(db.verify_trailer().unwrap(), Trailer::Present { digest });
    assert_eq!(db.size(), bytes.len() as u64 - 32);
    assert_round_trip(&src, bytes.clone());

    // The same file from a path (positional reads).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.db");
    std::fs::write(&path, &bytes).unwrap();
    let db = Db::open(&path).unwrap();
    assert_eq!(db.verify_trailer().unwrap(), Trailer::Present { digest });
    db.check().unwrap();

    // A wrong digest is found; a file without one has none.
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    let db = Db::from_bytes(bytes.clone()).unwrap();
    assert!(matches!(
        db.verify_trailer(),
        Err(ReadError::TrailerMismatch { .. })
    ));
    bytes.truncate(n - 32);
    let db = Db::from_bytes(bytes).unwrap();
    assert_eq!(db.verify_trailer().unwrap(), Trailer::Absent);
}

#[test]
fn snapshot_status_counts_and_hashes() {
    let rev = |main: u64, sub: u64| {
        let mut k = main.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&sub.to_be_bytes());
        k
    };
    let src = MemSource {
        buckets: vec![
            (
                b"meta".to_vec(),
                vec![(b"consistent_index".to_vec(), 5u64.to_be_bytes().to_vec())],
            ),
            (
                b"key".to_vec(),
                vec![(rev(2, 0), b"x".to_vec()), (rev(9, 1), b"y".to_vec())],
            ),
            (b"lease".to_vec(), vec![]),
        ],
    };
    let db = Db::from_bytes(write(&src)).unwrap();
    let st = snapshot_status(&db).unwrap();
    assert_eq!(st.revision, 9);
    assert_eq!(st.total_key, 3);
    assert_eq!(st.total_size, db.size());
    // Bucket names in order, each followed by its keys and values.
    let mut h = 0;
    for part in [
        &b"key"[..],
        &rev(2, 0),
        b"x",
        &rev(9, 1),
        b"y",
        b"lease",
        b"meta",
        b"consistent_index",
        &5u64.to_be_bytes(),
    ] {
        h = crc32c::crc32c_append(h, part);
    }
    assert_eq!(st.hash, h);
}

/// A source whose second scan differs from the first.
struct Shifty(std::cell::Cell<u32>);

impl Source for Shifty {
    fn bucket_names(&self) -> Vec<Vec<u8>> {
        vec![b"b".to_vec()]
    }
    fn scan(&self, _: usize, visit: &mut Visit<'_>) -> Result<(), SourceError> {
        let pass = self.0.get();
        self.0.set(pass + 1);
        for i in 0..(200 + pass * 100) {
            if visit(&i.to_be_bytes(), &[0; 40]).is_break() {
                break;
            }
        }
        Ok(())
    }
}

#[test]
fn bad_input_is_an_error() {
    let one = |entries: Vec<(Vec<u8>, Vec<u8>)>| MemSource {
        buckets: vec![(b"b".to_vec(), entries)],
    };
    let err = |src: &MemSource| write_db(&mut Vec::new(), src).unwrap_err();
    assert!(matches!(
        err(&one(vec![(b"b".to_vec(), vec![]), (b"a".to_vec(), vec![])])),
        WriteError::BadEntry { .. }
    ));
    assert!(matches!(
        err(&one(vec![(b"a".to_vec(), vec![]), (b"a".to_vec(), vec![])])),
        WriteError::BadEntry { .. }
    ));
    assert!(matches!(
        err(&one(vec![(vec![], vec![])])),
        WriteError::BadEntry { .. }
    ));
    assert!(matches!(
        err(&one(vec![(vec![1; MAX_KEY_SIZE + 1], vec![])])),
        WriteError::BadEntry { .. }
    ));
    let twice = MemSource {
        buckets: vec![(b"b".to_vec(), vec![]), (b"b".to_vec(), vec![])],
    };
    assert!(matches!(err(&twice), WriteError::BadBucketName { .. }));
    let e = write_db(&mut Vec::new(), &Shifty(0.into())).unwrap_err();
    assert!(matches!(e, WriteError::SourceChanged { .. }), "{e}");
}

/// A small db with a branch level, an overflow value and an inline bucket.
fn sample() -> (MemSource, Vec<u8>) {
    let src = MemSource {
        buckets: vec![
            (
                b"key".to_vec(),
                (0..300u32)
                    .map(|i| {
                        (
                            i.to_be_bytes().to_vec(),
                            vec![i as u8; 20 + (i as usize % 7) * 9],
                        )
                    })
                    .chain([(vec![0xFF; 3], vec![9; 9000])])
                    .collect(),
            ),
            (
                b"meta".to_vec(),
                vec![(b"consistent_index".to_vec(), vec![0, 0, 0, 0, 0, 0, 0, 4])],
            ),
        ],
    };
    let bytes = write(&src);
    (src, bytes)
}

/// Opens, checks and reads every bucket; returns the first error. Must never panic or hang.
fn read_all(bytes: Vec<u8>) -> Result<(), ReadError> {
    let db = Db::from_bytes(bytes)?;
    let _ = db.verify_trailer();
    let check = db.check();
    for b in db.buckets()? {
        db.scan_bucket(&b, &mut |_, _| ControlFlow::Continue(()))?;
    }
    snapshot_status(&db)?;
    check.map(|_| ())
}

#[test]
fn corrupt_files_give_errors() {
    let (src, bytes) = sample();
    assert_round_trip(&src, bytes.clone());
    let pages = bytes.len() / PAGE_SIZE;

    // Meta 0 damaged: bbolt falls back to meta 1 (txid 1), which describes the same tree.
    let mut b = bytes.clone();
    b[META_OFFSET + 20] ^= 0x40;
    let db = Db::from_bytes(b.clone()).unwrap();
    assert_eq!((db.meta().page, db.meta().txid), (1, 1));
    db.check().unwrap();
    // Both damaged: no valid meta.
    b[PAGE_SIZE + META_OFFSET + 40] ^= 0x01;
    assert!(matches!(
        Db::from_bytes(b),
        Err(ReadError::NoValidMeta { .. })
    ));

    // Truncated: fewer pages than the meta's high-water mark, or not even a meta.
    let short = bytes[..bytes.len() - PAGE_SIZE].to_vec();
    assert!(matches!(
        Db::from_bytes(short),
        Err(ReadError::Truncated { .. })
    ));
    assert!(matches!(
        Db::from_bytes(bytes[..100].to_vec()),
        Err(ReadError::TooSmall { .. })
    ));

    // The key bucket's root is a branch: point its first child at itself → no endless walk.
    let db = Db::from_bytes(bytes.clone()).unwrap();
    let root = match db.bucket(b"key").unwrap().unwrap().root_view() {
        read::BucketRootView::Page(p) => p,
        read::BucketRootView::Inline => unreachable!(),
    } as usize;
    let at = root * PAGE_SIZE;
    assert_eq!(bytes[at + 8], 0x01, "a branch page");
    let mut b = bytes.clone();
    b[at + 24..at + 32].copy_from_slice(&(root as u64).to_le_bytes());
    assert!(read_all(b).is_err());
    // A child out of bounds.
    let mut b = bytes.clone();
    b[at + 24..at + 32].copy_from_slice(&(pages as u64 + 5).to_le_bytes());
    assert!(matches!(read_all(b), Err(ReadError::OutOfBounds { .. })));
    // Branch keys swapped → check finds the order broken.
    let mut b = bytes.clone();
    let pos = |b: &[u8], i: usize| {
        let e = at + 16 + 16 * i;
        e + u32::from_le_bytes(b[e..e + 4].try_into().unwrap()) as usize
    };
    let (k0, k1) = (pos(&b, 0), pos(&b, 1));
    let first = b[k0..k0 + 4].to_vec();
    b.copy_within(k1..k1 + 4, k0);
    b[k1..k1 + 4].copy_from_slice(&first);
    assert!(Db::from_bytes(b).unwrap().check().is_err());
    // A page header id that lies.
    let mut b = bytes.clone();
    b[3 * PAGE_SIZE] ^= 0x10;
    assert!(read_all(b).is_err());

    // Random damage, half of it in page headers and element arrays (the first 96 bytes of a
    // page): an error or a consistent read, never a panic or a hang.
    let mut rng = Rng(0xDEAD_BEEF);
    for _ in 0..4000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(3) {
            let i = if rng.below(2) == 0 {
                rng.below(b.len() as u64) as usize
            } else {
                rng.below(pages as u64) as usize * PAGE_SIZE + rng.below(96) as usize
            };
            b[i] ^= 1 << rng.below(8);
        }
        if rng.below(10) == 0 {
            let cut = rng.below(b.len() as u64) as usize;
            b.truncate(cut);
        }
        let _ = read_all(b);
    }
}

/// Rewrites both metas' freelist and pgid fields, with fresh checksums.
fn set_meta(bytes: &mut [u8], freelist: u64, pgid: u64) {
    for m in [META_OFFSET, PAGE_SIZE + META_OFFSET] {
        put_u64(bytes, m + 32, freelist);
        put_u64(bytes, m + 40, pgid);
        let sum = fnv1a64(&bytes[m..m + META_CHECKED]);
        put_u64(bytes, m + META_CHECKED, sum);
    }
}

/// Appends a freelist page listing `ids` (and optionally an orphan page before it).
fn with_freelist(bytes: &[u8], orphan: bool, ids: &[u64]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if orphan {
        let id = (b.len() / PAGE_SIZE) as u64;
        let mut page = vec![0u8; PAGE_SIZE];
        put_header(&mut page, id, FLAG_LEAF, 0, 0);
        b.extend_from_slice(&page);
    }
    let id = (b.len() / PAGE_SIZE) as u64;
    let mut page = vec![0u8; PAGE_SIZE];
    put_header(&mut page, id, FLAG_FREELIST, ids.len() as u16, 0);
    for (i, free) in ids.iter().enumerate() {
        put_u64(&mut page, PAGE_HEADER + 8 * i, *free);
    }
    b.extend_from_slice(&page);
    set_meta(&mut b, id, id + 1);
    b
}

#[test]
fn check_follows_a_persisted_freelist() {
    let (_, bytes) = sample();
    let orphan = (bytes.len() / PAGE_SIZE) as u64;
    let check = |b: Vec<u8>| Db::from_bytes(b).unwrap().check();

    let r = check(with_freelist(&bytes, false, &[])).unwrap();
    assert_eq!((r.free, r.unreachable, r.reachable), (0, 0, r.pages));
    // Without a persisted freelist an orphan is merely unreachable (bbolt rebuilds the
    // freelist from it); with one it must be listed.
    let mut b = bytes.clone();
    b.extend_from_slice(&[0; PAGE_SIZE]);
    put_header(
        &mut b[orphan as usize * PAGE_SIZE..],
        orphan,
        FLAG_LEAF,
        0,
        0,
    );
    set_meta(&mut b, NO_FREELIST, orphan + 1);
    assert_eq!(check(b).unwrap().unreachable, 1);
    assert!(matches!(
        check(with_freelist(&bytes, true, &[])),
        Err(ReadError::UnreachableUnfreed { pgid }) if pgid == orphan
    ));
    let r = check(with_freelist(&bytes, true, &[orphan])).unwrap();
    assert_eq!((r.free, r.unreachable), (1, 0));
    assert!(matches!(
        check(with_freelist(&bytes, true, &[orphan, orphan])),
        Err(ReadError::AlreadyFreed { .. })
    ));
    assert!(matches!(
        check(with_freelist(&bytes, true, &[orphan, 2])),
        Err(ReadError::ReachableFreed { pgid: 2 })
    ));
    assert!(matches!(
        check(with_freelist(&bytes, true, &[orphan, 1 << 40])),
        Err(ReadError::FreelistOutOfBounds { .. })
    ));
}
