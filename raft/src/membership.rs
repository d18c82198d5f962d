//! The cluster's membership: who the members are (id, name, URLs, learner or voter), which ids
//! were removed, and the identities derived from the bootstrap configuration exactly as etcd
//! derives them, so that every member computes the same ids (and the same flags give etcd's ids).
//!
//! The membership is replicated state: it changes only by applying committed entries
//! ([`crate::core`]), and it is stored with the applied index in the page store. Invariant: the
//! voters and learners of the membership are exactly raft-rs's `ConfState` at the applied index.

use raft::prelude::ConfState;
use rkyv::{Archive, Deserialize, Serialize, rancor};
use sha1::{Digest, Sha1};

/// One member, as etcd's Cluster service lists it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    pub id: u64,
    /// Empty until the member has started and published its attributes (etcd's "unstarted").
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The members of the cluster and the ids that were removed (a removed id never comes back).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    /// Sorted by id.
    pub members: Vec<Member>,
    pub removed: Vec<u64>,
}

/// First byte of a member-attributes entry in the Raft log (client requests start with
/// `retcd_engine::request::FORMAT`).
pub const ATTRS_FORMAT: u8 = 0x80;

/// A change of a member's attributes: etcd's publish (name and client URLs, proposed by the
/// member itself once it runs) and MemberUpdate (peer URLs).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberAttrs {
    pub id: u64,
    pub name: Option<String>,
    pub client_urls: Option<Vec<String>>,
    pub peer_urls: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable membership record: {0}")]
pub struct MembershipDecodeError(String);

impl MemberAttrs {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ATTRS_FORMAT];
        out.extend_from_slice(
            &rkyv::to_bytes::<rancor::Error>(self).expect("serializing to memory cannot fail"),
        );
        out
    }
    pub fn decode(bytes: &[u8]) -> Result<MemberAttrs, MembershipDecodeError> {
        match bytes.split_first() {
            Some((&ATTRS_FORMAT, body)) => rkyv::from_bytes::<MemberAttrs, rancor::Error>(body)
                .map_err(|e| MembershipDecodeError(e.to_string())),
            _ => Err(MembershipDecodeError(
                "not a member-attributes entry".into(),
            )),
        }
    }
}

impl Member {
    /// The context of a configuration-change entry that adds this member.
    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rancor::Error>(self)
            .expect("serializing to memory cannot fail")
            .to_vec()
    }
    pub fn decode(bytes: &[u8]) -> Result<Member, MembershipDecodeError> {
        rkyv::from_bytes::<Member, rancor::Error>(bytes)
            .map_err(|e| MembershipDecodeError(e.to_string()))
    }
}

impl Membership {
    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rancor::Error>(self)
            .expect("serializing to memory cannot fail")
            .to_vec()
    }
    pub fn decode(bytes: &[u8]) -> Result<Membership, MembershipDecodeError> {
        let m = rkyv::from_bytes::<Membership, rancor::Error>(bytes)
            .map_err(|e| MembershipDecodeError(e.to_string()))?;
        if !m.members.is_sorted_by_key(|m| m.id) {
            return Err(MembershipDecodeError("members not sorted by id".into()));
        }
        Ok(m)
    }

    pub fn get(&self, id: u64) -> Option<&Member> {
        self.members
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| &self.members[i])
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Member> {
        self.members
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| &mut self.members[i])
    }

    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    pub fn voters(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| !m.is_learner)
    }

    /// raft-rs's configuration for this membership.
    pub fn conf_state(&self) -> ConfState {
        let voters = self.voters().map(|m| m.id).collect::<Vec<_>>();
        let learners = self
            .members
            .iter()
            .filter(|m| m.is_learner)
            .map(|m| m.id)
            .collect::<Vec<_>>();
        ConfState::from((voters, learners))
    }

    /// Adds a member, or makes a learner a voter when `m` is a voter already listed as a learner.
    pub fn add(&mut self, m: Member) {
        match self.members.binary_search_by_key(&m.id, |x| x.id) {
            Ok(i) => self.members[i].is_learner = m.is_learner,
            Err(i) => self.members.insert(i, m),
        }
    }

    pub fn remove(&mut self, id: u64) {
        self.members.retain(|m| m.id != id);
        if !self.removed.contains(&id) {
            self.removed.push(id);
        }
    }

    /// Applies published or updated attributes; unknown ids are ignored (the member was removed).
    pub fn set_attrs(&mut self, a: &MemberAttrs) {
        let Some(m) = self.get_mut(a.id) else { return };
        if let Some(name) = &a.name {
            m.name = name.clone();
        }
        if let Some(urls) = &a.client_urls {
            m.client_urls = urls.clone();
        }
        if let Some(urls) = &a.peer_urls {
            m.peer_urls = urls.clone();
        }
    }

    /// The member whose peer URLs are exactly `urls` (order aside).
    pub fn by_peer_urls(&self, urls: &[String]) -> Option<&Member> {
        let mut want = urls.to_vec();
        want.sort();
        self.members.iter().find(|m| {
            let mut have = m.peer_urls.clone();
            have.sort();
            have == want
        })
    }
}

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

    #[test]
    fn membership_changes_and_roundtrip() {
        let mut m = Membership::default();
        for id in [3, 1, 2] {
            m.add(Member {
                id,
                peer_urls: vec![format!("http://m{id}:2380")],
                ..Default::default()
            });
        }
        m.add(Member {
            id: 9,
            is_learner: true,
            ..Default::default()
        });
        assert_eq!(
            m.members.iter().map(|m| m.id).collect::<Vec<_>>(),
            [1, 2, 3, 9]
        );
        assert_eq!(m.conf_state(), ConfState::from((vec![1, 2, 3], vec![9])));
        // Promotion: the same id added as a voter.
        m.add(Member {
            id: 9,
            ..Default::default()
        });
        m.remove(2);
        assert_eq!(m.conf_state(), ConfState::from((vec![1, 3, 9], vec![])));
        assert!(m.is_removed(2));
        m.set_attrs(&MemberAttrs {
            id: 1,
            name: Some("one".into()),
            client_urls: Some(vec!["http://m1:2379".into()]),
            peer_urls: None,
        });
        assert_eq!(m.get(1).unwrap().name, "one");
        assert_eq!(m.by_peer_urls(&["http://m3:2380".into()]).unwrap().id, 3);
        let back = Membership::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        let a = MemberAttrs {
            id: 5,
            name: None,
            client_urls: None,
            peer_urls: Some(vec!["http://x:1".into()]),
        };
        assert_eq!(MemberAttrs::decode(&a.encode()).unwrap(), a);
        assert!(MemberAttrs::decode(&m.encode()).is_err());
    }
}
