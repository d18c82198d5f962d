//! Online defragmentation of this member's page store (Maintenance.Defragment, which etcd runs
//! on one member, outside Raft): the engine's bounded steps and checkpoints
//! (`retcd_engine::mvcc::Defrag`) scheduled by the sequencer between rounds, and the callers
//! answered when it ends. One runs at a time; a request while one runs waits for it.

use retcd_engine::mvcc::{Defrag, DefragNext};
use tracing::info;

use super::{Core, CoreError};
use crate::reply::DoneReply;

/// A defragmentation in progress and who waits for it.
pub(super) struct Running {
    defrag: Defrag,
    next: DefragNext,
    replies: Vec<DoneReply>,
}

impl Core {
    /// Starts a defragmentation (or joins the one running); `reply` is answered when it ends.
    pub fn defragment(&mut self, reply: DoneReply) {
        let running = self.defrag.get_or_insert_with(|| {
            info!("defragmenting the page store online");
            let defrag = Defrag::new();
            Running {
                next: defrag.first(),
                defrag,
                replies: Vec::new(),
            }
        });
        running.replies.push(reply);
    }

    /// The defragmentation waits for a checkpoint.
    pub fn defrag_wants_checkpoint(&self) -> bool {
        self.defrag
            .as_ref()
            .is_some_and(|r| r.next == DefragNext::Checkpoint)
    }

    /// The defragmentation has a step to run.
    pub fn defrag_has_step(&self) -> bool {
        self.defrag
            .as_ref()
            .is_some_and(|r| r.next == DefragNext::Step)
    }

    /// Runs one bounded step of the defragmentation.
    pub fn defrag_step(&mut self) -> Result<(), CoreError> {
        let Some(r) = self.defrag.as_mut() else {
            return Ok(());
        };
        r.next = self.mvcc.defrag_step(&mut r.defrag)?;
        self.defrag_progress();
        Ok(())
    }

    /// A checkpoint finished: the defragmentation goes on if it waited for one.
    pub(super) fn defrag_checkpointed(&mut self) -> Result<(), CoreError> {
        let Some(r) = self.defrag.as_mut() else {
            return Ok(());
        };
        if r.next == DefragNext::Checkpoint {
            r.next = self.mvcc.defrag_checkpointed(&mut r.defrag)?;
            self.defrag_progress();
        }
        Ok(())
    }

    fn defrag_progress(&mut self) {
        let Some(r) = self.defrag.as_ref() else {
            return;
        };
        if let DefragNext::Done { file_len } = r.next {
            let r = self.defrag.take().expect("checked");
            let report = self.mvcc.defrag_report(&r.defrag);
            info!(
                moved_leaves = r.defrag.moved,
                passes = report.passes,
                limit_page = report.limit,
                high_water_page = report.high_water,
                pending_pages = report.pending,
                freelist_pages = report.freelist,
                file_len,
                db_size = self.mvcc.db_size(),
                db_size_in_use = self.mvcc.db_size_in_use(),
                "finished defragmenting the page store"
            );
            for reply in r.replies {
                let _ = reply.send(Ok(()));
            }
            self.publish_status();
        }
    }
}
