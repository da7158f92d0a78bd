//! The SIMD matmul kernels and the dispatching `ops::matmul` and
//! `ops::matmul_q8` against the scalar reference, bit for bit, on seeded
//! random data with large dynamic range, signed zeros and subnormals.
//!
//! `matmul_speed` is ignored by default and prints timings instead of
//! checking anything. The `std` feature lets `ops::matmul` detect AVX2 at
//! run time:
//! `cargo test --release -p specdec-core --features std --test kernels -- --ignored --nocapture`.

use specdec_core::ops::{self, scalar, Strided};
use specdec_core::weights::QTensor;

/// Sizes for `d` and `n`: below, at and above the vector widths and tile
/// sizes, and dim = 288 of the 15M-parameter TinyStories model.
const SIZES: [usize; 11] = [1, 3, 7, 8, 9, 16, 63, 64, 65, 172, 288];

/// Batch sizes: below, at and above the tokens one kernel pass serves.
const BATCHES: std::ops::RangeInclusive<usize> = 1..=9;

/// Q8_0 group sizes: those of real files (4 and 64), multiples of 8 that the
/// SIMD kernels handle, and sizes that fall back to the scalar kernel.
const GROUP_SIZES: [usize; 10] = [1, 2, 3, 4, 8, 12, 16, 24, 32, 64];

type MatmulFn = fn(&mut [f32], &[f32], &[f32], usize, usize);
type MatmulQ8Fn = fn(&mut [f32], &[i8], &[f32], QTensor<'_>, usize, usize);

/// A value no kernel computes from the test data, so an output element that
/// a kernel forgot to write shows up as a mismatch.
const UNWRITTEN: f32 = f32::from_bits(0x7fc0_1234);

/// SplitMix64: a small seeded generator, enough for test data.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a uniform integer in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// Returns a uniform value in `[-1, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Returns a random float of varied kind: mostly ordinary values, and also
    /// values with exponents from 2^-140 to 2^40, signed zeros and
    /// subnormals. Sums of products of these stay finite for the sizes
    /// tested, so the outputs have no NaN, whose payload is not part of the
    /// kernels' contract.
    fn value(&mut self) -> f32 {
        let sign = if self.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
        match self.below(20) {
            0..=11 => self.unit(),
            12..=15 => {
                let exponent = self.below(181) as i32 - 140;
                sign * (1.0 + self.unit().abs()) * 2f32.powi(exponent)
            }
            16 => sign * f32::from_bits(1 + self.below(0x7f_ffff) as u32),
            17 => -0.0,
            18 => 0.0,
            _ => sign * self.below(5) as f32,
        }
    }

    fn values(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.value()).collect()
    }

    fn bytes_i8(&mut self, len: usize) -> Vec<i8> {
        (0..len).map(|_| self.next_u64() as u8 as i8).collect()
    }
}

/// Asserts that `actual` and `expected` have the same bits everywhere.
fn assert_same_bits(actual: &[f32], expected: &[f32], case: &str) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{case}: output lengths differ"
    );
    for (k, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_eq!(
            a.to_bits(),
            e.to_bits(),
            "{case}: element {k} is {a:e} ({:#010x}), the scalar kernel gives {e:e} ({:#010x})",
            a.to_bits(),
            e.to_bits()
        );
    }
}

/// Runs `kernel` and the scalar fp32 matmul on every shape and batch size
/// and compares their outputs bit for bit.
fn check_matmul(kernel: MatmulFn, name: &str) {
    let mut rng = Rng(0x5eed_0001);
    for &d in &SIZES {
        for &n in &SIZES {
            for batch in BATCHES {
                // A few values past d * n check that the kernel reads only
                // the first d rows.
                let w = rng.values(d * n + 5);
                let x = rng.values(batch * n);
                let mut expected = vec![UNWRITTEN; batch * d];
                let mut actual = vec![UNWRITTEN; batch * d];
                scalar::matmul(&mut expected, &x, &w, n, d);
                kernel(&mut actual, &x, &w, n, d);
                let case = format!("{name} d={d} n={n} batch={batch}");
                assert_same_bits(&actual, &expected, &case);
            }
        }
    }
}

/// Random Q8_0 weights whose scale bytes start one byte into their
/// allocation, so they are misaligned for f32 as they may be in a checkpoint.
struct Q8Weights {
    q: Vec<i8>,
    scale_bytes: Vec<u8>,
    group_size: usize,
}

impl Q8Weights {
    fn new(rng: &mut Rng, d: usize, n: usize, group_size: usize) -> Q8Weights {
        let groups = d * n / group_size;
        let mut scale_bytes = vec![0u8; 1 + 4 * groups];
        for chunk in scale_bytes[1..].chunks_exact_mut(4) {
            chunk.copy_from_slice(&rng.value().to_le_bytes());
        }
        Q8Weights {
            q: rng.bytes_i8(d * n),
            scale_bytes,
            group_size,
        }
    }

    fn tensor(&self) -> QTensor<'_> {
        QTensor {
            q: &self.q,
            scales: &self.scale_bytes[1..],
            group_size: self.group_size,
        }
    }
}

/// Runs `kernel` and the scalar Q8_0 matmul for every group size, several
/// `n` per group size, every `d` and batch size, and compares their outputs
/// bit for bit. The weights cover the whole int8 range, -128 included. The
/// activations do too, and then again without -128, the range that
/// `ops::quantize` produces and that the AVX2 kernel's `maddubs` path takes.
fn check_matmul_q8(kernel: MatmulQ8Fn, name: &str) {
    let mut rng = Rng(0x5eed_0002);
    for &gs in &GROUP_SIZES {
        for groups_per_row in [1, 2, 3, 5, 12] {
            let n = gs * groups_per_row;
            for &d in &SIZES {
                let w = Q8Weights::new(&mut rng, d, n, gs);
                for (batch, x_min) in BATCHES.flat_map(|b| [(b, i8::MIN), (b, -127)]) {
                    let xq: Vec<i8> = rng
                        .bytes_i8(batch * n)
                        .into_iter()
                        .map(|v| v.max(x_min))
                        .collect();
                    let xs = rng.values(batch * groups_per_row);
                    let mut expected = vec![UNWRITTEN; batch * d];
                    let mut actual = vec![UNWRITTEN; batch * d];
                    scalar::matmul_q8(&mut expected, &xq, &xs, w.tensor(), n, d);
                    kernel(&mut actual, &xq, &xs, w.tensor(), n, d);
                    let case =
                        format!("{name} group_size={gs} d={d} n={n} batch={batch} min(x)>={x_min}");
                    assert_same_bits(&actual, &expected, &case);
                }
            }
        }
    }
}

/// Returns whether this CPU has AVX2, and prints a note when it has not.
///
/// The test queries the CPU itself because `ops::avx2::is_available` reports
/// false in builds without the `std` feature unless AVX2 is enabled at
/// compile time.
#[cfg(target_arch = "x86_64")]
fn avx2_or_note(test: &str) -> bool {
    let available = std::is_x86_feature_detected!("avx2");
    if !available {
        // Not a skip of the model tests that CI counts: this CPU cannot run
        // the kernel at all.
        println!("note: this CPU has no AVX2, so {test} checked nothing");
    }
    available
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_matmul_matches_scalar() {
    if avx2_or_note("avx2_matmul_matches_scalar") {
        // SAFETY: the CPU has AVX2, checked just above.
        check_matmul(
            |xout, x, w, n, d| unsafe { ops::avx2::matmul(xout, x, w, n, d) },
            "avx2::matmul",
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn avx2_matmul_q8_matches_scalar() {
    if avx2_or_note("avx2_matmul_q8_matches_scalar") {
        // SAFETY: the CPU has AVX2, checked just above.
        check_matmul_q8(
            |xout, xq, xs, w, n, d| unsafe { ops::avx2::matmul_q8(xout, xq, xs, w, n, d) },
            "avx2::matmul_q8",
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn vnni_matmul_q8_matches_scalar() {
    let available = std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("avx512vnni")
        && std::is_x86_feature_detected!("avx512vl");
    if !available {
        // Not a skip of the model tests that CI counts: this CPU cannot run
        // the kernel at all.
        println!(
            "note: this CPU lacks AVX2 or AVX-512 VNNI, so vnni_matmul_q8_matches_scalar checked nothing"
        );
        return;
    }
    // SAFETY: the CPU has AVX2, AVX-512 VNNI and VL, checked just above.
    check_matmul_q8(
        |xout, xq, xs, w, n, d| unsafe { ops::vnni::matmul_q8(xout, xq, xs, w, n, d) },
        "vnni::matmul_q8",
    );
}

/// With the `std` feature, the Q8_0 matmul takes the VNNI kernel exactly when
/// the CPU has AVX2, AVX-512 VNNI and VL.
#[cfg(all(target_arch = "x86_64", feature = "std"))]
#[test]
fn vnni_detection_matches_std() {
    assert_eq!(
        ops::vnni::is_available(),
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512vl")
    );
}

/// With the `std` feature, `ops::matmul` dispatches to AVX2 exactly when the
/// CPU has it.
#[cfg(all(target_arch = "x86_64", feature = "std"))]
#[test]
fn avx2_detection_matches_std() {
    assert_eq!(
        ops::avx2::is_available(),
        std::is_x86_feature_detected!("avx2")
    );
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[test]
fn neon_matmul_matches_scalar() {
    check_matmul(ops::neon::matmul, "neon::matmul");
}

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[test]
fn neon_matmul_q8_matches_scalar() {
    check_matmul_q8(ops::neon::matmul_q8, "neon::matmul_q8");
}

#[test]
fn dispatched_matmul_matches_scalar() {
    check_matmul(ops::matmul, "ops::matmul");
}

#[test]
fn dispatched_matmul_q8_matches_scalar() {
    check_matmul_q8(ops::matmul_q8, "ops::matmul_q8");
}

/// Values near the top of the f32 range make some products and sums
/// overflow to infinity and some sums of opposite infinities NaN. Only the
/// default NaN arises, because the inputs hold none, so the bits must still
/// match.
#[test]
fn dispatched_matmul_overflow_matches_scalar() {
    let mut rng = Rng(0x5eed_0003);
    let huge = |rng: &mut Rng| {
        let v = rng.value();
        if rng.below(3) == 0 {
            v.signum() * f32::MAX * (0.5 + rng.unit().abs() * 0.5)
        } else {
            v * 1e30
        }
    };
    let mut infinities = 0;
    let mut nans = 0;
    for (d, n) in [(8, 8), (16, 24), (65, 63), (288, 288)] {
        for batch in BATCHES {
            let w: Vec<f32> = (0..d * n).map(|_| huge(&mut rng)).collect();
            let x: Vec<f32> = (0..batch * n).map(|_| huge(&mut rng)).collect();
            let mut expected = vec![UNWRITTEN; batch * d];
            let mut actual = vec![UNWRITTEN; batch * d];
            scalar::matmul(&mut expected, &x, &w, n, d);
            ops::matmul(&mut actual, &x, &w, n, d);
            infinities += expected.iter().filter(|v| v.is_infinite()).count();
            nans += expected.iter().filter(|v| v.is_nan()).count();
            let case = format!("overflow d={d} n={n} batch={batch}");
            assert_same_bits(&actual, &expected, &case);
        }
    }
    assert!(
        infinities > 0,
        "the data no longer produce infinite outputs"
    );
    assert!(nans > 0, "the data no longer produce NaN outputs");
}

/// Activations from `ops::quantize` stay within [-127, 127], the range real
/// inputs have. The random tests above cover -128 as well.
#[test]
fn dispatched_matmul_q8_quantized_input() {
    let mut rng = Rng(0x5eed_0004);
    let (d, n, gs) = (288, 768, 64);
    let w = Q8Weights::new(&mut rng, d, n, gs);
    for batch in BATCHES {
        let x = rng.values(batch * n);
        let mut xq = vec![0i8; batch * n];
        let mut xs = vec![0.0f32; batch * n / gs];
        ops::quantize(&mut xq, &mut xs, &x, gs);
        let mut expected = vec![UNWRITTEN; batch * d];
        let mut actual = vec![UNWRITTEN; batch * d];
        scalar::matmul_q8(&mut expected, &xq, &xs, w.tensor(), n, d);
        ops::matmul_q8(&mut actual, &xq, &xs, w.tensor(), n, d);
        assert_same_bits(&actual, &expected, &format!("quantized batch={batch}"));
    }
}

/// The int8 products of largest magnitude, -128 * -127 and -128 * 127 in
/// every position, stay exact: an AVX2 kernel that sums product pairs in i16
/// must not saturate on them.
#[test]
fn dispatched_matmul_q8_extreme_products() {
    let mut rng = Rng(0x5eed_0006);
    let (d, n, gs) = (17, 128, 32);
    let mut w = Q8Weights::new(&mut rng, d, n, gs);
    w.q.fill(i8::MIN);
    for (x_value, batch) in [(-127i8, 1), (127, 1), (-127, 5), (127, 9), (i8::MIN, 3)] {
        let xq = vec![x_value; batch * n];
        let xs = rng.values(batch * n / gs);
        let mut expected = vec![UNWRITTEN; batch * d];
        let mut actual = vec![UNWRITTEN; batch * d];
        scalar::matmul_q8(&mut expected, &xq, &xs, w.tensor(), n, d);
        ops::matmul_q8(&mut actual, &xq, &xs, w.tensor(), n, d);
        let case = format!("w=-128 x={x_value} batch={batch}");
        assert_same_bits(&actual, &expected, &case);
    }
}

/// Rows long enough that the VNNI kernel's per-group activation sums for a
/// batch do not fit its stack table at once (300 groups), or not even for
/// one batch row (2100 groups), still give the scalar bits.
#[test]
fn dispatched_matmul_q8_long_rows() {
    let mut rng = Rng(0x5eed_0009);
    let gs = 32;
    for groups in [300, 2100] {
        let n = gs * groups;
        let d = 9;
        let w = Q8Weights::new(&mut rng, d, n, gs);
        for batch in [1, 2, 9] {
            let xq = rng.bytes_i8(batch * n);
            let xs = rng.values(batch * groups);
            let mut expected = vec![UNWRITTEN; batch * d];
            let mut actual = vec![UNWRITTEN; batch * d];
            scalar::matmul_q8(&mut expected, &xq, &xs, w.tensor(), n, d);
            ops::matmul_q8(&mut actual, &xq, &xs, w.tensor(), n, d);
            let case = format!("long rows: groups={groups} batch={batch}");
            assert_same_bits(&actual, &expected, &case);
        }
    }
}

/// The dispatched strided product (the attention scores) equals the scalar
/// one for query and key counts around the vector width, row lengths with
/// and without a remainder of 8, and strides from the row length up.
#[test]
fn dispatched_matmul_strided_matches_scalar() {
    let mut rng = Rng(0x5eed_0006);
    for d in [0, 1, 7, 8, 9, 17, 33, 300] {
        for n in [1, 7, 8, 9, 64, 72] {
            for stride in [n, n + 1, 3 * n + 5] {
                for (batch, x_stride) in [(1, n), (2, n + 2), (5, 2 * n), (9, n)] {
                    let w_len = if d == 0 { 0 } else { (d - 1) * stride + n };
                    let w = rng.values(w_len);
                    let x = rng.values((batch - 1) * x_stride + n);
                    let out_stride = d + 3;
                    let x = Strided {
                        values: &x,
                        rows: batch,
                        len: n,
                        stride: x_stride,
                    };
                    let w = Strided {
                        values: &w,
                        rows: d,
                        len: n,
                        stride,
                    };
                    let mut expected = vec![UNWRITTEN; batch * out_stride];
                    let mut actual = vec![UNWRITTEN; batch * out_stride];
                    scalar::matmul_strided(&mut expected, out_stride, x, w);
                    ops::matmul_strided(&mut actual, out_stride, x, w);
                    let case = format!(
                        "matmul_strided d={d} n={n} stride={stride} batch={batch} x_stride={x_stride}"
                    );
                    assert_same_bits(&actual, &expected, &case);
                }
            }
        }
    }
}

/// The dispatched weighted sum (the attention output) equals the scalar one
/// for output lengths around multiples of 8 and 32, several row counts, and
/// strides from the output length up.
#[test]
fn dispatched_weighted_sum_matches_scalar() {
    let mut rng = Rng(0x5eed_0008);
    for rows in [0, 1, 2, 9, 100] {
        for n in [1, 7, 8, 9, 31, 32, 33, 64, 72, 100] {
            for stride in [n, n + 3, 4 * n + 1] {
                let len = if rows == 0 {
                    0
                } else {
                    (rows - 1) * stride + n
                };
                let v = rng.values(len);
                let a = rng.values(rows);
                let mut expected = vec![UNWRITTEN; n];
                let mut actual = vec![UNWRITTEN; n];
                scalar::weighted_sum(&mut expected, &a, &v, stride);
                ops::weighted_sum(&mut actual, &a, &v, stride);
                let case = format!("weighted_sum rows={rows} n={n} stride={stride}");
                assert_same_bits(&actual, &expected, &case);
            }
        }
    }
}

/// The dispatched quantization equals the scalar one on random groups, on
/// values that land exactly on halves, and on zeros, subnormals, infinities
/// and NaN.
#[test]
fn dispatched_quantize_matches_scalar() {
    let mut rng = Rng(0x5eed_0007);
    let special = [
        0.0,
        -0.0,
        f32::MIN_POSITIVE / 4.0,
        -f32::MIN_POSITIVE / 3.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e30,
        -1e-30,
    ];
    for gs in [1, 3, 8, 16, 24, 32, 64] {
        for groups in [1, 2, 5] {
            let len = gs * groups;
            let mut cases = vec![rng.values(len), vec![0.0; len]];
            // Multiples of 0.5 up to 127 against a maximum of 127: x / scale
            // then lands on halves, where rounding direction matters.
            cases.push(
                (0..len)
                    .map(|i| {
                        if i % gs == 0 {
                            127.0
                        } else {
                            (rng.below(509) as f32 - 254.0) / 2.0
                        }
                    })
                    .collect(),
            );
            for &v in &special {
                let mut x = rng.values(len);
                x[rng.below(len as u64) as usize] = v;
                cases.push(x);
                cases.push(vec![v; len]);
            }
            for x in &cases {
                let mut q_expected = vec![99i8; len];
                let mut s_expected = vec![UNWRITTEN; groups];
                let mut q_actual = vec![99i8; len];
                let mut s_actual = vec![UNWRITTEN; groups];
                scalar::quantize(&mut q_expected, &mut s_expected, x, gs);
                ops::quantize(&mut q_actual, &mut s_actual, x, gs);
                assert_eq!(q_actual, q_expected, "quantize q, gs={gs}, x={x:?}");
                assert_same_bits(&s_actual, &s_expected, &format!("quantize scales, gs={gs}"));
            }
        }
    }
}

/// Returns the fastest of `runs` timings of `f`, in milliseconds.
fn best_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let start = std::time::Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// Prints the time of the scalar and the dispatched kernels for the matmul
/// shapes of a dim = 768 model, single-threaded. Run it in release mode.
#[test]
#[ignore = "prints timings; run with --release --features std -- --ignored --nocapture"]
fn matmul_speed() {
    let mut rng = Rng(0x5eed_0005);
    let gs = 64;
    println!("kernel  d      n    batch  scalar ms  dispatched ms  speedup");
    for (d, n) in [(768, 768), (2048, 768), (32000, 768)] {
        let w: Vec<f32> = (0..d * n).map(|_| rng.unit()).collect();
        let wq = Q8Weights::new(&mut rng, d, n, gs);
        for batch in [1, 5, 9] {
            let runs = if d * batch > 100_000 { 3 } else { 10 };
            let x: Vec<f32> = (0..batch * n).map(|_| rng.unit()).collect();
            let mut xq = vec![0i8; batch * n];
            let mut xs = vec![0.0f32; batch * n / gs];
            ops::quantize(&mut xq, &mut xs, &x, gs);
            let mut out = vec![0.0f32; batch * d];

            let reference = best_ms(runs, || scalar::matmul(&mut out, &x, &w, n, d));
            let fast = best_ms(runs, || ops::matmul(&mut out, &x, &w, n, d));
            println!(
                "fp32    {d:<6} {n:<4} {batch:<6} {reference:>9.3} {fast:>14.3} {:>8.2}",
                reference / fast
            );

            let reference = best_ms(runs, || {
                scalar::matmul_q8(&mut out, &xq, &xs, wq.tensor(), n, d)
            });
            let fast = best_ms(runs, || {
                ops::matmul_q8(&mut out, &xq, &xs, wq.tensor(), n, d)
            });
            println!(
                "q8_0    {d:<6} {n:<4} {batch:<6} {reference:>9.3} {fast:>14.3} {:>8.2}",
                reference / fast
            );
        }
    }
}
