//! [`Embedder`]: text to vector, for the semantic cache; [`HashingEmbedder`] is the offline default.

use std::sync::Arc;

/// Turns text into a unit-length vector, so that the dot product of two
/// embeddings is their cosine similarity.
///
/// Plug a neural model in behind this trait; the default,
/// [`HashingEmbedder`], needs no model and no network.
///
/// ```
/// use tidings_events::{Embedder, HashingEmbedder, SharedEmbedder};
/// let e = HashingEmbedder::new(64);
/// assert_eq!(e.embed("hello").len(), 64);
/// assert_eq!(e.model(), "hashing-v1-64");
/// let shared = SharedEmbedder::default();
/// assert_eq!(shared.0.model(), "hashing-v1-512");
/// assert!((tidings_events::cosine(&e.embed("a b"), &e.embed("a b")) - 1.0).abs() < 1e-5);
/// ```
pub trait Embedder: Send + Sync + 'static {
    /// A name stored beside each embedding; entries of another model are ignored.
    fn model(&self) -> &str;
    /// The embedding of `text`, of unit length (or all zeros for empty text).
    fn embed(&self, text: &str) -> Vec<f32>;
}

/// An [`Embedder`] as a bus resource (`EventBus::builder().resource(SharedEmbedder(..))`).
#[derive(Clone)]
///
/// ```
/// use tidings_events::{Embedder, HashingEmbedder, SharedEmbedder};
/// let e = HashingEmbedder::new(64);
/// assert_eq!(e.embed("hello").len(), 64);
/// assert_eq!(e.model(), "hashing-v1-64");
/// let shared = SharedEmbedder::default();
/// assert_eq!(shared.0.model(), "hashing-v1-512");
/// assert!((tidings_events::cosine(&e.embed("a b"), &e.embed("a b")) - 1.0).abs() < 1e-5);
/// ```
pub struct SharedEmbedder(pub Arc<dyn Embedder>);

impl Default for SharedEmbedder {
    fn default() -> Self {
        Self(Arc::new(HashingEmbedder::default()))
    }
}

impl std::fmt::Debug for SharedEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedEmbedder")
            .field(&self.0.model())
            .finish()
    }
}

/// A deterministic, offline text embedder: feature hashing of lower-cased
/// words, word pairs and character trigrams into a fixed number of signed
/// buckets, normalized to unit length.
///
/// It measures **lexical** similarity: texts that share words and word pieces
/// score high ("how do I reset my password" and "reset password how"), while
/// paraphrases with different words do not. Use a neural model behind
/// [`Embedder`] for meaning.
///
/// ```
/// use tidings_events::{Embedder, HashingEmbedder};
/// let e = HashingEmbedder::default();
/// let sim = |a: &str, b: &str| tidings_events::cosine(&e.embed(a), &e.embed(b));
/// assert!(sim("How do I reset my password?", "how to reset my password") > 0.6);
/// assert!(sim("How do I reset my password?", "quarterly revenue report") < 0.2);
/// ```
#[derive(Clone, Debug)]
pub struct HashingEmbedder {
    dims: usize,
    model: String,
}

impl Default for HashingEmbedder {
    fn default() -> Self {
        Self::new(512)
    }
}

impl HashingEmbedder {
    /// An embedder with `dims` buckets (at least 16).
    ///
    /// ```
    /// use tidings_events::{Embedder, HashingEmbedder, SharedEmbedder};
    /// let e = HashingEmbedder::new(64);
    /// assert_eq!(e.embed("hello").len(), 64);
    /// assert_eq!(e.model(), "hashing-v1-64");
    /// let shared = SharedEmbedder::default();
    /// assert_eq!(shared.0.model(), "hashing-v1-512");
    /// assert!((tidings_events::cosine(&e.embed("a b"), &e.embed("a b")) - 1.0).abs() < 1e-5);
    /// ```
    pub fn new(dims: usize) -> Self {
        let dims = dims.max(16);
        Self {
            dims,
            model: format!("hashing-v1-{dims}"),
        }
    }

    fn add(&self, v: &mut [f32], feature: &[u8], weight: f32) {
        let h = fnv1a(feature);
        let idx = (h % self.dims as u64) as usize;
        let sign = if h >> 63 == 1 { -1.0 } else { 1.0 };
        v[idx] += sign * weight;
    }
}

impl Embedder for HashingEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn embed(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; self.dims];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        for (i, w) in words.iter().enumerate() {
            self.add(&mut v, w.as_bytes(), 1.0);
            if let Some(next) = words.get(i + 1) {
                let pair = format!("{w} {next}");
                self.add(&mut v, pair.as_bytes(), 0.5);
            }
            let padded: Vec<char> = format!("<{w}>").chars().collect();
            for tri in padded.windows(3) {
                let t: String = tri.iter().collect();
                self.add(&mut v, t.as_bytes(), 0.25);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

/// Cosine similarity of two embeddings (their dot product when both are unit length).
///
/// ```
/// use tidings_events::{Embedder, HashingEmbedder, SharedEmbedder};
/// let e = HashingEmbedder::new(64);
/// assert_eq!(e.embed("hello").len(), 64);
/// assert_eq!(e.model(), "hashing-v1-64");
/// let shared = SharedEmbedder::default();
/// assert_eq!(shared.0.model(), "hashing-v1-512");
/// assert!((tidings_events::cosine(&e.embed("a b"), &e.embed("a b")) - 1.0).abs() < 1e-5);
/// ```
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// 64-bit FNV-1a: stable across runs and platforms, so stored embeddings stay comparable.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Embedding to bytes (little-endian f32) for storage, and back.
pub(crate) fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn from_bytes(b: &[u8]) -> Option<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return None;
    }
    Some(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn embeddings_are_unit_length_and_deterministic(text in ".{0,200}") {
            let e = HashingEmbedder::default();
            let a = e.embed(&text);
            prop_assert_eq!(&a, &e.embed(&text));
            let n: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            prop_assert!(n == 0.0 || (n - 1.0).abs() < 1e-4);
        }

        #[test]
        fn bytes_round_trip(v in prop::collection::vec(-1.0f32..1.0, 0..64)) {
            prop_assert_eq!(from_bytes(&to_bytes(&v)).unwrap(), v);
        }
    }

    #[test]
    fn identical_text_is_similarity_one() {
        let e = HashingEmbedder::default();
        let a = e.embed("Where is the VPN setup guide?");
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
    }
}
