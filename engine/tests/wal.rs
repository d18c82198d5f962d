//! Integration tests of the WAL (engine/DESIGN.md §2): round trips, rollover (through the spare
//! segment file), torn tails, corruption, segment release, crashes around a rollover. Each test
//! runs inside its own glommio executor.

use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use retcd_engine::wal::{
    Preallocate, Record, Recovered, SPARE_FILE_NAME, Wal, WalError, WalOptions,
};

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;

/// Runs `f` on a fresh executor (small io_memory: memlock is 8 MiB on the test machines).
fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(512 << 10)
        .make()
        .expect("executor");
    ex.run(f());
}

/// Runs `f` on a fresh executor with a fresh temporary directory (deleted afterwards).
fn run_in_tempdir<F, Fut>(f: F)
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = ()>,
{
    let tmp = tempfile::tempdir().unwrap();
    run(|| f(tmp.path().to_path_buf()));
}

fn opts(dir: &Path, segment_size: u64) -> WalOptions {
    WalOptions {
        dir: dir.to_path_buf(),
        segment_size,
        preallocate: Preallocate::Reserve,
    }
}

fn data(index: u64, len: usize) -> Bytes {
    (0..len)
        .map(|i| (index as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn entry(index: u64, len: usize) -> Record {
    Record::Entry {
        index,
        term: 1 + index / 100,
        entry_type: (index % 3) as u8,
        data: data(index, len),
    }
}

/// Bytes a record with `data_len` bytes of entry data takes in a segment.
fn entry_size(data_len: usize) -> u64 {
    24 + (24 + data_len as u64).div_ceil(8) * 8
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn first_index_of(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_str().unwrap();
    u64::from_str_radix(&name[17..33], 16).unwrap()
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
    f.sync_all().unwrap();
}

/// Zeroes everything after the header of a 1 MiB segment, as before its first record was written.
fn erase_records(segment: &Path) {
    write_at(segment, BLOCK, &vec![0u8; (MIB - BLOCK) as usize]);
}

fn flip_byte(path: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

fn entries(records: &[Record]) -> Vec<Record> {
    records
        .iter()
        .filter(|r| matches!(r, Record::Entry { .. }))
        .cloned()
        .collect()
}

/// Appends entries `from..to` (data of `len` bytes) in batches of `batch`.
async fn append_entries(wal: &mut Wal, from: u64, to: u64, len: usize, batch: u64) {
    let mut i = from;
    while i < to {
        let end = (i + batch).min(to);
        let recs: Vec<Record> = (i..end).map(|j| entry(j, len)).collect();
        wal.append(&recs).await.unwrap();
        i = end;
    }
}

/// Opens the WAL in `dir`, which must succeed.
async fn open_wal(dir: &Path, segment_size: u64) -> (Wal, Recovered) {
    Wal::open(opts(dir, segment_size)).await.unwrap()
}

/// The error of opening the WAL in `dir`, which must fail.
async fn open_err(dir: &Path, segment_size: u64) -> WalError {
    Wal::open(opts(dir, segment_size)).await.err().unwrap()
}

fn expect_corrupt(err: WalError, file: &Path, offset: u64) {
    match &err {
        WalError::Corrupt {
            file: f, offset: o, ..
        } => {
            assert_eq!(f, file, "{err}");
            assert_eq!(*o, offset, "{err}");
            let shown = err.to_string();
            assert!(shown.contains(&file.display().to_string()), "{shown}");
            assert!(shown.contains(&offset.to_string()), "{shown}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn round_trip_all_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    run(|| async {
        let (mut wal, rec) = open_wal(&dir, MIB).await;
        assert!(rec.records.is_empty() && rec.truncated_tail.is_none());
        assert_eq!(wal.last_index(), 0);
        let mut all = vec![
            Record::HardState {
                term: 1,
                vote: 3,
                commit: 0,
            },
            Record::Entry {
                index: 1,
                term: 1,
                entry_type: 0,
                data: Bytes::new(),
            },
            entry(2, 1),
            entry(3, 7),
            entry(4, 8),
            entry(5, 5000),
        ];
        wal.append(&all).await.unwrap();
        let more = vec![
            Record::HardState {
                term: 2,
                vote: 0,
                commit: 5,
            },
            Record::Checkpoint { index: 4, term: 1 },
            entry(6, 100),
        ];
        wal.append(&more).await.unwrap();
        all.extend(more);
        wal.append(&[]).await.unwrap();
        assert_eq!(wal.last_index(), 6);
        wal.close().await.unwrap();

        let (mut wal, rec) = open_wal(&dir, MIB).await;
        assert_eq!(rec.records, all);
        assert!(rec.truncated_tail.is_none());
        assert_eq!(wal.last_index(), 6);
        // Appending after a reopen continues the chain (also mid-block).
        let later = vec![entry(7, 3), entry(8, 4097)];
        wal.append(&later).await.unwrap();
        all.extend(later);
        drop(wal);

        let (wal, rec) = open_wal(&dir, MIB).await;
        assert_eq!(rec.records, all);
        assert_eq!(wal.last_index(), 8);
        assert_eq!(segments(&dir).len(), 1);
        assert!(dir.join(retcd_engine::wal::PROBE_FILE_NAME).exists());
    });
}

#[test]
fn rollover_many_batches() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        let mut expected = Vec::new();
        let mut hard_states = Vec::new();
        let mut seed = 0x1234_5678u64;
        let mut next = 1u64;
        for round in 0..800u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = 1 + (seed >> 33) % 8;
            let mut batch = Vec::new();
            for _ in 0..n {
                let len = ((seed >> 20) % 3000) as usize + (next as usize % 7);
                batch.push(entry(next, len));
                next += 1;
            }
            if round % 7 == 0 {
                let hs = Record::HardState {
                    term: 1,
                    vote: 1,
                    commit: next - 1,
                };
                batch.push(hs.clone());
                hard_states.push(hs);
            }
            wal.append(&batch).await.unwrap();
            expected.extend(batch);
        }
        let allocations = wal.buffer_allocations();
        assert!(allocations <= 11, "{allocations} write buffers allocated");
        assert_eq!(wal.last_index(), next - 1);
        drop(wal);
        let segs = segments(&dir);
        assert!(segs.len() >= 4, "only {} segments", segs.len());
        for s in &segs {
            assert_eq!(std::fs::metadata(s).unwrap().len(), MIB);
        }

        let (mut wal, rec) = open_wal(&dir, MIB).await;
        assert!(rec.truncated_tail.is_none());
        assert_eq!(entries(&rec.records), entries(&expected));
        let mut got_hs: Vec<Record> = rec
            .records
            .iter()
            .filter(|r| matches!(r, Record::HardState { .. }))
            .cloned()
            .collect();
        // Every segment but the first starts with a copy of the latest HardState.
        assert_eq!(got_hs.len(), hard_states.len() + segs.len() - 1);
        got_hs.dedup();
        assert_eq!(got_hs, hard_states);
        assert_eq!(wal.last_index(), next - 1);
        append_entries(&mut wal, next, next + 300, 2000, 17).await;
        drop(wal);
        let (wal, rec) = open_wal(&dir, MIB).await;
        assert_eq!(wal.last_index(), next + 299);
        assert_eq!(
            entries(&rec.records).len() as u64,
            next + 299,
            "all entries present"
        );
    });
}

#[test]
fn batch_larger_than_w_is_split() {
    let tmp = tempfile::tempdir().unwrap();
    for segment_size in [64 * MIB, MIB] {
        let dir = tmp.path().join(format!("wal-{segment_size}"));
        run(|| async {
            let (mut wal, _) = open_wal(&dir, segment_size).await;
            // 6 MiB in one batch.
            let batch: Vec<Record> = (1..=1536).map(|i| entry(i, 4000)).collect();
            let t = Instant::now();
            wal.append(&batch).await.unwrap();
            eprintln!(
                "append of one 6 MiB batch (segment {segment_size}): {:?}",
                t.elapsed()
            );
            wal.append(&[entry(1537, 10)]).await.unwrap();
            drop(wal);
            let (_, rec) = open_wal(&dir, segment_size).await;
            assert_eq!(rec.records.len(), 1537);
            assert_eq!(rec.records[..1536], batch[..]);
        });
    }
}

/// Appends entries 1..=n one per batch with `len` bytes of data; returns the offset of each.
async fn small_log(dir: &Path, n: u64, len: usize) -> Vec<u64> {
    let (mut wal, _) = open_wal(dir, MIB).await;
    let mut offsets = Vec::new();
    let mut at = BLOCK;
    for i in 1..=n {
        wal.append(&[entry(i, len)]).await.unwrap();
        offsets.push(at);
        at += entry_size(len);
    }
    wal.close().await.unwrap();
    offsets
}

/// Reopens after damage; checks the cut and that the log goes on working.
async fn check_torn(dir: &Path, keep: u64, cut_at: Option<u64>) {
    let seg = segments(dir)[0].clone();
    let (mut wal, rec) = open_wal(dir, MIB).await;
    let want: Vec<Record> = (1..=keep).map(|i| entry(i, 100)).collect();
    assert_eq!(rec.records, want);
    assert_eq!(rec.truncated_tail, cut_at.map(|o| (seg.clone(), o)));
    assert_eq!(wal.last_index(), keep);
    wal.append(&[entry(keep + 1, 100), entry(keep + 2, 9000)])
        .await
        .unwrap();
    wal.append(&[entry(keep + 3, 100)]).await.unwrap();
    drop(wal);
    let (wal, rec) = open_wal(dir, MIB).await;
    assert!(rec.truncated_tail.is_none());
    assert_eq!(rec.records.len() as u64, keep + 3);
    assert_eq!(rec.records[..keep as usize], want[..]);
    assert_eq!(rec.records[keep as usize + 1], entry(keep + 2, 9000));
    assert_eq!(wal.last_index(), keep + 3);
}

/// A record whose every sector landed cannot be torn (sectors are written whole, DESIGN §1): a
/// changed byte in it — even in the very last record — is damage to synced data.
#[test]
fn damaged_last_record_whose_sectors_all_landed_is_corruption() {
    run_in_tempdir(|dir| async move {
        let offsets = small_log(&dir, 10, 100).await;
        let last = offsets[9];
        let seg = segments(&dir)[0].clone();
        write_at(&seg, last + entry_size(100) - 12, &[0xde, 0xad, 0xbe, 0xef]);
        let err = open_err(&dir, MIB).await;
        expect_corrupt(err, &seg, last);
    });
}

/// The last record of the last write straddles a sector boundary and only its first sector
/// landed: a torn tail.
#[test]
fn torn_tail_last_record_missing_a_sector() {
    run_in_tempdir(|dir| async move {
        let n = (1..60u64)
            .find(|&n| {
                let at = BLOCK + (n - 1) * entry_size(100);
                at / 512 != (at + entry_size(100) - 1) / 512
            })
            .unwrap();
        let offsets = small_log(&dir, n, 100).await;
        let last = offsets[n as usize - 1];
        let boundary = (last / 512 + 1) * 512;
        let seg = segments(&dir)[0].clone();
        write_at(
            &seg,
            boundary,
            &vec![0u8; (last + entry_size(100) - boundary) as usize],
        );
        check_torn(&dir, n - 1, Some(last)).await;
    });
}

/// Small writes, each synced before the next: damage to a record followed by records of later
/// writes is corruption, though it lies well within one write (W) of the end. (The rule before
/// records carried their write cut everything from the damaged record on.)
#[test]
fn damage_to_a_synced_record_near_the_end_is_corruption() {
    run_in_tempdir(|dir| async move {
        let offsets = small_log(&dir, 20, 100).await;
        let seg = segments(&dir)[0].clone();
        let bad = offsets[14];
        // Bytes of it zeroed...
        write_at(&seg, bad + 100, &[0u8; 40]);
        let err = open_err(&dir, MIB).await;
        expect_corrupt(err, &seg, bad);
        // ...and the same record with a flipped bit instead.
        std::fs::remove_dir_all(&dir).unwrap();
        small_log(&dir, 20, 100).await;
        flip_byte(&seg, bad + 60);
        let err = open_err(&dir, MIB).await;
        expect_corrupt(err, &seg, bad);
    });
}

/// One write of many records is torn in the middle (a sector lost, later ones landed): it is cut
/// at the first damaged record; the intact records after it belong to the same write, so they
/// prove nothing was synced there.
#[test]
fn torn_write_of_many_records_is_cut_at_its_first_damaged_record() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        append_entries(&mut wal, 1, 11, 100, 1).await;
        let start = BLOCK + 10 * entry_size(100);
        wal.append(&(11..=40).map(|i| entry(i, 100)).collect::<Vec<_>>())
            .await
            .unwrap();
        wal.close().await.unwrap();
        let seg = segments(&dir)[0].clone();
        let lost = (start / 512 + 3) * 512;
        write_at(&seg, lost, &[0u8; 512]);
        let k = (lost - BLOCK) / entry_size(100);
        let first_bad = BLOCK + k * entry_size(100);
        assert!(first_bad > start && first_bad + entry_size(100) > lost);
        check_torn(&dir, k, Some(first_bad)).await;
    });
}

#[test]
fn torn_tail_zeroed_part_of_last_block() {
    run_in_tempdir(|dir| async move {
        let offsets = small_log(&dir, 40, 100).await;
        let end = offsets[39] + entry_size(100);
        let last_block = (end - 1) / BLOCK * BLOCK;
        // A tear leaves whole sectors unwritten.
        let zero_from = last_block + 1024;
        let seg = segments(&dir)[0].clone();
        write_at(
            &seg,
            zero_from,
            &vec![0u8; (last_block + BLOCK - zero_from) as usize],
        );
        // The record that straddles `zero_from` fails its crc; it and all after it are cut.
        let k = offsets.iter().rposition(|&o| o < zero_from).unwrap();
        assert!(offsets[k] + entry_size(100) > zero_from, "test layout");
        check_torn(&dir, k as u64, Some(offsets[k])).await;
    });
}

#[test]
fn torn_tail_garbage_after_last_record() {
    run_in_tempdir(|dir| async move {
        let offsets = small_log(&dir, 10, 100).await;
        let end = offsets[9] + entry_size(100);
        let seg = segments(&dir)[0].clone();
        write_at(&seg, end, &[0xee; 100]);
        check_torn(&dir, 10, Some(end)).await;
    });
}

#[test]
fn torn_tail_garbage_behind_a_zero_length() {
    run_in_tempdir(|dir| async move {
        let offsets = small_log(&dir, 10, 100).await;
        let end = offsets[9] + entry_size(100);
        let seg = segments(&dir)[0].clone();
        // Only a later sector of an interrupted write reached the disk.
        write_at(&seg, end + 600, &[0x77; 300]);
        check_torn(&dir, 10, Some(end)).await;
    });
}

#[test]
fn zeroed_tail_without_damage_is_not_a_cut() {
    run_in_tempdir(|dir| async move {
        let offsets = small_log(&dir, 10, 100).await;
        let seg = segments(&dir)[0].clone();
        // The last two records never reached the disk at all.
        write_at(&seg, offsets[8], &vec![0u8; 2 * entry_size(100) as usize]);
        check_torn(&dir, 8, None).await;
    });
}

#[test]
fn torn_tail_in_previous_segment_before_an_empty_one() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        append_entries(&mut wal, 1, 7301, 100, 100).await;
        drop(wal);
        let segs = segments(&dir);
        assert_eq!(segs.len(), 2);
        let per_segment = (MIB - BLOCK) / entry_size(100);
        assert_eq!(first_index_of(&segs[1]), per_segment + 1);
        // The newest segment holds no record; the last record of the one before is damaged.
        erase_records(&segs[1]);
        let last = BLOCK + (per_segment - 1) * entry_size(100);
        // Its header's sector was lost, the rest landed.
        write_at(&segs[0], last, &[0u8; 8]);

        let (mut wal, rec) = open_wal(&dir, MIB).await;
        assert_eq!(rec.truncated_tail, Some((segs[0].clone(), last)));
        assert_eq!(rec.records.len() as u64, per_segment - 1);
        assert_eq!(segments(&dir), vec![segs[0].clone()]);
        append_entries(&mut wal, per_segment, per_segment + 50, 100, 10).await;
        drop(wal);
        let (wal, rec) = open_wal(&dir, MIB).await;
        assert!(rec.truncated_tail.is_none());
        assert_eq!(entries(&rec.records).len() as u64, per_segment + 49);
        assert_eq!(wal.last_index(), per_segment + 49);
        assert_eq!(segments(&dir).len(), 2);
    });
}

#[test]
fn corruption_in_early_record_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    // With small segments the later records lie in later segments; with a large one they lie
    // more than W after the damaged record in the same segment.
    for segment_size in [MIB, 16 * MIB] {
        let dir = tmp.path().join(format!("wal-{segment_size}"));
        run(|| async {
            let (mut wal, _) = open_wal(&dir, segment_size).await;
            append_entries(&mut wal, 1, 1301, 4000, 50).await; // ~5 MiB
            drop(wal);
            let seg = segments(&dir)[0].clone();
            let bad = BLOCK + 2 * entry_size(4000);
            flip_byte(&seg, bad + 100);
            let err = open_err(&dir, segment_size).await;
            expect_corrupt(err, &seg, bad);
        });
    }
}

#[test]
fn corruption_in_header_is_reported() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        append_entries(&mut wal, 1, 600, 4000, 25).await;
        drop(wal);
        let segs = segments(&dir);
        assert!(segs.len() >= 3);

        flip_byte(&segs[0], 20);
        let err = open_err(&dir, MIB).await;
        expect_corrupt(err, &segs[0], 0);
        flip_byte(&segs[0], 20);

        // Even the newest segment's header is checked (it is durable before any record).
        let newest = segs.last().unwrap();
        flip_byte(newest, 33);
        let err = open_err(&dir, MIB).await;
        expect_corrupt(err, newest, 0);
        flip_byte(newest, 33);

        // A byte in the header's reserved area.
        flip_byte(&segs[1], 2000);
        let err = open_err(&dir, MIB).await;
        expect_corrupt(err, &segs[1], 2000);
        flip_byte(&segs[1], 2000);

        let (_, rec) = open_wal(&dir, MIB).await;
        assert_eq!(entries(&rec.records).len(), 599);
    });
}

#[test]
fn missing_segment_is_reported() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        append_entries(&mut wal, 1, 600, 4000, 25).await;
        drop(wal);
        let segs = segments(&dir);
        std::fs::remove_file(&segs[1]).unwrap();
        let err = open_err(&dir, MIB).await;
        assert!(
            matches!(&err, WalError::Corrupt { file, .. } if file == &segs[2]),
            "{err}"
        );
    });
}

#[test]
fn release_to_deletes_only_covered_segments() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        let hs = Record::HardState {
            term: 7,
            vote: 2,
            commit: 1,
        };
        wal.append(std::slice::from_ref(&hs)).await.unwrap();
        append_entries(&mut wal, 1, 5001, 1000, 50).await;
        let before = segments(&dir);
        assert!(before.len() >= 5, "{} segments", before.len());

        let err = wal.release_to(10).await.unwrap_err();
        assert!(matches!(
            err,
            WalError::ReleaseBeyondCheckpoint {
                requested: 10,
                checkpoint: None
            }
        ));
        wal.append(&[Record::Checkpoint {
            index: 2500,
            term: 26,
        }])
        .await
        .unwrap();
        let err = wal.release_to(2501).await.unwrap_err();
        assert!(
            matches!(err, WalError::ReleaseBeyondCheckpoint { .. }),
            "{err}"
        );

        wal.release_to(2500).await.unwrap();
        let after = segments(&dir);
        assert!(after.len() < before.len());
        assert_eq!(after[..], before[before.len() - after.len()..]);
        // The first kept segment holds entry 2501; every deleted one ended at or before 2500.
        assert!(first_index_of(&after[0]) <= 2501);
        assert!(first_index_of(&after[1]) > 2501);
        let deleted = before.len() - after.len();
        assert!(first_index_of(&before[deleted]) - 1 <= 2500);

        // Releasing again changes nothing.
        wal.release_to(2500).await.unwrap();
        assert_eq!(segments(&dir), after);
        drop(wal);

        let (mut wal, rec) = open_wal(&dir, MIB).await;
        let first = first_index_of(&after[0]);
        let got = entries(&rec.records);
        assert_eq!(got.first(), Some(&entry(first, 1000)));
        assert_eq!(got.len() as u64, 5001 - first);
        // The HardState appended into a deleted segment survives through the carried copies.
        assert_eq!(rec.records.first(), Some(&hs));
        assert!(rec.records.contains(&Record::Checkpoint {
            index: 2500,
            term: 26
        }));

        // A checkpoint at the last index releases everything but the current segment.
        wal.append(&[Record::Checkpoint {
            index: 5000,
            term: 51,
        }])
        .await
        .unwrap();
        wal.release_to(5000).await.unwrap();
        assert_eq!(segments(&dir), vec![after.last().unwrap().clone()]);
        drop(wal);
        let (_, rec) = open_wal(&dir, MIB).await;
        assert!(rec.records.contains(&hs));
        assert_eq!(
            rec.records.last(),
            Some(&Record::Checkpoint {
                index: 5000,
                term: 51
            })
        );
    });
}

#[test]
fn release_after_rollover_into_an_empty_segment_keeps_state() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        let hs = Record::HardState {
            term: 3,
            vote: 1,
            commit: 9,
        };
        wal.append(std::slice::from_ref(&hs)).await.unwrap();
        append_entries(&mut wal, 1, 1500, 1000, 50).await;
        let cp = Record::Checkpoint {
            index: 1499,
            term: 15,
        };
        wal.append(std::slice::from_ref(&cp)).await.unwrap();
        let before = segments(&dir).len();
        // Too large for what is left of the current segment: goes into a new one.
        wal.append(&[entry(1500, 1_000_000)]).await.unwrap();
        drop(wal);
        let segs = segments(&dir);
        assert_eq!(segs.len(), before + 1);
        // Simulate a crash right after the new segment was published: zero its records.
        let newest = segs.last().unwrap();
        assert_eq!(first_index_of(newest), 1500);
        erase_records(newest);
        let (mut wal, _) = open_wal(&dir, MIB).await;
        assert_eq!(wal.last_index(), first_index_of(newest) - 1);
        wal.release_to(first_index_of(newest) - 1).await.unwrap();
        assert_eq!(segments(&dir), vec![newest.clone()]);
        drop(wal);
        let (_, rec) = open_wal(&dir, MIB).await;
        assert_eq!(rec.records, vec![hs, cp]);
    });
}

#[test]
fn oversized_record_is_rejected_and_wal_stays_usable() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        wal.append(&[entry(1, 10)]).await.unwrap();
        let err = wal
            .append(&[entry(2, 10), entry(3, MIB as usize)])
            .await
            .unwrap_err();
        assert!(matches!(err, WalError::RecordTooLarge { .. }), "{err}");
        // The largest accepted record fits a fresh segment.
        let WalError::RecordTooLarge { max, .. } = err else {
            unreachable!()
        };
        wal.append(&[entry(2, max - 24)]).await.unwrap();
        wal.append(&[entry(3, 10)]).await.unwrap();
        drop(wal);
        let (_, rec) = open_wal(&dir, MIB).await;
        assert_eq!(rec.records.len(), 3);
        assert_eq!(rec.records[1], entry(2, max - 24));
    });
}

#[test]
#[should_panic(expected = "increasing indexes")]
fn decreasing_indexes_in_one_batch_panic() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        let _ = wal.append(&[entry(5, 1), entry(5, 1)]).await;
    });
}

#[test]
fn leftover_tmp_segment_is_deleted() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        wal.append(&[entry(1, 10)]).await.unwrap();
        drop(wal);
        let tmp_seg = dir.join("0000000000000001-0000000000000002.wal.tmp");
        std::fs::write(&tmp_seg, b"half-prepared").unwrap();
        let (_, rec) = open_wal(&dir, MIB).await;
        assert_eq!(rec.records, vec![entry(1, 10)]);
        assert!(!tmp_seg.exists());
    });
}

#[test]
fn invalid_segment_size_is_rejected() {
    run_in_tempdir(|dir| async move {
        for size in [0, 4096, 10_000, (32 << 30) + 4096] {
            let err = open_err(&dir, size).await;
            assert!(matches!(err, WalError::InvalidOptions(_)), "{err}");
        }
    });
}

#[test]
fn small_append_latency() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, 64 * MIB).await;
        let n = 200u64;
        let t = Instant::now();
        for i in 1..=n {
            wal.append(&[entry(i, 64)]).await.unwrap();
        }
        let per = t.elapsed() / n as u32;
        eprintln!("append of one 64-byte entry incl. fdatasync: {per:?} per batch (n = {n})");
        assert!(wal.buffer_allocations() <= 2);
        drop(wal);
        let (_, rec) = open_wal(&dir, 64 * MIB).await;
        assert_eq!(rec.records.len() as u64, n);
    });
}

fn spare(dir: &Path) -> PathBuf {
    dir.join(SPARE_FILE_NAME)
}

/// Waits (on the executor) until `path` exists with `size` bytes; the spare is prepared by a
/// background task.
async fn wait_until_file(path: &Path, size: u64) {
    for _ in 0..10_000 {
        if std::fs::metadata(path).is_ok_and(|m| m.len() == size) {
            return;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("{} never reached {size} bytes", path.display());
}

#[test]
fn spare_is_prepared_in_the_background_and_consumed_by_rollover() {
    spare_lifecycle(Preallocate::Reserve);
}

#[test]
fn a_zero_filled_spare_works_the_same() {
    spare_lifecycle(Preallocate::ZeroFill);
}

fn spare_lifecycle(how: Preallocate) {
    let open = move |dir: PathBuf| async move {
        Wal::open(WalOptions {
            preallocate: how,
            ..opts(&dir, MIB)
        })
        .await
        .unwrap()
    };
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open(dir.clone()).await;
        // The first segment exists before open returns; the spare comes after.
        assert_eq!(segments(&dir).len(), 1);
        wait_until_file(&spare(&dir), MIB).await;
        wal.wait_for_spare().await.unwrap();
        let spare_bytes = std::fs::read(spare(&dir)).unwrap();
        assert!(
            spare_bytes.iter().all(|&b| b == 0),
            "the spare is all zeros"
        );
        let blocks =
            std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(spare(&dir)).unwrap());
        assert!(
            blocks * 512 >= MIB,
            "{how:?}: the spare's space is allocated ({blocks} blocks of 512 bytes)"
        );
        let spare_ino =
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(spare(&dir)).unwrap());

        // Fill segment 0, then roll: the spare becomes segment 1 (same inode) and a new spare
        // is prepared.
        let per_segment = (MIB - BLOCK) / entry_size(1000);
        append_entries(&mut wal, 1, per_segment + 1, 1000, 50).await;
        assert_eq!(segments(&dir).len(), 1);
        wal.append(&[entry(per_segment + 1, 1000)]).await.unwrap();
        let segs = segments(&dir);
        assert_eq!(segs.len(), 2);
        assert_eq!(first_index_of(&segs[1]), per_segment + 1);
        let seg1_ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&segs[1]).unwrap());
        assert_eq!(seg1_ino, spare_ino, "segment 1 is the renamed spare");
        assert_eq!(std::fs::metadata(&segs[1]).unwrap().len(), MIB);
        wal.wait_for_spare().await.unwrap();
        assert_eq!(std::fs::metadata(spare(&dir)).unwrap().len(), MIB);
        wal.close().await.unwrap();

        let (wal, rec) = open(dir.clone()).await;
        assert!(rec.truncated_tail.is_none());
        let want: Vec<Record> = (1..=per_segment + 1).map(|i| entry(i, 1000)).collect();
        assert_eq!(rec.records, want);
        assert_eq!(wal.last_index(), per_segment + 1);
    });
}

#[test]
fn leftover_spare_file_is_deleted() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        wal.append(&[entry(1, 10)]).await.unwrap();
        wal.close().await.unwrap();
        // Garbage where the spare goes (a crash early in its preparation, or a foreign file):
        // it must neither be read as a segment nor be used for a rollover.
        std::fs::write(spare(&dir), vec![0xabu8; 3 * BLOCK as usize]).unwrap();
        let (mut wal, rec) = open_wal(&dir, MIB).await;
        assert_eq!(rec.records, vec![entry(1, 10)]);
        assert!(rec.truncated_tail.is_none());
        assert!(
            !spare(&dir).exists(),
            "deleted by open, before the new spare's preparation runs"
        );
        wal.wait_for_spare().await.unwrap();
        let bytes = std::fs::read(spare(&dir)).unwrap();
        assert_eq!(bytes.len() as u64, MIB);
        assert!(bytes.iter().all(|&b| b == 0));
        // Rollovers after that use a fresh spare.
        append_entries(&mut wal, 2, 3000, 1000, 40).await;
        drop(wal);
        assert!(segments(&dir).len() >= 3);
        let (wal, rec) = open_wal(&dir, MIB).await;
        assert!(rec.truncated_tail.is_none());
        assert_eq!(entries(&rec.records).len(), 2999);
        assert_eq!(wal.last_index(), 2999);
    });
}

/// Writes a log whose last batch (one large entry) rolled over into segment 1; returns the
/// records before that batch and the large entry.
async fn log_with_one_rollover(dir: &Path) -> (Vec<Record>, Record) {
    let (mut wal, _) = open_wal(dir, MIB).await;
    let hs = Record::HardState {
        term: 2,
        vote: 1,
        commit: 0,
    };
    wal.append(std::slice::from_ref(&hs)).await.unwrap();
    append_entries(&mut wal, 1, 801, 1000, 40).await;
    let mut before = vec![hs];
    before.extend((1..801).map(|i| entry(i, 1000)));
    let big = entry(801, 500_000);
    wal.append(std::slice::from_ref(&big)).await.unwrap();
    wal.close().await.unwrap();
    assert_eq!(segments(dir).len(), 2);
    (before, big)
}

/// A crash at each point of a rollover (DESIGN §2.5): the spare prepared but not used; the
/// header written into it (durable or torn) but not renamed; renamed but nothing written. In
/// every case recovery returns the records before the rollover, the spare is never read as a
/// segment, and the log goes on (rolling over again) and recovers cleanly.
#[test]
fn crash_around_rollover_with_spare() {
    let tmp = tempfile::tempdir().unwrap();
    for case in [
        "spare_prepared",
        "header_durable_not_renamed",
        "header_torn_not_renamed",
        "renamed_empty_segment",
    ] {
        let dir = tmp.path().join(case);
        run(|| async {
            let (before, big) = log_with_one_rollover(&dir).await;
            let segs = segments(&dir);
            let seg1 = segs[1].clone();
            assert_eq!(first_index_of(&seg1), 801);
            // Undo the records of the last batch: segment 1 as it was when it was published.
            erase_records(&seg1);
            let header = std::fs::read(&seg1).unwrap()[..BLOCK as usize].to_vec();
            let _ = std::fs::remove_file(spare(&dir));
            match case {
                "spare_prepared" => {
                    std::fs::remove_file(&seg1).unwrap();
                    std::fs::write(spare(&dir), vec![0u8; MIB as usize]).unwrap();
                }
                "header_durable_not_renamed" => std::fs::rename(&seg1, spare(&dir)).unwrap(),
                "header_torn_not_renamed" => {
                    std::fs::rename(&seg1, spare(&dir)).unwrap();
                    // Only the first sector of the header block reached the disk.
                    write_at(&spare(&dir), 512, &vec![0u8; BLOCK as usize - 512]);
                    write_at(&spare(&dir), 20, &[0xff; 8]);
                }
                "renamed_empty_segment" => {}
                _ => unreachable!(),
            }
            let renamed = case == "renamed_empty_segment";
            let (mut wal, rec) = open_wal(&dir, MIB).await;
            assert!(rec.truncated_tail.is_none(), "{case}");
            // A renamed, empty segment contributes nothing (its carried records were never
            // written: they are written with the segment's first batch).
            assert_eq!(rec.records, before, "{case}");
            assert_eq!(wal.last_index(), 800, "{case}");
            assert!(!spare(&dir).exists(), "{case}: open deletes the spare");
            if renamed {
                assert_eq!(segments(&dir), segs, "{case}");
            } else {
                assert_eq!(segments(&dir), vec![segs[0].clone()], "{case}");
            }
            // The same batch again: it rolls over into a segment of the same name (or goes into
            // the renamed empty one) with the same header.
            wal.append(std::slice::from_ref(&big)).await.unwrap();
            assert_eq!(segments(&dir), segs, "{case}");
            assert_eq!(
                std::fs::read(&seg1).unwrap()[..BLOCK as usize],
                header[..],
                "{case}"
            );
            append_entries(&mut wal, 802, 1500, 1000, 40).await;
            drop(wal);
            let (wal, rec) = open_wal(&dir, MIB).await;
            assert!(rec.truncated_tail.is_none(), "{case}");
            let mut want = entries(&before);
            want.push(big.clone());
            want.extend((802..1500).map(|i| entry(i, 1000)));
            assert_eq!(entries(&rec.records), want, "{case}");
            assert_eq!(wal.last_index(), 1499, "{case}");
        });
    }
}

#[test]
fn failed_spare_preparation_poisons_at_the_next_rollover() {
    run_in_tempdir(|dir| async move {
        let (mut wal, _) = open_wal(&dir, MIB).await;
        // The background preparation has not run yet (it starts at the next await): make it
        // fail, creating its file where a directory is.
        std::fs::create_dir(spare(&dir)).unwrap();
        let per_segment = (MIB - BLOCK) / entry_size(1000);
        // Appends that fit the current segment are unaffected.
        append_entries(&mut wal, 1, per_segment + 1, 1000, 50).await;
        let err = wal
            .append(&[entry(per_segment + 1, 1000)])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, WalError::Io { path, .. } if path == &spare(&dir)),
            "{err}"
        );
        let err = wal.append(&[entry(per_segment + 1, 10)]).await.unwrap_err();
        assert!(matches!(err, WalError::Poisoned), "{err}");
        assert_eq!(segments(&dir).len(), 1);
        drop(wal);

        std::fs::remove_dir(spare(&dir)).unwrap();
        let (mut wal, rec) = open_wal(&dir, MIB).await;
        assert!(rec.truncated_tail.is_none());
        let want: Vec<Record> = (1..=per_segment).map(|i| entry(i, 1000)).collect();
        assert_eq!(rec.records, want);
        append_entries(&mut wal, per_segment + 1, per_segment + 100, 1000, 10).await;
        drop(wal);
        assert_eq!(segments(&dir).len(), 2);
        let (wal, _) = open_wal(&dir, MIB).await;
        assert_eq!(wal.last_index(), per_segment + 99);
    });
}

#[test]
fn dropping_wals_while_their_spare_is_prepared() {
    let tmp = tempfile::tempdir().unwrap();
    run(|| async {
        for i in 0..24 {
            let dir = tmp.path().join(format!("wal-{i}"));
            let (mut wal, _) = open_wal(&dir, 16 * MIB).await;
            // Lets the preparation start; a varying number of appends (each waits for an
            // fdatasync) leaves it at varying points of its preallocation.
            wal.append(&[entry(1, 10)]).await.unwrap();
            for _ in 0..(i % 8) * 4 {
                wal.append(&[]).await.unwrap();
                glommio::timer::sleep(std::time::Duration::from_micros(300)).await;
            }
            match i % 3 {
                0 => drop(wal),
                1 => wal.close().await.unwrap(),
                _ => {
                    // Drop with the directory gone right after.
                    drop(wal);
                    remove_dir_behind_cancelled_io(&dir).await;
                    continue;
                }
            }
            let (wal, rec) = open_wal(&dir, 16 * MIB).await;
            assert_eq!(rec.records, vec![entry(1, 10)]);
            drop(wal);
            remove_dir_behind_cancelled_io(&dir).await;
        }
        // Give cancelled I/O time to complete against the deleted files.
        glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
    });
}

/// Deletes `dir` right after a WAL was dropped there. The dropped spare preparation may still
/// have an `openat(O_CREAT)` in the kernel (io_uring runs it on a worker thread), which can put
/// the spare file back after `remove_dir_all` emptied the directory: that is retried until the
/// directory is gone, a bounded number of reactor turns.
async fn remove_dir_behind_cancelled_io(dir: &Path) {
    for _ in 0..1000 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await
            }
            Err(e) => panic!("removing {}: {e}", dir.display()),
        }
    }
    panic!("{} still not removable after 1000 tries", dir.display());
}

/// Prints append latencies around rollovers (no assertion on timings): with the spare ready, a
/// rollover costs one 4 KiB write, two fdatasyncs and a directory fsync instead of the
/// preallocation of a whole segment.
#[test]
fn rollover_latency_is_printed() {
    run_in_tempdir(|dir| async move {
        let segment_size = 8 * MIB;
        let (mut wal, _) = open_wal(&dir, segment_size).await;
        let t = Instant::now();
        wal.wait_for_spare().await.unwrap();
        eprintln!(
            "preparing a {} MiB spare (preallocation + fdatasync): {:?}",
            segment_size / MIB,
            t.elapsed()
        );
        let mut rollovers = Vec::new();
        let mut others = Vec::new();
        let mut next = 1u64;
        let mut segs = 1;
        while segs < 5 {
            let batch: Vec<Record> = (next..next + 32).map(|i| entry(i, 4000)).collect();
            next += 32;
            let t = Instant::now();
            wal.append(&batch).await.unwrap();
            let took = t.elapsed();
            let now = segments(&dir).len();
            if now > segs {
                rollovers.push(took);
                segs = now;
            } else {
                others.push(took);
            }
        }
        others.sort();
        eprintln!(
            "128 KiB appends: median {:?}, max {:?} (n = {}); appends that rolled over: {:?}",
            others[others.len() / 2],
            others.last().unwrap(),
            others.len(),
            rollovers
        );
        drop(wal);
        let (_, rec) = open_wal(&dir, segment_size).await;
        assert_eq!(entries(&rec.records).len() as u64, next - 1);
    });
}
