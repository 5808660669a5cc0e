//! Deterministic parameter initialisation: a [`VarBuilder`] whose fresh variables are drawn from
//! their [`Init`] with a random stream keyed by `(seed, variable name)`.
//!
//! candle draws initial values from an unseeded thread-local generator, so two processes
//! building the same model with the same "seed" start from different weights (and rescaling
//! those draws afterwards keeps their sample noise: a 4-element bias's empirical std is itself
//! random). [`seeded_var_builder`] samples every fresh variable itself, exactly from the
//! distribution its `Init` names (PyTorch's formulas, as `candle_nn::Init::var`), from a ChaCha8
//! stream seeded by SplitMix64 of the seed and an FNV-1a hash of the full variable name. The
//! result is the same in every process, on every device, whatever order layers are built in,
//! and adding a layer does not change the others' initial values.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::VarMap;
//!
//! let (a, b) = (VarMap::new(), VarMap::new());
//! let la = candle_nn::linear(8, 3, umt_nn::init::seeded_var_builder(&a, 7, DType::F32, &Device::Cpu))?;
//! let lb = candle_nn::linear(8, 3, umt_nn::init::seeded_var_builder(&b, 7, DType::F32, &Device::Cpu))?;
//! let diff = (la.weight() - lb.weight())?.abs()?.sum_all()?.to_scalar::<f32>()?;
//! assert_eq!(diff, 0.0);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A [`VarMap`] backend whose fresh variables are drawn deterministically (module docs).
#[derive(Clone)]
pub struct SeededVarMap {
    vars: VarMap,
    seed: u64,
}

impl SeededVarMap {
    /// Fresh variables of `vars` will be drawn from streams keyed by `seed`.
    pub fn new(vars: &VarMap, seed: u64) -> Self {
        Self {
            vars: vars.clone(),
            seed,
        }
    }
}

/// A [`VarBuilder`] storing its variables in `vars` (as `VarBuilder::from_varmap`) whose fresh
/// variables are drawn deterministically from `(seed, name)`.
pub fn seeded_var_builder(
    vars: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededVarMap::new(vars, seed)),
        dtype,
        device.clone(),
    )
}

/// SplitMix64 finaliser.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a 64 of a name.
fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// The values of a fresh variable of `shape` drawn from `init` with the stream of
/// `(seed, name)`, in row-major order.
pub fn sample_init(init: Init, shape: &Shape, seed: u64, name: &str) -> Vec<f64> {
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix(seed ^ splitmix(fnv1a(name))));
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| lo + (up - lo) * rng.random::<f64>();
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| {
        // Box–Muller; u1 in (0, 1] so the log is finite.
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        mean + std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    };
    match init {
        Init::Const(c) => vec![c; n],
        Init::Uniform { lo, up } => (0..n).map(|_| uniform(&mut rng, lo, up)).collect(),
        Init::Randn { mean, stdev } => (0..n).map(|_| normal(&mut rng, mean, stdev)).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            // PyTorch's kaiming_{normal,uniform}_ (candle_nn::Init::var's formula).
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => (0..n).map(|_| normal(&mut rng, 0.0, std)).collect(),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n).map(|_| uniform(&mut rng, -bound, bound)).collect()
                }
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self
            .vars
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape())
            }
            return Ok(var.as_tensor().clone());
        }
        let values = sample_init(h, &s, self.seed, name);
        let t = Tensor::from_vec(values, s, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)?;
        let var = Var::from_tensor(&t)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!(
            "`get_unchecked` of {name}: a seeded VarMap creates variables with `get`"
        )
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.vars
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::init::{FanInOut, NonLinearity};

    fn moments(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (
            m,
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt(),
        )
    }

    #[test]
    fn draws_follow_the_init_and_depend_only_on_seed_and_name() {
        let shape = Shape::from((64, 32, 3, 3));
        let k = Init::Kaiming {
            dist: NormalOrUniform::Normal,
            fan: FanInOut::FanOut,
            non_linearity: NonLinearity::ReLU,
        };
        let a = sample_init(k, &shape, 1, "layer1.0.conv1.weight");
        let (m, s) = moments(&a);
        let want = (2.0_f64 / (64.0 * 9.0)).sqrt();
        assert!(m.abs() < 3.0 * want / (a.len() as f64).sqrt() * 3.0, "{m}");
        assert!((s / want - 1.0).abs() < 0.03, "{s} vs {want}");
        assert_eq!(a, sample_init(k, &shape, 1, "layer1.0.conv1.weight"));
        assert_ne!(a, sample_init(k, &shape, 2, "layer1.0.conv1.weight"));
        assert_ne!(a, sample_init(k, &shape, 1, "layer1.0.conv2.weight"));
        let u = sample_init(
            Init::Uniform { lo: -0.5, up: 0.25 },
            &Shape::from(10_000),
            3,
            "b",
        );
        assert!(u.iter().all(|&x| (-0.5..0.25).contains(&x)));
        let (m, _) = moments(&u);
        assert!((m + 0.125).abs() < 0.01, "{m}");
        assert_eq!(
            sample_init(Init::Const(1.5), &Shape::from(3), 0, "c"),
            [1.5; 3]
        );
    }

    #[test]
    fn build_order_does_not_change_values_and_existing_vars_are_reused() {
        let dev = Device::Cpu;
        let (a, b) = (VarMap::new(), VarMap::new());
        let va = seeded_var_builder(&a, 9, DType::F32, &dev);
        let vb = seeded_var_builder(&b, 9, DType::F32, &dev);
        let x1 = va
            .get_with_hints((4, 5), "x", candle_nn::init::DEFAULT_KAIMING_NORMAL)
            .unwrap();
        let y1 = va
            .get_with_hints(7, "y", Init::Uniform { lo: -1.0, up: 1.0 })
            .unwrap();
        let y2 = vb
            .get_with_hints(7, "y", Init::Uniform { lo: -1.0, up: 1.0 })
            .unwrap();
        let x2 = vb
            .get_with_hints((4, 5), "x", candle_nn::init::DEFAULT_KAIMING_NORMAL)
            .unwrap();
        let same = |p: &Tensor, q: &Tensor| {
            p.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == q.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert!(same(&x1, &x2) && same(&y1, &y2));
        // A second get of the same name returns the stored variable; another shape is an error.
        let again = va.get_with_hints((4, 5), "x", Init::Const(0.0)).unwrap();
        assert!(same(&again, &x1));
        assert!(va.get_with_hints((5, 4), "x", Init::Const(0.0)).is_err());
        assert_eq!(a.all_vars().len(), 2);
    }
}
