//! Samplers: run.c's temperature, top-p and xorshift64* random stream.

use specdec_core::sampler::{ProbIndex, Sampler};

use crate::specdec_status::{self, *};
use crate::{guard, non_null, try_vec, write_out};

/// Sampling settings and random state. Used by one thread at a time. Create
/// it with `specdec_sampler_new`, free it with `specdec_sampler_free`.
pub struct specdec_sampler {
    pub(crate) vocab_size: usize,
    pub(crate) temperature: f32,
    pub(crate) topp: f32,
    pub(crate) rng_state: u64,
    pub(crate) scratch: Vec<ProbIndex>,
}

impl specdec_sampler {
    /// Samples from `logits` (overwritten with probabilities unless the
    /// temperature is 0) and advances the random state.
    pub(crate) fn sample(&mut self, logits: &mut [f32]) -> Result<u32, specdec_status> {
        let mut sampler = Sampler::new(
            self.vocab_size,
            self.temperature,
            self.topp,
            self.rng_state,
            &mut self.scratch,
        )
        .map_err(|_| SPECDEC_ERR_INVALID_ARGUMENT)?;
        let token = sampler
            .sample(logits)
            .map_err(|_| SPECDEC_ERR_BUFFER_TOO_SMALL)?;
        self.rng_state = sampler.rng_state;
        Ok(token)
    }
}

/// Creates a sampler for a vocabulary of `vocab_size` tokens. A
/// `temperature` of 0 is greedy (argmax). A `topp` in (0, 1) enables nucleus
/// sampling, and 0 or 1 disables it. `seed` seeds the random stream as
/// run.c's `-s` does, except that run.c replaces 0 by the time and this
/// function uses 0 as given.
///
/// Returns `SPECDEC_ERR_INVALID_ARGUMENT` for a negative or NaN temperature,
/// a top-p outside [0, 1], or a vocabulary size of 0.
///
/// # Safety
/// `out` points to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn specdec_sampler_new(
    vocab_size: usize,
    temperature: f32,
    topp: f32,
    seed: u64,
    out: *mut *mut specdec_sampler,
) -> specdec_status {
    guard(|| {
        non_null(out)?;
        let mut scratch = try_vec(ProbIndex::default(), vocab_size)?;
        // Validate through the core's constructor.
        Sampler::new(vocab_size, temperature, topp, seed, &mut scratch)
            .map_err(|_| SPECDEC_ERR_INVALID_ARGUMENT)?;
        let sampler = Box::new(specdec_sampler {
            vocab_size,
            temperature,
            topp,
            rng_state: seed,
            scratch,
        });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, Box::into_raw(sampler)) };
        Ok(())
    })
}

/// Frees a sampler. NULL is ignored.
///
/// # Safety
/// `sampler` is NULL or a live pointer from `specdec_sampler_new`.
#[no_mangle]
pub unsafe extern "C" fn specdec_sampler_free(sampler: *mut specdec_sampler) {
    if !sampler.is_null() {
        // SAFETY: from Box::into_raw in specdec_sampler_new, freed once.
        drop(unsafe { Box::from_raw(sampler) });
    }
}

/// Samples a token from `len` logits, as run.c's `sample`. The logits are
/// overwritten with probabilities unless the temperature is 0. `len` must be
/// at least the sampler's vocabulary size.
///
/// # Safety
/// `sampler` is live; `logits` points to `len` writable floats; `token` to a
/// writable `int32_t`.
#[no_mangle]
pub unsafe extern "C" fn specdec_sampler_sample(
    sampler: *mut specdec_sampler,
    logits: *mut f32,
    len: usize,
    token: *mut i32,
) -> specdec_status {
    guard(|| {
        non_null(sampler)?;
        non_null(logits)?;
        non_null(token)?;
        // SAFETY: live sampler, `len` writable floats, by contract.
        let (sampler, logits) =
            unsafe { (&mut *sampler, std::slice::from_raw_parts_mut(logits, len)) };
        if len < sampler.vocab_size {
            return Err(SPECDEC_ERR_BUFFER_TOO_SMALL);
        }
        let next = sampler.sample(logits)?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(token, next as i32) };
        Ok(())
    })
}
