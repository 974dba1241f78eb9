//! A deterministic, resumable loader over weighted sources. The sample at every step is a
//! pure function of (seed, cursor): the source is drawn with weights from a step-seeded
//! RNG, and each source is walked through a fresh seeded permutation per epoch. The cursor
//! (a step counter and how many samples each source gave) goes into checkpoints, so a
//! resumed run sees exactly the samples it would have seen.
use crate::error::Result;
use crate::tokenize::Tokenized;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cursor {
    pub step: u64,
    pub taken: Vec<u64>,
}

pub struct Source<T> {
    pub name: String,
    pub items: Vec<T>,
    pub weight: f64,
}

pub struct Loader<T> {
    sources: Vec<Source<T>>,
    seed: u64,
    cursor: Cursor,
    /// (source, epoch) → permutation, cached.
    perms: Vec<Option<(u64, Vec<usize>)>>,
    /// Walk each source's first epoch in the given order (a curriculum sorted easy → hard).
    ordered_first_epoch: bool,
}

impl<T: Sync> Loader<T> {
    pub fn new(sources: Vec<Source<T>>, seed: u64) -> Self {
        assert!(!sources.is_empty() && sources.iter().all(|s| !s.items.is_empty() && s.weight > 0.0),
                "every source needs items and a positive weight");
        let n = sources.len();
        Self { sources, seed, cursor: Cursor { step: 0, taken: vec![0; n] }, perms: vec![None; n], ordered_first_epoch: false }
    }

    /// Serves each source's first epoch in item order instead of shuffled (later epochs
    /// are shuffled as usual).
    pub fn ordered_first_epoch(mut self) -> Self {
        self.ordered_first_epoch = true;
        self
    }

    /// Moves to `cursor` (taken from this loader earlier): the way to put back samples
    /// that were drawn but not used.
    pub fn seek(&mut self, cursor: Cursor) {
        assert_eq!(cursor.taken.len(), self.sources.len(), "cursor is for another set of sources");
        self.cursor = cursor;
    }

    pub fn source_name(&self, source: usize) -> &str {
        &self.sources[source].name
    }

    pub fn items(&self, source: usize) -> &[T] {
        &self.sources[source].items
    }

    /// Continues exactly where `cursor` was taken.
    pub fn resume(mut self, cursor: Cursor) -> Self {
        assert_eq!(cursor.taken.len(), self.sources.len(), "cursor is for another set of sources");
        self.cursor = cursor;
        self
    }

    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Samples in one pass over every source.
    pub fn epoch_len(&self) -> usize {
        self.sources.iter().map(|s| s.items.len()).sum()
    }

    fn mix(&self, a: u64, b: u64) -> u64 {
        // splitmix64 of the seed and the coordinates: independent streams per (a, b).
        let mut z = self.seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// (source, item index) of the next sample; advances the cursor.
    pub fn next_index(&mut self) -> (usize, usize) {
        let total: f64 = self.sources.iter().map(|s| s.weight).sum();
        let mut u = StdRng::seed_from_u64(self.mix(self.cursor.step, u64::MAX)).random::<f64>() * total;
        let mut s = self.sources.len() - 1;
        for (i, src) in self.sources.iter().enumerate() {
            if u < src.weight {
                s = i;
                break;
            }
            u -= src.weight;
        }
        let len = self.sources[s].items.len() as u64;
        let k = self.cursor.taken[s];
        let epoch = k / len;
        if self.perms[s].as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut p: Vec<usize> = (0..len as usize).collect();
            if !(self.ordered_first_epoch && epoch == 0) {
                p.shuffle(&mut StdRng::seed_from_u64(self.mix(s as u64, epoch)));
            }
            self.perms[s] = Some((epoch, p));
        }
        let item = self.perms[s].as_ref().unwrap().1[(k % len) as usize];
        self.cursor.taken[s] += 1;
        self.cursor.step += 1;
        (s, item)
    }

    pub fn next_items(&mut self, n: usize) -> Vec<&T> {
        let picks: Vec<(usize, usize)> = (0..n).map(|_| self.next_index()).collect();
        picks.into_iter().map(|(s, i)| &self.sources[s].items[i]).collect()
    }

    /// The next `n` samples tokenized in parallel (rayon), in order.
    pub fn next_tokenized(&mut self, n: usize, tokenize: impl Fn(&T) -> Result<Tokenized> + Sync + Send) -> Result<Vec<Tokenized>> {
        let items = self.next_items(n);
        items.into_par_iter().map(tokenize).collect()
    }
}
