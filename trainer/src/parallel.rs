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
use crate::cluster::{Cluster, Frame};
use burn::tensor::{Device, FloatDType, TensorData};
use model::{Qwen3, TrainingBackend};
use serde::{de::DeserializeOwned, Serialize};
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
/// (each parameter's once, [`Qwen3::loss_and_grads_streamed`]). Of G devices in all (every
/// rank's, `cluster`), global device g takes parts g, g + G, g + 2G, ... With several
/// devices each gradient goes to its owner (a global device) the moment it is emitted, and
/// the owner adds the round's gradients of a parameter in micro-batch order (see the
/// module doc), holding back one that arrives early. Across machines, the owners' sums
/// then go to every rank (each parameter's to the local device that owns it), and so do
/// the values.
pub fn grads<B, T, R, F>(model: &Qwen3<B>, devices: &[Device<B>], parts: &[T], grads: F) -> (Vec<Option<R>>, GradientsParams)
where
    B: TrainingBackend,
    T: Sync,
    R: Send + Serialize + DeserializeOwned,
    F: Fn(usize, &Qwen3<B>, &T, &mut dyn FnMut(GradientsParams)) -> Option<R> + Sync,
{
    let cluster = crate::cluster::get();
    let (rank, world) = cluster.map_or((0, 1), |c| (c.rank, c.world));
    let n = devices.len();
    let all_devices = world * n;
    if all_devices <= 1 {
        let mut acc = GradientsAccumulator::<Qwen3<B>>::new();
        let values = parts.iter().map(|part| grads(0, model, part, &mut |g| acc.accumulate(model, g))).collect();
        return (values, acc.grads());
    }
    let mut values: Vec<Option<R>> = parts.iter().map(|_| None).collect();
    let owned = owners(model, all_devices);
    let source = model.clone().with_layer_matrices_in(model.compute.precision.dtype());
    let replicas: Vec<Qwen3<B>> = devices.iter().map(|d| source.clone().fork(d)).collect();
    drop(source);
    let (grads, owned) = (&grads, &owned);
    let mut sums: Vec<GradientsParams> = devices.iter().map(|_| GradientsParams::new()).collect();
    // Global device g is rank g / n's device g % n; in a round it takes micro-batch (slot) g.
    for (r, round) in parts.chunks(all_devices).enumerate() {
        let (txs, rxs): (Vec<_>, Vec<_>) = devices.iter().map(|_| mpsc::channel::<Msg<B::InnerBackend>>()).unzip();
        let results: Vec<Option<R>> = std::thread::scope(|s| {
            for ((rx, sum), device) in rxs.into_iter().zip(sums.iter_mut()).zip(devices) {
                s.spawn(move || receive(rx, sum, device, round.len()));
            }
            // Another rank's gradients for owners here, until each of its slots is done.
            for from in cluster.map_or(vec![], |c| c.others().collect()) {
                let (c, txs) = (cluster.expect("others exist"), txs.clone());
                let slots = (from * n..(from + 1) * n).filter(|&g| g < round.len()).count();
                s.spawn(move || {
                    let mut done = 0;
                    while done < slots {
                        match c.recv_grad(from) {
                            Frame::Grad { slot, param, dims, data } => {
                                let (id, _, g) = owned[param];
                                let t = TensorData::new(data, dims.clone());
                                let grad = match dims.len() {
                                    1 => Grad::Vector(Tensor::from_data(t, &devices[g % n])),
                                    _ => Grad::Matrix(Tensor::from_data(t, &devices[g % n])),
                                };
                                txs[g % n].send(Msg::Grad(slot, id, grad)).expect("an owner is listening");
                            }
                            Frame::Done { slot } => {
                                txs.iter().for_each(|tx| tx.send(Msg::Done(slot)).expect("an owner is listening"));
                                done += 1;
                            }
                        }
                    }
                });
            }
            let threads: Vec<_> = (0..n)
                .filter(|k| rank * n + k < round.len())
                .map(|k| {
                    let (txs, slot, replica) = (txs.clone(), rank * n + k, &replicas[k]);
                    s.spawn(move || {
                        let value = grads(k, replica, &round[slot], &mut |mut g| {
                            for (param, &(id, dims, owner)) in owned.iter().enumerate() {
                                let t = match dims {
                                    1 => g.remove::<B::InnerBackend, 1>(id).map(Grad::Vector),
                                    2 => g.remove::<B::InnerBackend, 2>(id).map(Grad::Matrix),
                                    _ => unreachable!("Qwen3 has 1-D and 2-D parameters only"),
                                };
                                match (t, cluster) {
                                    (Some(t), Some(c)) if owner / n != rank => {
                                        let (dims, data) = match t {
                                            Grad::Vector(t) => host_f32(t),
                                            Grad::Matrix(t) => host_f32(t),
                                        };
                                        c.send_grad(owner / n, slot, param, &dims, &data);
                                    }
                                    (Some(t), _) => txs[owner % n].send(Msg::Grad(slot, id, t)).expect("an owner is listening"),
                                    (None, _) => {}
                                }
                            }
                        });
                        txs.iter().for_each(|tx| tx.send(Msg::Done(slot)).expect("an owner is listening"));
                        cluster.iter().for_each(|c| c.others().for_each(|to| c.send_done(to, slot)));
                        (slot, value)
                    })
                })
                .collect();
            drop(txs);
            threads.into_iter().map(|t| t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).map(|(_, v)| v).collect()
        });
        for (k, v) in results.into_iter().enumerate() {
            values[r * all_devices + rank * n + k] = v;
        }
    }
    let Some(c) = cluster else {
        let mut all = GradientsParams::new();
        for &(id, dims, owner) in owned {
            match dims {
                1 => move_grad::<B::InnerBackend, 1>(&mut sums[owner], &mut all, id),
                _ => move_grad::<B::InnerBackend, 2>(&mut sums[owner], &mut all, id),
            }
        }
        return (values, all);
    };
    (gather_values(c, values, n), gather_sums(c, owned, sums, model, devices))
}

/// Every rank's values, each rank having filled in its devices' parts.
fn gather_values<R: Serialize + DeserializeOwned>(c: &Cluster, mut values: Vec<Option<R>>, n: usize) -> Vec<Option<R>> {
    let world_devices = c.world * n;
    let mine: Vec<(usize, &Option<R>)> = values.iter().enumerate().filter(|(i, _)| i % world_devices / n == c.rank).collect();
    let bytes = bincode::serde::encode_to_vec(&mine, bincode::config::standard()).expect("values encode");
    for (r, b) in c.all_gather(bytes).into_iter().enumerate().filter(|&(r, _)| r != c.rank) {
        let (theirs, _): (Vec<(usize, Option<R>)>, usize) =
            bincode::serde::decode_from_slice(&b, bincode::config::standard()).unwrap_or_else(|e| panic!("cluster: rank {r}'s values: {e}"));
        for (i, v) in theirs {
            values[i] = v;
        }
    }
    values
}

/// The owners' sums sent to every rank, each parameter's on the local device that owns
/// it (`owners(model, n)`: where the optimizer keeps its state).
fn gather_sums<B: TrainingBackend>(c: &Cluster, owned: &[(ParamId, usize, usize)], mut sums: Vec<GradientsParams>, model: &Qwen3<B>, devices: &[Device<B>]) -> GradientsParams {
    type I<B> = <B as AutodiffBackend>::InnerBackend;
    let n = devices.len();
    let local: HashMap<ParamId, usize> = owners(model, n).into_iter().map(|(id, _, k)| (id, k)).collect();
    let mut all = GradientsParams::new();
    for (param, &(id, dims, owner)) in owned.iter().enumerate().filter(|(_, o)| o.2 / n == c.rank) {
        let (shape, data) = match dims {
            1 => sums[owner % n].remove::<I<B>, 1>(id).map(host_f32),
            _ => sums[owner % n].remove::<I<B>, 2>(id).map(host_f32),
        }
        .unzip();
        let bytes = bincode::serde::encode_to_vec((param, &shape, &data), bincode::config::standard()).expect("a sum encodes");
        c.others().for_each(|to| c.send_blob(to, &bytes));
        register::<B>(&mut all, id, shape, data, &devices[local[&id]]);
    }
    for from in c.others() {
        for _ in owned.iter().filter(|o| o.2 / n == from) {
            let b = c.recv_blob(from);
            let ((param, shape, data), _): ((usize, Option<Vec<usize>>, Option<Vec<f32>>), usize) =
                bincode::serde::decode_from_slice(&b, bincode::config::standard()).unwrap_or_else(|e| panic!("cluster: rank {from}'s gradient sums: {e}"));
            let id = owned[param].0;
            register::<B>(&mut all, id, shape, data, &devices[local[&id]]);
        }
    }
    all
}

/// A tensor's shape and f32 values on the host (bf16 → f32 is exact).
fn host_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let shape = t.dims().to_vec();
    (shape, t.into_data().convert::<f32>().to_vec().expect("f32 values"))
}

fn register<B: TrainingBackend>(all: &mut GradientsParams, id: ParamId, shape: Option<Vec<usize>>, data: Option<Vec<f32>>, device: &Device<B>) {
    type I<B> = <B as AutodiffBackend>::InnerBackend;
    let (Some(shape), Some(data)) = (shape, data) else { return };
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
    let mut out: Vec<(usize, R)> = shares.into_iter().flatten().collect();
    if let Some(c) = cluster {
        let bytes = bincode::serde::encode_to_vec(&out, bincode::config::standard()).expect("results encode");
        for (r, b) in c.all_gather(bytes).into_iter().enumerate().filter(|&(r, _)| r != c.rank) {
            let (theirs, _): (Vec<(usize, R)>, usize) = bincode::serde::decode_from_slice(&b, bincode::config::standard()).unwrap_or_else(|e| panic!("cluster: rank {r}'s results: {e}"));
            out.extend(theirs);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}
