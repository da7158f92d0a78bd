//! Kernels: rmsnorm, softmax, fp32 and Q8_0 matmul, activation quantization.
//!
//! Every kernel reproduces run.c's (or runq.c's) float operation order
//! exactly: each float sum starts at 0.0 and accumulates in index order,
//! with a separate multiply and add and no FMA. Integer sums, exact in any
//! order, may be reordered. `forward` calls kernels only through this
//! module, so a faster kernel that keeps the same order per output element
//! can replace one without touching `forward`.
//!
//! Matmuls are batched and weight-stationary: `x` contains `batch` rows of
//! `n` values, and a block of weight rows is applied to several batch rows
//! before the next block is read. The scalar kernel takes all batch rows at
//! once and the SIMD kernels up to 8. Each output element still sums in its
//! own sequential order, so a batch gives the same bits as `batch` separate
//! calls.
//!
//! [`matmul`] and [`matmul_q8`] dispatch to the AVX2 kernels on x86-64 CPUs
//! that have AVX2 (detected at run time with the `std` feature, at compile
//! time without it), to the NEON kernels on aarch64, and otherwise to the
//! scalar reference in [`scalar`]. The SIMD kernels vectorise across output
//! rows or batch rows, never along a float dot product, so their results
//! have the scalar bits. NaN payloads are the one exception: Rust does not
//! fix which NaN an operation returns, so a NaN output may differ in payload
//! bits between kernels.

use crate::math::{expf, roundf, sqrtf};
use crate::weights::QTensor;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub mod neon;
pub mod relaxed;
pub mod scalar;

/// The kind of fp32 matmul kernel a forward pass uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Math {
    /// run.c's operation order: the same bits as llama2.c. The default.
    #[default]
    Exact,
    /// Reordered and fused kernels ([`relaxed`]): faster, but the bits
    /// differ from llama2.c's. Q8_0 matmuls stay exact.
    Relaxed,
}

/// Normalizes `x` by its root mean square and scales by `weight`, writing `o`.
///
/// As run.c: `ss = sum(x*x) / size + 1e-5`, `ss = 1 / sqrt(ss)`,
/// `o[j] = weight[j] * (ss * x[j])`.
pub fn rmsnorm(o: &mut [f32], x: &[f32], weight: &[f32]) {
    let ss = rms_scale(x);
    for ((o, &x), &w) in o.iter_mut().zip(x).zip(weight) {
        *o = w * (ss * x);
    }
}

/// [`rmsnorm`] with the output written over the input.
pub fn rmsnorm_in_place(x: &mut [f32], weight: &[f32]) {
    let ss = rms_scale(x);
    for (x, &w) in x.iter_mut().zip(weight) {
        *x = w * (ss * *x);
    }
}

fn rms_scale(x: &[f32]) -> f32 {
    let mut ss = 0.0f32;
    for &v in x {
        ss += v * v;
    }
    ss /= x.len() as f32;
    ss += 1e-5;
    1.0 / sqrtf(ss)
}

/// Replaces `x` by its softmax: subtract the maximum, exponentiate, sum, then
/// divide, in run.c's order. An empty slice is left unchanged.
pub fn softmax(x: &mut [f32]) {
    let Some(&first) = x.first() else {
        return;
    };
    let mut max_val = first;
    for &v in &x[1..] {
        if v > max_val {
            max_val = v;
        }
    }
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = expf(*v - max_val);
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// Computes `xout[b] = W x[b]` for every row `b` of the batch, where `W` is
/// `(d, n)` row-major, `x` is `(batch, n)` and `xout` is `(batch, d)`, with
/// the bits of [`scalar::matmul`] and the fastest kernel the CPU supports.
///
/// The caller guarantees `w.len() >= d * n`, `x.len() == batch * n` and
/// `xout.len() == batch * d`.
pub fn matmul(xout: &mut [f32], x: &[f32], w: &[f32], n: usize, d: usize) {
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    {
        neon::matmul(xout, x, w, n, d);
    }
    #[cfg(not(all(target_arch = "aarch64", target_feature = "neon")))]
    {
        #[cfg(target_arch = "x86_64")]
        if avx2::is_available() {
            // SAFETY: is_available() found AVX2 on this CPU.
            unsafe { avx2::matmul(xout, x, w, n, d) };
            return;
        }
        scalar::matmul(xout, x, w, n, d);
    }
}

/// Quantizes each group of `group_size` values of `x` to int8 with one scale,
/// as runq.c: `scale = max|x| / 127`, `q = round(x / scale)`.
///
/// A group of zeros gets scale 0 and q 0 (runq.c divides by zero there).
/// `q.len() == x.len()` and `s.len() == x.len() / group_size`.
pub fn quantize(q: &mut [i8], s: &mut [f32], x: &[f32], group_size: usize) {
    for ((xg, qg), scale_out) in x
        .chunks_exact(group_size)
        .zip(q.chunks_exact_mut(group_size))
        .zip(s)
    {
        let mut wmax = 0.0f32;
        for &v in xg {
            let a = v.abs();
            if a > wmax {
                wmax = a;
            }
        }
        let scale = wmax / 127.0;
        *scale_out = scale;
        for (qv, &v) in qg.iter_mut().zip(xg) {
            *qv = if scale == 0.0 {
                0
            } else {
                roundf(v / scale) as i8
            };
        }
    }
}

/// Computes `xout[b] = W xq[b]` for Q8_0 weights and quantized activations,
/// with the bits of [`scalar::matmul_q8`] (runq.c's order) and the fastest
/// kernel the CPU supports.
///
/// `xq` is `(batch, n)` int8 with `xs` `(batch, n / group_size)` scales; `w`
/// holds `(d, n)` values; `xout` is `(batch, d)`.
pub fn matmul_q8(xout: &mut [f32], xq: &[i8], xs: &[f32], w: QTensor<'_>, n: usize, d: usize) {
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    {
        neon::matmul_q8(xout, xq, xs, w, n, d);
    }
    #[cfg(not(all(target_arch = "aarch64", target_feature = "neon")))]
    {
        #[cfg(target_arch = "x86_64")]
        if avx2::is_available() {
            // SAFETY: is_available() found AVX2 on this CPU.
            unsafe { avx2::matmul_q8(xout, xq, xs, w, n, d) };
            return;
        }
        scalar::matmul_q8(xout, xq, xs, w, n, d);
    }
}
