//! etcd's gRPC error table, typed.
//!
//! etcd clients recognise server errors by their gRPC status: the Go client
//! (`clientv3`) maps the status *message* back to its `rpctypes.Err*` value,
//! and tools compare codes. [`EtcdError`] lists every error of etcd v3.5's
//! `api/v3rpc/rpctypes` table with its exact [`tonic::Code`] and message, so
//! retcd's services can answer with byte-identical statuses:
//!
//! ```
//! use retcd_net::errors::EtcdError;
//!
//! let status: tonic::Status = EtcdError::Compacted.into();
//! assert_eq!(status.code(), tonic::Code::OutOfRange);
//! assert_eq!(
//!     status.message(),
//!     "etcdserver: mvcc: required revision has been compacted"
//! );
//! ```
//!
//! Codes are etcd v3.5's. etcd 3.6 changed three of them (`NotCapable`,
//! `NotSupportedForLearner` and `ClusterVersionUnavailable` became
//! `FailedPrecondition`) and added two errors (`InvalidClientAPIVersion`,
//! `InvalidSortOption`); the 3.6-only errors are included, each marked.
//! Messages are identical in both versions.

use std::fmt;

use tonic::{Code, Status};

/// Defines [`EtcdError`] and its code/message lookups from one table, so a
/// variant cannot exist without both.
macro_rules! etcd_errors {
    ($( $(#[$doc:meta])* $variant:ident => ($code:ident, $msg:literal), )+) => {
        /// One of etcd's well-known gRPC errors (`rpctypes.ErrGRPC*`).
        ///
        /// [`EtcdError::status`] gives the exact status etcd sends for it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EtcdError {
            $( $(#[$doc])* $variant, )+
        }

        impl EtcdError {
            /// Every error in the table, in etcd's declaration order.
            pub const ALL: &'static [EtcdError] = &[ $( EtcdError::$variant, )+ ];

            /// The gRPC status code etcd uses for this error.
            #[must_use]
            pub const fn code(self) -> Code {
                match self {
                    $( EtcdError::$variant => Code::$code, )+
                }
            }

            /// The status message etcd sends for this error (what the Go
            /// client matches on).
            #[must_use]
            pub const fn message(self) -> &'static str {
                match self {
                    $( EtcdError::$variant => $msg, )+
                }
            }
        }
    };
}

etcd_errors! {
    // --- request validation and MVCC -------------------------------------
    /// `ErrGRPCEmptyKey`: a request without a key.
    EmptyKey => (InvalidArgument, "etcdserver: key is not provided"),
    /// `ErrGRPCKeyNotFound`: put with `ignore_value`/`ignore_lease` on a
    /// missing key.
    KeyNotFound => (InvalidArgument, "etcdserver: key not found"),
    /// `ErrGRPCValueProvided`: put with both a value and `ignore_value`.
    ValueProvided => (InvalidArgument, "etcdserver: value is provided"),
    /// `ErrGRPCLeaseProvided`: put with both a lease and `ignore_lease`.
    LeaseProvided => (InvalidArgument, "etcdserver: lease is provided"),
    /// `ErrGRPCTooManyOps`: a txn over `--max-txn-ops`.
    TooManyOps => (InvalidArgument, "etcdserver: too many operations in txn request"),
    /// `ErrGRPCDuplicateKey`: a txn writing the same key twice.
    DuplicateKey => (InvalidArgument, "etcdserver: duplicate key given in txn request"),
    /// `ErrGRPCInvalidClientAPIVersion` (etcd 3.6 only).
    InvalidClientAPIVersion => (InvalidArgument, "etcdserver: invalid client api version"),
    /// `ErrGRPCInvalidSortOption`: unknown sort order/target in a range
    /// (etcd 3.6 only; 3.5 silently treats it as the default).
    InvalidSortOption => (InvalidArgument, "etcdserver: invalid sort option"),
    /// `ErrGRPCCompacted`: the requested revision was compacted away.
    Compacted => (OutOfRange, "etcdserver: mvcc: required revision has been compacted"),
    /// `ErrGRPCFutureRev`: the requested revision is above the current one.
    FutureRev => (OutOfRange, "etcdserver: mvcc: required revision is a future revision"),
    /// `ErrGRPCNoSpace`: the backend quota is exhausted (NOSPACE alarm).
    NoSpace => (ResourceExhausted, "etcdserver: mvcc: database space exceeded"),

    // --- leases --------------------------------------------------------
    /// `ErrGRPCLeaseNotFound`.
    LeaseNotFound => (NotFound, "etcdserver: requested lease not found"),
    /// `ErrGRPCLeaseExist`: grant with an ID already in use.
    LeaseExist => (FailedPrecondition, "etcdserver: lease already exists"),
    /// `ErrGRPCLeaseTTLTooLarge`.
    LeaseTTLTooLarge => (OutOfRange, "etcdserver: too large lease TTL"),

    // --- watch ---------------------------------------------------------
    /// `ErrGRPCWatchCanceled`.
    WatchCanceled => (Cancelled, "etcdserver: watch canceled"),

    // --- membership ----------------------------------------------------
    /// `ErrGRPCMemberExist`.
    MemberExist => (FailedPrecondition, "etcdserver: member ID already exist"),
    /// `ErrGRPCPeerURLExist`.
    PeerURLExist => (FailedPrecondition, "etcdserver: Peer URLs already exists"),
    /// `ErrGRPCMemberNotEnoughStarted`.
    ///
    /// Note: etcd's server maps this case to the *client-side* error value,
    /// which grpc-go sends as `Unknown` with this same message; the table
    /// code is `FailedPrecondition`. Clients match on the message.
    MemberNotEnoughStarted => (FailedPrecondition, "etcdserver: re-configuration failed due to not enough started members"),
    /// `ErrGRPCMemberBadURLs`.
    MemberBadURLs => (InvalidArgument, "etcdserver: given member URLs are invalid"),
    /// `ErrGRPCMemberNotFound`.
    MemberNotFound => (NotFound, "etcdserver: member not found"),
    /// `ErrGRPCMemberNotLearner`: promote of a voting member.
    MemberNotLearner => (FailedPrecondition, "etcdserver: can only promote a learner member"),
    /// `ErrGRPCLearnerNotReady`: promote of a learner still catching up.
    LearnerNotReady => (FailedPrecondition, "etcdserver: can only promote a learner member which is in sync with leader"),
    /// `ErrGRPCTooManyLearners`.
    TooManyLearners => (FailedPrecondition, "etcdserver: too many learner members in cluster"),
    /// `ErrGRPCClusterIdMismatch`.
    ClusterIdMismatch => (FailedPrecondition, "etcdserver: cluster ID mismatch"),

    // --- request limits ------------------------------------------------
    /// `ErrGRPCRequestTooLarge`: over `--max-request-bytes`.
    RequestTooLarge => (InvalidArgument, "etcdserver: request is too large"),
    /// `ErrGRPCRequestTooManyRequests`: applied index lags committed index
    /// too far.
    ///
    /// Note: like [`EtcdError::MemberNotEnoughStarted`], etcd actually sends
    /// this one as `Unknown`; the table code is `ResourceExhausted`.
    TooManyRequests => (ResourceExhausted, "etcdserver: too many requests"),

    // --- auth ----------------------------------------------------------
    /// `ErrGRPCRootUserNotExist`: auth enable without a root user.
    RootUserNotExist => (FailedPrecondition, "etcdserver: root user does not exist"),
    /// `ErrGRPCRootRoleNotExist`: auth enable while root lacks the root role.
    RootRoleNotExist => (FailedPrecondition, "etcdserver: root user does not have root role"),
    /// `ErrGRPCUserAlreadyExist`.
    UserAlreadyExist => (FailedPrecondition, "etcdserver: user name already exists"),
    /// `ErrGRPCUserEmpty`.
    UserEmpty => (InvalidArgument, "etcdserver: user name is empty"),
    /// `ErrGRPCUserNotFound`.
    UserNotFound => (FailedPrecondition, "etcdserver: user name not found"),
    /// `ErrGRPCRoleAlreadyExist`.
    RoleAlreadyExist => (FailedPrecondition, "etcdserver: role name already exists"),
    /// `ErrGRPCRoleNotFound`.
    RoleNotFound => (FailedPrecondition, "etcdserver: role name not found"),
    /// `ErrGRPCRoleEmpty`.
    RoleEmpty => (InvalidArgument, "etcdserver: role name is empty"),
    /// `ErrGRPCAuthFailed`: wrong user name or password.
    AuthFailed => (InvalidArgument, "etcdserver: authentication failed, invalid user ID or password"),
    /// `ErrGRPCPermissionNotGiven`: role grant without a permission.
    PermissionNotGiven => (InvalidArgument, "etcdserver: permission not given"),
    /// `ErrGRPCPermissionDenied`.
    PermissionDenied => (PermissionDenied, "etcdserver: permission denied"),
    /// `ErrGRPCRoleNotGranted`.
    RoleNotGranted => (FailedPrecondition, "etcdserver: role is not granted to the user"),
    /// `ErrGRPCPermissionNotGranted`.
    PermissionNotGranted => (FailedPrecondition, "etcdserver: permission is not granted to the role"),
    /// `ErrGRPCAuthNotEnabled`: authenticate while auth is disabled.
    AuthNotEnabled => (FailedPrecondition, "etcdserver: authentication is not enabled"),
    /// `ErrGRPCInvalidAuthToken`.
    InvalidAuthToken => (Unauthenticated, "etcdserver: invalid auth token"),
    /// `ErrGRPCInvalidAuthMgmt`: e.g. revoking root's root role.
    InvalidAuthMgmt => (InvalidArgument, "etcdserver: invalid auth management"),
    /// `ErrGRPCAuthOldRevision`: token minted before an auth change.
    AuthOldRevision => (InvalidArgument, "etcdserver: revision of auth store is old"),

    // --- server / raft state -------------------------------------------
    /// `ErrGRPCNoLeader`.
    NoLeader => (Unavailable, "etcdserver: no leader"),
    /// `ErrGRPCNotLeader`.
    NotLeader => (FailedPrecondition, "etcdserver: not leader"),
    /// `ErrGRPCLeaderChanged`.
    LeaderChanged => (Unavailable, "etcdserver: leader changed"),
    /// `ErrGRPCNotCapable` (`FailedPrecondition` in etcd 3.6).
    NotCapable => (Unavailable, "etcdserver: not capable"),
    /// `ErrGRPCStopped`.
    Stopped => (Unavailable, "etcdserver: server stopped"),
    /// `ErrGRPCTimeout`.
    Timeout => (Unavailable, "etcdserver: request timed out"),
    /// `ErrGRPCTimeoutDueToLeaderFail`.
    TimeoutDueToLeaderFail => (Unavailable, "etcdserver: request timed out, possibly due to previous leader failure"),
    /// `ErrGRPCTimeoutLeaderTransfer`.
    TimeoutLeaderTransfer => (Unavailable, "etcdserver: request timed out, leader transfer took too long"),
    /// `ErrGRPCTimeoutDueToConnectionLost`.
    TimeoutDueToConnectionLost => (Unavailable, "etcdserver: request timed out, possibly due to connection lost"),
    /// `ErrGRPCTimeoutWaitAppliedIndex`.
    TimeoutWaitAppliedIndex => (Unavailable, "etcdserver: request timed out, waiting for the applied index took too long"),
    /// `ErrGRPCUnhealthy`.
    Unhealthy => (Unavailable, "etcdserver: unhealthy cluster"),
    /// `ErrGRPCCorrupt`.
    Corrupt => (DataLoss, "etcdserver: corrupt cluster"),
    /// `ErrGPRCNotSupportedForLearner` (sic): an RPC a learner cannot serve
    /// (`FailedPrecondition` in etcd 3.6).
    NotSupportedForLearner => (Unavailable, "etcdserver: rpc not supported for learner"),
    /// `ErrGRPCBadLeaderTransferee`.
    BadLeaderTransferee => (FailedPrecondition, "etcdserver: bad leader transferee"),

    // --- downgrade -----------------------------------------------------
    /// `ErrGRPCClusterVersionUnavailable` (`FailedPrecondition` in etcd 3.6).
    ClusterVersionUnavailable => (Unavailable, "etcdserver: cluster version not found during downgrade"),
    /// `ErrGRPCWrongDowngradeVersionFormat`.
    WrongDowngradeVersionFormat => (InvalidArgument, "etcdserver: wrong downgrade target version format"),
    /// `ErrGRPCInvalidDowngradeTargetVersion`.
    InvalidDowngradeTargetVersion => (InvalidArgument, "etcdserver: invalid downgrade target version"),
    /// `ErrGRPCDowngradeInProcess`.
    DowngradeInProcess => (FailedPrecondition, "etcdserver: cluster has a downgrade job in progress"),
    /// `ErrGRPCNoInflightDowngrade`.
    NoInflightDowngrade => (FailedPrecondition, "etcdserver: no inflight downgrade job"),

    // --- request context -----------------------------------------------
    /// `ErrGRPCCanceled`: the request's context was cancelled.
    Canceled => (Cancelled, "etcdserver: request canceled"),
    /// `ErrGRPCDeadlineExceeded`: the request's deadline passed.
    DeadlineExceeded => (DeadlineExceeded, "etcdserver: context deadline exceeded"),
}

impl EtcdError {
    /// The exact gRPC status etcd returns for this error.
    #[must_use]
    pub fn status(&self) -> Status {
        Status::new(self.code(), self.message())
    }

    /// The error whose message is `message`, as etcd's client resolves a
    /// received status (`rpctypes.Error`); `None` for any other text.
    #[must_use]
    pub fn from_message(message: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|e| e.message() == message)
    }

    /// The error a received status stands for (matched on the message, as
    /// etcd's client does).
    #[must_use]
    pub fn from_status(status: &Status) -> Option<Self> {
        Self::from_message(status.message())
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for EtcdError {}

impl From<EtcdError> for Status {
    fn from(err: EtcdError) -> Self {
        err.status()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[track_caller]
    fn assert_status(err: EtcdError, code: Code, message: &str) {
        let status = Status::from(err);
        assert_eq!(status.code(), code, "{err:?}");
        assert_eq!(status.message(), message, "{err:?}");
    }

    #[test]
    fn exact_codes_and_messages() {
        assert_status(
            EtcdError::EmptyKey,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        );
        assert_status(
            EtcdError::Compacted,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        assert_status(
            EtcdError::FutureRev,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
        assert_status(
            EtcdError::NoSpace,
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        );
        assert_status(
            EtcdError::LeaseNotFound,
            Code::NotFound,
            "etcdserver: requested lease not found",
        );
        assert_status(
            EtcdError::TooManyOps,
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        );
        assert_status(
            EtcdError::DuplicateKey,
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        );
        assert_status(
            EtcdError::PeerURLExist,
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        );
        assert_status(
            EtcdError::InvalidAuthToken,
            Code::Unauthenticated,
            "etcdserver: invalid auth token",
        );
        assert_status(
            EtcdError::PermissionDenied,
            Code::PermissionDenied,
            "etcdserver: permission denied",
        );
        assert_status(
            EtcdError::AuthFailed,
            Code::InvalidArgument,
            "etcdserver: authentication failed, invalid user ID or password",
        );
        assert_status(
            EtcdError::NoLeader,
            Code::Unavailable,
            "etcdserver: no leader",
        );
        assert_status(
            EtcdError::NotLeader,
            Code::FailedPrecondition,
            "etcdserver: not leader",
        );
        assert_status(
            EtcdError::Corrupt,
            Code::DataLoss,
            "etcdserver: corrupt cluster",
        );
        assert_status(
            EtcdError::NoInflightDowngrade,
            Code::FailedPrecondition,
            "etcdserver: no inflight downgrade job",
        );
        assert_status(
            EtcdError::DeadlineExceeded,
            Code::DeadlineExceeded,
            "etcdserver: context deadline exceeded",
        );
    }

    #[test]
    fn table_is_consistent() {
        let mut messages = HashSet::new();
        for &err in EtcdError::ALL {
            assert!(err.message().starts_with("etcdserver: "), "{err:?}");
            assert!(
                messages.insert(err.message()),
                "duplicate message for {err:?}"
            );
            assert_ne!(err.code(), Code::Ok, "{err:?}");
            assert_eq!(err.to_string(), err.message());
            assert_eq!(EtcdError::from_message(err.message()), Some(err));
            assert_eq!(EtcdError::from_status(&err.status()), Some(err));
        }
        assert_eq!(EtcdError::ALL.len(), 64);
        assert_eq!(EtcdError::from_message("etcdserver: something else"), None);
    }
}
