//! retcd's consensus layer: a raft-rs `RawNode` on the sequencer core whose log storage is the WAL,
//! batching of proposals from every core, and the apply into the MVCC store.
//!
//! - [`log`]: rebuilds raft-rs's log storage from the WAL at startup;
//! - [`core`]: the deterministic, I/O-free state machine around `RawNode` (drivable by tests);
//! - [`sequencer`]: the task on core 0 that feeds the core with proposals and does its I/O;
//! - [`compactor`]: automatic compaction (etcd's --auto-compaction-*), driven by the sequencer;
//! - [`lessor`]: lease expiry, renewal and checkpointing, driven by the sequencer;
//! - [`membership`]: members, ids, the configuration they make;
//! - [`status`]: what every core may read of the member's Raft state ([`NodeStatus`]);
//! - [`reply`]: what callers are answered: [`ProposeError`], [`MemberError`], the reply channels;
//! - [`tokens`]: the simple auth tokens handed out by the apply;
//! - [`transport`]: raft messages to and from peers (the connections are net/'s);
//! - `trace`: raft-rs's slog records into tracing;
//! - [`sim`] (feature `sim`, tests and the `retcd-sim` binary only): the deterministic
//!   simulation of a cluster.
//!
//! This crate uses engine/ and never reaches net/.

pub mod compactor;
pub mod core;
pub mod feed;
pub mod lessor;
pub mod log;
pub mod membership;
pub mod metrics;
pub mod reply;
pub mod sequencer;
#[cfg(feature = "sim")]
pub mod sim;
pub mod status;
pub mod tokens;
mod trace;
pub mod transport;

pub use crate::core::MemberChange;
pub use crate::reply::{MemberError, ProposeError};
pub use crate::sequencer::{PeerInbox, Proposer, SequencerOptions};
pub use crate::status::NodeStatus;
