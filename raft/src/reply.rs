//! What a caller is answered: the errors of a proposal, a read or a membership change
//! ([`ProposeError`], [`MemberError`]) and the channels an outcome goes back on ([`Reply`],
//! [`MembersReply`], [`ReadReply`], [`DoneReply`]).
//!
//! A leaf: it knows only [`crate::membership`], so the core, the lessor, the sequencer and net/
//! can share these types without knowing each other. Anyone may use them; they carry no
//! behaviour. The texts of the errors are etcd's (net/ maps them to etcd's gRPC errors).

use std::sync::Arc;

use retcd_engine::mvcc::{MvccError, WriteResult};

use crate::membership::Membership;

/// etcd's membership errors, checked before a change is proposed and again when it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("member not found")]
    NotFound,
    #[error("peer URLs already exist")]
    PeerUrlExists,
    #[error("member is not a learner")]
    NotLearner,
    #[error("learner is not in sync with the leader")]
    LearnerNotReady,
    #[error("too many learners")]
    TooManyLearners,
    #[error("ID removed")]
    IdRemoved,
    #[error("not enough started members")]
    NotEnoughStarted,
    #[error("unhealthy cluster")]
    Unhealthy,
}

/// What a client sees of a failed proposal or read.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("server stopped")]
    Stopped,
    #[error("no leader")]
    NoLeader,
    #[error("not leader")]
    NotLeader,
    #[error("leader changed")]
    LeaderChanged,
    /// raft-rs dropped the proposal (etcd's raft.ErrProposalDropped): over the leader's bound of
    /// uncommitted bytes, or during a leader transfer.
    #[error("raft proposal dropped")]
    ProposalDropped,
    #[error("request timed out")]
    Timeout,
    /// The proposal's entry would not fit one WAL record (engine/DESIGN.md §2.3), which a
    /// --max-request-bytes above ~4 MiB lets through: refused before Raft sees it.
    #[error("request is too large")]
    TooLarge,
    #[error("request timed out, possibly due to previous leader failure")]
    TimeoutDueToLeaderFail,
    #[error(transparent)]
    Member(MemberError),
    #[error(transparent)]
    Apply(MvccError),
}

pub type Reply = flume::Sender<Result<WriteResult, ProposeError>>;
/// The membership after a change was applied.
pub type MembersReply = flume::Sender<Result<Arc<Membership>, ProposeError>>;
/// The index a linearizable read may be served at: it is applied when the reply comes.
pub type ReadReply = flume::Sender<Result<u64, ProposeError>>;
pub type DoneReply = flume::Sender<Result<(), ProposeError>>;
