//! Sampling the next token from logits, exactly as llama2.c's run.c does:
//! its xorshift64* generator, temperature, top-p (nucleus) and argmax.

use core::cmp::Ordering;
use core::fmt;

use crate::ops::softmax;

/// A probability and its token id, the scratch entry of top-p sampling.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProbIndex {
    /// Probability of the token.
    pub prob: f32,
    /// Token id.
    pub index: u32,
}

/// Reasons sampler settings are rejected.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum SamplerError {
    /// The temperature is negative or not a number.
    InvalidTemperature {
        /// The value given.
        found: f32,
    },
    /// Top-p is outside [0, 1] or not a number.
    InvalidTopP {
        /// The value given.
        found: f32,
    },
    /// The vocabulary is empty.
    EmptyVocabulary,
    /// The scratch slice is shorter than the vocabulary.
    ScratchTooSmall {
        /// Entries needed (`vocab_size`).
        expected: usize,
        /// Entries given.
        found: usize,
    },
    /// The logits slice is shorter than the vocabulary.
    LogitsTooShort {
        /// Entries needed (`vocab_size`).
        expected: usize,
        /// Entries given.
        found: usize,
    },
}

impl fmt::Display for SamplerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SamplerError::InvalidTemperature { found } => {
                write!(
                    f,
                    "invalid temperature {found}; use 0 for greedy decoding or a positive value"
                )
            }
            SamplerError::InvalidTopP { found } => {
                write!(
                    f,
                    "invalid top-p {found}; use a value in [0, 1], where 1 disables top-p"
                )
            }
            SamplerError::EmptyVocabulary => write!(f, "vocabulary size is 0"),
            SamplerError::ScratchTooSmall { expected, found } => write!(
                f,
                "sampler scratch has {found} entries but the vocabulary needs {expected}"
            ),
            SamplerError::LogitsTooShort { expected, found } => {
                write!(
                    f,
                    "logits have {found} entries but the vocabulary has {expected}"
                )
            }
        }
    }
}

/// run.c's xorshift64* step: returns 32 random bits.
pub fn random_u32(state: &mut u64) -> u32 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
}

/// A random float in [0, 1) with 24 random bits, as run.c's `random_f32`.
pub fn random_f32(state: &mut u64) -> f32 {
    (random_u32(state) >> 8) as f32 / 16_777_216.0
}

/// Index of the largest value; the first one wins ties.
pub fn sample_argmax(probabilities: &[f32]) -> u32 {
    let mut max_i = 0;
    let mut max_p = probabilities[0];
    for (i, &p) in probabilities.iter().enumerate().skip(1) {
        if p > max_p {
            max_i = i;
            max_p = p;
        }
    }
    max_i as u32
}

/// Samples an index from `probabilities` (which sum to 1) with `coin` in
/// [0, 1), walking the cumulative distribution in index order.
pub fn sample_mult(probabilities: &[f32], coin: f32) -> u32 {
    let mut cdf = 0.0f32;
    for (i, &p) in probabilities.iter().enumerate() {
        cdf += p;
        if coin < cdf {
            return i as u32;
        }
    }
    (probabilities.len() - 1) as u32
}

/// Sorts candidates by descending probability, ties in ascending id order.
///
/// run.c sorts with `qsort`, which glibc implements as a stable merge sort
/// (glibc 2.37 and 2.38 excepted), over candidates already in id order; an
/// unstable sort on (probability, id) gives that same order without
/// allocating.
fn sort_candidates(candidates: &mut [ProbIndex]) {
    candidates.sort_unstable_by(|a, b| match b.prob.partial_cmp(&a.prob) {
        Some(Ordering::Equal) | None => a.index.cmp(&b.index),
        Some(order) => order,
    });
}

/// Finds run.c's top-p nucleus: the smallest set of most probable tokens
/// whose cumulative probability exceeds `topp`, in descending order of
/// probability, and that cumulative probability. Returns `None` when no
/// token reaches the cutoff.
///
/// Tokens below `(1 - topp) / (n - 1)` cannot be part of the set and are
/// dropped before sorting. `scratch` has at least `probabilities.len()`
/// entries.
pub fn topp_nucleus<'s>(
    probabilities: &[f32],
    topp: f32,
    scratch: &'s mut [ProbIndex],
) -> Option<(&'s [ProbIndex], f32)> {
    let n = probabilities.len();
    let cutoff = (1.0 - topp) / (n as f32 - 1.0);
    let mut n0 = 0;
    for (i, &p) in probabilities.iter().enumerate() {
        if p >= cutoff {
            scratch[n0] = ProbIndex {
                prob: p,
                index: i as u32,
            };
            n0 += 1;
        }
    }
    // Only a tiny topp over a nearly uniform distribution (or a single-token
    // vocabulary) leaves no candidate; run.c reads uninitialized memory there.
    if n0 == 0 {
        return None;
    }
    let candidates = &mut scratch[..n0];
    sort_candidates(candidates);

    // Truncate where the cumulative probability exceeds topp.
    let mut cumulative_prob = 0.0f32;
    let mut last_idx = n0 - 1;
    for (i, c) in candidates.iter().enumerate() {
        cumulative_prob += c.prob;
        if cumulative_prob > topp {
            last_idx = i;
            break;
        }
    }
    Some((&scratch[..=last_idx], cumulative_prob))
}

/// Top-p (nucleus) sampling as run.c's `sample_topp`: sample from
/// [`topp_nucleus`] with `coin`, or take the argmax when it is empty.
pub fn sample_topp(probabilities: &[f32], topp: f32, scratch: &mut [ProbIndex], coin: f32) -> u32 {
    let Some((nucleus, cumulative_prob)) = topp_nucleus(probabilities, topp, scratch) else {
        return sample_argmax(probabilities);
    };
    let r = coin * cumulative_prob;
    let mut cdf = 0.0f32;
    for c in nucleus {
        cdf += c.prob;
        if r < cdf {
            return c.index;
        }
    }
    nucleus[nucleus.len() - 1].index
}

/// Settings and random state for sampling, with caller-provided scratch.
pub struct Sampler<'a> {
    vocab_size: usize,
    temperature: f32,
    topp: f32,
    /// xorshift64* state; run.c seeds it with the seed itself.
    pub rng_state: u64,
    scratch: &'a mut [ProbIndex],
}

impl<'a> Sampler<'a> {
    /// Creates a sampler. `temperature` 0 means argmax; `topp` in (0, 1)
    /// enables nucleus sampling, and 0 or 1 disables it, as in run.c.
    /// `scratch` needs `vocab_size` entries.
    pub fn new(
        vocab_size: usize,
        temperature: f32,
        topp: f32,
        seed: u64,
        scratch: &'a mut [ProbIndex],
    ) -> Result<Sampler<'a>, SamplerError> {
        if vocab_size == 0 {
            return Err(SamplerError::EmptyVocabulary);
        }
        if temperature.is_nan() || temperature < 0.0 {
            return Err(SamplerError::InvalidTemperature { found: temperature });
        }
        if topp.is_nan() || !(0.0..=1.0).contains(&topp) {
            return Err(SamplerError::InvalidTopP { found: topp });
        }
        if scratch.len() < vocab_size {
            return Err(SamplerError::ScratchTooSmall {
                expected: vocab_size,
                found: scratch.len(),
            });
        }
        Ok(Sampler {
            vocab_size,
            temperature,
            topp,
            rng_state: seed,
            scratch,
        })
    }

    /// Temperature; 0 means argmax.
    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// Top-p threshold; 0 or 1 means top-p is off.
    pub fn topp(&self) -> f32 {
        self.topp
    }

    /// Advances the random state as one [`Sampler::sample`] call would,
    /// without logits: one draw unless the temperature is 0.
    pub fn skip_draw(&mut self) {
        if self.temperature != 0.0 {
            random_f32(&mut self.rng_state);
        }
    }

    /// Samples the next token from `logits` as run.c's `sample`: argmax at
    /// temperature 0; otherwise divide by the temperature, softmax, draw one
    /// random float, and sample by top-p or from the whole distribution.
    ///
    /// `logits` is overwritten with the probabilities when the temperature
    /// is not 0.
    pub fn sample(&mut self, logits: &mut [f32]) -> Result<u32, SamplerError> {
        let n = self.vocab_size;
        if logits.len() < n {
            return Err(SamplerError::LogitsTooShort {
                expected: n,
                found: logits.len(),
            });
        }
        let logits = &mut logits[..n];
        if self.temperature == 0.0 {
            return Ok(sample_argmax(logits));
        }
        let best = sample_argmax(logits);
        for l in logits.iter_mut() {
            *l /= self.temperature;
        }
        let coin = random_f32(&mut self.rng_state);
        if !logits[best as usize].is_finite() {
            // The temperature is so small that the largest logit overflowed:
            // the distribution is a point mass on the argmax, its limit as
            // the temperature goes to 0. run.c prints garbage here.
            logits.fill(0.0);
            logits[best as usize] = 1.0;
            return Ok(best);
        }
        softmax(logits);
        if self.topp <= 0.0 || self.topp >= 1.0 {
            Ok(sample_mult(logits, coin))
        } else {
            Ok(sample_topp(logits, self.topp, self.scratch, coin))
        }
    }
}
