//! Relaxed fp32 matmul: reorders and fuses for speed, so its bits differ
//! from run.c's.
//!
//! Each dot product is split into independent partial sums along the
//! reduction, and on x86-64 CPUs with AVX2 and FMA each partial sum is a
//! fused multiply-add, which rounds once where run.c rounds twice. The
//! result is a different rounding of the same sum, typically within a few
//! ulp of each logit; sampled text then diverges from run.c's after a while,
//! and greedy text may too. The exact kernels in the parent module stay the
//! default. Q8_0 matmuls have no relaxed variant: their integer part is
//! already exact in any order.

/// Computes `xout[b] = W x[b]` like [`super::matmul`], with partial sums and
/// fused multiply-adds where the CPU has them.
///
/// The caller guarantees `w.len() >= d * n`, `x.len() == batch * n` and
/// `xout.len() == batch * d`.
pub fn matmul(xout: &mut [f32], x: &[f32], w: &[f32], n: usize, d: usize) {
    #[cfg(target_arch = "x86_64")]
    if fma_available() {
        // SAFETY: fma_available() found AVX2 and FMA on this CPU.
        unsafe { x86::matmul(xout, x, w, n, d) };
        return;
    }
    matmul_split(xout, x, w, n, d);
}

/// Whether this CPU has AVX2 and FMA. Without the `std` feature only a build
/// with both target features enabled reports true.
#[cfg(target_arch = "x86_64")]
pub fn fma_available() -> bool {
    #[cfg(feature = "std")]
    {
        static DETECTED: super::Detected = super::Detected::new();
        DETECTED
            .get(|| std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(all(target_feature = "avx2", target_feature = "fma"))
    }
}

/// Portable fallback: four partial sums per dot product, no fusing.
fn matmul_split(xout: &mut [f32], x: &[f32], w: &[f32], n: usize, d: usize) {
    let batch = x.len() / n;
    for (i, w_row) in w.chunks_exact(n).take(d).enumerate() {
        for b in 0..batch {
            let x_row = &x[b * n..(b + 1) * n];
            let mut acc = [0.0f32; 4];
            let mut w_chunks = w_row.chunks_exact(4);
            let mut x_chunks = x_row.chunks_exact(4);
            for (wc, xc) in (&mut w_chunks).zip(&mut x_chunks) {
                for k in 0..4 {
                    acc[k] += wc[k] * xc[k];
                }
            }
            let mut val = (acc[0] + acc[1]) + (acc[2] + acc[3]);
            for (&wv, &xv) in w_chunks.remainder().iter().zip(x_chunks.remainder()) {
                val += wv * xv;
            }
            xout[b * d + i] = val;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    /// # Safety
    /// The CPU has AVX2 and FMA; the slice lengths are as for
    /// [`super::matmul`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn matmul(xout: &mut [f32], x: &[f32], w: &[f32], n: usize, d: usize) {
        let batch = x.len() / n;
        let main = n / 32 * 32;
        for i in 0..d {
            let w_row = &w[i * n..(i + 1) * n];
            for b in 0..batch {
                let x_row = &x[b * n..(b + 1) * n];
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut j = 0;
                while j < main {
                    for (k, a) in acc.iter_mut().enumerate() {
                        let at = j + 8 * k;
                        // SAFETY: at + 8 <= main <= n, inside both rows.
                        let (wv, xv) = unsafe {
                            (
                                _mm256_loadu_ps(w_row.as_ptr().add(at)),
                                _mm256_loadu_ps(x_row.as_ptr().add(at)),
                            )
                        };
                        *a = _mm256_fmadd_ps(wv, xv, *a);
                    }
                    j += 32;
                }
                let sum =
                    _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                let mut lanes = [0.0f32; 8];
                // SAFETY: `lanes` has room for 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
                let mut val = lanes.iter().sum::<f32>();
                for (&wv, &xv) in w_row[main..].iter().zip(&x_row[main..]) {
                    val += wv * xv;
                }
                xout[b * d + i] = val;
            }
        }
    }
}
