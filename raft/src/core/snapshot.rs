//! Raft snapshots, both ways. Received: the state the leader streamed waits with its snapshot
//! message until Raft hands the snapshot over in a Ready, then it replaces the MVCC state and the
//! membership, and every watcher is lagged (it catches up from the history the snapshot carries).
//! Sent: each outgoing snapshot message is paired with the state it stands for, captured as it
//! leaves Raft; the outcome of streaming it, or its failure, is reported to raft-rs.
//!
//! Invariants: the state installed is the one received with the snapshot Raft took (a stale
//! snapshot, ignored by raft-rs, never replaces it, and a snapshot restored without its state
//! stops the member); a snapshot message goes out only with a state applied exactly to its
//! index, otherwise it is reported as failed; failures are reported outside a Ready's processing,
//! as raft-rs requires. The sequencer calls the public methods; the round ([`Core::ready`],
//! [`Core::persisted`]) calls `outgoing` and `install`.

use std::sync::Arc;

use raft::prelude::Message;
use retcd_engine::mvcc::RawEntry;

use crate::membership::Membership;

use super::{Core, CoreError, Outgoing};

/// A received Raft snapshot's entries, in key order.
pub type SnapshotEntries = Box<dyn Iterator<Item = Result<RawEntry, String>> + Send>;

impl Core {
    /// A snapshot message from the leader, with the state it stands for.
    pub fn receive_snapshot(
        &mut self,
        m: Message,
        entries: SnapshotEntries,
    ) -> Result<(), CoreError> {
        let index = m.get_snapshot().get_metadata().index;
        self.step(m)?;
        // Keep the state only if Raft took this snapshot (a stale one, from a deposed leader, is
        // ignored by raft-rs and must not replace the one it did take).
        let pending = self.raw.raft.raft_log.unstable.snapshot.as_ref();
        if pending.is_some_and(|s| s.get_metadata().index == index) {
            self.incoming = Some((index, entries));
        }
        Ok(())
    }

    /// A snapshot that could not be streamed, for [`Core::report_failures`].
    pub fn snapshot_failed(&mut self, to: u64) {
        self.failed_snapshots.push(to);
    }

    /// Tells raft-rs about snapshots that were not sent (outside a Ready's processing, as
    /// raft-rs requires).
    pub fn report_failures(&mut self) {
        for to in std::mem::take(&mut self.failed_snapshots) {
            self.report_snapshot(to, false);
        }
    }

    /// The outcome of streaming a snapshot to `to`.
    pub fn report_snapshot(&mut self, to: u64, ok: bool) {
        self.raw.report_snapshot(
            to,
            if ok {
                raft::SnapshotStatus::Finish
            } else {
                raft::SnapshotStatus::Failure
            },
        );
    }

    /// The durable commit of an installed snapshot ran ([`super::Step::install_sync`]): the round's
    /// records, its Checkpoint record first, may now be appended.
    pub fn finish_install_sync(&mut self, cp: super::Checkpoint) {
        self.mvcc.finish_checkpoint(cp.job);
    }

    /// Whether a snapshot replaced the state since the last call (leases must be reloaded).
    pub fn take_installed(&mut self) -> bool {
        std::mem::take(&mut self.installed)
    }

    /// Splits `msgs` into plain messages and snapshots, capturing each snapshot's state now:
    /// raft-rs took its metadata (the applied index) from the storage since the last apply.
    pub(super) fn outgoing(&mut self, msgs: Vec<Message>) -> Outgoing {
        let mut out = Outgoing::default();
        for m in msgs {
            if m.get_msg_type() == raft::prelude::MessageType::MsgSnapshot {
                let state = self.mvcc.reader().state_snapshot();
                if state.applied().0 == m.get_snapshot().get_metadata().index {
                    out.snapshots.push((m, state));
                } else {
                    // Applies ran since raft-rs took the metadata (a leader that stepped down
                    // and applied before the message left): the state no longer matches it.
                    self.failed_snapshots.push(m.to);
                }
            } else {
                out.messages.push(m);
            }
        }
        out
    }

    /// Replaces the state with the snapshot Raft hands over (the one received with it).
    pub(super) fn install(&mut self, snap: &raft::prelude::Snapshot) -> Result<(), CoreError> {
        let index = snap.get_metadata().index;
        let entries = match self.incoming.take() {
            Some((i, e)) if i == index => e,
            _ => {
                return Err(CoreError::BadEntry {
                    index,
                    reason: "Raft restored a snapshot whose state was not received".into(),
                });
            }
        };
        self.mvcc.install(entries, index)?;
        // The install is not durable yet; its durable commit runs like a checkpoint's (its
        // fdatasyncs off the core) and must end before the Checkpoint record at `index` is
        // appended (engine/DESIGN.md §4.7): the sequencer runs it before the round's records.
        let cp = self.begin_checkpoint()?;
        assert!(
            cp.applied.0 == index,
            "an installed snapshot's durable commit covers its index"
        );
        self.install_sync = Some(cp);
        // The entries this member skipped may have changed a password or deleted a user: no
        // token handed out before the snapshot can be trusted any more.
        self.tokens.clear();
        let membership = match self.mvcc.membership()? {
            Some(b) => Membership::decode(&b).map_err(|e| CoreError::BadEntry {
                index,
                reason: e.to_string(),
            })?,
            None => Membership::default(),
        };
        self.membership = membership;
        self.status.members.store(Arc::new(self.membership.clone()));
        self.raw.mut_store().set_snapshot_meta(
            index,
            snap.get_metadata().term,
            Some(self.membership.conf_state()),
        );
        // Every watcher catches up from the history the snapshot carries.
        self.feed.jumped(self.mvcc.revision());
        self.installed = true;
        crate::metrics::count_keys(&self.mvcc);
        tracing::info!(
            index,
            revision = self.mvcc.revision(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }
}
