//! Data parallel on one machine (`[compute] devices`). Each device gets a replica of the
//! model (the step's weights, forked to it) and computes the gradients of its share of the
//! step's micro-batches on its own thread. Each parameter's gradients are summed on the
//! device that owns it, where the optimizer steps it and keeps its AdamW state (ZeRO
//! stage 1: the state is sharded, the weights come back to the first device). The result
//! is one device running every micro-batch, up to the order of the float additions. With
//! one device nothing is copied and no thread starts.
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Device;
use model::{Qwen3, TrainingBackend};

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
/// nothing to train), in the order of `parts`. `grads(k, replica, part)` computes one
/// part on device k; of n devices, device k takes parts k, k + n, k + 2n, ...
pub fn grads<B, T, R, F>(model: &Qwen3<B>, devices: &[Device<B>], parts: &[T], grads: F) -> (Vec<Option<R>>, GradientsParams)
where
    B: TrainingBackend,
    T: Sync,
    R: Send,
    F: Fn(usize, &Qwen3<B>, &T) -> Option<(R, GradientsParams)> + Sync,
{
    let n = devices.len().max(1);
    let shares = on_devices(model, devices, |k, replica| {
        let mut acc = GradientsAccumulator::<Qwen3<B>>::new();
        let mut values = vec![];
        for i in (k..parts.len()).step_by(n) {
            if let Some((v, g)) = grads(k, replica, &parts[i]) {
                values.push((i, v));
                acc.accumulate(replica, g);
            }
        }
        (values, acc.grads())
    });
    let mut values: Vec<Option<R>> = parts.iter().map(|_| None).collect();
    let mut sums = vec![];
    for (vals, g) in shares {
        for (i, v) in vals {
            values[i] = Some(v);
        }
        sums.push(g);
    }
    if sums.len() == 1 {
        return (values, sums.pop().expect("one share"));
    }
    let mut reduced = GradientsParams::new();
    for (id, dims, k) in owners(model, devices.len()) {
        match dims {
            1 => reduce::<B::InnerBackend, 1>(&mut sums, &mut reduced, id, &devices[k]),
            2 => reduce::<B::InnerBackend, 2>(&mut sums, &mut reduced, id, &devices[k]),
            _ => unreachable!("Qwen3 has 1-D and 2-D parameters only"),
        }
    }
    (values, reduced)
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

/// Moves parameter `id`'s gradient from every device's sum to `device` and adds them up
/// there (in device order, as one device accumulating would).
fn reduce<B: Backend, const D: usize>(sums: &mut [GradientsParams], out: &mut GradientsParams, id: ParamId, device: &B::Device) {
    let mut acc: Option<Tensor<B, D>> = None;
    for g in sums.iter_mut() {
        if let Some(t) = g.remove::<B, D>(id) {
            let t = t.to_device(device);
            acc = Some(match acc {
                Some(a) => a + t,
                None => t,
            });
        }
    }
    if let Some(a) = acc {
        out.register::<B, D>(id, a);
    }
}

/// The weights of `model` back on `device` after an optimizer step that updated each
/// parameter on its owner (`fork`: `to_device` would drop their require-grad flags).
pub fn gather<B: AutodiffBackend>(model: Qwen3<B>, device: &Device<B>) -> Qwen3<B> {
    model.fork(device)
}

/// `f(replica, part)` for every part without gradients (evaluation), device k taking parts
/// k, k + n, ... of n devices on its own thread; the results in the order of `parts`.
pub fn map<B, T, R, F>(model: &Qwen3<B>, devices: &[Device<B>], parts: &[T], f: F) -> Vec<R>
where
    B: Backend,
    T: Sync,
    R: Send,
    F: Fn(&Qwen3<B>, &T) -> R + Sync,
{
    let n = devices.len().max(1);
    let shares = on_devices(model, devices, |k, replica| (k..parts.len()).step_by(n).map(|i| (i, f(replica, &parts[i]))).collect::<Vec<_>>());
    let mut out: Vec<(usize, R)> = shares.into_iter().flatten().collect();
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}
