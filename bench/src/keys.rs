//! Which key each operation touches: the key's bytes (etcd benchmark's varint keys, or a readable
//! prefix + number) and the choice of key index (uniform, sequential, or Zipf-skewed).
//!
//! Invariants: every index is in `0..keyspace`; a key is a pure function of its index (so a
//! writer and a reader of the same index meet on the same key); `Sequential` hands out indexes in
//! request order across all clients of a job, as etcd's `--sequential-keys` does.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;

use crate::profile::Distribution;

/// Zipf over more keys than this would need a table larger than the benefit of exactness.
pub const MAX_ZIPF_KEYS: u64 = 1 << 24;

/// How keys are spelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyStyle {
    /// etcd's benchmark: `prefix` + `key_size` bytes holding the index as a Go varint, zero padded.
    Varint { prefix: Vec<u8>, size: usize },
    /// `prefix` + the index in decimal, zero padded so the whole key is `size` bytes (longer when
    /// the prefix leaves too little room).
    Decimal { prefix: Vec<u8>, size: usize },
}

impl KeyStyle {
    pub fn key(&self, index: u64) -> Vec<u8> {
        match self {
            KeyStyle::Varint { prefix, size } => {
                let mut k = prefix.clone();
                let var = go_varint(index as i64);
                k.extend_from_slice(&var);
                k.resize(prefix.len() + (*size).max(var.len()), 0);
                k
            }
            KeyStyle::Decimal { prefix, size } => {
                let width = size.saturating_sub(prefix.len());
                let mut k = prefix.clone();
                k.extend_from_slice(format!("{index:0width$}").as_bytes());
                k
            }
        }
    }

    /// The key every key of this style starts with (for prefix ranges and watches).
    pub fn prefix(&self) -> &[u8] {
        match self {
            KeyStyle::Varint { prefix, .. } | KeyStyle::Decimal { prefix, .. } => prefix,
        }
    }
}

/// Go's `binary.PutVarint`: zig-zag, then 7 bits per byte, low first.
fn go_varint(v: i64) -> Vec<u8> {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    let mut out = Vec::with_capacity(10);
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
    out
}

pub use retcd_net::keys::prefix_range;

/// Chooses key indexes for one job; shared by its clients.
#[derive(Debug)]
pub struct Picker {
    keyspace: u64,
    kind: Pick,
}

#[derive(Debug)]
enum Pick {
    Uniform,
    Sequential(AtomicU64),
    /// Cumulative probabilities of ranks 0.., p(rank) ∝ 1/(rank+1)^θ.
    Zipf(Vec<f64>),
}

impl Picker {
    pub fn new(distribution: Distribution, keyspace: u64) -> Result<Picker, String> {
        if keyspace == 0 {
            return Err("the keyspace must hold at least one key".into());
        }
        let kind = match distribution {
            Distribution::Uniform => Pick::Uniform,
            Distribution::Sequential => Pick::Sequential(AtomicU64::new(0)),
            Distribution::Zipf(theta) => {
                if keyspace > MAX_ZIPF_KEYS {
                    return Err(format!(
                        "zipf needs a keyspace of at most {MAX_ZIPF_KEYS} keys"
                    ));
                }
                let mut cdf = Vec::with_capacity(keyspace as usize);
                let mut sum = 0.0;
                for rank in 0..keyspace {
                    sum += 1.0 / ((rank + 1) as f64).powf(theta);
                    cdf.push(sum);
                }
                for c in &mut cdf {
                    *c /= sum;
                }
                Pick::Zipf(cdf)
            }
        };
        Ok(Picker { keyspace, kind })
    }

    pub fn keyspace(&self) -> u64 {
        self.keyspace
    }

    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        let i = match &self.kind {
            Pick::Uniform => rng.gen_range(0..self.keyspace),
            Pick::Sequential(n) => n.fetch_add(1, Ordering::Relaxed) % self.keyspace,
            Pick::Zipf(cdf) => {
                let u: f64 = rng.r#gen();
                (cdf.partition_point(|&c| c < u) as u64).min(self.keyspace - 1)
            }
        };
        debug_assert!(i < self.keyspace);
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn varint_keys_match_go() {
        let s = KeyStyle::Varint {
            prefix: vec![],
            size: 8,
        };
        assert_eq!(s.key(0), vec![0; 8]);
        assert_eq!(s.key(1), vec![2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(s.key(64), vec![0x80, 0x01, 0, 0, 0, 0, 0, 0]);
        // A key size below the varint's length grows the key rather than cutting the index.
        let s = KeyStyle::Varint {
            prefix: b"p".to_vec(),
            size: 1,
        };
        assert_eq!(s.key(64), vec![b'p', 0x80, 0x01]);
    }

    #[test]
    fn decimal_keys_are_padded_to_the_size() {
        let s = KeyStyle::Decimal {
            prefix: b"/registry/pods/".to_vec(),
            size: 20,
        };
        assert_eq!(s.key(42), b"/registry/pods/00042".to_vec());
        let s = KeyStyle::Decimal {
            prefix: b"/r/".to_vec(),
            size: 2,
        };
        assert_eq!(s.key(42), b"/r/42".to_vec());
    }

    #[test]
    fn pickers_stay_in_the_keyspace() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let seq = Picker::new(Distribution::Sequential, 3).unwrap();
        let got: Vec<u64> = (0..7).map(|_| seq.next(&mut rng)).collect();
        assert_eq!(got, vec![0, 1, 2, 0, 1, 2, 0]);
        let zipf = Picker::new(Distribution::Zipf(1.2), 1000).unwrap();
        let mut hits = vec![0u32; 1000];
        for _ in 0..100_000 {
            hits[zipf.next(&mut rng) as usize] += 1;
        }
        // Rank 0 is the hottest key and far hotter than the median key.
        assert!(hits[0] > hits[1] && hits[1] > hits[10] && hits[0] > 100 * hits[500].max(1));
        let uni = Picker::new(Distribution::Uniform, 10).unwrap();
        assert!((0..1000).all(|_| uni.next(&mut rng) < 10));
        assert!(Picker::new(Distribution::Uniform, 0).is_err());
    }
}
