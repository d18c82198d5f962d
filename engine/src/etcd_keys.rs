//! etcd's on-disk encoding of the key space: the keys and values of bbolt's `key` bucket.
//!
//! etcd stores every version of every user key in one bucket, keyed by the version's revision
//! (8-byte big-endian main ‖ `'_'` ‖ 8-byte big-endian sub, and a trailing `'t'` for a
//! tombstone), each value an `mvccpb.KeyValue` protobuf (for a tombstone, one holding only the
//! key). retcd keeps its versions differently (DESIGN.md §4.1, §4.2), so anything that must equal
//! etcd byte for byte goes through this module:
//!
//! - HashKV (`mvcc::MvccReader::hash_kv`, DESIGN.md §4.10) hashes these bytes, as etcd does;
//! - the snapshot writer (engine/src/bbolt/) fills etcd's `key` bucket from
//!   `mvcc::StateSnapshot::etcd_key_bucket`, which yields entries encoded here.
//!
//! The protobuf is written by hand, as Go's (gogo) protobuf writes it: fields in field-number
//! order, proto3 zero values and empty bytes omitted, int64 as a 10-byte varint when negative.
//! The hash depends on these exact bytes. Decoding accepts any valid encoding of the message.

use crate::mvcc::KeyValue;
use crate::protowire::{Field, WireError, fields, put_int64, put_len};

/// Name of etcd's bucket of versions; HashKV's hash starts with these bytes.
pub const KEY_BUCKET: &[u8] = b"key";
/// Length of a revision key of a put.
pub const REVISION_KEY_LEN: usize = 17;
/// Length of a revision key of a tombstone (the put's key and `'t'`).
pub const TOMBSTONE_KEY_LEN: usize = 18;

const SEPARATOR: u8 = b'_';
const TOMBSTONE_MARK: u8 = b't';

/// The revision of one entry of the `key` bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketRevision {
    pub main: i64,
    pub sub: i64,
    /// The entry marks a delete (etcd's tombstone); its value holds only the key.
    pub tombstone: bool,
}

/// Bytes that are not etcd's encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not etcd's key-bucket encoding: {0}")]
pub struct EncodingError(pub String);

/// Appends the revision key of `rev` to `out` (17 bytes, 18 for a tombstone). Bytewise order of
/// these keys is (main, sub) order, a tombstone after a put of the same (main, sub) — bbolt's
/// order, in which HashKV reads them.
pub fn encode_revision_key(rev: BucketRevision, out: &mut Vec<u8>) {
    out.extend_from_slice(&rev.main.to_be_bytes());
    out.push(SEPARATOR);
    out.extend_from_slice(&rev.sub.to_be_bytes());
    if rev.tombstone {
        out.push(TOMBSTONE_MARK);
    }
}

/// The revision key of `rev`.
pub fn revision_key(rev: BucketRevision) -> Vec<u8> {
    let mut out = Vec::with_capacity(TOMBSTONE_KEY_LEN);
    encode_revision_key(rev, &mut out);
    out
}

/// Decodes a revision key as etcd 3.6 does (the strictest reader): 17 or 18 bytes, `'_'` at
/// offset 8, `'t'` at offset 17 when present, neither revision negative.
pub fn decode_revision_key(bytes: &[u8]) -> Result<BucketRevision, EncodingError> {
    let bad = |why: &str| EncodingError(format!("revision key {bytes:02x?}: {why}"));
    let tombstone = match bytes.len() {
        REVISION_KEY_LEN => false,
        TOMBSTONE_KEY_LEN if bytes[17] == TOMBSTONE_MARK => true,
        TOMBSTONE_KEY_LEN => return Err(bad("18th byte is not 't'")),
        _ => return Err(bad("length is neither 17 nor 18")),
    };
    if bytes[8] != SEPARATOR {
        return Err(bad("no '_' after the main revision"));
    }
    let main = i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes"));
    let sub = i64::from_be_bytes(bytes[9..17].try_into().expect("8 bytes"));
    if main < 0 || sub < 0 {
        return Err(bad("negative revision"));
    }
    Ok(BucketRevision {
        main,
        sub,
        tombstone,
    })
}

/// One version as `mvccpb.KeyValue`, borrowed (the hash encodes every version it reads; nothing
/// needs to be copied for that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyValueRef<'a> {
    pub key: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: &'a [u8],
    pub lease: i64,
}

impl<'a> KeyValueRef<'a> {
    /// What etcd stores for a tombstone of `key`: the key and nothing else.
    pub fn tombstone(key: &'a [u8]) -> KeyValueRef<'a> {
        KeyValueRef {
            key,
            ..KeyValueRef::default()
        }
    }
}

impl<'a> From<&'a KeyValue> for KeyValueRef<'a> {
    fn from(kv: &'a KeyValue) -> KeyValueRef<'a> {
        KeyValueRef {
            key: &kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: &kv.value,
            lease: kv.lease,
        }
    }
}

// mvccpb.KeyValue field numbers (mvcc/mvccpb/kv.proto).
const F_KEY: u64 = 1;
const F_CREATE_REVISION: u64 = 2;
const F_MOD_REVISION: u64 = 3;
const F_VERSION: u64 = 4;
const F_VALUE: u64 = 5;
const F_LEASE: u64 = 6;

impl From<WireError> for EncodingError {
    fn from(e: WireError) -> EncodingError {
        EncodingError(e.0)
    }
}

/// Appends `kv` encoded as etcd encodes an `mvccpb.KeyValue` to `out`.
pub fn encode_key_value(kv: KeyValueRef<'_>, out: &mut Vec<u8>) {
    put_len(F_KEY, kv.key, false, out);
    put_int64(F_CREATE_REVISION, kv.create_revision, out);
    put_int64(F_MOD_REVISION, kv.mod_revision, out);
    put_int64(F_VERSION, kv.version, out);
    put_len(F_VALUE, kv.value, false, out);
    put_int64(F_LEASE, kv.lease, out);
}

/// Decodes an `mvccpb.KeyValue` in any valid protobuf encoding (fields in any order, repeated
/// scalars: last wins, unknown fields skipped), as Go's unmarshal does.
pub fn decode_key_value(b: &[u8]) -> Result<KeyValue, EncodingError> {
    let mut kv = KeyValue::default();
    fields(b, "mvccpb.KeyValue", |f, v| {
        match (f, v) {
            (F_KEY, Field::Bytes(s)) => kv.key = s.to_vec(),
            (F_VALUE, Field::Bytes(s)) => kv.value = s.to_vec(),
            (F_CREATE_REVISION, Field::Varint(x)) => kv.create_revision = x as i64,
            (F_MOD_REVISION, Field::Varint(x)) => kv.mod_revision = x as i64,
            (F_VERSION, Field::Varint(x)) => kv.version = x as i64,
            (F_LEASE, Field::Varint(x)) => kv.lease = x as i64,
            (F_KEY..=F_LEASE, _) => {
                return Err(EncodingError(format!("field {f} has the wrong wire type")));
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(kv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protowire::{hex, put_varint};

    fn rev(main: i64, sub: i64, tombstone: bool) -> BucketRevision {
        BucketRevision {
            main,
            sub,
            tombstone,
        }
    }

    #[test]
    fn revision_keys_are_etcds() {
        // Reference §2.2: main 3, sub 0 → `…03_…00`.
        let k = revision_key(rev(3, 0, false));
        assert_eq!(k, hex("0000000000000003 5f 0000000000000000"));
        let t = revision_key(rev(0x0102030405060708, 9, true));
        assert_eq!(t, hex("0102030405060708 5f 0000000000000009 74"));
        assert_eq!(decode_revision_key(&k).unwrap(), rev(3, 0, false));
        assert_eq!(
            decode_revision_key(&t).unwrap(),
            rev(0x0102030405060708, 9, true)
        );
    }

    #[test]
    fn revision_keys_sort_in_revision_order() {
        let revs = [
            rev(2, 0, false),
            rev(2, 0, true),
            rev(2, 1, false),
            rev(255, 0, false),
            rev(256, 0, true),
            rev(1 << 40, 3, false),
        ];
        for w in revs.windows(2) {
            assert!(w[0] < w[1]);
            assert!(revision_key(w[0]) < revision_key(w[1]), "{w:?}");
        }
    }

    #[test]
    fn malformed_revision_keys_are_refused() {
        let good = revision_key(rev(5, 1, false));
        assert!(decode_revision_key(&good[..16]).is_err());
        let mut long = good.clone();
        long.push(b'x');
        assert!(decode_revision_key(&long).is_err(), "18th byte not 't'");
        let mut sep = good.clone();
        sep[8] = b'-';
        assert!(decode_revision_key(&sep).is_err());
        assert!(decode_revision_key(&revision_key(rev(-1, 0, false))).is_err());
        assert!(decode_revision_key(&revision_key(rev(1, -1, true))).is_err());
    }

    #[test]
    fn key_values_are_etcds_bytes() {
        // Reference §2.2, read from a real etcd 3.4.23 db: {key "foo", create 2, mod 3,
        // version 2, value "bar2"}.
        let kv = KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 2,
            value: b"bar2".to_vec(),
            lease: 0,
        };
        let want = hex("0a03666f6f 1002 1803 2002 2a0462617232");
        let mut out = Vec::new();
        encode_key_value((&kv).into(), &mut out);
        assert_eq!(out, want);
        assert_eq!(decode_key_value(&want).unwrap(), kv);

        // A tombstone is the key alone (`0a026b32` for "k2").
        let mut out = Vec::new();
        encode_key_value(KeyValueRef::tombstone(b"k2"), &mut out);
        assert_eq!(out, hex("0a026b32"));
        assert_eq!(
            decode_key_value(&out).unwrap(),
            KeyValue {
                key: b"k2".to_vec(),
                ..KeyValue::default()
            }
        );
    }

    #[test]
    fn key_value_varints_leases_and_empty_values() {
        // A lease id over 7 bits, revisions over 14, an empty value (omitted, as proto3 omits
        // empty bytes).
        let kv = KeyValue {
            key: b"a".to_vec(),
            create_revision: 300,
            mod_revision: 16384,
            version: 1,
            value: Vec::new(),
            lease: 0x694d_7c3e_4a6d_1f02,
        };
        let mut out = Vec::new();
        encode_key_value((&kv).into(), &mut out);
        let want = [hex("0a0161 10ac02 18808001 2001 30"), {
            let mut v = Vec::new();
            put_varint(0x694d_7c3e_4a6d_1f02, &mut v);
            v
        }]
        .concat();
        assert_eq!(out, want);
        assert_eq!(decode_key_value(&out).unwrap(), kv);

        // A negative int64 takes 10 bytes (Go's encoding); it round-trips.
        let neg = KeyValue {
            key: b"n".to_vec(),
            lease: -1,
            ..KeyValue::default()
        };
        let mut out = Vec::new();
        encode_key_value((&neg).into(), &mut out);
        assert_eq!(out, hex("0a016e 30ffffffffffffffffff01"));
        assert_eq!(decode_key_value(&out).unwrap(), neg);
    }

    #[test]
    fn decoding_accepts_any_order_and_skips_unknown_fields() {
        // value before key, an unknown varint field 9, an unknown bytes field 10, a fixed32 11.
        let b = hex("2a0176 0a016b 4807 5202aabb 5d01020304 2003");
        let kv = decode_key_value(&b).unwrap();
        assert_eq!(
            kv,
            KeyValue {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                version: 3,
                ..KeyValue::default()
            }
        );
        // Truncated or mistyped fields are errors, not garbage.
        assert!(decode_key_value(&hex("0a05 6b")).is_err());
        assert!(decode_key_value(&hex("10")).is_err());
        assert!(decode_key_value(&hex("0803")).is_err(), "key as a varint");
        assert!(
            decode_key_value(&hex("1201 00")).is_err(),
            "revision as bytes"
        );
    }
}
