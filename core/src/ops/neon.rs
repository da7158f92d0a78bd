//! NEON matmul kernels with the bits of the scalar reference.
//!
//! fp32: a vector contains 4 output rows, never 4 terms of one dot product. The
//! kernel loads a 4 × 4 tile of `W` (4 rows, 4 consecutive columns),
//! transposes it in registers, and for each column `j` in order adds
//! `column_j * x[j]` to one accumulator per batch row with `vmulq_f32` then
//! `vaddq_f32`, never `vfmaq_f32` or `vmlaq_f32`, so each lane computes
//! `val += w[i][j] * x[j]` for `j = 0, 1, ...` from 0.0, exactly as run.c.
//! Rust does not fuse a separate multiply and add; a release build for
//! aarch64-unknown-linux-gnu by rustc 1.95 contains no `fmla` or `fmadd`.
//!
//! Q8_0: the int8 dot product of one group is summed with widening NEON
//! multiplies and pairwise adds, exact because i32 addition is associative.
//! The float accumulation over the groups is scalar and in order, as runq.c.
//!
//! NEON is part of the aarch64 baseline that this module is compiled for, so
//! no runtime check is needed.
//!
//! NOTE: core/tests/kernels.rs passed for these kernels under qemu-aarch64
//! user-mode emulation only, not yet on aarch64 hardware.

use core::arch::aarch64::*;

use super::scalar;
use crate::weights::QTensor;

/// Maximum batch rows that one pass over a 4-row block of `W` serves: 4
/// transposed columns and 8 accumulators leave most of the 32 vector
/// registers free.
const FP32_TOKENS: usize = 8;

/// Computes [`scalar::matmul`]'s result, bit for bit, with NEON.
///
/// # Panics
///
/// Panics if `w` has fewer than `d * n` values or `xout` fewer than
/// `batch * d`, where `batch = x.len() / n`.
pub fn matmul(xout: &mut [f32], x: &[f32], w: &[f32], n: usize, d: usize) {
    // SAFETY: this module is compiled only when the build enables `neon`,
    // so every CPU the binary runs on has it.
    unsafe { matmul_neon(xout, x, w, n, d) }
}

#[target_feature(enable = "neon")]
fn matmul_neon(xout: &mut [f32], x: &[f32], w: &[f32], n: usize, d: usize) {
    let batch = x.len() / n;
    debug_assert_eq!(xout.len(), batch * d);
    assert!(w.len() >= d * n, "matmul: W has fewer than d * n values");
    assert!(
        xout.len() >= batch * d,
        "matmul: xout is shorter than batch * d"
    );

    let full_rows = d - d % 4;
    for i in (0..full_rows).step_by(4) {
        let w_rows = &w[i * n..(i + 4) * n];
        let mut t0 = 0;
        while t0 < batch {
            let count = (batch - t0).min(FP32_TOKENS);
            let x_rows = &x[t0 * n..(t0 + count) * n];
            match count {
                1 => rows4::<1>(xout, x_rows, w_rows, n, d, i, t0),
                2 => rows4::<2>(xout, x_rows, w_rows, n, d, i, t0),
                3 => rows4::<3>(xout, x_rows, w_rows, n, d, i, t0),
                4 => rows4::<4>(xout, x_rows, w_rows, n, d, i, t0),
                5 => rows4::<5>(xout, x_rows, w_rows, n, d, i, t0),
                6 => rows4::<6>(xout, x_rows, w_rows, n, d, i, t0),
                7 => rows4::<7>(xout, x_rows, w_rows, n, d, i, t0),
                _ => rows4::<FP32_TOKENS>(xout, x_rows, w_rows, n, d, i, t0),
            }
            t0 += count;
        }
    }

    // The last d % 4 rows do not fill a vector.
    for i in full_rows..d {
        let w_row = &w[i * n..(i + 1) * n];
        for b in 0..batch {
            xout[b * d + i] = scalar::continue_dot(0.0, w_row, &x[b * n..(b + 1) * n]);
        }
    }
}

/// Writes output rows `i..i + 4` for the `T` batch rows in `x_rows`, the
/// first of which is batch row `t0`. `w_rows` is rows `i..i + 4` of `W`.
#[target_feature(enable = "neon")]
fn rows4<const T: usize>(
    xout: &mut [f32],
    x_rows: &[f32],
    w_rows: &[f32],
    n: usize,
    d: usize,
    i: usize,
    t0: usize,
) {
    assert_eq!(w_rows.len(), 4 * n);
    assert_eq!(x_rows.len(), T * n);

    let mut acc = [vdupq_n_f32(0.0); T];
    let mut j = 0;
    while j + 4 <= n {
        let columns = load_transposed(w_rows, n, j);
        for (k, &column) in columns.iter().enumerate() {
            for (t, a) in acc.iter_mut().enumerate() {
                let xv = vdupq_n_f32(x_rows[t * n + j + k]);
                *a = vaddq_f32(*a, vmulq_f32(column, xv));
            }
        }
        j += 4;
    }

    for (t, &a) in acc.iter().enumerate() {
        let out = &mut xout[(t0 + t) * d + i..(t0 + t) * d + i + 4];
        // SAFETY: `out` is 4 writable f32, and vst1q_f32 needs only f32
        // alignment.
        unsafe { vst1q_f32(out.as_mut_ptr(), a) };
        if j < n {
            // n % 4 columns remain: each lane continues its sum in order.
            let x_row = &x_rows[t * n + j..(t + 1) * n];
            for (r, val) in out.iter_mut().enumerate() {
                let w_row = &w_rows[r * n + j..(r + 1) * n];
                *val = scalar::continue_dot(*val, w_row, x_row);
            }
        }
    }
}

/// Returns the columns of the 4 × 4 tile at rows `0..4`, columns `j..j + 4`
/// of `rows`, a row-major matrix with `n` columns: lane `r` of element `c`
/// is `rows[r * n + j + c]`.
#[target_feature(enable = "neon")]
fn load_transposed(rows: &[f32], n: usize, j: usize) -> [float32x4_t; 4] {
    let r0 = load4(&rows[j..j + 4]);
    let r1 = load4(&rows[n + j..n + j + 4]);
    let r2 = load4(&rows[2 * n + j..2 * n + j + 4]);
    let r3 = load4(&rows[3 * n + j..3 * n + j + 4]);
    // t0 = [r0c0 r1c0 r0c2 r1c2], t1 = [r0c1 r1c1 r0c3 r1c3], and likewise
    // t2, t3 for rows 2 and 3. Interleaving their 64-bit halves finishes the
    // transpose.
    let t0 = vtrn1q_f32(r0, r1);
    let t1 = vtrn2q_f32(r0, r1);
    let t2 = vtrn1q_f32(r2, r3);
    let t3 = vtrn2q_f32(r2, r3);
    let (t0, t1, t2, t3) = (
        vreinterpretq_f64_f32(t0),
        vreinterpretq_f64_f32(t1),
        vreinterpretq_f64_f32(t2),
        vreinterpretq_f64_f32(t3),
    );
    [
        vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)),
        vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)),
        vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)),
    ]
}

/// Loads the 4 values of `v` into a vector.
#[target_feature(enable = "neon")]
#[inline]
fn load4(v: &[f32]) -> float32x4_t {
    let v: &[f32; 4] = v.try_into().unwrap();
    // SAFETY: `v` is 4 readable f32, and vld1q_f32 needs only f32 alignment.
    unsafe { vld1q_f32(v.as_ptr()) }
}

/// Computes [`scalar::matmul_q8`]'s result, bit for bit, with NEON.
///
/// Group sizes that are not a multiple of 8 run the scalar kernel.
///
/// # Panics
///
/// Panics if `w`, `xs` or `xout` is shorter than the shapes `n`, `d` and
/// `batch = xq.len() / n` require.
pub fn matmul_q8(xout: &mut [f32], xq: &[i8], xs: &[f32], w: QTensor<'_>, n: usize, d: usize) {
    if !w.group_size.is_multiple_of(8) {
        scalar::matmul_q8(xout, xq, xs, w, n, d);
        return;
    }
    // SAFETY: this module is compiled only when the build enables `neon`,
    // so every CPU the binary runs on has it.
    unsafe { matmul_q8_neon(xout, xq, xs, w, n, d) }
}

#[target_feature(enable = "neon")]
fn matmul_q8_neon(xout: &mut [f32], xq: &[i8], xs: &[f32], w: QTensor<'_>, n: usize, d: usize) {
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
                let ival = dot_i8(xg, wg);
                val += (ival as f32 * w.scale(i * groups + g)) * x_scale;
            }
            xout[b * d + i] = val;
        }
    }
}

/// Returns the exact i32 dot product of `x` and `w`, whose common length is
/// a multiple of 8.
#[target_feature(enable = "neon")]
fn dot_i8(x: &[i8], w: &[i8]) -> i32 {
    let mut sums = vdupq_n_s32(0);
    for (xc, wc) in x.chunks_exact(8).zip(w.chunks_exact(8)) {
        let xc: &[i8; 8] = xc.try_into().unwrap();
        let wc: &[i8; 8] = wc.try_into().unwrap();
        // SAFETY: both arrays are 8 readable i8.
        let (xv, wv) = unsafe { (vld1_s8(xc.as_ptr()), vld1_s8(wc.as_ptr())) };
        // An i8 * i8 product fits i16 (at most 128 * 128 = 16384), and the
        // pairwise add widens to i32 before summing two of them.
        sums = vpadalq_s16(sums, vmull_s8(xv, wv));
    }
    vaddvq_s32(sums)
}
