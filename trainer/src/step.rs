//! One optimizer step on packed sequences: the masked next-token loss, gradient
//! accumulation normalized by the step's trained-token count, global-norm clipping, and
//! AdamW (two instances: with weight decay for matrices, without for norm gains; burn's
//! arithmetic and state, in one pass a parameter: [`crate::adamw`]).
use crate::stage_config::OptimSpec;
use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use crate::adamw::AdamW;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{BinFileRecorder, BurnRecord, FullPrecisionSettings, Record, Recorder};
use std::collections::HashMap;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorPrimitive;
use datasets::PackedSeq;
use model::{AttnMask, ModelBackend, Qwen3, TrainingBackend};
use std::path::Path;

/// Summed negative log-likelihood of the trained tokens of `seqs` (all `seq_len` long),
/// and how many there are. Documents see only themselves (the packing's document mask,
/// positions restarting at each document); padding is one more document, never trained.
pub fn nll_sum<B: ModelBackend>(model: &Qwen3<B>, seqs: &[PackedSeq]) -> (Tensor<B, 1>, usize) {
    match trained_logprobs(model, seqs, 1.0) {
        Some((logp, _)) => {
            let n = logp.dims()[0];
            (logp.sum().neg(), n)
        }
        None => (Tensor::zeros([1], &model.device()), 0),
    }
}

/// Log-probability of every trained token of `seqs` under softmax(logits / temperature)
/// (`[n]`, in row-major order of the positions), with the entropy of that distribution at
/// each (`[n]`, not differentiated); None without any.
pub fn trained_logprobs<B: ModelBackend>(model: &Qwen3<B>, seqs: &[PackedSeq], temperature: f32) -> Option<(Tensor<B, 1>, Tensor<B, 1>)> {
    let p = Packed::new(seqs, &model.device())?;
    let hidden = model.forward_hidden(p.tokens.clone(), &p.positions, &p.mask, None);
    Some(p.logprobs(model, hidden, temperature))
}

/// The gradients of `loss(log-probs, entropies)` (as [`trained_logprobs`] gives them)
/// and its value; the model's `compute` decides precision and checkpointing.
pub fn trained_loss_grads<B: TrainingBackend>(
    model: &Qwen3<B>,
    seqs: &[PackedSeq],
    temperature: f32,
    loss: impl FnOnce(Tensor<B, 1>, Tensor<B, 1>) -> Tensor<B, 1>,
) -> Option<(f64, GradientsParams)> {
    let mut all = GradientsAccumulator::<Qwen3<B>>::new();
    let value = trained_loss_streamed(model, seqs, temperature, loss, |g| all.accumulate(model, g))?;
    Some((value, all.grads()))
}

/// [`trained_loss_grads`], handing the gradients to `emit` as the backward completes them
/// ([`Qwen3::loss_and_grads_streamed`]).
pub fn trained_loss_streamed<B: TrainingBackend>(
    model: &Qwen3<B>,
    seqs: &[PackedSeq],
    temperature: f32,
    loss: impl FnOnce(Tensor<B, 1>, Tensor<B, 1>) -> Tensor<B, 1>,
    emit: impl FnMut(GradientsParams),
) -> Option<f64> {
    let p = Packed::new(seqs, &model.device())?;
    let value = model.loss_and_grads_streamed(p.tokens.clone(), &p.positions, &p.mask, |m, hidden| {
        let (logp, entropy) = p.logprobs(m, hidden, temperature);
        loss(logp, entropy)
    }, emit);
    Some(value.into_scalar().elem::<f64>())
}

/// Packed sequences as model inputs: tokens, positions, the document mask, and where
/// the trained tokens are.
struct Packed<B: Backend> {
    tokens: Tensor<B, 2, Int>,
    positions: Vec<Vec<usize>>,
    mask: AttnMask<B>,
    /// Flat indices (row * seq_len + i) of the positions whose next token is trained.
    rows: Tensor<B, 1, Int>,
    targets: Tensor<B, 1, Int>,
}

impl<B: ModelBackend> Packed<B> {
    fn new(seqs: &[PackedSeq], device: &B::Device) -> Option<Self> {
        let (b, t) = (seqs.len(), seqs[0].ids.len());
        let mut ids = Vec::with_capacity(b * t);
        let mut docs = Vec::with_capacity(b);
        let (mut rows, mut targets) = (vec![], vec![]);
        for (s, seq) in seqs.iter().enumerate() {
            ids.extend(seq.ids.iter().map(|&x| x as i64));
            let mut lens = seq.doc_lens.clone();
            if seq.real_tokens() < t {
                lens.push(t - seq.real_tokens()); // the padding
            }
            docs.push(lens);
            for i in 0..t - 1 {
                if seq.mask[i + 1] == 1 {
                    rows.push((s * t + i) as i64);
                    targets.push(seq.ids[i + 1] as i64);
                }
            }
        }
        let n = rows.len();
        if n == 0 {
            return None;
        }
        Some(Self {
            tokens: Tensor::from_data(TensorData::new(ids, [b, t]), device),
            positions: seqs.iter().map(|s| s.positions.iter().map(|&p| p as usize).collect()).collect(),
            mask: AttnMask::Documents(docs),
            rows: Tensor::from_data(TensorData::new(rows, [n]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n]), device),
        })
    }

    /// Log-probs (and entropies) of the trained tokens from the final hidden states.
    fn logprobs(&self, model: &Qwen3<B>, hidden: Tensor<B, 3>, temperature: f32) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let [b, t, h] = hidden.dims();
        // Only trained positions reach the LM head: prompts and observations cost no logits.
        let picked = hidden.reshape([b * t, h]).select(0, self.rows.clone());
        model.token_logprobs(picked, self.targets.clone(), temperature as f64)
    }
}

/// Trained tokens of a set of sequences (the loss denominator).
pub fn trained_tokens(seqs: &[PackedSeq]) -> usize {
    seqs.iter().map(|s| s.mask.iter().skip(1).filter(|&&m| m == 1).count()).sum()
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct StepStats {
    /// Mean NLL per trained token over the whole step.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    pub trained_tokens: usize,
}

pub struct Optim<B: TrainingBackend> {
    decay: OptimizerAdaptor<AdamW, Qwen3<B>, B>,
    no_decay: OptimizerAdaptor<AdamW, Qwen3<B>, B>,
    clip: Option<f64>,
    decay_norms: bool,
}

/// Why a step could not be taken (the NaN/inf guard).
#[derive(Debug)]
pub struct NonFinite {
    pub micro_batch: Option<usize>,
    pub what: &'static str,
    pub value: f64,
}

impl<B: TrainingBackend> Optim<B> {
    pub fn new(o: &OptimSpec) -> Self {
        let adamw = |wd: f64| OptimizerAdaptor::from(AdamW::new(o.betas[0] as f32, o.betas[1] as f32, o.eps as f32, wd as f32));
        let no_decay_wd = if o.decay_norms { o.weight_decay } else { 0.0 };
        Self { decay: adamw(o.weight_decay), no_decay: adamw(no_decay_wd), clip: o.clip, decay_norms: o.decay_norms }
    }

    /// One step over `micro_batches`, shared out among `devices` (the first holds the
    /// model); the model is unchanged when the guard trips.
    pub fn step(&mut self, model: Qwen3<B>, micro_batches: &[&[PackedSeq]], lr: f64, devices: &[Device<B>]) -> (Qwen3<B>, Result<StepStats, NonFinite>) {
        let total: usize = micro_batches.iter().map(|m| trained_tokens(m)).sum();
        let (values, grads) = crate::parallel::grads(&model, devices, micro_batches, |_, m, mb, emit| {
            trained_loss_streamed(m, mb, 1.0, |logp, _| logp.sum().neg().div_scalar(total as f64), emit)
        });
        let mut nll = 0.0;
        for (i, v) in values.into_iter().enumerate().filter_map(|(i, v)| Some((i, v?))) {
            if !v.is_finite() {
                return (model, Err(NonFinite { micro_batch: Some(i), what: "loss", value: v }));
            }
            nll += v;
        }
        let (model, grad_norm) = self.apply(model, grads, lr);
        (model, grad_norm.map(|grad_norm| StepStats { loss: nll, grad_norm, lr, trained_tokens: total }))
    }

    /// Clips `grads` by global norm and takes the AdamW step; returns the norm before
    /// clipping (the model is unchanged when it is not finite).
    pub fn apply(&mut self, model: Qwen3<B>, mut grads: GradientsParams, lr: f64) -> (Qwen3<B>, Result<f64, NonFinite>) {
        let (grad_norm, clip) = clip_coefficient(&model, &grads, self.clip);
        if !grad_norm.is_finite() {
            return (model, Err(NonFinite { micro_batch: None, what: "gradient norm", value: grad_norm }));
        }
        // The clip is applied by AdamW as it reads each gradient (no pass of its own).
        for o in [&self.decay, &self.no_decay] {
            o.optim().scale_gradients(clip as f32);
        }
        let mut norms = GradientsParams::new();
        model.visit(&mut MoveVectors { from: &mut grads, to: &mut norms, only_vectors: !self.decay_norms });
        // burn's AdamW steps each parameter, and keeps its state, on its gradient's device:
        // with data parallel the device that owns it (`parallel`).
        let model = self.decay.step(lr, model, grads);
        let model = self.no_decay.step(lr, model, norms);
        (model, Ok(grad_norm))
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let rec = BinFileRecorder::<FullPrecisionSettings>::new();
        rec.record(self.decay.to_record(), dir.join("optimizer"))?;
        rec.record(self.no_decay.to_record(), dir.join("optimizer-no-decay"))?;
        Ok(())
    }

    /// Restores the state saved by [`save`](Self::save) (keyed by the model's stable ids),
    /// each parameter's on the device that owns it among `devices` (`parallel::owners`), so
    /// no device ever holds more than its shard.
    pub fn load(mut self, dir: &Path, model: &Qwen3<B>, devices: &[Device<B>]) -> anyhow::Result<Self> {
        type Rec<B> = <OptimizerAdaptor<AdamW, Qwen3<B>, B> as Optimizer<Qwen3<B>, B>>::Record;
        type Item<B> = <Rec<B> as Record<B>>::Item<FullPrecisionSettings>;
        let owner: HashMap<String, usize> = crate::parallel::owners(model, devices.len()).into_iter().map(|(id, _, k)| (id.serialize(), k)).collect();
        let rec = BinFileRecorder::<FullPrecisionSettings>::new();
        let load = |name: &str| -> anyhow::Result<Rec<B>> {
            let p = dir.join(name);
            let saved: BurnRecord<Item<B>, B> = Recorder::<B>::load_item(&rec, &mut p.clone()).map_err(|e| anyhow::anyhow!("{}.bin: {e}", p.display()))?;
            let mut shards: Vec<Vec<_>> = devices.iter().map(|_| vec![]).collect();
            for (id, state) in saved.item {
                shards[owner.get(&id).copied().unwrap_or(0)].push((id, state));
            }
            Ok(shards.into_iter().zip(devices).flat_map(|(shard, d)| Rec::<B>::from_item(shard.into_iter().collect::<Item<B>>(), d)).collect())
        };
        self.decay = self.decay.load_record(load("optimizer")?);
        self.no_decay = self.no_decay.load_record(load("optimizer-no-decay")?);
        Ok(self)
    }
}

/// Moves the gradients of 1-D parameters (norm gains, biases) into `to`.
struct MoveVectors<'a> {
    from: &'a mut GradientsParams,
    to: &'a mut GradientsParams,
    only_vectors: bool,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for MoveVectors<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
        if D == 1 && self.only_vectors {
            if let Some(g) = self.from.remove::<B::InnerBackend, D>(p.id) {
                self.to.register::<B::InnerBackend, D>(p.id, g);
            }
        }
    }
}

/// The global L2 norm of all gradients, and the coefficient that scales them to a norm of
/// at most `max` (as `torch.nn.utils.clip_grad_norm_`: max / (norm + 1e-6), capped at 1;
/// 1 without `max`).
pub fn clip_coefficient<B: TrainingBackend>(model: &Qwen3<B>, grads: &GradientsParams, max: Option<f64>) -> (f64, f64) {
    struct Ids(Vec<(ParamId, usize)>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.push((p.id, D));
        }
    }
    let mut ids = Ids(vec![]);
    model.visit(&mut ids);
    fn sq<B: ModelBackend, const D: usize>(g: &GradientsParams, id: ParamId) -> Option<Tensor<B, 1>> {
        g.get::<B, D>(id).map(|t| Tensor::from_primitive(TensorPrimitive::Float(B::sum_of_squares(t.into_primitive().tensor()))))
    }
    type I<B> = <B as AutodiffBackend>::InnerBackend;
    // Each parameter's sum of squares stays on its gradient's device; one read per device
    // (not one per parameter: each read waits for the device), then added in parameter
    // order in f64.
    let sums: Vec<Option<Tensor<I<B>, 1>>> = ids
        .0
        .iter()
        .map(|&(id, d)| match d {
            1 => sq::<I<B>, 1>(grads, id),
            2 => sq::<I<B>, 2>(grads, id),
            _ => unreachable!("Qwen3 has 1-D and 2-D parameters only"),
        })
        .collect();
    let mut values = vec![0.0f64; sums.len()];
    let mut by_device: Vec<(Device<I<B>>, Vec<(usize, Tensor<I<B>, 1>)>)> = vec![];
    for (i, t) in sums.into_iter().enumerate().filter_map(|(i, t)| Some((i, t?))) {
        match by_device.iter_mut().find(|(d, _)| *d == t.device()) {
            Some((_, group)) => group.push((i, t)),
            None => by_device.push((t.device(), vec![(i, t)])),
        }
    }
    for (_, group) in by_device {
        let (idx, parts): (Vec<usize>, Vec<_>) = group.into_iter().unzip();
        let read = Tensor::cat(parts, 0).into_data().convert::<f64>().to_vec::<f64>().expect("f64 sums");
        for (i, v) in idx.into_iter().zip(read) {
            values[i] = v;
        }
    }
    let total = values.iter().sum::<f64>().sqrt();
    (total, max.map_or(1.0, |max| (max / (total + 1e-6)).min(1.0)))
}

/// Held-out loss: mean NLL per trained token over `seqs`, `micro_batch` at a time, on the
/// model without autodiff, the micro-batches shared out among `devices`.
pub fn eval_loss<B: TrainingBackend>(model: &Qwen3<B>, seqs: &[PackedSeq], micro_batch: usize, devices: &[Device<B>]) -> Option<f64> {
    let inner = model.valid();
    let parts: Vec<&[PackedSeq]> = seqs.chunks(micro_batch).collect();
    let sums = crate::parallel::map(&inner, devices, &parts, |m, mb| {
        let (s, k) = nll_sum(m, mb);
        (s.into_scalar().elem::<f64>(), k)
    });
    let (mut sum, mut n) = (0.0, 0usize);
    for (s, k) in sums {
        sum += s;
        n += k;
    }
    (n > 0).then(|| sum / n as f64)
}
