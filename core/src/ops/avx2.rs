//! AVX2 matmul kernels with the bits of the scalar reference.
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

use core::arch::x86_64::*;

use super::scalar;
use crate::weights::QTensor;

/// Maximum batch rows that one pass over a panel of `W` serves. Larger
/// batches take several passes, which reread the panel from cache.
const FP32_TOKENS: usize = 8;

/// Rows of `W` that every pass over the batch reads before the kernel moves
/// on, so that later passes find them in cache (32 rows of n = 768 are
/// 96 KiB).
const PANEL_ROWS: usize = 32;

/// How many calls of [`Q8Rows::rows`] ahead the Q8_0 kernel prefetches
/// weights. Reading 8 rows side by side in 64-byte steps defeats the
/// hardware prefetcher: for d = 32000, n = 768, batch 1 the kernel took
/// 3.6 to 4.4 ms without this and 1.9 to 3.2 ms with it, on a shared AMD EPYC
/// virtual machine whose timings vary by about 30 %.
const Q8_PREFETCH_CALLS: usize = 2;

/// Returns whether this CPU has AVX2, so that [`matmul`] and [`matmul_q8`]
/// may be called.
///
/// With the `std` feature the CPU is queried once and the result cached.
/// Without it only a build with the `avx2` target feature enabled
/// (`-C target-feature=+avx2` or a matching `-C target-cpu`) reports true.
pub fn is_available() -> bool {
    #[cfg(feature = "std")]
    {
        use core::sync::atomic::{AtomicU8, Ordering};

        const UNKNOWN: u8 = 0;
        const ABSENT: u8 = 1;
        const PRESENT: u8 = 2;
        static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

        match STATE.load(Ordering::Relaxed) {
            PRESENT => true,
            ABSENT => false,
            _ => {
                let found = std::is_x86_feature_detected!("avx2");
                STATE.store(if found { PRESENT } else { ABSENT }, Ordering::Relaxed);
                found
            }
        }
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
fn balanced_pass(remaining: usize, max: usize) -> usize {
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

    let full_rows = d - d % 8;
    for panel in (0..full_rows).step_by(PANEL_ROWS) {
        let panel_end = (panel + PANEL_ROWS).min(full_rows);
        let mut t0 = 0;
        while t0 < batch {
            let count = balanced_pass(batch - t0, FP32_TOKENS);
            let x_rows = &x[t0 * n..(t0 + count) * n];
            // Each accumulator is one chain of dependent adds, so a pass
            // with few batch rows takes two 8-row blocks at once to keep
            // more chains in flight. Four blocks were slower for a W that
            // streams from memory, measured on an AMD EPYC virtual machine.
            let blocks = if count <= 3 { 2 } else { 1 };
            let mut i = panel;
            while i + 8 * blocks <= panel_end {
                let w_rows = &w[i * n..(i + 8 * blocks) * n];
                rows_pass(blocks, count, xout, x_rows, w_rows, n, d, i, t0);
                i += 8 * blocks;
            }
            while i < panel_end {
                let w_rows = &w[i * n..(i + 8) * n];
                rows_pass(1, count, xout, x_rows, w_rows, n, d, i, t0);
                i += 8;
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

/// Calls [`rows`] with `blocks` 8-row blocks and `count` batch rows as
/// constants. [`matmul_avx2`] passes only the combinations listed here.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn rows_pass(
    blocks: usize,
    count: usize,
    xout: &mut [f32],
    x_rows: &[f32],
    w_rows: &[f32],
    n: usize,
    d: usize,
    i: usize,
    t0: usize,
) {
    match (blocks, count) {
        (2, 1) => rows::<2, 1>(xout, x_rows, w_rows, n, d, i, t0),
        (2, 2) => rows::<2, 2>(xout, x_rows, w_rows, n, d, i, t0),
        (2, 3) => rows::<2, 3>(xout, x_rows, w_rows, n, d, i, t0),
        (1, 1) => rows::<1, 1>(xout, x_rows, w_rows, n, d, i, t0),
        (1, 2) => rows::<1, 2>(xout, x_rows, w_rows, n, d, i, t0),
        (1, 3) => rows::<1, 3>(xout, x_rows, w_rows, n, d, i, t0),
        (1, 4) => rows::<1, 4>(xout, x_rows, w_rows, n, d, i, t0),
        (1, 5) => rows::<1, 5>(xout, x_rows, w_rows, n, d, i, t0),
        (1, 6) => rows::<1, 6>(xout, x_rows, w_rows, n, d, i, t0),
        (1, 7) => rows::<1, 7>(xout, x_rows, w_rows, n, d, i, t0),
        (1, 8) => rows::<1, 8>(xout, x_rows, w_rows, n, d, i, t0),
        _ => unreachable!("no fp32 AVX2 kernel for {blocks} blocks of {count} batch rows"),
    }
}

/// Writes output rows `i..i + 8 * R` for the `T` batch rows in `x_rows`, the
/// first of which is batch row `t0`. `w_rows` is rows `i..i + 8 * R` of `W`.
#[target_feature(enable = "avx2")]
fn rows<const R: usize, const T: usize>(
    xout: &mut [f32],
    x_rows: &[f32],
    w_rows: &[f32],
    n: usize,
    d: usize,
    i: usize,
    t0: usize,
) {
    assert_eq!(w_rows.len(), 8 * R * n);
    assert_eq!(x_rows.len(), T * n);

    // acc[r][t] is output rows i + 8r..i + 8r + 8 of batch row t0 + t.
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let x_ptr = x_rows.as_ptr();
    let mut j = 0;
    while j + 8 <= n {
        // Prefetching the next block's rows, one 64-byte line at a time,
        // made passes of 4 or more batch rows about 1.5 times faster when W
        // streams from memory (d = 32000, n = 768), but slowed two-block
        // passes, so they skip it.
        // The pointer may pass the end of W (wrapping_add permits that), and
        // a prefetch never faults.
        if R == 1 && j % 16 == 0 {
            for r in 8..16 {
                let line = w_rows.as_ptr().wrapping_add(r * n + j);
                _mm_prefetch::<_MM_HINT_T0>(line.cast());
            }
        }
        for (r, block_acc) in acc.iter_mut().enumerate() {
            // SAFETY: j + 8 <= n, and w_rows contains 8 * R rows of n
            // values, of which this tile reads rows 8r..8r + 8.
            let columns = unsafe { load_transposed(w_rows.as_ptr().add(8 * r * n + j), n) };
            for (k, column) in columns.iter().enumerate() {
                for (t, a) in block_acc.iter_mut().enumerate() {
                    // SAFETY: t < T and j + k < n, so the index is below
                    // T * n == x_rows.len().
                    let xv = _mm256_set1_ps(unsafe { *x_ptr.add(t * n + j + k) });
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(*column, xv));
                }
            }
        }
        j += 8;
    }

    for (r, block_acc) in acc.iter().enumerate() {
        for (t, a) in block_acc.iter().enumerate() {
            let start = (t0 + t) * d + i + 8 * r;
            let out: &mut [f32; 8] = (&mut xout[start..start + 8]).try_into().unwrap();
            // SAFETY: `out` is 8 writable f32, and storeu needs no alignment.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), *a) };
            if j < n {
                // n % 8 columns remain: each lane continues its sum in order.
                let x_row = &x_rows[t * n + j..(t + 1) * n];
                for (lane, val) in out.iter_mut().enumerate() {
                    let row = 8 * r + lane;
                    let w_row = &w_rows[row * n + j..(row + 1) * n];
                    *val = scalar::continue_dot(*val, w_row, x_row);
                }
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
unsafe fn load_transposed(p: *const f32, stride: usize) -> [__m256; 8] {
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
                    _mm_prefetch::<_MM_HINT_T0>(line);
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
