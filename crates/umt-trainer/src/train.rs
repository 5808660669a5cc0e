//! Training loops: mini-batch Adam with a step learning-rate decay, a NaN guard, evaluation,
//! and the linear classifier fitted on frozen embeddings.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{loss, Linear, Module, Optimizer, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use umt_data::AvDataset;

use crate::progress::Progress;
use crate::source::DataSource;
use crate::{Error, Result};

/// A mini-batch on the device: audio `(B, 1, F, T_a)`, video `(B, T, 3, H, W)`, labels `(B)`.
#[derive(Debug)]
pub struct DeviceBatch {
    /// `(B, 1, F, T_a)`.
    pub audio: Tensor,
    /// `(B, T, 3, H, W)`.
    pub video: Tensor,
    /// `(B)` u32.
    pub labels: Tensor,
}

/// Gathers `indices` of `data` onto `device`.
pub fn device_batch(data: &AvDataset, indices: &[usize], device: &Device) -> Result<DeviceBatch> {
    let b = data.gather(indices)?;
    let n = indices.len();
    let [c, f, t] = data.audio_shape();
    let [tv, cv, h, w] = data.video_shape();
    Ok(DeviceBatch {
        audio: Tensor::from_vec(b.audio, (n, c, f, t), device)?,
        video: Tensor::from_vec(b.video, (n, tv, cv, h, w), device)?,
        labels: Tensor::from_vec(b.labels, n, device)?,
    })
}

/// The schedule of one training stage.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Name of the stage (for progress, logs and errors).
    pub stage: String,
    /// Epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Initial Adam learning rate.
    pub learning_rate: f64,
    /// Decay the learning rate every this many epochs ...
    pub decay_every: usize,
    /// ... by this factor.
    pub decay_factor: f64,
    /// Seed of the batch order (and of any per-step randomness; a streamed split also seeds
    /// each sample's frame and audio choices from it).
    pub seed: u64,
    /// The most recent checkpoint of the run, named in a NaN error.
    pub last_checkpoint: String,
}

/// Runs `schedule.epochs` epochs of Adam over `params` on shuffled mini-batches of `data`
/// ([`DataSource::train_batches`]; a final batch smaller than 2 is skipped: BatchNorm needs two
/// samples). `loss_fn(batch, rng)` returns the scalar loss; `on_epoch_end(epoch)` runs after
/// every epoch. Returns the mean training loss of every epoch. A non-finite loss stops with
/// [`Error::NonFiniteLoss`] naming the stage, epoch and step.
pub fn train_epochs(
    schedule: &Schedule,
    data: &DataSource,
    params: Vec<Var>,
    device: &Device,
    progress: &Progress,
    mut loss_fn: impl FnMut(&DeviceBatch, &mut ChaCha8Rng) -> Result<Tensor>,
    mut on_epoch_end: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<f32>> {
    let mut opt = candle_nn::AdamW::new(
        params,
        candle_nn::ParamsAdamW {
            lr: schedule.learning_rate,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(schedule.seed);
    let steps_per_epoch = data.len().div_ceil(schedule.batch_size);
    let bar = progress.bar(&schedule.stage, (schedule.epochs * steps_per_epoch) as u64);
    let mut epoch_losses = Vec::with_capacity(schedule.epochs);
    let mut step = 0;
    for epoch in 0..schedule.epochs {
        let decays = (epoch / schedule.decay_every) as i32;
        opt.set_learning_rate(schedule.learning_rate * schedule.decay_factor.powi(decays));
        let (mut sum, mut count) = (0.0f64, 0usize);
        let batches =
            data.train_batches(epoch, schedule.batch_size, schedule.seed, &mut rng, device)?;
        for batch in batches {
            let batch = batch?;
            if batch.labels.dims1()? < 2 {
                continue;
            }
            let loss = loss_fn(&batch, &mut rng)?;
            let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                bar.finish_and_clear();
                return Err(Error::NonFiniteLoss {
                    stage: schedule.stage.clone(),
                    epoch,
                    step,
                    loss: value,
                    last_checkpoint: schedule.last_checkpoint.clone(),
                });
            }
            opt.backward_step(&loss)?;
            sum += value as f64;
            count += 1;
            step += 1;
            bar.inc(1);
        }
        epoch_losses.push((sum / count.max(1) as f64) as f32);
        bar.set_message(format!("loss {:.4}", epoch_losses[epoch]));
        on_epoch_end(epoch)?;
    }
    bar.finish_and_clear();
    Ok(epoch_losses)
}

/// Applies `f` to `data` in evaluation batches ([`DataSource::eval_batches`] of
/// [`DataSource::eval_batch_size`]) and concatenates the results along dim 0.
pub fn map_batches(
    data: &DataSource,
    device: &Device,
    mut f: impl FnMut(&DeviceBatch) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut outs = Vec::new();
    for batch in data.eval_batches(data.eval_batch_size(), device)? {
        // Evaluation only: cut the graph so nothing downstream backpropagates into the model.
        outs.push(f(&batch?)?.detach());
    }
    if outs.is_empty() {
        return Err(Error::InvalidConfig {
            field: "dataset",
            expected: "a split with at least one sample".into(),
            found: "an empty split".into(),
        });
    }
    Ok(Tensor::cat(&outs, 0)?)
}

/// Top-1 accuracy in [0, 1] and the per-class accuracy of `logits (N, k)` against `labels`.
pub fn accuracy(logits: &Tensor, labels: &[u32], classes: usize) -> Result<(f64, Vec<f64>)> {
    let pred: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
    let mut hit = vec![0usize; classes];
    let mut tot = vec![0usize; classes];
    for (&p, &y) in pred.iter().zip(labels) {
        tot[y as usize] += 1;
        hit[y as usize] += usize::from(p == y);
    }
    let top1 = hit.iter().sum::<usize>() as f64 / labels.len().max(1) as f64;
    let per_class = hit
        .iter()
        .zip(&tot)
        .map(|(&h, &t)| if t == 0 { 0.0 } else { h as f64 / t as f64 })
        .collect();
    Ok((top1, per_class))
}

/// A linear classifier fitted on frozen embeddings (standardised with the training set's
/// per-dimension mean and std, which only reparametrises the classifier).
pub struct LinearProbe {
    vars: VarMap,
    mean: Tensor,
    std: Tensor,
    fc: Linear,
}

impl LinearProbe {
    /// Fits `(N, D)` embeddings to `labels` with Adam (`epochs`, batch `batch_size`, `lr`),
    /// deterministically from `seed`.
    #[allow(clippy::too_many_arguments)]
    pub fn fit(
        x: &Tensor,
        labels: &[u32],
        classes: usize,
        epochs: usize,
        batch_size: usize,
        lr: f64,
        seed: u64,
    ) -> Result<Self> {
        let device = x.device().clone();
        let (n, d) = x.dims2()?;
        let mean = x.mean_keepdim(0)?; // (1, D)
        let std = x
            .broadcast_sub(&mean)?
            .sqr()?
            .mean_keepdim(0)?
            .sqrt()?
            .affine(1.0, 1e-6)?;
        let z = x.broadcast_sub(&mean)?.broadcast_div(&std)?; // (N, D)
        let mut vars = VarMap::new();
        let vb = umt_nn::init::seeded_var_builder(&vars, seed, DType::F32, &device);
        let fc = candle_nn::linear(d, classes, vb.pp("fc"))?;
        let trainable = vars.all_vars(); // fc only
                                         // The standardisation travels with the classifier in its checkpoint (not trained).
        vb.get_with_hints((1, d), "input_mean", candle_nn::Init::Const(0.0))?;
        vb.get_with_hints((1, d), "input_std", candle_nn::Init::Const(1.0))?;
        vars.set_one("input_mean", &mean)?;
        vars.set_one("input_std", &std)?;
        let mut opt = candle_nn::AdamW::new(
            trainable,
            candle_nn::ParamsAdamW {
                lr,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let y = Tensor::from_vec(labels.to_vec(), n, &device)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x11_7E_A2);
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..epochs {
            order.shuffle(&mut rng);
            for chunk in order.chunks(batch_size.max(2)) {
                let idx = Tensor::from_vec(
                    chunk.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                    chunk.len(),
                    &device,
                )?;
                let logits = fc.forward(&z.index_select(&idx, 0)?)?;
                let l = loss::cross_entropy(&logits, &y.index_select(&idx, 0)?)?;
                opt.backward_step(&l)?;
            }
        }
        Ok(Self {
            vars,
            mean,
            std,
            fc,
        })
    }

    /// The classifier's variables (`fc.weight`, `fc.bias`, `input_mean`, `input_std`).
    pub fn vars(&self) -> &VarMap {
        &self.vars
    }

    /// Logits `(N, k)` of embeddings `(N, D)`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let z = x.broadcast_sub(&self.mean)?.broadcast_div(&self.std)?;
        Ok(self.fc.forward(&z)?)
    }
}

/// Mean-reduced MSE between a student embedding and a (detached) teacher embedding, both
/// `(B, D)`: the distillation term of paper Eq. (3) as implemented in §4.1 (`nn.MSELoss()`).
pub fn feature_mse(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    Ok(loss::mse(student, &teacher.detach())?)
}
