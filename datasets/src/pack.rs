//! Padding-free packing: tokenized samples into bins of `seq_len` by first-fit-decreasing,
//! position ids restarting at every document, and an attention mask that keeps documents
//! apart (each token sees only earlier tokens of its own document).
use crate::tokenize::Tokenized;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlong {
    /// Keep the first `seq_len` tokens.
    Truncate,
    Drop,
}

#[derive(Debug, Clone)]
pub struct PackConfig {
    pub seq_len: usize,
    pub overlong: Overlong,
    pub pad_id: u32,
}

/// One packed training sequence of exactly `seq_len` tokens (padding at the end).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedSeq {
    pub ids: Vec<u32>,
    /// 1 = a training target. The first token of a document is never one (nothing of its
    /// own document precedes it), nor is padding.
    pub mask: Vec<u8>,
    pub positions: Vec<u32>,
    /// Length of each document in order; the rest is padding.
    pub doc_lens: Vec<usize>,
}

impl PackedSeq {
    /// Document index of every position (None for padding).
    pub fn doc_of(&self) -> Vec<Option<usize>> {
        let mut out = Vec::with_capacity(self.ids.len());
        for (d, &n) in self.doc_lens.iter().enumerate() {
            out.extend(std::iter::repeat_n(Some(d), n));
        }
        out.resize(self.ids.len(), None);
        out
    }

    /// Row-major `[seq, seq]`, true where query `q` may attend to key `k`.
    pub fn attention_mask(&self) -> Vec<bool> {
        let doc = self.doc_of();
        let n = self.ids.len();
        let mut m = vec![false; n * n];
        for q in 0..n {
            for k in 0..=q {
                m[q * n + k] = doc[q].is_some() && doc[q] == doc[k];
            }
        }
        m
    }

    pub fn real_tokens(&self) -> usize {
        self.doc_lens.iter().sum()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PackReport {
    pub sequences: usize,
    pub documents: usize,
    pub truncated: usize,
    pub dropped: usize,
    pub tokens: usize,
    pub padding: usize,
    /// Real tokens / all tokens.
    pub efficiency: f64,
}

/// First-fit-decreasing over `samples` (ties keep input order, so results are
/// deterministic).
pub fn pack(samples: &[Tokenized], cfg: &PackConfig) -> (Vec<PackedSeq>, PackReport) {
    let mut report = PackReport::default();
    let mut docs: Vec<(Vec<u32>, Vec<u8>)> = vec![];
    for s in samples {
        if s.len() > cfg.seq_len {
            match cfg.overlong {
                Overlong::Drop => {
                    report.dropped += 1;
                    continue;
                }
                Overlong::Truncate => {
                    report.truncated += 1;
                    docs.push((s.ids[..cfg.seq_len].to_vec(), s.mask[..cfg.seq_len].to_vec()));
                }
            }
        } else if !s.is_empty() {
            docs.push((s.ids.clone(), s.mask.clone()));
        }
    }
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(docs[i].0.len()));
    let mut bins: Vec<(usize, Vec<usize>)> = vec![]; // (used, doc indices)
    for i in order {
        let n = docs[i].0.len();
        match bins.iter_mut().find(|(used, _)| used + n <= cfg.seq_len) {
            Some(bin) => {
                bin.0 += n;
                bin.1.push(i);
            }
            None => bins.push((n, vec![i])),
        }
    }
    let seqs: Vec<PackedSeq> = bins
        .into_iter()
        .map(|(_, members)| {
            let mut s = PackedSeq { ids: vec![], mask: vec![], positions: vec![], doc_lens: vec![] };
            for i in members {
                let (ids, mask) = &docs[i];
                s.ids.extend(ids);
                s.mask.push(0);
                s.mask.extend(&mask[1..]);
                s.positions.extend(0..ids.len() as u32);
                s.doc_lens.push(ids.len());
            }
            let pad = cfg.seq_len - s.ids.len();
            s.ids.extend(std::iter::repeat_n(cfg.pad_id, pad));
            s.mask.extend(std::iter::repeat_n(0, pad));
            s.positions.extend(std::iter::repeat_n(0, pad));
            s
        })
        .collect();
    report.sequences = seqs.len();
    report.documents = seqs.iter().map(|s| s.doc_lens.len()).sum();
    report.tokens = seqs.iter().map(PackedSeq::real_tokens).sum();
    report.padding = seqs.len() * cfg.seq_len - report.tokens;
    report.efficiency = if seqs.is_empty() { 0.0 } else { report.tokens as f64 / (seqs.len() * cfg.seq_len) as f64 };
    (seqs, report)
}
