//! Member and cluster identities, derived from the bootstrap configuration exactly as etcd derives
//! them, so that every member computes the same ids (and the same flags give the ids etcd would).

use sha1::{Digest, Sha1};

fn first_u64(bytes: &[u8]) -> u64 {
    let h = Sha1::digest(bytes);
    u64::from_be_bytes(h[..8].try_into().expect("sha1 is 20 bytes"))
}

/// etcd's member id: SHA-1 of the sorted peer URLs (concatenated) and the cluster token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut b = urls.concat().into_bytes();
    b.extend_from_slice(token.as_bytes());
    first_u64(&b)
}

/// etcd's cluster id: SHA-1 of the sorted member ids (8 bytes big-endian each).
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let b: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    first_u64(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_order_independent() {
        let a = member_id(
            &["http://b:2380".into(), "http://a:2380".into()],
            "etcd-cluster",
        );
        let b = member_id(
            &["http://a:2380".into(), "http://b:2380".into()],
            "etcd-cluster",
        );
        assert_eq!(a, b);
        assert_ne!(a, member_id(&["http://a:2380".into()], "etcd-cluster"));
        assert_eq!(cluster_id(&[1, 2]), cluster_id(&[2, 1]));
    }
}
