//! AVX-512 VNNI Q8_0 matmul for batches, with the bits of the scalar
//! reference.
//!
//! `vpdpbusd` multiplies 4 unsigned bytes by 4 signed bytes, adds the 4
//! products and accumulates the sum into an i32 lane, in one instruction.
//! Both Q8_0 operands are signed, so the kernel flips the sign bit of each
//! weight, which turns `w` into the unsigned byte `w + 128`, and computes
//!
//! ```text
//! dot(w, x) = dot(w + 128, x) - 128 * sum(x)
//! ```
//!
//! The identity holds for every pair of int8 values, -128 included, so no
//! input needs a fallback. Both terms wrap modulo 2^32 alike, so their
//! difference is the exact group sum whenever that sum fits in an i32, which
//! is the same condition as for the scalar kernel (a group of more than
//! 131072 values could overflow).
//!
//! Lane `r` of every vector belongs to weight row `r` of an 8-row block, and
//! each lane's accumulation `val += (ival * w_scale) * x_scale` runs over the
//! groups in order, as runq.c. Single rows, groups that are not a multiple
//! of 32 values, and rows too long for the stack table of activation sums
//! take the AVX2 kernel, which is as fast for one row because that case
//! waits on memory.

use core::arch::x86_64::*;

use super::avx2::{self, assert_q8_shapes, balanced_pass, load_transposed, Q8_PREFETCH_CALLS};
use super::scalar;
use crate::weights::QTensor;

/// Returns whether this CPU has AVX2 and AVX-512 VNNI for 256-bit vectors, so
/// that [`matmul_q8`] may be called.
///
/// With the `std` feature the CPU is queried once and the result cached.
/// Without it only a build with the `avx2`, `avx512vnni` and `avx512vl`
/// target features enabled reports true.
pub fn is_available() -> bool {
    #[cfg(feature = "std")]
    {
        static DETECTED: super::Detected = super::Detected::new();
        DETECTED.get(|| {
            std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("avx512vnni")
                && std::is_x86_feature_detected!("avx512vl")
        })
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(all(
            target_feature = "avx2",
            target_feature = "avx512vnni",
            target_feature = "avx512vl"
        ))
    }
}

/// Computes [`scalar::matmul_q8`]'s result, bit for bit, with AVX-512 VNNI
/// for batches of 2 or more rows and groups of 32k values, and with
/// [`avx2::matmul_q8`] otherwise.
///
/// # Safety
///
/// The CPU must have AVX2, AVX-512 VNNI and AVX-512 VL, as [`is_available`]
/// reports.
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
    let gs = w.group_size;
    let batch = xq.len() / n;
    if batch < 2 || !gs.is_multiple_of(32) || n / gs > X_SUMS {
        // SAFETY: the caller guarantees that the CPU has AVX2.
        unsafe { avx2::matmul_q8(xout, xq, xs, w, n, d) };
        return;
    }
    // SAFETY: the caller guarantees that the CPU has AVX-512 VNNI and VL.
    unsafe { matmul_q8_vnni(xout, xq, xs, w, n, d) }
}

#[target_feature(enable = "avx512vnni,avx512vl")]
fn matmul_q8_vnni(xout: &mut [f32], xq: &[i8], xs: &[f32], w: QTensor<'_>, n: usize, d: usize) {
    let gs = w.group_size;
    let groups = n / gs;
    let batch = xq.len() / n;
    debug_assert_eq!(xout.len(), batch * d);
    assert!(
        gs.is_multiple_of(32) && groups <= X_SUMS,
        "matmul_q8: the VNNI kernel needs groups of 32k values and at most X_SUMS groups"
    );
    assert_q8_shapes(xout, xq, xs, w, n, d);

    // The kernel needs each batch row's activation sum per group. These sums
    // are computed once for as many batch rows as `sums` has room for. Those
    // rows then pass over every 8-row block in as few and as equal passes of
    // up to TRANSPOSED_TOKENS rows as possible.
    let q8 = Q8Rows { w, n, d, groups };
    let full_rows = d - d % 8;
    let mut sums = [0i32; X_SUMS];
    let rows_per_chunk = X_SUMS / groups;
    let mut c0 = 0;
    while c0 < batch {
        let c1 = (c0 + rows_per_chunk).min(batch);
        let x_chunk = &xq[c0 * n..c1 * n];
        for (sum, x_group) in sums.iter_mut().zip(x_chunk.chunks_exact(gs)) {
            // Wrapping as the dot products do: the difference is exact
            // whenever the group's true sum fits in an i32.
            *sum = x_group
                .iter()
                .fold(0i32, |sum, &v| sum.wrapping_add(128 * i32::from(v)));
        }
        for i in (0..full_rows).step_by(8) {
            let mut t0 = c0;
            while t0 < c1 {
                let count = balanced_pass(c1 - t0, TRANSPOSED_TOKENS);
                let t_sums = &sums[(t0 - c0) * groups..(t0 - c0 + count) * groups];
                q8.transposed_pass(count, xout, xq, xs, t_sums, i, t0);
                t0 += count;
            }
        }
        c0 = c1;
    }

    // The last d % 8 rows do not fill a vector: one scalar call per output.
    for i in full_rows..d {
        let row = QTensor {
            q: &w.q[i * n..(i + 1) * n],
            scales: &w.scales[4 * i * groups..4 * (i + 1) * groups],
            group_size: gs,
        };
        for b in 0..batch {
            let x_row = &xq[b * n..(b + 1) * n];
            let x_scales = &xs[b * groups..(b + 1) * groups];
            scalar::matmul_q8(
                &mut xout[b * d + i..b * d + i + 1],
                x_row,
                x_scales,
                row,
                n,
                1,
            );
        }
    }
}

/// Number of per-group activation sums that the transposed kernel keeps on
/// the stack (8 KiB), enough for 64 batch rows of 32 groups (n = 2048 with
/// groups of 64). Rows with more groups than this take the other kernel.
const X_SUMS: usize = 2048;

/// Maximum batch rows that one pass of the transposed kernel serves. A verify
/// pass of 8 drafted tokens has 9 rows, and for the 110M shape's matrices one
/// pass of 9 was about 15 % faster than passes of 5 and 4. Passes of 12 were
/// no faster than two of 6, because their accumulators no longer fit in the
/// 32 vector registers.
const TRANSPOSED_TOKENS: usize = 9;

/// The operands of one Q8_0 matmul that stay fixed across its calls of
/// [`Q8Rows::transposed`].
struct Q8Rows<'a> {
    w: QTensor<'a>,
    n: usize,
    d: usize,
    groups: usize,
}

impl Q8Rows<'_> {
    /// Calls [`Q8Rows::transposed`] with `count` batch rows as a constant.
    #[target_feature(enable = "avx512vnni,avx512vl")]
    #[allow(clippy::too_many_arguments)]
    fn transposed_pass(
        &self,
        count: usize,
        xout: &mut [f32],
        xq: &[i8],
        xs: &[f32],
        x_sums: &[i32],
        i: usize,
        t0: usize,
    ) {
        let (n, groups) = (self.n, self.groups);
        let x_rows = &xq[t0 * n..(t0 + count) * n];
        let x_scales = &xs[t0 * groups..(t0 + count) * groups];
        macro_rules! dispatch {
            ($($t:literal),*) => {
                match count {
                    $($t => self.transposed::<$t>(xout, x_rows, x_scales, x_sums, i, t0),)*
                    _ => unreachable!("no transposed Q8_0 VNNI kernel for {count} batch rows"),
                }
            };
        }
        dispatch!(1, 2, 3, 4, 5, 6, 7, 8, 9)
    }

    /// Writes output rows `i..i + 8` for the `T` batch rows in `x_rows`, the
    /// first of which is batch row `t0`, for groups of 32k values. `x_sums`
    /// contains `128 * sum(x)` for each group of those rows.
    ///
    /// Lane `r` of every vector belongs to weight row `i + r`, so no sum is
    /// ever reduced across lanes. For each 32 columns the kernel loads the
    /// 8 × 32 weight bytes as an 8 × 8 tile of 4-byte words, transposes it,
    /// so that word `c` holds bytes `4c..4c + 4` of every row, and flips
    /// their sign bits. One `vpdpbusd` per word and batch row then adds
    /// `dot(w + 128, x)` over 4 columns, with the batch row's 4 activations
    /// broadcast to all lanes. The tile is shared by the `T` batch rows, and
    /// subtracting `dot(128, x)` at the end of the group leaves `dot(w, x)`.
    #[target_feature(enable = "avx512vnni,avx512vl")]
    fn transposed<const T: usize>(
        &self,
        xout: &mut [f32],
        x_rows: &[i8],
        x_scales: &[f32],
        x_sums: &[i32],
        i: usize,
        t0: usize,
    ) {
        let (n, d, groups) = (self.n, self.d, self.groups);
        let gs = self.w.group_size;
        assert!(gs.is_multiple_of(32));
        assert_eq!(x_rows.len(), T * n);
        assert_eq!(x_scales.len(), T * groups);
        assert_eq!(x_sums.len(), T * groups);
        let w_rows = &self.w.q[i * n..(i + 8) * n];
        let w_scales = &self.w.scales[4 * i * groups..4 * (i + 8) * groups];

        let w_ptr = w_rows.as_ptr();
        let x_ptr = x_rows.as_ptr();
        // Byte offsets of the 8 rows' scales for one group, for a gather.
        // X_SUMS bounds `groups`, so 4 * 7 * groups fits in an i32.
        let row_stride = 4 * groups as i32;
        let scale_offsets = _mm256_mullo_epi32(
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            _mm256_set1_epi32(row_stride),
        );
        let mut acc = [_mm256_setzero_ps(); T];
        for g in 0..groups {
            let start = g * gs;
            for r in 0..8 {
                // Prefetch this group's weights of the block
                // Q8_PREFETCH_CALLS blocks ahead into L2. The pointer may
                // pass the end of W (wrapping_add permits that), and a
                // prefetch never faults.
                let mut line = w_ptr.wrapping_add((8 * Q8_PREFETCH_CALLS + r) * n + start);
                let end = line.wrapping_add(gs);
                while line < end {
                    _mm_prefetch::<_MM_HINT_T2>(line);
                    line = line.wrapping_add(64);
                }
            }

            let mut dots = [_mm256_setzero_si256(); T];
            for k in (start..start + gs).step_by(32) {
                // SAFETY: k + 32 <= (g + 1) * gs <= n, and n is a multiple
                // of 4, so the 8 rows' 32 bytes from column k are inside
                // w_rows, read as f32 words of stride n / 4.
                let tile = unsafe { load_transposed(w_ptr.add(k).cast(), n / 4) };
                let tile = tile.map(|word| flip_sign(_mm256_castps_si256(word)));
                for (t, dot) in dots.iter_mut().enumerate() {
                    for (c, &word) in tile.iter().enumerate() {
                        // SAFETY: k + 4c + 4 <= k + 32 <= n, so the 4 bytes
                        // are inside batch row t of x_rows.
                        let x =
                            unsafe { x_ptr.add(t * n + k + 4 * c).cast::<i32>().read_unaligned() };
                        *dot = _mm256_dpbusd_epi32(*dot, word, _mm256_set1_epi32(x));
                    }
                }
            }

            // SAFETY: the 8 offsets plus 4 * g stay below w_scales.len() - 3,
            // since row r's scale for group g starts at 4 * (r * groups + g).
            let w_scale = unsafe {
                _mm256_i32gather_ps::<1>(w_scales.as_ptr().add(4 * g).cast(), scale_offsets)
            };
            for (t, (a, &dot)) in acc.iter_mut().zip(&dots).enumerate() {
                let ival = _mm256_sub_epi32(dot, _mm256_set1_epi32(x_sums[t * groups + g]));
                let x_scale = _mm256_set1_ps(x_scales[t * groups + g]);
                // runq.c's order: ((float)ival * w_scale) * x_scale, then add.
                let product =
                    _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(ival), w_scale), x_scale);
                *a = _mm256_add_ps(*a, product);
            }
        }

        for (t, a) in acc.iter().enumerate() {
            let start = (t0 + t) * d + i;
            let out: &mut [f32; 8] = (&mut xout[start..start + 8]).try_into().unwrap();
            // SAFETY: `out` is 8 writable f32, and storeu needs no alignment.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), *a) };
        }
    }
}

/// Returns `v` with the sign bit of every byte flipped, which maps the int8
/// value `w` to the unsigned byte `w + 128`.
#[target_feature(enable = "avx512vnni,avx512vl")]
#[inline]
fn flip_sign(v: __m256i) -> __m256i {
    _mm256_xor_si256(v, _mm256_set1_epi8(i8::MIN))
}
