//! Data parallel on one machine (`[compute] devices`). Each device gets a replica of the
//! model (the step's weights, forked to it) and computes the gradients of its share of the
//! step's micro-batches on its own thread; the sums meet on the first device, which takes
//! the optimizer step. The result is one device running every micro-batch, up to the
//! order of the float additions. With one device nothing is copied and no thread starts.
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::Backend;
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
    let (main, mut acc) = (model.device(), GradientsAccumulator::<Qwen3<B>>::new());
    for g in sums {
        acc.accumulate(model, g.to_device(&main, model));
    }
    (values, acc.grads())
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
