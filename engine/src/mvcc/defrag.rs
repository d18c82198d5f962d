//! Online defragmentation (engine/DESIGN.md §3.5): the store's nodes are moved, a bounded step at
//! a time between the applies, onto the lowest free pages; durable commits then lower the
//! high-water mark over the freed end of the file, and the file is cut to it. Reads and writes go
//! on throughout: a step is a commit that changes no content, and the cut happens only once no
//! reader and no durable tree can reach the pages it removes.
//!
//! The caller (the sequencer) owns the schedule: it runs [`Mvcc::defrag_step`] while the answer
//! is [`DefragNext::Step`], a checkpoint (the page store's durable commit) when it is
//! [`DefragNext::Checkpoint`], telling [`Mvcc::defrag_checkpointed`] when that commit finished,
//! until [`DefragNext::Done`]. Every phase is bounded, so a defragmentation ends even while
//! writes keep allocating or a long reader (a snapshot stream) keeps pages from being reused; it
//! then ends with whatever it could free.

use super::*;

/// Leaves one step visits at most (reads of mapped pages, each verified once per process).
const VISIT: usize = 2048;

/// Leaves one step moves at most: its commit writes them and their branches, a few MiB, as an
/// apply batch does.
const MOVE: usize = 512;

/// Passes over the whole tree before the defragmentation settles for what it has.
const MAX_PASSES: u32 = 4;

/// Checkpoints waited for in a row, for free pages below the limit to become reusable (a long
/// reader keeps them pending).
const MAX_WAITS: u32 = 16;

/// Pages one moved path may take: the leaf and the branches above it (a tree of 5 levels holds
/// far more than a db's worth of 4 KiB pages). A step moves no more paths than the reusable
/// pages below the limit cover at this rate, so that its commit writes no node above the limit
/// (one that did would be moved again by the next step, and so on).
const PATH_PAGES: usize = 6;

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefragNext {
    /// Call [`Mvcc::defrag_step`] again (after serving whatever else is ready).
    Step,
    /// Run a checkpoint, then call [`Mvcc::defrag_checkpointed`].
    Checkpoint,
    /// Finished: the db file is this long now.
    Done { file_len: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A first checkpoint makes the pages freed before the start reusable.
    Settle,
    /// Passes that move every node at or above the limit below it.
    Move,
    /// The checkpoint after which the pages the moves freed are reusable.
    Release,
    /// The checkpoint that lowers the high-water mark over them; the file is cut after it.
    Trim,
}

/// One online defragmentation in progress.
#[derive(Debug)]
pub struct Defrag {
    phase: Phase,
    /// Pages at or above it are moved: the pages in use at the start, plus slack.
    limit: u64,
    /// Where the next step starts in the current pass.
    from: Vec<u8>,
    moved_in_pass: usize,
    passes: u32,
    waits: u32,
    /// Leaves moved in all (for the log).
    pub moved: u64,
}

/// Where a defragmentation ended, for the log: what kept the file longer than the pages in use.
#[derive(Debug, Clone, Copy)]
pub struct DefragReport {
    pub passes: u32,
    /// Pages at or above it were to be moved.
    pub limit: u64,
    pub high_water: u64,
    /// Freed pages a reader or the next durable commit still holds.
    pub pending: usize,
    /// Pages the free list takes.
    pub freelist: usize,
}

impl Defrag {
    pub fn new() -> Defrag {
        Defrag {
            phase: Phase::Settle,
            limit: 0,
            from: Vec::new(),
            moved_in_pass: 0,
            passes: 0,
            waits: 0,
            moved: 0,
        }
    }

    /// The first thing to do.
    pub fn first(&self) -> DefragNext {
        DefragNext::Checkpoint
    }

    fn next_pass(&mut self) {
        self.from.clear();
        self.moved_in_pass = 0;
        self.passes += 1;
    }
}

impl Default for Defrag {
    fn default() -> Self {
        Defrag::new()
    }
}

impl Mvcc {
    /// One bounded step of `d`'s pass: moves the nodes at or above its limit met in the next
    /// leaves onto the lowest free pages, as many as the free pages below the limit allow, in
    /// one commit that changes no content.
    pub fn defrag_step(&mut self, d: &mut Defrag) -> Result<DefragNext, MvccError> {
        if d.phase != Phase::Move {
            return Ok(DefragNext::Checkpoint);
        }
        if self.store.high_water() <= d.limit {
            // Nothing lies above the limit: only the end of the file is left to cut.
            d.phase = Phase::Release;
            return Ok(DefragNext::Checkpoint);
        }
        // The nodes kept in memory are written first (the moves walk pages, §3.6), so that
        // their pages do not take the room counted here.
        self.store.spill()?;
        let room = (self.store.reusable_below(d.limit) / PATH_PAGES).saturating_sub(1);
        if room == 0 {
            // The pages the steps freed below the limit are reusable after a checkpoint.
            d.waits += 1;
            if d.waits > MAX_WAITS {
                d.phase = Phase::Release;
            }
            return Ok(DefragNext::Checkpoint);
        }
        let tag = self.tag();
        let mut txn = self.store.begin();
        let (next, moved) = txn.relocate(d.limit, &d.from, VISIT, room.min(MOVE))?;
        if moved > 0 {
            txn.commit(tag)?;
        } else {
            drop(txn);
        }
        d.moved_in_pass += moved;
        d.moved += moved as u64;
        if moved > 0 {
            d.waits = 0;
        }
        match next {
            Some(from) => {
                d.from = from;
                Ok(DefragNext::Step)
            }
            None if d.moved_in_pass == 0 || d.passes >= MAX_PASSES => {
                d.phase = Phase::Release;
                Ok(DefragNext::Checkpoint)
            }
            None => {
                d.next_pass();
                Ok(DefragNext::Step)
            }
        }
    }

    /// The checkpoint `d` asked for finished.
    pub fn defrag_checkpointed(&mut self, d: &mut Defrag) -> Result<DefragNext, MvccError> {
        match d.phase {
            Phase::Settle => {
                d.limit = self.defrag_limit();
                d.phase = Phase::Move;
                d.next_pass();
                Ok(DefragNext::Step)
            }
            Phase::Move => Ok(DefragNext::Step),
            Phase::Release => {
                d.phase = Phase::Trim;
                Ok(DefragNext::Checkpoint)
            }
            Phase::Trim => {
                // Writes during the passes may have taken pages above the limit again: another
                // pass, while passes are left.
                // The limit follows what the writes added.
                let limit = self.defrag_limit();
                if self.store.high_water() > limit + limit / 32 && d.passes < MAX_PASSES {
                    d.limit = limit;
                    d.phase = Phase::Move;
                    d.next_pass();
                    return Ok(DefragNext::Step);
                }
                let file_len = self.store.shrink_file()?;
                Ok(DefragNext::Done { file_len })
            }
        }
    }

    /// The pages in use now, plus slack for the free list, for the paths a step moves and for
    /// what writes allocate meanwhile.
    fn defrag_limit(&self) -> u64 {
        let in_use = self.pages_in_use();
        in_use + in_use / 32 + 64
    }

    /// What `d` did and what the page store holds now.
    pub fn defrag_report(&self, d: &Defrag) -> DefragReport {
        DefragReport {
            passes: d.passes,
            limit: d.limit,
            high_water: self.store.high_water(),
            pending: self.store.pending_pages(),
            freelist: self.store.freelist_len(),
        }
    }

    /// Cuts the db file to the pages in use (after a checkpoint); returns its new length.
    pub fn shrink_file(&mut self) -> Result<u64, MvccError> {
        Ok(self.store.shrink_file()?)
    }
}
