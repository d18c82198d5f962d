//! The requests the MVCC store executes, and their encoding in the Raft log (DESIGN.md §4.4).
//!
//! These mirror etcd's KV messages field for field but belong to the engine, so that neither the
//! engine nor the Raft layer depends on the network layer's protobuf types. net/ converts. A request
//! is encoded once, on the core that received it, as `[FORMAT] ‖ rkyv archive`, and the same bytes
//! travel through the proposal queue into the WAL; apply decodes them with validation.

use rkyv::{Archive, Deserialize, Serialize, rancor};

/// Format byte in front of every encoded request.
pub const FORMAT: u8 = 1;

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
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable request in the raft log: {0}")]
pub struct DecodeError(String);

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let archived =
            rkyv::to_bytes::<rancor::Error>(self).expect("serializing to memory cannot fail");
        let mut out = Vec::with_capacity(1 + archived.len());
        out.push(FORMAT);
        out.extend_from_slice(&archived);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        match bytes.split_first() {
            Some((&FORMAT, body)) => rkyv::from_bytes::<Request, rancor::Error>(body)
                .map_err(|e| DecodeError(e.to_string())),
            Some((f, _)) => Err(DecodeError(format!("unknown format {f}"))),
            None => Err(DecodeError("empty".into())),
        }
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
    }
}
