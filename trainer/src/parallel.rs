//! Data parallel on one machine (`[compute] devices`), sharded as ZeRO stage 2. Every
//! parameter has an owner device (`owners`), which holds its f32 master weight, its AdamW
//! moments and the sum of its gradients: about 1/N of each on each device. A step forks a
//! replica of the weights to every device (with bf16 compute, the decoder layers'
//! matrices in bf16: half the bytes to send and hold), and the step's micro-batches go in
//! rounds, device k taking micro-batch r·N + k of round r on its own thread; each gradient
//! goes to its owner as soon as the backward has it (a layer's, with checkpointing, when
//! that layer is done), and the owner (a thread each) adds it in f32 to its sum in
//! micro-batch order. So the sums are the one-device step's, added in the same order, and
//! a device holds about one layer's gradients at a time, not a micro-batch's. The
//! optimizer then steps each parameter on its owner. With one device nothing is copied and
//! no thread starts.
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use crate::cluster::Cluster;
use burn::tensor::{Device, FloatDType, TensorData};
use model::{Qwen3, TrainingBackend};
use serde::{de::DeserializeOwned, Serialize};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::mpsc;

/// `f(k, replica)` on every device k, each on its own thread with the model forked to it;
/// the results in device order. One device (or none given) runs `f(0, model)` here.
pub fn on_devices<B, R, F>(model: &Qwen3<B>, devices: &[Device<B>], f: F) -> Vec<R>
where
    B: Backend,
    R: Send,
    F: Fn(usize, &Qwen3<B>) -> R + Sync,
{
    if devices.len() <= 1 {
        return vec![f(0, model)];
    }
    let f = &f;
    std::thread::scope(|s| {
        let threads: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(k, device)| {
                let replica = model.clone().fork(device);
                s.spawn(move || f(k, &replica))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

/// Gradients summed over `parts`, and what each part gave beside them (None: it had
/// nothing to train), in the order of `parts`. `grads(k, replica, part, emit)` computes one
/// part on local device k, handing its gradients to `emit` as the backward completes them
/// (each parameter's once, [`Qwen3::loss_and_grads_streamed`]). Of G devices in all
/// (every machine's, `cluster`), global device g takes parts g, g + G, g + 2G, ... On one
/// machine each gradient goes to its owner the moment it is emitted, and the owner adds
/// the round's gradients of a parameter in micro-batch order (see the module doc), holding
/// back one that arrives early. Across machines each then has the sums of its own parts,
/// which [`reduce_across`] adds up in rank order; the values go to every rank.
pub fn grads<B, T, R, F>(model: &Qwen3<B>, devices: &[Device<B>], parts: &[T], grads: F) -> (Vec<Option<R>>, GradientsParams)
where
    B: TrainingBackend,
    T: Sync,
    R: Send + Serialize + DeserializeOwned,
    F: Fn(usize, &Qwen3<B>, &T, &mut dyn FnMut(GradientsParams)) -> Option<R> + Sync,
{
    let Some(c) = crate::cluster::get() else {
        return grads_here(model, devices, &parts.iter().collect::<Vec<_>>(), grads);
    };
    let n = devices.len();
    let here: Vec<usize> = (0..parts.len()).filter(|i| i % (c.world * n) / n == c.rank).collect();
    let (values, sums) = grads_here(model, devices, &here.iter().map(|&i| &parts[i]).collect::<Vec<_>>(), grads);
    let values = crate::cluster::gather_indexed(here.into_iter().zip(values).collect(), parts.len());
    (values, reduce_across(c, model, devices, sums))
}

/// [`grads`] on this machine's devices: of n devices, device k takes parts k, k + n, ...
fn grads_here<B, T, R, F>(model: &Qwen3<B>, devices: &[Device<B>], parts: &[&T], grads: F) -> (Vec<Option<R>>, GradientsParams)
where
    B: TrainingBackend,
    T: Sync,
    R: Send,
    F: Fn(usize, &Qwen3<B>, &T, &mut dyn FnMut(GradientsParams)) -> Option<R> + Sync,
{
    if devices.len() <= 1 {
        let mut acc = GradientsAccumulator::<Qwen3<B>>::new();
        let values = parts.iter().map(|&part| grads(0, model, part, &mut |g| acc.accumulate(model, g))).collect();
        return (values, acc.grads());
    }
    let mut values: Vec<Option<R>> = parts.iter().map(|_| None).collect();
    let n = devices.len();
    let owned = owners(model, n);
    let source = model.clone().with_layer_matrices_in(model.compute.precision.dtype());
    let replicas: Vec<Qwen3<B>> = devices.iter().map(|d| source.clone().fork(d)).collect();
    drop(source);
    let (grads, owned) = (&grads, &owned);
    let mut sums: Vec<GradientsParams> = devices.iter().map(|_| GradientsParams::new()).collect();
    for (r, round) in parts.chunks(n).enumerate() {
        let (txs, rxs): (Vec<_>, Vec<_>) = devices.iter().map(|_| mpsc::channel::<Msg<B::InnerBackend>>()).unzip();
        let results: Vec<Option<R>> = std::thread::scope(|s| {
            for ((rx, sum), device) in rxs.into_iter().zip(sums.iter_mut()).zip(devices) {
                s.spawn(move || receive(rx, sum, device, round.len()));
            }
            let threads: Vec<_> = round
                .iter()
                .zip(&replicas)
                .enumerate()
                .map(|(k, (part, replica))| {
                    let txs = txs.clone();
                    s.spawn(move || {
                        let value = grads(k, replica, *part, &mut |mut g| {
                            for &(id, dims, owner) in owned {
                                let t = match dims {
                                    1 => g.remove::<B::InnerBackend, 1>(id).map(Grad::Vector),
                                    2 => g.remove::<B::InnerBackend, 2>(id).map(Grad::Matrix),
                                    _ => unreachable!("Qwen3 has 1-D and 2-D parameters only"),
                                };
                                if let Some(t) = t {
                                    txs[owner].send(Msg::Grad(k, id, t)).expect("an owner is listening");
                                }
                            }
                        });
                        txs.iter().for_each(|tx| tx.send(Msg::Done(k)).expect("an owner is listening"));
                        value
                    })
                })
                .collect();
            drop(txs);
            threads.into_iter().map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        });
        for (k, v) in results.into_iter().enumerate() {
            values[r * n + k] = v;
        }
    }
    let mut all = GradientsParams::new();
    for &(id, dims, owner) in owned {
        match dims {
            1 => move_grad::<B::InnerBackend, 1>(&mut sums[owner], &mut all, id),
            _ => move_grad::<B::InnerBackend, 2>(&mut sums[owner], &mut all, id),
        }
    }
    (values, all)
}

/// The sums of every rank's parts, the same on every rank: each parameter's partial sums
/// go to the rank that owns it (`owners` over the ranks), which adds them in rank order and
/// sends the total to all; each lands on the local device that owns the parameter (where
/// the optimizer keeps its state). A rank sends and receives about twice the gradients'
/// f32 bytes a step, whatever the micro-batch count.
fn reduce_across<B: TrainingBackend>(c: &Cluster, model: &Qwen3<B>, devices: &[Device<B>], mut mine: GradientsParams) -> GradientsParams {
    let local: HashMap<ParamId, usize> = owners(model, devices.len()).into_iter().map(|(id, _, k)| (id, k)).collect();
    let ranks = owners(model, c.world);
    let take = |g: &mut GradientsParams, id: ParamId, dims: usize| match dims {
        1 => g.remove::<I<B>, 1>(id).map(host_f32),
        _ => g.remove::<I<B>, 2>(id).map(host_f32),
    };
    for &(id, dims, owner) in &ranks {
        if owner != c.rank {
            c.send_blob(owner, &encode(&take(&mut mine, id, dims)));
        }
    }
    let mut all = GradientsParams::new();
    for &(id, dims, _) in ranks.iter().filter(|p| p.2 == c.rank) {
        let device = &devices[local[&id]];
        let mut sum: HostGrad = None;
        for r in 0..c.world {
            let part = if r == c.rank { take(&mut mine, id, dims) } else { decode(c.recv_blob(r), r) };
            sum = match (sum, part) {
                (Some((shape, mut s)), Some((_, p))) => {
                    s.par_iter_mut().zip(&p).for_each(|(s, p)| *s += p);
                    Some((shape, s))
                }
                (s, p) => s.or(p),
            };
        }
        let bytes = encode(&sum);
        c.others().for_each(|to| c.send_blob(to, &bytes));
        register::<B>(&mut all, id, sum, device);
    }
    for &(id, _, owner) in ranks.iter().filter(|p| p.2 != c.rank) {
        register::<B>(&mut all, id, decode(c.recv_blob(owner), owner), &devices[local[&id]]);
    }
    all
}

type I<B> = <B as AutodiffBackend>::InnerBackend;

/// A parameter's gradient on the host: its shape and f32 values (none: no gradient).
type HostGrad = Option<(Vec<usize>, Vec<f32>)>;

/// A gradient (shape and f32 values, or none) as bytes: a flag, the number of dimensions,
/// each (u64), then the values as they lie in memory (little-endian machines), so the bulk
/// is copied, not encoded value by value.
fn encode(g: &HostGrad) -> Vec<u8> {
    let Some((shape, data)) = g else { return vec![0] };
    let mut b = Vec::with_capacity(2 + 8 * shape.len() + 4 * data.len());
    b.extend([1, shape.len() as u8]);
    shape.iter().for_each(|&d| b.extend((d as u64).to_le_bytes()));
    b.extend_from_slice(bytemuck::cast_slice(data));
    b
}

fn decode(b: Vec<u8>, from: usize) -> HostGrad {
    let bad = || panic!("cluster: rank {from} sent a malformed gradient ({} bytes)", b.len());
    match b.first() {
        Some(0) => return None,
        Some(1) if b.len() >= 2 => {}
        _ => bad(),
    }
    let nd = b[1] as usize;
    let start = 2 + 8 * nd;
    if b.len() < start || !(b.len() - start).is_multiple_of(4) {
        bad();
    }
    let shape: Vec<usize> = b[2..start].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()) as usize).collect();
    let data: Vec<f32> = bytemuck::pod_collect_to_vec(&b[start..]);
    if data.len() != shape.iter().product::<usize>() {
        bad();
    }
    Some((shape, data))
}

/// A tensor's shape and f32 values on the host (bf16 → f32 is exact).
fn host_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    (shape, t.cast(FloatDType::F32).into_data().convert::<f32>().to_vec().expect("f32 values"))
}

fn register<B: TrainingBackend>(all: &mut GradientsParams, id: ParamId, t: HostGrad, device: &Device<B>) {
    let Some((shape, data)) = t else { return };
    let t = TensorData::new(data, shape.clone());
    match shape.len() {
        1 => all.register::<I<B>, 1>(id, Tensor::from_data(t, device)),
        _ => all.register::<I<B>, 2>(id, Tensor::from_data(t, device)),
    }
}

/// What a device sends an owner during a round: a gradient of micro-batch k of the round,
/// or that k has sent all it will.
enum Msg<B: Backend> {
    Grad(usize, ParamId, Grad<B>),
    Done(usize),
}

/// An owner's side of a round of `senders` micro-batches: adds each parameter's gradients
/// to `sums` in micro-batch order, holding one back until every earlier micro-batch has
/// given its own for that parameter or is done.
fn receive<B: Backend>(rx: mpsc::Receiver<Msg<B>>, sums: &mut GradientsParams, device: &B::Device, senders: usize) {
    let mut waiting: HashMap<ParamId, (usize, Vec<Option<Grad<B>>>)> = HashMap::new();
    let mut done = vec![false; senders];
    let flush = |id: ParamId, next: &mut usize, slots: &mut [Option<Grad<B>>], done: &[bool], sums: &mut GradientsParams| {
        while *next < senders {
            match slots[*next].take() {
                Some(Grad::Vector(t)) => add(sums, id, t, device),
                Some(Grad::Matrix(t)) => add(sums, id, t, device),
                None if done[*next] => {}
                None => break,
            }
            *next += 1;
        }
    };
    for msg in rx {
        match msg {
            Msg::Grad(k, id, g) => {
                let (next, slots) = waiting.entry(id).or_insert_with(|| (0, (0..senders).map(|_| None).collect()));
                assert!(slots[k].is_none(), "a micro-batch gave a parameter's gradient twice");
                slots[k] = Some(g);
                flush(id, next, slots, &done, sums);
            }
            Msg::Done(k) => {
                done[k] = true;
                for (&id, (next, slots)) in waiting.iter_mut() {
                    flush(id, next, slots, &done, sums);
                }
            }
        }
        waiting.retain(|_, (next, _)| *next < senders);
    }
    assert!(waiting.is_empty(), "every micro-batch of the round is done");
}

/// A parameter's gradient (Qwen3's are vectors and matrices).
enum Grad<B: Backend> {
    Vector(Tensor<B, 1>),
    Matrix(Tensor<B, 2>),
}

/// Adds gradient `t` of parameter `id`, moved to `device` in f32, to its sum there.
fn add<B: Backend, const D: usize>(sums: &mut GradientsParams, id: ParamId, t: Tensor<B, D>, device: &B::Device) {
    let t = t.to_device(device).cast(FloatDType::F32);
    let sum = match sums.remove::<B, D>(id) {
        Some(s) => s + t,
        None => t,
    };
    sums.register::<B, D>(id, sum);
}

fn move_grad<B: Backend, const D: usize>(from: &mut GradientsParams, to: &mut GradientsParams, id: ParamId) {
    if let Some(t) = from.remove::<B, D>(id) {
        to.register::<B, D>(id, t);
    }
}

/// Which of `n` devices owns each parameter (id, dimensions, device): largest first, each
/// to the device holding the fewest elements so far, so the shards weigh about 1/n each.
pub fn owners<B: Backend>(model: &Qwen3<B>, n: usize) -> Vec<(ParamId, usize, usize)> {
    struct Sizes(Vec<(ParamId, usize, usize)>);
    impl<B: Backend> ModuleVisitor<B> for Sizes {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            self.0.push((p.id, D, p.shape().num_elements()));
        }
    }
    let mut sizes = Sizes(vec![]);
    model.visit(&mut sizes);
    let mut params = sizes.0;
    params.sort_by_key(|&(_, _, numel)| std::cmp::Reverse(numel)); // stable: ties in model order
    let mut load = vec![0usize; n.max(1)];
    params
        .into_iter()
        .map(|(id, dims, numel)| {
            let k = (0..load.len()).min_by_key(|&k| load[k]).expect("one device");
            load[k] += numel;
            (id, dims, k)
        })
        .collect()
}

/// Every parameter of `model` on the device that owns it among `devices` (a data-parallel
/// run keeps its f32 master weights so: about 1/N of them on each); one device: as it is.
pub fn shard<B: AutodiffBackend>(model: Qwen3<B>, devices: &[Device<B>]) -> Qwen3<B> {
    if devices.len() <= 1 {
        return model;
    }
    struct Move<'a, B: Backend> {
        owner: HashMap<ParamId, usize>,
        devices: &'a [Device<B>],
    }
    impl<B: Backend> ModuleMapper<B> for Move<'_, B> {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let device = &self.devices[self.owner[&p.id]];
            p.fork(device) // (to_device would drop the require-grad flag)
        }
    }
    let owner = owners(&model, devices.len()).into_iter().map(|(id, _, k)| (id, k)).collect();
    model.map(&mut Move { owner, devices })
}

/// `f(replica, part)` for every part without gradients (evaluation): of G devices in all
/// (every rank's), global device g takes parts g, g + G, ... on its own thread; the results
/// in the order of `parts`, on every rank.
pub fn map<B, T, R, F>(model: &Qwen3<B>, devices: &[Device<B>], parts: &[T], f: F) -> Vec<R>
where
    B: Backend,
    T: Sync,
    R: Send + Serialize + DeserializeOwned,
    F: Fn(&Qwen3<B>, &T) -> R + Sync,
{
    let cluster = crate::cluster::get();
    let (rank, world) = cluster.map_or((0, 1), |c| (c.rank, c.world));
    let n = devices.len().max(1);
    let shares = on_devices(model, devices, |k, replica| (rank * n + k..parts.len()).step_by(world * n).map(|i| (i, f(replica, &parts[i]))).collect::<Vec<_>>());
    crate::cluster::gather_indexed(shares.into_iter().flatten().collect(), parts.len())
}
