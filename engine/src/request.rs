//! The requests the MVCC store executes, and their encoding in the Raft log (DESIGN.md §4.4).
//!
//! These mirror etcd's KV messages field for field but belong to the engine, so that neither the
//! engine nor the Raft layer depends on the network layer's protobuf types. net/ converts. A request
//! is encoded once, on the core that received it, as `[FORMAT] ‖ rkyv archive`, and the same bytes
//! travel through the proposal queue into the WAL; apply decodes them with validation.

use rkyv::{Archive, Deserialize, Serialize, rancor};

/// Format byte in front of a request proposed by the member itself (lease expiry, checkpoints):
/// no caller, never checked against auth.
pub const FORMAT: u8 = 1;
/// Format byte in front of a client's request: `[FORMAT_CALLER] ‖ LE u32 n ‖ rkyv(Caller) (n
/// bytes) ‖ rkyv(Request)`, the caller checked against the auth state at the entry's place in
/// the log.
pub const FORMAT_CALLER: u8 = 2;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub limit: i64,
    pub revision: i64,
    /// etcd's SortOrder: 0 NONE, 1 ASCEND, 2 DESCEND.
    pub sort_order: i32,
    /// etcd's SortTarget: 0 KEY, 1 VERSION, 2 CREATE, 3 MOD, 4 VALUE.
    pub sort_target: i32,
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

/// etcd's Compare, with the target union already resolved: `value` is the compared value when
/// `target` is VALUE, `number` the compared number for VERSION/CREATE/MOD/LEASE (etcd compares
/// against the zero value when the union does not match the target).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Compare {
    /// 0 EQUAL, 1 GREATER, 2 LESS, 3 NOT_EQUAL.
    pub result: i32,
    /// 0 VERSION, 1 CREATE, 2 MOD, 3 VALUE, 4 LEASE.
    pub target: i32,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub value: Vec<u8>,
    pub number: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rancor::Source))]
#[rkyv(deserialize_bounds(__D::Error: rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rancor::Source)))]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(#[rkyv(omit_bounds)] TxnRequest),
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, __S::Error: rancor::Source))]
#[rkyv(deserialize_bounds(__D::Error: rancor::Source))]
#[rkyv(bytecheck(bounds(__C: rkyv::validation::ArchiveContext, __C::Error: rancor::Source)))]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    #[rkyv(omit_bounds)]
    pub success: Vec<RequestOp>,
    #[rkyv(omit_bounds)]
    pub failure: Vec<RequestOp>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct CompactRequest {
    pub revision: i64,
    pub physical: bool,
}

/// etcd's LeaseGrant, with the id already chosen (the leader picks one when the client did not).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseGrantRequest {
    pub id: i64,
    pub ttl: i64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRevokeRequest {
    pub id: i64,
}

/// etcd's lease checkpoint: the remaining TTL of leases, persisted so that a restart or a new
/// leader does not extend them to their full TTL.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseCheckpointRequest {
    /// (lease id, remaining TTL in seconds).
    pub checkpoints: Vec<(i64, i64)>,
}

/// etcd's authpb.Permission type: 0 READ, 1 WRITE, 2 READWRITE.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PermKind {
    #[default]
    Read,
    Write,
    ReadWrite,
}

impl PermKind {
    pub fn from_i32(v: i32) -> Option<PermKind> {
        match v {
            0 => Some(PermKind::Read),
            1 => Some(PermKind::Write),
            2 => Some(PermKind::ReadWrite),
            _ => None,
        }
    }
    pub fn as_i32(self) -> i32 {
        match self {
            PermKind::Read => 0,
            PermKind::Write => 1,
            PermKind::ReadWrite => 2,
        }
    }
    pub fn reads(self) -> bool {
        matches!(self, PermKind::Read | PermKind::ReadWrite)
    }
    pub fn writes(self) -> bool {
        matches!(self, PermKind::Write | PermKind::ReadWrite)
    }
}

/// etcd's authpb.Permission: `range_end` empty for one key, `[0]` for every key from `key` on.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Permission {
    pub kind: PermKind,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// The Auth service's state changes (etcd's InternalRaftRequest auth_* fields). Passwords travel
/// only as bcrypt hashes, made before proposing (etcd 3.5: no plaintext in the log).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    Enable,
    Disable,
    /// A password checked at auth revision `checked_revision` by the proposer; the apply hands
    /// out the token `token_prefix.<index>` on every member (etcd's simple token), or none with
    /// an empty prefix (JWT: the proposer signs the token).
    Authenticate {
        name: String,
        token_prefix: String,
        checked_revision: u64,
    },
    UserAdd {
        name: String,
        /// bcrypt hash; empty with `no_password`.
        password: Vec<u8>,
        no_password: bool,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password: Vec<u8>,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        role: String,
    },
    RoleGrantPermission {
        name: String,
        perm: Permission,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

/// Who sent a client's request (etcd's RequestHeader username and auth_revision): the user of
/// its token or certificate and the auth revision it was checked at; `user` empty and
/// `revision` 0 when it carried neither.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    pub user: String,
    pub revision: u64,
}

/// etcd's AlarmRequest ACTIVATE or DEACTIVATE (GET is answered from the applied state, without
/// Raft). Proposed by the member itself (a quota it exceeded, a corruption check) or for a
/// client whose admin rights net/ checked.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct AlarmRequest {
    pub activate: bool,
    pub member_id: u64,
    /// etcd's AlarmType: 0 NONE, 1 NOSPACE, 2 CORRUPT.
    pub alarm: i32,
}

/// A state-changing request, as proposed to Raft. New variants go at the end (the discriminant is
/// part of the log format).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseCheckpoint(LeaseCheckpointRequest),
    Auth(AuthRequest),
    Alarm(AlarmRequest),
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable request in the raft log: {0}")]
pub struct DecodeError(String);

/// Archives `value` at the end of `out`. The archives are unaligned (the `unaligned` feature)
/// and their pointers relative, so the bytes are those `rkyv::to_bytes` makes, wherever they
/// start: serializing in place saves a 100 KiB value two copies and the regrowth of rkyv's own
/// buffer (perf/findings.md §19).
pub(crate) fn archive_into<T>(value: &T, out: Vec<u8>) -> Vec<u8>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            Vec<u8>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, out)
        .expect("serializing to memory cannot fail")
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.archived_size_hint());
        out.push(FORMAT);
        archive_into(self, out)
    }

    /// Encodes a client's request with its caller.
    pub fn encode_as(&self, caller: &Caller) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + 64 + caller.user.len() + self.archived_size_hint());
        out.extend_from_slice(&[FORMAT_CALLER, 0, 0, 0, 0]);
        let mut out = archive_into(caller, out);
        let n = u32::try_from(out.len() - 5).expect("a caller is small");
        out[1..5].copy_from_slice(&n.to_le_bytes());
        archive_into(self, out)
    }

    /// About the size of the request's archive, so that encoding it seldom regrows its buffer.
    fn archived_size_hint(&self) -> usize {
        match self {
            Request::Put(p) => 64 + p.key.len() + p.value.len(),
            _ => 256,
        }
    }

    /// Decodes a request of either format; the caller is `None` for the member's own requests.
    pub fn decode_with_caller(bytes: &[u8]) -> Result<(Request, Option<Caller>), DecodeError> {
        match bytes.split_first() {
            Some((&FORMAT, body)) => rkyv::from_bytes::<Request, rancor::Error>(body)
                .map(|r| (r, None))
                .map_err(|e| DecodeError(e.to_string())),
            Some((&FORMAT_CALLER, body)) => {
                let bad = |e: rancor::Error| DecodeError(e.to_string());
                let (n, rest) = body
                    .split_first_chunk::<4>()
                    .ok_or_else(|| DecodeError("no caller length".into()))?;
                let n = u32::from_le_bytes(*n) as usize;
                if n > rest.len() {
                    return Err(DecodeError(format!(
                        "caller of {n} bytes in {}",
                        rest.len()
                    )));
                }
                let (c, r) = rest.split_at(n);
                let caller = rkyv::from_bytes::<Caller, rancor::Error>(c).map_err(bad)?;
                let req = rkyv::from_bytes::<Request, rancor::Error>(r).map_err(bad)?;
                Ok((req, Some(caller)))
            }
            Some((f, _)) => Err(DecodeError(format!("unknown format {f}"))),
            None => Err(DecodeError("empty".into())),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        Self::decode_with_caller(bytes).map(|(r, _)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_txn_roundtrip() {
        let inner = TxnRequest {
            compare: vec![Compare {
                key: b"k".to_vec(),
                number: 3,
                ..Default::default()
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: b"a".to_vec(),
                value: b"b".to_vec(),
                ..Default::default()
            })],
            failure: vec![],
        };
        let req = Request::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::Txn(inner),
                RequestOp::Range(RangeRequest {
                    key: b"x".to_vec(),
                    ..Default::default()
                }),
            ],
            failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"z".to_vec(),
                ..Default::default()
            })],
        });
        let bytes = req.encode();
        assert_eq!(Request::decode(&bytes).unwrap(), req);
        assert!(Request::decode(&bytes[..bytes.len() / 2]).is_err());
        assert!(Request::decode(&[]).is_err());

        let caller = Caller {
            user: "alice".into(),
            revision: 7,
        };
        let bytes = req.encode_as(&caller);
        assert_eq!(
            Request::decode_with_caller(&bytes).unwrap(),
            (req.clone(), Some(caller))
        );
        assert_eq!(Request::decode_with_caller(&req.encode()).unwrap().1, None);
        assert!(Request::decode(&bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn requests_are_encoded_as_rkyv_archives_them() {
        let put = Request::Put(PutRequest {
            key: b"key".to_vec(),
            value: vec![7; 100 << 10],
            lease: 5,
            prev_kv: true,
            ..Default::default()
        });
        let caller = Caller {
            user: "bob".into(),
            revision: 3,
        };
        let archive = |v: &Request| rkyv::to_bytes::<rancor::Error>(v).unwrap().to_vec();
        let c = rkyv::to_bytes::<rancor::Error>(&caller).unwrap().to_vec();
        for req in [put, Request::Compact(CompactRequest::default())] {
            assert_eq!(req.encode(), [&[FORMAT][..], &archive(&req)].concat());
            let want = [
                &[FORMAT_CALLER][..],
                &(c.len() as u32).to_le_bytes(),
                &c,
                &archive(&req),
            ]
            .concat();
            assert_eq!(req.encode_as(&caller), want);
        }
    }
}
