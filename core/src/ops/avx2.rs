//! AVX2 kernels with the bits of the scalar reference: fp32 and Q8_0
//! matmuls, the attention products, and activation quantization.
//!
//! fp32: a vector contains 8 output rows, never 8 terms of one dot product. The
//! kernel loads an 8 × 8 tile of `W` (8 rows, 8 consecutive columns),
//! transposes it in registers, and for each column `j` in order adds
//! `column_j * x[j]` to one accumulator per batch row, with `vmulps` then
//! `vaddps`. Each lane therefore computes `val += w[i][j] * x[j]` for
//! `j = 0, 1, ...` from 0.0, exactly as run.c. No FMA is emitted: the
//! functions enable only `avx2`, and Rust never fuses a separate multiply and
//! add.
//!
//! Q8_0: the int8 dot product of one group is summed in whatever order the
//! vector code likes, which is exact because i32 addition is associative
//! (a group would need more than 131072 values to overflow). The products
//! come from `_mm256_maddubs_epi16` when no activation is -128, the case in
//! which its i16 pair sums cannot saturate, and otherwise from values
//! widened to i16. The 8 lanes of a float vector hold 8 (output row, batch
//! row) pairs, and each lane's accumulation `val += (ival * w_scale) *
//! x_scale` runs over the groups in order, as runq.c.
//!
//! Attention: the scores of a head are the fp32 kernel applied to its keys,
//! one every `kv_dim` values of the cache, with up to 8 queries at once. The
//! weighted sum of values puts 8 consecutive outputs in a vector, each adding
//! its products in position order.
//!
//! Quantization divides with `vdivps`, which rounds as the scalar division
//! does, and rounds halves away from zero from the exact fraction
//! `y - trunc(y)`.

use core::arch::x86_64::*;

use super::scalar;
use super::Strided;
use crate::weights::QTensor;

/// Maximum batch rows that one pass over a panel of `W` serves. Larger
/// batches take several passes, which reread the panel from cache.
const FP32_TOKENS: usize = 8;

/// Rows of `W` that every pass over the batch reads before the kernel moves
/// on, so that later passes find them in cache (32 rows of n = 768 are
/// 96 KiB).
const PANEL_ROWS: usize = 32;

/// How many calls of [`Q8Rows::rows`] ahead the Q8_0 kernels prefetch
/// weights, into L2 (`_MM_HINT_T2`). Reading 8 rows side by side in 64-byte
/// steps defeats the hardware prefetcher. On the AMD EPYC virtual machine of
/// docs/BENCHMARKS.md, the VNNI kernel read the 110M shape's matrices at
/// batch 1 at 9.2 GB/s with prefetches into L1 (`_MM_HINT_T0`). With
/// prefetches into L2 it read 16 to 20 GB/s at 1 to 6 calls ahead, and the
/// most at 2.
pub(super) const Q8_PREFETCH_CALLS: usize = 2;

/// Returns whether this CPU has AVX2, so that [`matmul`] and [`matmul_q8`]
/// may be called.
///
/// With the `std` feature the CPU is queried once and the result cached.
/// Without it only a build with the `avx2` target feature enabled
/// (`-C target-feature=+avx2` or a matching `-C target-cpu`) reports true.
pub fn is_available() -> bool {
    #[cfg(feature = "std")]
    {
        static DETECTED: super::Detected = super::Detected::new();
        DETECTED.get(|| std::is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(target_feature = "avx2")
    }
}

/// Computes [`scalar::matmul`]'s result, bit for bit, with AVX2.
///
/// # Safety
///
/// The CPU must have AVX2, as [`is_available`] or
/// `std::is_x86_feature_detected!("avx2")` reports.
///
/// # Panics
///
/// Panics if `w` has fewer than `d * n` values or `xout` fewer than
/// `batch * d`, where `batch = x.len() / n`.
pub unsafe fn matmul(xout: &mut [f32], x: &[f32], w: &[f32], n: usize, d: usize) {
    // SAFETY: the caller guarantees that the CPU has AVX2.
    unsafe { matmul_avx2(xout, x, w, n, d) }
}

/// Computes [`scalar::matmul_strided`]'s result, bit for bit, with AVX2.
///
/// # Safety
///
/// The CPU must have AVX2, as [`is_available`] or
/// `std::is_x86_feature_detected!("avx2")` reports.
///
/// # Panics
///
/// Panics if a stride is below `n` or a slice is shorter than its rows.
pub unsafe fn matmul_strided(xout: &mut [f32], out_stride: usize, x: Strided<'_>, w: Strided<'_>) {
    // SAFETY: the caller guarantees that the CPU has AVX2.
    unsafe { matmul_strided_avx2(xout, out_stride, x, w) }
}

#[target_feature(enable = "avx2")]
fn matmul_strided_avx2(xout: &mut [f32], out_stride: usize, x: Strided<'_>, w: Strided<'_>) {
    let (n, batch, d) = (x.len, x.rows, w.rows);
    assert_eq!(w.len, n, "matmul_strided: x and W rows differ in length");
    assert!(
        x.is_valid() && w.is_valid(),
        "matmul_strided: a stride is below the row length or a slice is too short"
    );
    if batch == 0 || d == 0 {
        return;
    }
    assert!(
        out_stride >= d && xout.len() >= (batch - 1) * out_stride + d,
        "matmul_strided: xout is shorter than its rows"
    );
    let op = Operands {
        x: x.values,
        x_stride: x.stride,
        w: w.values,
        w_stride: w.stride,
        n,
        out_stride,
    };
    let full_rows = d - d % 8;
    let mut t0 = 0;
    while t0 < batch {
        let count = balanced_pass(batch - t0, FP32_TOKENS);
        for i in (0..full_rows).step_by(8) {
            op.rows_pass(count, xout, i, t0);
        }
        t0 += count;
    }
    for b in 0..batch {
        let x_row = x.row(b);
        for i in full_rows..d {
            xout[b * out_stride + i] = scalar::continue_dot(0.0, w.row(i), x_row);
        }
    }
}

/// Computes [`scalar::weighted_sum`]'s result, bit for bit, with AVX2.
///
/// # Safety
///
/// The CPU must have AVX2, as [`is_available`] or
/// `std::is_x86_feature_detected!("avx2")` reports.
///
/// # Panics
///
/// Panics if `stride < xout.len()` or `v` is shorter than
/// `(a.len() - 1) * stride + xout.len()`.
pub unsafe fn weighted_sum(xout: &mut [f32], a: &[f32], v: &[f32], stride: usize) {
    // SAFETY: the caller guarantees that the CPU has AVX2.
    unsafe { weighted_sum_avx2(xout, a, v, stride) }
}

#[target_feature(enable = "avx2")]
fn weighted_sum_avx2(xout: &mut [f32], a: &[f32], v: &[f32], stride: usize) {
    let n = xout.len();
    assert!(stride >= n, "weighted_sum: stride is below the row length");
    if a.is_empty() {
        xout.fill(0.0);
        return;
    }
    assert!(
        v.len() >= (a.len() - 1) * stride + n,
        "weighted_sum: V is shorter than its rows"
    );
    // Lanes are 8 consecutive output values, and each adds its products
    // in row order from 0.0, as the scalar loop. Blocks of 32 values keep 4
    // independent chains in flight.
    let mut i = 0;
    while i + 32 <= n {
        weighted_columns::<4>(&mut xout[i..i + 32], a, &v[i..], stride);
        i += 32;
    }
    while i + 8 <= n {
        weighted_columns::<1>(&mut xout[i..i + 8], a, &v[i..], stride);
        i += 8;
    }
    if i < n {
        scalar::weighted_sum(&mut xout[i..], a, &v[i..], stride);
    }
}

/// Writes `xout[c] = sum over t of a[t] * v[t * stride + c]` for the
/// `8 * B` values of `xout`, adding in order of `t` from 0.0.
#[target_feature(enable = "avx2")]
fn weighted_columns<const B: usize>(xout: &mut [f32], a: &[f32], v: &[f32], stride: usize) {
    assert_eq!(xout.len(), 8 * B);
    let mut acc = [_mm256_setzero_ps(); B];
    for (t, &weight) in a.iter().enumerate() {
        let row = &v[t * stride..t * stride + 8 * B];
        let weight = _mm256_set1_ps(weight);
        for (b, acc) in acc.iter_mut().enumerate() {
            // SAFETY: `row` has 8 * B values, and loadu needs no alignment.
            let values = unsafe { _mm256_loadu_ps(row.as_ptr().add(8 * b)) };
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(weight, values));
        }
    }
    for (b, acc) in acc.iter().enumerate() {
        // SAFETY: xout has 8 * B values, and storeu needs no alignment.
        unsafe { _mm256_storeu_ps(xout.as_mut_ptr().add(8 * b), *acc) };
    }
}

/// Computes [`scalar::quantize`]'s result, bit for bit, with AVX2.
///
/// Group sizes that are not a multiple of 8 run the scalar kernel.
///
/// # Safety
///
/// The CPU must have AVX2, as [`is_available`] or
/// `std::is_x86_feature_detected!("avx2")` reports.
pub unsafe fn quantize(q: &mut [i8], s: &mut [f32], x: &[f32], group_size: usize) {
    if !group_size.is_multiple_of(8) {
        scalar::quantize(q, s, x, group_size);
        return;
    }
    // SAFETY: the caller guarantees that the CPU has AVX2.
    unsafe { quantize_avx2(q, s, x, group_size) }
}

#[target_feature(enable = "avx2")]
fn quantize_avx2(q: &mut [i8], s: &mut [f32], x: &[f32], group_size: usize) {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    for ((xg, qg), scale_out) in x
        .chunks_exact(group_size)
        .zip(q.chunks_exact_mut(group_size))
        .zip(s)
    {
        // max |x|: `_mm256_max_ps(a, m)` is `a > m ? a : m`, the scalar
        // comparison, so a NaN never enters `m`. The maximum of the lanes
        // does not depend on the order.
        let mut m = _mm256_setzero_ps();
        for chunk in xg.chunks_exact(8) {
            // SAFETY: `chunk` is 8 readable f32, and loadu needs no alignment.
            let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            m = _mm256_max_ps(_mm256_and_ps(v, abs_mask), m);
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` is 8 writable f32, and storeu needs no alignment.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
        let wmax = lanes
            .iter()
            .fold(0.0f32, |wmax, &a| if a > wmax { a } else { wmax });
        let scale = wmax / 127.0;
        *scale_out = scale;
        if scale == 0.0 {
            qg.fill(0);
            continue;
        }
        let scale_v = _mm256_set1_ps(scale);
        for (qc, chunk) in qg.chunks_exact_mut(8).zip(xg.chunks_exact(8)) {
            // SAFETY: `chunk` is 8 readable f32, and loadu needs no alignment.
            let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
            let bytes = quantize8(_mm256_div_ps(v, scale_v));
            // SAFETY: `qc` is 8 writable bytes, and storel needs no alignment.
            unsafe { _mm_storel_epi64(qc.as_mut_ptr().cast(), bytes) };
        }
    }
}

/// Returns `roundf(y) as i8` for the 8 lanes of `y` in the low 8 bytes:
/// halves round away from zero, values beyond the i8 range saturate, and
/// NaN becomes 0, as Rust's float-to-int cast.
#[target_feature(enable = "avx2")]
fn quantize8(y: __m256) -> __m128i {
    // y - trunc(y) is exact, so comparing its magnitude with 0.5 decides the
    // rounding exactly. Adding ±1 to an integer below 2^24 is exact too.
    let truncated = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let fraction = _mm256_and_ps(_mm256_sub_ps(y, truncated), abs_mask);
    let round_up = _mm256_cmp_ps::<_CMP_GE_OQ>(fraction, _mm256_set1_ps(0.5));
    let one = _mm256_or_ps(_mm256_and_ps(y, _mm256_set1_ps(-0.0)), _mm256_set1_ps(1.0));
    let rounded = _mm256_add_ps(truncated, _mm256_and_ps(round_up, one));
    // NaN to 0, then clamp to the i8 range; both comparisons are ordered.
    let ordered = _mm256_cmp_ps::<_CMP_ORD_Q>(y, y);
    let rounded = _mm256_and_ps(rounded, ordered);
    let clamped = _mm256_min_ps(
        _mm256_max_ps(rounded, _mm256_set1_ps(-128.0)),
        _mm256_set1_ps(127.0),
    );
    let ints = _mm256_cvtps_epi32(clamped);
    // Narrow i32 -> i16 -> i8 within each 128-bit half, where nothing
    // saturates any more, then bring the two halves' 4 bytes together.
    let words = _mm256_packs_epi32(ints, ints);
    let bytes = _mm256_packs_epi16(words, words);
    let joined = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
    _mm256_castsi256_si128(joined)
}

/// Computes [`scalar::matmul_q8`]'s result, bit for bit, with AVX2.
///
/// Group sizes that are not a multiple of 8 run the scalar kernel.
///
/// # Safety
///
/// The CPU must have AVX2, as [`is_available`] or
/// `std::is_x86_feature_detected!("avx2")` reports.
///
/// # Panics
///
/// Panics if `w`, `xs` or `xout` is shorter than the shapes `n`, `d` and
/// `batch = xq.len() / n` require.
pub unsafe fn matmul_q8(
    xout: &mut [f32],
    xq: &[i8],
    xs: &[f32],
    w: QTensor<'_>,
    n: usize,
    d: usize,
) {
    if !w.group_size.is_multiple_of(8) {
        scalar::matmul_q8(xout, xq, xs, w, n, d);
        return;
    }
    // SAFETY: the caller guarantees that the CPU has AVX2.
    unsafe { matmul_q8_avx2(xout, xq, xs, w, n, d) }
}

/// Returns how many of the `remaining` batch rows the next pass serves, at
/// most `max`, splitting the batch into as few and as equal passes as
/// possible (9 rows with `max` 4 take passes of 3, 3 and 3).
pub(super) fn balanced_pass(remaining: usize, max: usize) -> usize {
    let passes = remaining.div_ceil(max);
    remaining.div_ceil(passes)
}

#[target_feature(enable = "avx2")]
fn matmul_avx2(xout: &mut [f32], x: &[f32], w: &[f32], n: usize, d: usize) {
    let batch = x.len() / n;
    debug_assert_eq!(xout.len(), batch * d);
    assert!(w.len() >= d * n, "matmul: W has fewer than d * n values");
    assert!(
        xout.len() >= batch * d,
        "matmul: xout is shorter than batch * d"
    );

    let op = Operands {
        x,
        x_stride: n,
        w,
        w_stride: n,
        n,
        out_stride: d,
    };
    let full_rows = d - d % 8;
    for panel in (0..full_rows).step_by(PANEL_ROWS) {
        let panel_end = (panel + PANEL_ROWS).min(full_rows);
        let mut t0 = 0;
        while t0 < batch {
            let count = balanced_pass(batch - t0, FP32_TOKENS);
            for i in (panel..panel_end).step_by(8) {
                op.rows_pass(count, xout, i, t0);
            }
            t0 += count;
        }
    }

    // The last d % 8 rows do not fill a vector.
    for i in full_rows..d {
        let w_row = &w[i * n..(i + 1) * n];
        for b in 0..batch {
            xout[b * d + i] = scalar::continue_dot(0.0, w_row, &x[b * n..(b + 1) * n]);
        }
    }
}

/// The operands of [`rows`]. `x` contains batch rows of `n` values, one
/// every `x_stride` values, and `w` contains rows of `W`, one every
/// `w_stride` values. Output row `i` of batch row `b` goes to
/// `xout[b * out_stride + i]`.
#[derive(Clone, Copy)]
struct Operands<'a> {
    x: &'a [f32],
    x_stride: usize,
    w: &'a [f32],
    w_stride: usize,
    n: usize,
    out_stride: usize,
}

impl Operands<'_> {
    /// Calls [`rows`] with `count` batch rows as a constant.
    #[target_feature(enable = "avx2")]
    fn rows_pass(self, count: usize, xout: &mut [f32], i: usize, t0: usize) {
        match count {
            1 => rows::<1>(self, xout, i, t0),
            2 => rows::<2>(self, xout, i, t0),
            3 => rows::<3>(self, xout, i, t0),
            4 => rows::<4>(self, xout, i, t0),
            5 => rows::<5>(self, xout, i, t0),
            6 => rows::<6>(self, xout, i, t0),
            7 => rows::<7>(self, xout, i, t0),
            8 => rows::<8>(self, xout, i, t0),
            _ => unreachable!("no fp32 AVX2 kernel for {count} batch rows"),
        }
    }
}

/// Writes output rows `i..i + 8` for batch rows `t0..t0 + T`.
#[target_feature(enable = "avx2")]
fn rows<const T: usize>(op: Operands<'_>, xout: &mut [f32], i: usize, t0: usize) {
    let Operands {
        x,
        x_stride,
        w,
        w_stride,
        n,
        out_stride,
    } = op;
    assert!(x_stride >= n);
    assert!(w_stride >= n);
    assert!(x.len() >= (t0 + T - 1) * x_stride + n);
    assert!(w.len() >= (i + 7) * w_stride + n);
    let x_rows = &x[t0 * x_stride..];
    let w_rows = &w[i * w_stride..];

    // acc[t] is output rows i..i + 8 of batch row t0 + t, one chain of
    // dependent adds. With 8 rows at a time the kernel still waits on memory
    // rather than on those adds. Blocks of 16 rows with two chains were
    // slower, because more rows read side by side make more streams for the
    // prefetcher to follow.
    let mut acc = [_mm256_setzero_ps(); T];
    let x_ptr = x_rows.as_ptr();
    let w_ptr = w_rows.as_ptr();
    let mut j = 0;
    while j + 8 <= n {
        // Every 64 bytes of a row, prefetch the same line of each of the
        // next 8 rows into L2. The hint matters: prefetching into L1
        // (`_MM_HINT_T0`) held back the misses that L2 could keep in flight.
        // The pointer may pass the end of W (wrapping_add permits that), and
        // a prefetch never faults.
        if j % 16 == 0 {
            for r in 8..16 {
                let line = w_ptr.wrapping_add(r * w_stride + j);
                _mm_prefetch::<_MM_HINT_T2>(line.cast());
            }
        }
        // SAFETY: j + 8 <= n, and w_rows contains 8 rows of n values at
        // stride w_stride (asserted above).
        let columns = unsafe { load_transposed(w_ptr.add(j), w_stride) };
        for (k, column) in columns.iter().enumerate() {
            for (t, a) in acc.iter_mut().enumerate() {
                // SAFETY: t < T and j + k < n, so the index is inside batch
                // row t of x_rows (asserted above).
                let xv = _mm256_set1_ps(unsafe { *x_ptr.add(t * x_stride + j + k) });
                *a = _mm256_add_ps(*a, _mm256_mul_ps(*column, xv));
            }
        }
        j += 8;
    }

    for (t, a) in acc.iter().enumerate() {
        let start = (t0 + t) * out_stride + i;
        let out: &mut [f32; 8] = (&mut xout[start..start + 8]).try_into().unwrap();
        // SAFETY: `out` is 8 writable f32, and storeu needs no alignment.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), *a) };
        if j < n {
            // n % 8 columns remain: each lane continues its sum in order.
            let x_row = &x_rows[t * x_stride + j..t * x_stride + n];
            for (row, val) in out.iter_mut().enumerate() {
                let w_row = &w_rows[row * w_stride + j..row * w_stride + n];
                *val = scalar::continue_dot(*val, w_row, x_row);
            }
        }
    }
}

/// Loads the 8 × 8 tile whose row `r`, column `c` is `*p.add(r * stride + c)`
/// and returns its columns: lane `r` of element `c` is that value.
///
/// # Safety
///
/// `p.add(r * stride + c)` must be readable for every `r < 8` and `c < 8`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn load_transposed(p: *const f32, stride: usize) -> [__m256; 8] {
    // Row r's 4-column halves go to 128-bit lane 0 for r < 4 and lane 1 for
    // r >= 4, so only in-lane shuffles are needed afterwards.
    // SAFETY: each call reads rows r and r + 4 < 8 at columns c..c + 4 <= 8,
    // readable by this function's contract.
    let (r0, r1, r2, r3, r4, r5, r6, r7) = unsafe {
        (
            load_rows_r_and_r4(p, stride, 0, 0),
            load_rows_r_and_r4(p, stride, 1, 0),
            load_rows_r_and_r4(p, stride, 2, 0),
            load_rows_r_and_r4(p, stride, 3, 0),
            load_rows_r_and_r4(p, stride, 0, 4),
            load_rows_r_and_r4(p, stride, 1, 4),
            load_rows_r_and_r4(p, stride, 2, 4),
            load_rows_r_and_r4(p, stride, 3, 4),
        )
    };
    let [c0, c1, c2, c3] = transpose4(r0, r1, r2, r3);
    let [c4, c5, c6, c7] = transpose4(r4, r5, r6, r7);
    [c0, c1, c2, c3, c4, c5, c6, c7]
}

/// Returns columns `c..c + 4` of row `r` in the low 128-bit lane and of row
/// `r + 4` in the high lane, where row `r` starts at `p.add(r * stride)`.
///
/// # Safety
///
/// Both 4-value ranges must be readable.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_rows_r_and_r4(p: *const f32, stride: usize, r: usize, c: usize) -> __m256 {
    // SAFETY: the caller guarantees both ranges are readable, and loadu
    // needs no alignment.
    unsafe {
        let low = _mm_loadu_ps(p.add(r * stride + c));
        let high = _mm_loadu_ps(p.add((r + 4) * stride + c));
        _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(low), high)
    }
}

/// Transposes the 4 × 4 matrix in each 128-bit lane of the four rows.
#[target_feature(enable = "avx2")]
fn transpose4(r0: __m256, r1: __m256, r2: __m256, r3: __m256) -> [__m256; 4] {
    // t0 = [r0c0 r1c0 r0c1 r1c1], t1 = [r0c2 r1c2 r0c3 r1c3], and likewise
    // t2, t3 for rows 2 and 3 (per 128-bit lane).
    let t0 = _mm256_unpacklo_ps(r0, r1);
    let t1 = _mm256_unpackhi_ps(r0, r1);
    let t2 = _mm256_unpacklo_ps(r2, r3);
    let t3 = _mm256_unpackhi_ps(r2, r3);
    [
        _mm256_shuffle_ps::<0b01_00_01_00>(t0, t2),
        _mm256_shuffle_ps::<0b11_10_11_10>(t0, t2),
        _mm256_shuffle_ps::<0b01_00_01_00>(t1, t3),
        _mm256_shuffle_ps::<0b11_10_11_10>(t1, t3),
    ]
}

#[target_feature(enable = "avx2")]
fn matmul_q8_avx2(xout: &mut [f32], xq: &[i8], xs: &[f32], w: QTensor<'_>, n: usize, d: usize) {
    let gs = w.group_size;
    let groups = n / gs;
    let batch = xq.len() / n;
    debug_assert_eq!(xout.len(), batch * d);
    assert!(
        gs.is_multiple_of(8),
        "matmul_q8: the AVX2 kernel needs groups of 8k"
    );
    assert_q8_shapes(xout, xq, xs, w, n, d);

    let q8 = Q8Rows { w, n, d, groups };
    // Activations from `ops::quantize` lie in [-127, 127], so batches of 2 or
    // more normally take the `maddubs` products, which are exact only without
    // -128. A batch of 1 keeps the widening products: with `maddubs` it was
    // about 5 % slower for a W that streams from memory (d = 32000,
    // n = 768), though about 10 % faster for one in cache (d = 2048), on
    // the AMD EPYC virtual machine of docs/BENCHMARKS.md.
    let maddubs = batch > 1 && !contains_i8_min(xq);
    // Passes of 8, 4, 2 and 1 batch rows fill all 8 lanes with 1, 2, 4 or 8
    // weight rows, and the batch rows of a pass share each weight load. All
    // passes over one 8-row block run before the next block, so later passes
    // find its weights in cache. Passes of any batch size up to 9 that left
    // lanes empty were slower for 5 batch rows (d = 2048, n = 768), because
    // the per-group reduction and scaling then serve fewer lanes.
    let full_rows = d - d % 8;
    for block in (0..full_rows).step_by(8) {
        let mut t0 = 0;
        while t0 < batch {
            let count = largest_power_of_two((batch - t0).min(8));
            let rows_per_call = 8 / count;
            for i in (block..block + 8).step_by(rows_per_call) {
                q8.pass(rows_per_call, count, maddubs, xout, xq, xs, i, t0);
            }
            t0 += count;
        }
    }

    // The last d % 8 rows, one at a time, with some lanes unused.
    for i in full_rows..d {
        let mut t0 = 0;
        while t0 < batch {
            let count = largest_power_of_two((batch - t0).min(8));
            q8.pass(1, count, maddubs, xout, xq, xs, i, t0);
            t0 += count;
        }
    }
}

/// Panics unless `w`, `xs` and `xout` are long enough for a Q8_0 matmul of
/// `batch = xq.len() / n` rows against the `(d, n)` matrix `w`.
pub(super) fn assert_q8_shapes(
    xout: &[f32],
    xq: &[i8],
    xs: &[f32],
    w: QTensor<'_>,
    n: usize,
    d: usize,
) {
    let groups = n / w.group_size;
    let batch = xq.len() / n;
    assert!(
        w.q.len() >= d * n,
        "matmul_q8: W has fewer than d * n values"
    );
    assert!(
        w.scales.len() >= 4 * d * groups,
        "matmul_q8: W has fewer than d * n / group_size scales"
    );
    assert!(
        xs.len() >= batch * groups,
        "matmul_q8: xs has fewer than batch * n / group_size scales"
    );
    assert!(
        xout.len() >= batch * d,
        "matmul_q8: xout is shorter than batch * d"
    );
}

/// Returns the largest power of two not above `v`, which is at least 1.
fn largest_power_of_two(v: usize) -> usize {
    1 << v.ilog2()
}

/// Returns whether `v` contains -128.
#[target_feature(enable = "avx2")]
fn contains_i8_min(v: &[i8]) -> bool {
    let min = _mm256_set1_epi8(i8::MIN);
    let mut chunks = v.chunks_exact(32);
    let mut found = _mm256_setzero_si256();
    for chunk in &mut chunks {
        // SAFETY: `chunk` is 32 readable bytes, and loadu needs no alignment.
        let bytes = unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) };
        found = _mm256_or_si256(found, _mm256_cmpeq_epi8(bytes, min));
    }
    _mm256_movemask_epi8(found) != 0 || chunks.remainder().contains(&i8::MIN)
}

/// The operands of one Q8_0 matmul that stay fixed across its calls of
/// [`Q8Rows::rows`].
struct Q8Rows<'a> {
    w: QTensor<'a>,
    n: usize,
    d: usize,
    groups: usize,
}

impl Q8Rows<'_> {
    /// Calls [`Q8Rows::rows`] for weight rows `i..i + row_count` and batch
    /// rows `t0..t0 + count`, with `row_count`, `count` and `maddubs` as
    /// constants.
    /// [`matmul_q8_avx2`] passes only the combinations listed here.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    fn pass(
        &self,
        row_count: usize,
        count: usize,
        maddubs: bool,
        xout: &mut [f32],
        xq: &[i8],
        xs: &[f32],
        i: usize,
        t0: usize,
    ) {
        let (n, groups) = (self.n, self.groups);
        let x_rows = &xq[t0 * n..(t0 + count) * n];
        let x_scales = &xs[t0 * groups..(t0 + count) * groups];
        macro_rules! dispatch {
            ($(($r:literal, $t:literal)),*) => {
                match (row_count, count, maddubs) {
                    $(
                        ($r, $t, true) => self.rows::<$r, $t, true>(xout, x_rows, x_scales, i, t0),
                        ($r, $t, false) => self.rows::<$r, $t, false>(xout, x_rows, x_scales, i, t0),
                    )*
                    _ => unreachable!("no Q8_0 AVX2 kernel for {row_count} rows of {count} batch rows"),
                }
            };
        }
        dispatch!((8, 1), (4, 2), (2, 4), (1, 1), (1, 2), (1, 4), (1, 8))
    }

    /// Writes output rows `i..i + R` for the `T` batch rows in `x_rows`, the
    /// first of which is batch row `t0`. `x_scales` holds their scales, one
    /// batch row after another.
    ///
    /// Lane `r * T + t` of the vectors computes weight row `i + r` against
    /// batch row `t`, so `R * T <= 8`.
    ///
    /// With `MADDUBS`, each product pair comes from `_mm256_maddubs_epi16`
    /// on `|w|` (as u8) and `x` with `w`'s sign. That is exact only when no
    /// `x` is -128: then `|w| <= 128` and `|x| <= 127` keep each i16 pair sum
    /// within 2 * 128 * 127 = 32512, below i16's saturation at 32767.
    /// Without it, the values widen to i16 and `_mm256_madd_epi16` forms the
    /// products, which is exact for all inputs.
    #[target_feature(enable = "avx2")]
    fn rows<const R: usize, const T: usize, const MADDUBS: bool>(
        &self,
        xout: &mut [f32],
        x_rows: &[i8],
        x_scales: &[f32],
        i: usize,
        t0: usize,
    ) {
        const { assert!(R * T <= 8) };
        let (n, d, groups) = (self.n, self.d, self.groups);
        let gs = self.w.group_size;
        assert!(gs.is_multiple_of(8));
        assert_eq!(x_rows.len(), T * n);
        assert_eq!(x_scales.len(), T * groups);
        let w_rows = &self.w.q[i * n..(i + R) * n];
        let w_scales = &self.w.scales[4 * i * groups..4 * (i + R) * groups];

        let w_ptr = w_rows.as_ptr();
        let x_ptr = x_rows.as_ptr();
        let mut acc = _mm256_setzero_ps();
        // Rows `Q8_PREFETCH_CALLS * R` after this call's rows are prefetched
        // up to this byte offset within a row.
        let mut prefetched = 0;
        for g in 0..groups {
            let start = g * gs;
            while prefetched < start + gs {
                for r in 0..R {
                    // The pointer may pass the end of W (wrapping_add
                    // permits that), and a prefetch never faults.
                    let line = w_ptr.wrapping_add((Q8_PREFETCH_CALLS * R + r) * n + prefetched);
                    _mm_prefetch::<_MM_HINT_T2>(line);
                }
                prefetched += 64;
            }

            let mut sums = [_mm256_setzero_si256(); 8];
            let mut k = 0;
            while k + 32 <= gs {
                // SAFETY: start + k + 32 <= (g + 1) * gs <= n, so for r < R
                // the read ends by R * n == w_rows.len(), and for t < T by
                // T * n == x_rows.len().
                unsafe {
                    for r in 0..R {
                        let wp = w_ptr.add(r * n + start + k);
                        for t in 0..T {
                            let xp = x_ptr.add(t * n + start + k);
                            let sum = &mut sums[r * T + t];
                            *sum = _mm256_add_epi32(*sum, dot32::<MADDUBS>(wp, xp));
                        }
                    }
                }
                k += 32;
            }
            if k + 16 <= gs {
                // SAFETY: as above with 16 in place of 32.
                unsafe {
                    for r in 0..R {
                        let wp = w_ptr.add(r * n + start + k);
                        let wv = _mm_loadu_si128(wp.cast());
                        for t in 0..T {
                            let xp = x_ptr.add(t * n + start + k);
                            let xv = _mm_loadu_si128(xp.cast());
                            let sum = &mut sums[r * T + t];
                            *sum = _mm256_add_epi32(*sum, dot16::<MADDUBS>(wv, xv));
                        }
                    }
                }
                k += 16;
            }
            if k < gs {
                // gs is a multiple of 8, so exactly 8 values remain. They
                // take the 16-value path with zeros in the upper half.
                // SAFETY: as above with 8 in place of 32.
                unsafe {
                    for r in 0..R {
                        let wp = w_ptr.add(r * n + start + k);
                        let wv = _mm_loadl_epi64(wp.cast());
                        for t in 0..T {
                            let xp = x_ptr.add(t * n + start + k);
                            let xv = _mm_loadl_epi64(xp.cast());
                            let sum = &mut sums[r * T + t];
                            *sum = _mm256_add_epi32(*sum, dot16::<MADDUBS>(wv, xv));
                        }
                    }
                }
            }

            let ivals = _mm256_cvtepi32_ps(sum_each(sums));
            let mut w_scale = [0.0f32; 8];
            let mut x_scale = [0.0f32; 8];
            for r in 0..R {
                let b = &w_scales[4 * (r * groups + g)..4 * (r * groups + g) + 4];
                let scale = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                for t in 0..T {
                    w_scale[r * T + t] = scale;
                    x_scale[r * T + t] = x_scales[t * groups + g];
                }
            }
            // runq.c's order: ((float)ival * w_scale) * x_scale, then add.
            let product = _mm256_mul_ps(_mm256_mul_ps(ivals, load8(&w_scale)), load8(&x_scale));
            acc = _mm256_add_ps(acc, product);
        }

        let mut vals = [0.0f32; 8];
        // SAFETY: `vals` is 8 writable f32, and storeu needs no alignment.
        unsafe { _mm256_storeu_ps(vals.as_mut_ptr(), acc) };
        for r in 0..R {
            for t in 0..T {
                xout[(t0 + t) * d + i + r] = vals[r * T + t];
            }
        }
    }
}

/// Returns 8 i32 lanes whose sum is the dot product of the 32 int8 values
/// at `w` and at `x`. With `MADDUBS`, no value at `x` may be -128 (see
/// [`Q8Rows::rows`]).
///
/// # Safety
///
/// 32 bytes must be readable at `w` and at `x`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot32<const MADDUBS: bool>(w: *const i8, x: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes at both pointers, and
    // loadu needs no alignment.
    unsafe {
        if MADDUBS {
            let wv = _mm256_loadu_si256(w.cast());
            let xv = _mm256_loadu_si256(x.cast());
            let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
            _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
        } else {
            let w_low = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.cast()));
            let w_high = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(16).cast()));
            let x_low = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.cast()));
            let x_high = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(16).cast()));
            _mm256_add_epi32(
                _mm256_madd_epi16(w_low, x_low),
                _mm256_madd_epi16(w_high, x_high),
            )
        }
    }
}

/// Returns 8 i32 lanes whose sum is the dot product of the 16 int8 values
/// in `w` and `x`, under the same condition as [`dot32`].
#[target_feature(enable = "avx2")]
#[inline]
fn dot16<const MADDUBS: bool>(w: __m128i, x: __m128i) -> __m256i {
    if MADDUBS {
        let pairs = _mm_maddubs_epi16(_mm_abs_epi8(w), _mm_sign_epi8(x, w));
        _mm256_zextsi128_si256(_mm_madd_epi16(pairs, _mm_set1_epi16(1)))
    } else {
        _mm256_madd_epi16(_mm256_cvtepi8_epi16(w), _mm256_cvtepi8_epi16(x))
    }
}

/// Loads 8 values into a vector.
#[target_feature(enable = "avx2")]
#[inline]
fn load8(v: &[f32; 8]) -> __m256 {
    _mm256_setr_ps(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7])
}

/// Returns a vector whose lane `t` is the sum of the 8 lanes of `v[t]`.
#[target_feature(enable = "avx2")]
fn sum_each(v: [__m256i; 8]) -> __m256i {
    // After two rounds of horizontal adds, lane t of 128-bit half h is the
    // sum of v[t]'s half h (t < 4 in `low`, t - 4 in `high`).
    let low = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let high = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    let first_halves = _mm256_permute2x128_si256::<0x20>(low, high);
    let second_halves = _mm256_permute2x128_si256::<0x31>(low, high);
    _mm256_add_epi32(first_halves, second_halves)
}
