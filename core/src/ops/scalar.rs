//! Scalar reference matmuls, in run.c's and runq.c's operation order.
//!
//! The SIMD kernels are tested bit for bit against these functions, and
//! [`super::matmul`] and [`super::matmul_q8`] fall back to them where no
//! faster kernel applies.

use super::Strided;
use crate::math::roundf;
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

/// Computes `xout[b * out_stride + i] = dot(w.row(i), x.row(b))` for every
/// row `b` of `x` and row `i` of `w`, each a sum in index order: the
/// attention scores of several queries of one head against its keys in the
/// KV cache, for example.
///
/// The caller guarantees valid operands ([`Strided::is_valid`]), rows of the
/// same length, and `out_stride >= w.rows` with room in `xout` for every
/// output row.
pub fn matmul_strided(xout: &mut [f32], out_stride: usize, x: Strided<'_>, w: Strided<'_>) {
    for b in 0..x.rows {
        let x_row = x.row(b);
        for i in 0..w.rows {
            let mut val = 0.0f32;
            for (&wv, &xv) in w.row(i).iter().zip(x_row) {
                val += wv * xv;
            }
            xout[b * out_stride + i] = val;
        }
    }
}

/// Computes `xout[c] = sum over t of a[t] * v[t * stride + c]` for every
/// `c < xout.len()`, adding in order of `t` from 0.0: run.c's weighted sum
/// of the values of one attention head, one position every `stride` values.
///
/// The caller guarantees `stride >= xout.len()` and, unless `a` is empty,
/// `v.len() >= (a.len() - 1) * stride + xout.len()`.
pub fn weighted_sum(xout: &mut [f32], a: &[f32], v: &[f32], stride: usize) {
    let n = xout.len();
    xout.fill(0.0);
    for (t, &weight) in a.iter().enumerate() {
        let row = &v[t * stride..t * stride + n];
        for (out, &value) in xout.iter_mut().zip(row) {
            *out += weight * value;
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

/// Quantizes each group of `group_size` values of `x` to int8 with one scale,
/// as runq.c: `scale = max|x| / 127`, `q = round(x / scale)`, where round
/// takes halves away from zero and the cast saturates (NaN becomes 0).
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
