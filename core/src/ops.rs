//! Kernels: rmsnorm, softmax, fp32 and Q8_0 matmul, activation quantization.
//!
//! These are the scalar reference kernels. Each reproduces run.c's (or
//! runq.c's) operation order exactly: sums start at 0.0 and accumulate in
//! index order, with a separate multiply and add and no FMA. `forward` calls
//! kernels only through this module, so a faster kernel that keeps the same
//! order per output element can replace one without touching `forward`.
//!
//! Matmuls are batched and weight-stationary: `x` holds `batch` rows of `n`
//! values, each weight row is read once and applied to every row of the
//! batch, and each output element still sums in its own sequential order, so
//! a batch gives the same bits as `batch` separate calls.

use crate::math::{expf, roundf, sqrtf};
use crate::weights::QTensor;

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
