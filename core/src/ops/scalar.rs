//! Scalar reference matmuls, in run.c's and runq.c's operation order.
//!
//! The SIMD kernels are tested bit for bit against these functions, and
//! [`super::matmul`] and [`super::matmul_q8`] fall back to them where no
//! faster kernel applies.

use crate::weights::QTensor;

/// Computes `xout[b] = W x[b]` for every row `b` of the batch, where `W` is
/// `(d, n)` row-major, `x` is `(batch, n)` and `xout` is `(batch, d)`.
///
/// The caller guarantees `w.len() >= d * n`, `x.len() == batch * n` and
/// `xout.len() == batch * d`.
pub fn matmul(xout: &mut [f32], x: &[f32], w: &[f32], n: usize, d: usize) {
    let batch = x.len() / n;
    debug_assert_eq!(xout.len(), batch * d);
    for (i, w_row) in w.chunks_exact(n).take(d).enumerate() {
        for b in 0..batch {
            let x_row = &x[b * n..(b + 1) * n];
            let mut val = 0.0f32;
            for (&wv, &xv) in w_row.iter().zip(x_row) {
                val += wv * xv;
            }
            xout[b * d + i] = val;
        }
    }
}

/// Continues the dot product `val += w[j] * x[j]` for each `j` in order,
/// starting from `val`, with the operations of [`matmul`]'s inner loop.
///
/// SIMD kernels use it for rows and columns that do not fill a vector, so
/// that those outputs keep the reference's bits.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[inline]
pub(crate) fn continue_dot(mut val: f32, w: &[f32], x: &[f32]) -> f32 {
    for (&wv, &xv) in w.iter().zip(x) {
        val += wv * xv;
    }
    val
}

/// Computes `xout[b] = W xq[b]` for Q8_0 weights and quantized activations,
/// as runq.c: per output row, for each group in order, an i32 dot product of
/// the int8 values, then `val += ((float)ival * w_scale) * x_scale`.
///
/// `xq` is `(batch, n)` int8 with `xs` `(batch, n / group_size)` scales; `w`
/// holds `(d, n)` values; `xout` is `(batch, d)`.
pub fn matmul_q8(xout: &mut [f32], xq: &[i8], xs: &[f32], w: QTensor<'_>, n: usize, d: usize) {
    let gs = w.group_size;
    let groups = n / gs;
    let batch = xq.len() / n;
    debug_assert_eq!(xout.len(), batch * d);
    for i in 0..d {
        let w_row = &w.q[i * n..(i + 1) * n];
        for b in 0..batch {
            let x_row = &xq[b * n..(b + 1) * n];
            let x_scales = &xs[b * groups..(b + 1) * groups];
            let mut val = 0.0f32;
            let groups_iter = x_row
                .chunks_exact(gs)
                .zip(w_row.chunks_exact(gs))
                .zip(x_scales);
            for (g, ((xg, wg), &x_scale)) in groups_iter.enumerate() {
                let mut ival = 0i32;
                for (&xv, &wv) in xg.iter().zip(wg) {
                    ival += i32::from(xv) * i32::from(wv);
                }
                val += (ival as f32 * w.scale(i * groups + g)) * x_scale;
            }
            xout[b * d + i] = val;
        }
    }
}
