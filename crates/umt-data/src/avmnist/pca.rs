//! Principal component analysis for AV-MNIST's image weakening (Vielzeuf et al. 2018: keep the
//! leading components holding a fraction of the variance, reconstruct from them), with a
//! cyclic-Jacobi symmetric eigen-solver (no linear-algebra dependency).

use rayon::prelude::*;

use crate::{Error, Result};

/// A PCA of `dim`-dimensional data keeping the leading `components.len() / dim` components.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// Dimension of the data.
    pub dim: usize,
    /// Mean of the fitting data `(dim)`.
    pub mean: Vec<f64>,
    /// The kept principal directions, row-major `(K, dim)`, orthonormal.
    pub components: Vec<f64>,
    /// All eigenvalues of the covariance (biased, divided by N), descending.
    pub eigenvalues: Vec<f64>,
    /// Share of the total variance the kept components hold.
    pub energy_kept: f64,
}

impl Pca {
    /// Fits on `n` rows of `dim` values (`data.len() == n · dim`) and keeps the fewest leading
    /// components whose variance is at least `fraction` of the total. With fewer rows than
    /// dimensions the eigenvectors come from the `(n, n)` Gram matrix (the same subspace,
    /// cheaper).
    pub fn fit(data: &[f64], dim: usize, fraction: f64) -> Result<Self> {
        let n = data.len() / dim.max(1);
        Self::fit_with(data, dim, fraction, n < dim)
    }

    fn fit_with(data: &[f64], dim: usize, fraction: f64, dual: bool) -> Result<Self> {
        if dim == 0 || data.is_empty() || data.len() % dim != 0 {
            return Err(Error::ShapeMismatch {
                what: "PCA data (N, dim)",
                expected: dim.max(1) * (data.len() / dim.max(1)).max(1),
                found: data.len(),
            });
        }
        let n = data.len() / dim;
        let mut mean = vec![0.0; dim];
        for row in data.chunks_exact(dim) {
            mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centred: Vec<f64> = data
            .chunks_exact(dim)
            .flat_map(|row| row.iter().zip(&mean).map(|(x, m)| x - m))
            .collect();
        // Gram (n, n) = Xc Xcᵀ / n has the non-zero eigenvalues of the covariance (dim, dim).
        let (matrix, m) = if dual {
            (gram(&centred, n, dim), n)
        } else {
            (covariance(&centred, n, dim), dim)
        };
        let (vals, vecs) = symmetric_eigen(matrix, m);
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
        let mut eigenvalues: Vec<f64> = order.iter().map(|&k| vals[k].max(0.0)).collect();
        eigenvalues.resize(dim, 0.0);
        let total: f64 = eigenvalues.iter().sum();
        let (mut kept, mut k) = (0.0, 0);
        while k < m && kept < fraction * total {
            kept += eigenvalues[k];
            k += 1;
        }
        let k = k.max(1);
        let mut components = Vec::with_capacity(k * dim);
        for &c in &order[..k] {
            if dual {
                // v = Xcᵀ u / ‖Xcᵀ u‖.
                let mut v = vec![0.0; dim];
                for (r, row) in centred.chunks_exact(dim).enumerate() {
                    let u = vecs[r * m + c];
                    v.iter_mut().zip(row).for_each(|(vi, x)| *vi += u * x);
                }
                let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
                components.extend(v.iter().map(|x| x / norm));
            } else {
                components.extend((0..dim).map(|i| vecs[i * m + c]));
            }
        }
        Ok(Self {
            dim,
            mean,
            components,
            eigenvalues,
            energy_kept: if total > 0.0 { kept / total } else { 1.0 },
        })
    }

    /// Number of kept components.
    pub fn num_components(&self) -> usize {
        self.components.len() / self.dim
    }

    /// Projects `x (dim)` on the kept components and reconstructs it:
    /// `mean + Σ_k ⟨v_k, x − mean⟩ v_k`.
    pub fn reconstruct(&self, x: &[f64]) -> Vec<f64> {
        let centred: Vec<f64> = x.iter().zip(&self.mean).map(|(a, m)| a - m).collect();
        let mut out = self.mean.clone();
        for v in self.components.chunks_exact(self.dim) {
            let c: f64 = v.iter().zip(&centred).map(|(a, b)| a * b).sum();
            out.iter_mut().zip(v).for_each(|(o, vi)| *o += c * vi);
        }
        out
    }
}

/// Covariance `(dim, dim)` of centred rows `(n, dim)`, biased (÷ n); rows in parallel.
fn covariance(centred: &[f64], n: usize, dim: usize) -> Vec<f64> {
    let mut cov = vec![0.0; dim * dim];
    cov.par_chunks_mut(dim).enumerate().for_each(|(i, out)| {
        for row in centred.chunks_exact(dim) {
            let xi = row[i];
            if xi != 0.0 {
                out[i..]
                    .iter_mut()
                    .zip(&row[i..])
                    .for_each(|(o, x)| *o += xi * x);
            }
        }
        out.iter_mut().for_each(|c| *c /= n as f64);
    });
    for i in 0..dim {
        for j in 0..i {
            cov[i * dim + j] = cov[j * dim + i];
        }
    }
    cov
}

/// Gram matrix `(n, n)` of centred rows `(n, dim)`, ÷ n.
fn gram(centred: &[f64], n: usize, dim: usize) -> Vec<f64> {
    let rows: Vec<&[f64]> = centred.chunks_exact(dim).collect();
    let mut g = vec![0.0; n * n];
    g.par_chunks_mut(n).enumerate().for_each(|(i, out)| {
        for (j, o) in out.iter_mut().enumerate() {
            *o = rows[i].iter().zip(rows[j]).map(|(a, b)| a * b).sum::<f64>() / n as f64;
        }
    });
    g
}

/// Eigen-decomposition of a symmetric `(n, n)` row-major matrix by cyclic Jacobi rotations.
/// Returns the eigenvalues (unsorted) and the eigenvectors as the columns of a row-major
/// `(n, n)` matrix (`v[i·n + k]` = component `i` of eigenvector `k`).
pub fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..64 {
        let mut off = 0.0;
        for p in 0..n {
            for q in p + 1..n {
                off += a[p * n + q] * a[p * n + q];
            }
        }
        if off <= 1e-24 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 || apq * apq <= 1e-30 * scale / (n * n) as f64 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A ← Jᵀ A J, with J the rotation in the (p, q) plane; V ← V J.
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::super::normal;
    use super::*;

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let n = 5;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = 1.0 / (1.0 + (i + j) as f64) + if i == j { i as f64 } else { 0.0 };
            }
        }
        let (vals, v) = symmetric_eigen(a.clone(), n);
        for k in 0..n {
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * v[j * n + k]).sum();
                assert!((av - vals[k] * v[i * n + k]).abs() < 1e-10);
            }
            for l in 0..n {
                let dot: f64 = (0..n).map(|i| v[i * n + k] * v[i * n + l]).sum();
                assert!((dot - f64::from(u8::from(k == l))).abs() < 1e-10);
            }
        }
    }

    /// On a small matrix: the kept components hold at least the requested share of the
    /// variance, and the mean squared reconstruction error equals the sum of the discarded
    /// eigenvalues (the PCA identity), for every fraction.
    #[test]
    fn pca_keeps_the_requested_energy_and_loses_exactly_the_rest() {
        let (n, dim) = (60, 6);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let scales = [3.0, 2.0, 1.5, 1.0, 0.5, 0.2];
        let data: Vec<f64> = (0..n * dim)
            .map(|i| scales[i % dim] * f64::from(normal(&mut rng)) + (i % dim) as f64)
            .collect();
        for fraction in [0.1, 0.25, 0.5, 0.9, 1.0] {
            let pca = Pca::fit(&data, dim, fraction).unwrap();
            let total: f64 = pca.eigenvalues.iter().sum();
            let k = pca.num_components();
            assert!(pca.energy_kept >= fraction - 1e-12, "{fraction}");
            // Fewest components: one fewer would not be enough.
            let without_last: f64 = pca.eigenvalues[..k - 1].iter().sum();
            assert!(without_last < fraction * total, "{fraction}");
            let err: f64 = data
                .chunks_exact(dim)
                .map(|x| {
                    let r = pca.reconstruct(x);
                    x.iter().zip(&r).map(|(a, b)| (a - b).powi(2)).sum::<f64>()
                })
                .sum::<f64>()
                / n as f64;
            let discarded: f64 = pca.eigenvalues[k..].iter().sum();
            assert!(
                (err - discarded).abs() < 1e-9 * total,
                "{err} vs {discarded}"
            );
        }
    }

    /// With fewer rows than dimensions the Gram-matrix path gives the same reconstruction as
    /// the covariance path.
    #[test]
    fn pca_gram_path_matches_the_covariance_path() {
        let (n, dim) = (5, 9);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let data: Vec<f64> = (0..n * dim).map(|_| f64::from(normal(&mut rng))).collect();
        for fraction in [0.25, 0.6, 1.0] {
            let a = Pca::fit_with(&data, dim, fraction, false).unwrap();
            let b = Pca::fit_with(&data, dim, fraction, true).unwrap();
            assert_eq!(a.num_components(), b.num_components());
            for (x, y) in a.eigenvalues.iter().zip(&b.eigenvalues) {
                assert!((x - y).abs() < 1e-9);
            }
            for row in data.chunks_exact(dim) {
                for (x, y) in a.reconstruct(row).iter().zip(b.reconstruct(row)) {
                    assert!((x - y).abs() < 1e-9);
                }
            }
        }
    }
}
