//! Kernels: rmsnorm, softmax, fp32 and Q8_0 matmul, activation quantization,
//! and the two products of attention (scores and weighted sum of values).
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
//! once and the SIMD kernels up to 8 (9 for the VNNI one). Each output
//! element still sums in its own sequential order, so a batch gives the same
//! bits as `batch` separate calls. The attention scores of several tokens
//! ([`matmul_strided`]) share each key the same way.
//!
//! On x86-64, [`matmul_q8`] runs the AVX-512 VNNI kernel in [`vnni`] where
//! the CPU has it, and every kernel here with an AVX2 version in [`avx2`]
//! runs that one on CPUs with AVX2. CPU features are detected at run time
//! with the `std` feature and at compile time without it. [`matmul`] and
//! [`matmul_q8`] run NEON kernels on aarch64. Everything else runs the
//! scalar reference in [`scalar`]. The SIMD kernels vectorise across output
//! rows or batch rows, never along a float dot product, so their results
//! have the scalar bits. NaN payloads are the one exception: Rust does not
//! fix which NaN an operation returns, so a NaN output may differ in payload
//! bits between kernels.

use crate::math::{expf, sqrtf};
use crate::weights::QTensor;

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub mod neon;
pub mod relaxed;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod vnni;

/// A CPU feature test whose result is computed on first use and then cached,
/// because querying the CPU costs far more than a matmul row.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
struct Detected(core::sync::atomic::AtomicU8);

#[cfg(all(feature = "std", target_arch = "x86_64"))]
impl Detected {
    const UNKNOWN: u8 = 0;
    const ABSENT: u8 = 1;
    const PRESENT: u8 = 2;

    const fn new() -> Detected {
        Detected(core::sync::atomic::AtomicU8::new(Self::UNKNOWN))
    }

    /// Returns the cached result, or runs `detect` and caches its result.
    fn get(&self, detect: impl FnOnce() -> bool) -> bool {
        use core::sync::atomic::Ordering;

        match self.0.load(Ordering::Relaxed) {
            Self::PRESENT => true,
            Self::ABSENT => false,
            _ => {
                let found = detect();
                let state = if found { Self::PRESENT } else { Self::ABSENT };
                self.0.store(state, Ordering::Relaxed);
                found
            }
        }
    }
}

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

/// `rows` rows of `len` values inside `values`, row `r` starting at
/// `r * stride`: for example the keys of one attention head, one position
/// every `kv_dim` values of the KV cache.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    /// The values that contain the rows.
    pub values: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Values per row.
    pub len: usize,
    /// Distance between the starts of two rows, at least `len`.
    pub stride: usize,
}

impl<'a> Strided<'a> {
    /// Returns whether `stride >= len` and `values` contains every row.
    pub fn is_valid(&self) -> bool {
        self.stride >= self.len
            && (self.rows == 0
                || (self.rows - 1)
                    .checked_mul(self.stride)
                    .and_then(|start| start.checked_add(self.len))
                    .is_some_and(|end| end <= self.values.len()))
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &'a [f32] {
        &self.values[r * self.stride..r * self.stride + self.len]
    }
}

/// Computes `xout[b * out_stride + i] = dot(w.row(i), x.row(b))` for every
/// row `b` of `x` and row `i` of `w`, with the bits of
/// [`scalar::matmul_strided`] and the fastest kernel the CPU supports.
///
/// The caller guarantees valid operands ([`Strided::is_valid`]), rows of the
/// same length, and `out_stride >= w.rows` with room in `xout` for every
/// output row.
pub fn matmul_strided(xout: &mut [f32], out_stride: usize, x: Strided<'_>, w: Strided<'_>) {
    #[cfg(target_arch = "x86_64")]
    if avx2::is_available() {
        // SAFETY: is_available() found AVX2 on this CPU.
        unsafe { avx2::matmul_strided(xout, out_stride, x, w) };
        return;
    }
    scalar::matmul_strided(xout, out_stride, x, w);
}

/// Computes `xout[c] = sum over t of a[t] * v[t * stride + c]` for every
/// `c < xout.len()`, with the bits of [`scalar::weighted_sum`] and the
/// fastest kernel the CPU supports: the attention output of one head, from
/// its weights `a` and its values, one position every `kv_dim` values.
///
/// The caller guarantees `stride >= xout.len()` and, unless `a` is empty,
/// `v.len() >= (a.len() - 1) * stride + xout.len()`.
pub fn weighted_sum(xout: &mut [f32], a: &[f32], v: &[f32], stride: usize) {
    #[cfg(target_arch = "x86_64")]
    if avx2::is_available() {
        // SAFETY: is_available() found AVX2 on this CPU.
        unsafe { avx2::weighted_sum(xout, a, v, stride) };
        return;
    }
    scalar::weighted_sum(xout, a, v, stride);
}

/// Quantizes each group of `group_size` values of `x` to int8 with one scale,
/// as runq.c: `scale = max|x| / 127`, `q = round(x / scale)`, with the bits
/// of [`scalar::quantize`] and the fastest kernel the CPU supports.
///
/// A group of zeros gets scale 0 and q 0 (runq.c divides by zero there).
/// `q.len() == x.len()` and `s.len() == x.len() / group_size`.
pub fn quantize(q: &mut [i8], s: &mut [f32], x: &[f32], group_size: usize) {
    #[cfg(target_arch = "x86_64")]
    if avx2::is_available() {
        // SAFETY: is_available() found AVX2 on this CPU.
        unsafe { avx2::quantize(q, s, x, group_size) };
        return;
    }
    scalar::quantize(q, s, x, group_size);
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
        {
            if vnni::is_available() {
                // SAFETY: is_available() found AVX2, AVX-512 VNNI and VL on
                // this CPU.
                unsafe { vnni::matmul_q8(xout, xq, xs, w, n, d) };
                return;
            }
            if avx2::is_available() {
                // SAFETY: is_available() found AVX2 on this CPU.
                unsafe { avx2::matmul_q8(xout, xq, xs, w, n, d) };
                return;
            }
        }
        scalar::matmul_q8(xout, xq, xs, w, n, d);
    }
}
