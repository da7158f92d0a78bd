//! Speculative decoding: a draft proposes tokens, the target checks them all
//! in one batched forward pass, and an accept/reject rule keeps the output
//! distribution exactly the target's own.
//!
//! The rule is speculative sampling (Leviathan, Kalman and Matias, "Fast
//! Inference from Transformers via Speculative Decoding", ICML 2023; Chen et
//! al., "Accelerating Large Language Model Decoding with Speculative
//! Sampling", 2023). With p the target's and q the draft's sampling
//! distribution at one position, both after the same temperature and top-p
//! transform:
//! - draft token d is accepted with probability min(1, p(d) / q(d));
//! - at the first rejection, a token is drawn from norm(max(0, p - q)) and
//!   the remaining drafts are discarded;
//! - if every draft is accepted, a bonus token is drawn from the target's
//!   distribution after the last draft, which the same batch computed.
//!
//! At temperature 0 both models are greedy: a draft is accepted while it
//! equals the target's argmax, and the argmax is emitted in its place, so
//! the output is exactly plain greedy decoding.
//!
//! One round runs the target once on `[last, d1..dK]` at positions
//! `pos..=pos + K`. KV entries of rejected drafts are overwritten by later
//! rounds, and the draft model's cache is rolled back to the committed
//! length. A draft model with a shorter context than the target re-fills its
//! cache with the most recent half of its window when it runs out, and keeps
//! drafting. Every random draw comes from one xorshift64* stream seeded by
//! the caller, so a seed fixes the output. That stream differs from plain
//! sampling's, so sampled text differs from plain mode's for the same seed.

use core::fmt;

use crate::forward::{ForwardError, Logits, Transformer};
use crate::ops::softmax;
use crate::parallel::{Parallel, Serial};
use crate::sampler::{random_f32, sample_argmax, sample_mult, topp_nucleus, ProbIndex};
use crate::state::RunState;

/// The source of draft tokens.
// One value lives in each speculator, and no_std code cannot box the state.
#[allow(clippy::large_enum_variant)]
pub enum Draft<'m, 's> {
    /// A smaller model with the same vocabulary as the target, with its own
    /// run state. Its state's maximum batch sets how many tokens one
    /// catch-up or re-fill forward call takes.
    Model {
        /// The draft model.
        model: &'m Transformer<'m>,
        /// Its run state.
        state: RunState<'s>,
    },
    /// Prompt lookup: the tokens that followed the most recent earlier
    /// occurrence of the last n committed tokens, for n from `max_ngram`
    /// down to 1. The proposal is certain, so q is a point mass.
    Lookup {
        /// Maximum n-gram length to match.
        max_ngram: usize,
    },
}

/// Settings of speculative decoding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Maximum draft tokens per round, K.
    pub k_max: usize,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f32,
    /// Top-p threshold; 0 or 1 turns it off.
    pub topp: f32,
    /// Stop drafting a round early when the draft's most likely token has a
    /// probability below this; 0 never stops early.
    pub draft_p_min: f32,
    /// Adapt the draft length within [1, k_max] from the last round: one
    /// more after a round with every draft accepted, one fewer after a round
    /// with none accepted.
    pub adaptive: bool,
    /// Seed of the random stream.
    pub seed: u64,
}

/// Counts over a whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Rounds run.
    pub rounds: u64,
    /// Draft tokens proposed.
    pub drafted: u64,
    /// Draft tokens accepted.
    pub accepted: u64,
    /// Forward calls of the target, prompt prefill included.
    pub target_forwards: u64,
    /// Forward calls of the draft model, catch-up and re-fill included.
    pub draft_forwards: u64,
    /// Tokens emitted by rounds.
    pub emitted: u64,
    /// Times the draft model's window was re-filled with the most recent
    /// half of its context.
    pub draft_refills: u64,
    /// Highest position at which a draft token was proposed, 0 if none.
    pub max_draft_position: u64,
}

/// The tokens one round emitted: `tokens[..accepted]` are accepted drafts
/// and `tokens[accepted]` came from the target (a correction or the bonus).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// Number of tokens written to the output, at least 1.
    pub emitted: usize,
    /// Number of them that were accepted drafts.
    pub accepted: usize,
}

/// Reasons a speculative decoder is rejected or a round fails.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum SpecError {
    /// The draft model's vocabulary differs from the target's.
    VocabMismatch {
        /// The target's vocabulary size.
        target: usize,
        /// The draft's vocabulary size.
        draft: usize,
    },
    /// K is 0.
    ZeroDraftLength,
    /// The target state cannot take `k_max + 1` tokens in one call.
    TargetBatchTooSmall {
        /// Tokens a verify pass needs.
        needed: usize,
        /// The state's maximum batch.
        max_batch: usize,
    },
    /// K is too large for the draft model's context: drafting continues after
    /// a re-fill to half the window, so K must stay below `seq_len / 2`.
    DraftContextTooShort {
        /// The requested K.
        k_max: usize,
        /// The draft model's context length.
        seq_len: usize,
    },
    /// Prompt lookup with an n-gram length of 0.
    ZeroNgram,
    /// Temperature negative or not a number, or top-p outside [0, 1].
    InvalidSampling,
    /// A caller buffer is too short.
    BufferTooSmall {
        /// Which buffer.
        buffer: &'static str,
        /// Elements needed.
        needed: usize,
        /// Elements given.
        found: usize,
    },
    /// The prompt is empty or longer than the target's context.
    InvalidPrompt {
        /// Prompt tokens.
        len: usize,
        /// The target's context length.
        seq_len: usize,
    },
    /// No room left for a round: the last committed token is at the
    /// target's final position.
    ContextFull,
    /// A round was asked for before [`Speculator::prefill`].
    NotStarted,
    /// `draft_p_min` is outside [0, 1] or not a number.
    InvalidDraftPMin,
    /// A forward call failed.
    Forward(ForwardError),
}

impl From<ForwardError> for SpecError {
    fn from(e: ForwardError) -> Self {
        SpecError::Forward(e)
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SpecError::VocabMismatch { target, draft } => write!(
                f,
                "draft vocabulary has {draft} tokens but the target's has {target}; use a draft trained \
                 with the target's tokenizer"
            ),
            SpecError::ZeroDraftLength => write!(f, "draft length K is 0; use at least 1"),
            SpecError::TargetBatchTooSmall { needed, max_batch } => write!(
                f,
                "a verify pass needs {needed} tokens per forward call but the target state holds \
                 {max_batch}; size it for k_max + 1"
            ),
            SpecError::DraftContextTooShort { k_max, seq_len } => write!(
                f,
                "draft length {k_max} is too long for a draft context of {seq_len} tokens; use a K \
                 below {}",
                seq_len / 2
            ),
            SpecError::ZeroNgram => write!(f, "prompt lookup n-gram length is 0; use at least 1"),
            SpecError::InvalidSampling => write!(
                f,
                "invalid sampling settings; temperature must be 0 or positive and top-p in [0, 1]"
            ),
            SpecError::BufferTooSmall { buffer, needed, found } => {
                write!(f, "{buffer} buffer has {found} entries but needs {needed}")
            }
            SpecError::InvalidPrompt { len, seq_len } => write!(
                f,
                "prompt of {len} tokens does not fit the target's context of {seq_len}; it needs 1 to \
                 {seq_len} tokens"
            ),
            SpecError::ContextFull => write!(f, "no room for another round in the target's context"),
            SpecError::NotStarted => {
                write!(f, "no prompt yet; call prefill before the first round")
            }
            SpecError::InvalidDraftPMin => {
                write!(f, "invalid draft_p_min; use a probability in [0, 1]")
            }
            SpecError::Forward(e) => write!(f, "{e}"),
        }
    }
}

/// Caller memory of a [`Speculator`], with sizes from
/// [`Buffers::lengths`].
pub struct Buffers<'s> {
    /// Committed tokens: `target.seq_len + 1` entries.
    pub tokens: &'s mut [u32],
    /// Draft distributions: `k_max * vocab_size` entries.
    pub q: &'s mut [f32],
    /// Top-p scratch: `vocab_size` entries.
    pub scratch: &'s mut [ProbIndex],
}

impl Buffers<'_> {
    /// Entries needed in `tokens`, `q` and `scratch`.
    pub fn lengths(target: &Transformer<'_>, k_max: usize) -> (usize, usize, usize) {
        let vocab = target.config.vocab_size();
        (
            target.config.seq_len() + 1,
            k_max.saturating_mul(vocab),
            vocab,
        )
    }
}

/// Turns `logits` into run.c's sampling distribution in place: divide by the
/// temperature, softmax, and with top-p in (0, 1) keep the smallest set of
/// most likely tokens whose cumulative probability exceeds top-p, renormalized
/// by that cumulative probability as run.c's `sample_topp` does. Tokens
/// outside the set get probability 0.
///
/// `temperature` must be positive; `scratch` holds `logits.len()` entries.
pub fn sampling_distribution(
    logits: &mut [f32],
    temperature: f32,
    topp: f32,
    scratch: &mut [ProbIndex],
) {
    let best = sample_argmax(logits) as usize;
    for l in logits.iter_mut() {
        *l /= temperature;
    }
    if !logits[best].is_finite() {
        // A temperature so small that the largest logit overflowed: the
        // point mass on the argmax, as the sampler uses.
        logits.fill(0.0);
        logits[best] = 1.0;
        return;
    }
    softmax(logits);
    if topp <= 0.0 || topp >= 1.0 {
        return;
    }
    let Some((nucleus, cumulative_prob)) = topp_nucleus(logits, topp, scratch) else {
        // As `sample_topp`: fall back to the most likely token.
        let best = sample_argmax(logits) as usize;
        logits.fill(0.0);
        logits[best] = 1.0;
        return;
    };
    logits.fill(0.0);
    for c in nucleus {
        logits[c.index as usize] = c.prob / cumulative_prob;
    }
}

/// Draws from `probabilities` (summing to `total`) with `coin` in [0, 1).
fn sample_scaled(probabilities: &[f32], total: f32, coin: f32) -> u32 {
    let r = coin * total;
    let mut cdf = 0.0f32;
    let mut last_positive = 0;
    for (i, &p) in probabilities.iter().enumerate() {
        if p > 0.0 {
            last_positive = i;
        }
        cdf += p;
        if r < cdf {
            return i as u32;
        }
    }
    // Rounding left r at or above the final sum: take the last token that
    // has probability, never one with probability 0.
    last_positive as u32
}

/// The draft's distributions over one round's tokens.
#[derive(Clone, Copy, Debug)]
pub enum DraftProbs<'a> {
    /// Each draft token was certain (prompt lookup): q is a point mass.
    PointMass,
    /// One row of `vocab_size` probabilities per draft token, after the same
    /// temperature and top-p transform as the target's.
    Rows(&'a [f32]),
}

impl DraftProbs<'_> {
    /// q_i(x) for draft position `i`, whose drafted token is `d`.
    fn prob(&self, i: usize, vocab: usize, d: u32, x: usize) -> f32 {
        match *self {
            DraftProbs::PointMass => {
                if x == d as usize {
                    1.0
                } else {
                    0.0
                }
            }
            DraftProbs::Rows(rows) => rows[i * vocab + x],
        }
    }
}

/// Probability of accepting a draft token: min(1, p(d) / q(d)), and 0 when
/// the draft gave it no probability.
pub fn acceptance_probability(p_d: f32, q_d: f32) -> f32 {
    if q_d > 0.0 {
        (p_d / q_d).min(1.0)
    } else {
        0.0
    }
}

/// Replaces `p` by max(0, p - q), unnormalized, and returns its sum: the
/// distribution a rejected position draws from.
pub fn residual_distribution(p: &mut [f32], q: impl Fn(usize) -> f32) -> f32 {
    let mut total = 0.0f32;
    for (x, px) in p.iter_mut().enumerate() {
        *px = (*px - q(x)).max(0.0);
        total += *px;
    }
    total
}

/// Runs the accept/reject walk of one round and returns the number of
/// accepted drafts and the token the target adds after them.
///
/// `rows` contains the target's `drafts.len() + 1` rows of logits from the
/// verify pass; rows are turned into distributions in place as the walk
/// reaches them. The walk stops at the first rejection. At temperature 0 a
/// draft is accepted when it is the row's argmax, and the argmax is emitted
/// at the first mismatch or as the bonus.
#[allow(clippy::too_many_arguments)]
pub fn accept_drafts(
    rows: &mut [f32],
    drafts: &[u32],
    q: DraftProbs<'_>,
    temperature: f32,
    topp: f32,
    rng_state: &mut u64,
    scratch: &mut [ProbIndex],
) -> (usize, u32) {
    let k = drafts.len();
    let vocab = rows.len() / (k + 1);
    let greedy = temperature == 0.0;
    for (i, &d) in drafts.iter().enumerate() {
        let p = &mut rows[i * vocab..(i + 1) * vocab];
        if greedy {
            let best = sample_argmax(p);
            if best != d {
                return (i, best);
            }
            continue;
        }
        sampling_distribution(p, temperature, topp, scratch);
        let accept = acceptance_probability(p[d as usize], q.prob(i, vocab, d, d as usize));
        if random_f32(rng_state) < accept {
            continue;
        }
        let total = residual_distribution(p, |x| q.prob(i, vocab, d, x));
        return (i, sample_scaled(p, total, random_f32(rng_state)));
    }
    // Every draft accepted: the bonus token from the last row.
    let p = &mut rows[k * vocab..(k + 1) * vocab];
    if greedy {
        return (k, sample_argmax(p));
    }
    sampling_distribution(p, temperature, topp, scratch);
    (k, sample_mult(p, random_f32(rng_state)))
}

/// A speculative decoder over one sequence.
pub struct Speculator<'m, 's> {
    target: &'m Transformer<'m>,
    target_state: RunState<'s>,
    draft: Draft<'m, 's>,
    settings: Settings,
    rng_state: u64,
    tokens: &'s mut [u32],
    q: &'s mut [f32],
    scratch: &'s mut [ProbIndex],
    /// Committed tokens; `tokens[len - 1]` is the last one, which the target
    /// has not run yet (it starts the next verify batch).
    len: usize,
    /// Draft-model cache: absolute position of its first entry, and the
    /// first absolute position whose entry is not valid.
    draft_offset: usize,
    draft_valid: usize,
    /// Draft tokens of the current round.
    proposed: [u32; MAX_K],
    proposed_len: usize,
    /// Draft length for the next round.
    k_current: usize,
    stats: Stats,
    /// Threads for the forward passes of both models.
    par: &'m dyn Parallel,
}

/// The default of [`Speculator::set_parallel`].
static SERIAL: Serial = Serial;

/// Largest supported K. A verify pass of more than 64 tokens costs as much as
/// that many single-token passes on any CPU this targets.
pub const MAX_K: usize = 64;

impl<'m, 's> Speculator<'m, 's> {
    /// Creates a decoder for `target` with run state `target_state` (maximum
    /// batch at least `k_max + 1`) and a draft source.
    pub fn new(
        target: &'m Transformer<'m>,
        target_state: RunState<'s>,
        draft: Draft<'m, 's>,
        settings: Settings,
        buffers: Buffers<'s>,
    ) -> Result<Self, SpecError> {
        let vocab = target.config.vocab_size();
        if settings.k_max == 0 || settings.k_max > MAX_K {
            return Err(SpecError::ZeroDraftLength);
        }
        if settings.temperature.is_nan()
            || settings.temperature < 0.0
            || settings.topp.is_nan()
            || !(0.0..=1.0).contains(&settings.topp)
        {
            return Err(SpecError::InvalidSampling);
        }
        if settings.draft_p_min.is_nan() || !(0.0..=1.0).contains(&settings.draft_p_min) {
            return Err(SpecError::InvalidDraftPMin);
        }
        if target_state.max_batch() < settings.k_max + 1 {
            return Err(SpecError::TargetBatchTooSmall {
                needed: settings.k_max + 1,
                max_batch: target_state.max_batch(),
            });
        }
        match &draft {
            Draft::Model { model, .. } => {
                if model.config.vocab_size() != vocab {
                    return Err(SpecError::VocabMismatch {
                        target: vocab,
                        draft: model.config.vocab_size(),
                    });
                }
                if settings.k_max >= model.config.seq_len() / 2 {
                    return Err(SpecError::DraftContextTooShort {
                        k_max: settings.k_max,
                        seq_len: model.config.seq_len(),
                    });
                }
            }
            Draft::Lookup { max_ngram } => {
                if *max_ngram == 0 {
                    return Err(SpecError::ZeroNgram);
                }
            }
        }
        let (tokens_len, q_len, scratch_len) = Buffers::lengths(target, settings.k_max);
        let checks = [
            ("tokens", tokens_len, buffers.tokens.len()),
            ("q", q_len, buffers.q.len()),
            ("scratch", scratch_len, buffers.scratch.len()),
        ];
        for (buffer, needed, found) in checks {
            if found < needed {
                return Err(SpecError::BufferTooSmall {
                    buffer,
                    needed,
                    found,
                });
            }
        }
        Ok(Speculator {
            target,
            target_state,
            draft,
            settings,
            rng_state: settings.seed,
            tokens: buffers.tokens,
            q: buffers.q,
            scratch: buffers.scratch,
            len: 0,
            draft_offset: 0,
            draft_valid: 0,
            proposed: [0; MAX_K],
            proposed_len: 0,
            k_current: settings.k_max,
            stats: Stats::default(),
            par: &SERIAL,
        })
    }

    /// Runs the forward passes of both models on `par`'s threads. The output
    /// is the same for any thread count.
    pub fn set_parallel(&mut self, par: &'m dyn Parallel) {
        self.par = par;
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Committed tokens, prompt included.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens[..self.len]
    }

    /// Runs the prompt (BOS included) through the target, all but its last
    /// token, which starts the first verify batch. The draft model catches up
    /// lazily in the first round.
    pub fn prefill(&mut self, prompt: &[u32]) -> Result<(), SpecError> {
        let seq_len = self.target.config.seq_len();
        if prompt.is_empty() || prompt.len() > seq_len {
            return Err(SpecError::InvalidPrompt {
                len: prompt.len(),
                seq_len,
            });
        }
        let body = &prompt[..prompt.len() - 1];
        let batch = self.target_state.max_batch();
        for (i, chunk) in body.chunks(batch).enumerate() {
            self.target.forward_parallel(
                &mut self.target_state,
                chunk,
                i * batch,
                Logits::Last,
                self.par,
            )?;
            self.stats.target_forwards += 1;
        }
        self.tokens[..prompt.len()].copy_from_slice(prompt);
        self.len = prompt.len();
        self.draft_offset = 0;
        self.draft_valid = 0;
        Ok(())
    }

    /// Runs one round and writes the emitted tokens to `out`, at most
    /// `max_emit` of them (at least 1). `out` needs `k_max + 1` entries.
    pub fn step(&mut self, max_emit: usize, out: &mut [u32]) -> Result<Round, SpecError> {
        self.propose(max_emit)?;
        self.verify(out)
    }

    /// Drafts the tokens of the next round: the first half of [`step`],
    /// separate so that callers can time the draft and the target apart.
    ///
    /// [`step`]: Speculator::step
    pub fn propose(&mut self, max_emit: usize) -> Result<usize, SpecError> {
        let seq_len = self.target.config.seq_len();
        if self.len == 0 {
            return Err(SpecError::NotStarted);
        }
        if self.len > seq_len || max_emit == 0 {
            return Err(SpecError::ContextFull);
        }
        let pos = self.len - 1;
        // The verify batch covers positions pos..=pos + k, and a round emits
        // at most k + 1 tokens.
        let k = self.k_current.min(max_emit - 1).min(seq_len - 1 - pos);
        self.proposed_len = 0;
        if k == 0 {
            return Ok(0);
        }
        match self.draft {
            Draft::Lookup { max_ngram } => self.propose_lookup(max_ngram, k),
            Draft::Model { .. } => self.propose_model(pos, k)?,
        }
        self.stats.drafted += self.proposed_len as u64;
        if self.proposed_len > 0 {
            let last = (pos + self.proposed_len) as u64;
            self.stats.max_draft_position = self.stats.max_draft_position.max(last);
        }
        Ok(self.proposed_len)
    }

    fn propose_lookup(&mut self, max_ngram: usize, k: usize) {
        let context = &self.tokens[..self.len];
        let len = context.len();
        for n in (1..=max_ngram.min(len.saturating_sub(1))).rev() {
            let suffix = &context[len - n..];
            // The most recent earlier occurrence that has a token after it.
            let found = (0..len - n).rev().find(|&j| &context[j..j + n] == suffix);
            if let Some(j) = found {
                let follow = &context[j + n..len.min(j + n + k)];
                self.proposed[..follow.len()].copy_from_slice(follow);
                self.proposed_len = follow.len();
                return;
            }
        }
    }

    fn propose_model(&mut self, pos: usize, k: usize) -> Result<(), SpecError> {
        let Draft::Model { model, state } = &mut self.draft else {
            return Ok(());
        };
        let vocab = model.config.vocab_size();
        let draft_seq_len = model.config.seq_len();

        // The draft runs the last committed token at pos and then d1..d(k-1)
        // at pos + 1..pos + k - 1. When those do not fit its window, restart
        // the window with the most recent half of it.
        if pos + k - 1 - self.draft_offset > draft_seq_len - 1 {
            self.draft_offset = pos + 1 - draft_seq_len / 2;
            self.draft_valid = self.draft_offset;
            self.stats.draft_refills += 1;
        }
        let offset = self.draft_offset;
        let start = self.draft_valid.max(offset);
        let catch_up = &self.tokens[start..=pos];
        let batch = state.max_batch();
        let mut logits_pos = start;
        for chunk in catch_up.chunks(batch) {
            model.forward_parallel(state, chunk, logits_pos - offset, Logits::Last, self.par)?;
            self.stats.draft_forwards += 1;
            logits_pos += chunk.len();
        }
        self.draft_valid = pos + 1;

        let greedy = self.settings.temperature == 0.0;
        for i in 0..k {
            let q = &mut self.q[i * vocab..(i + 1) * vocab];
            q.copy_from_slice(&state.logits()[..vocab]);
            // Every round drafts at least one token; later ones stop when the
            // draft's most likely token is below draft_p_min.
            let check_p_min = self.settings.draft_p_min > 0.0 && i > 0;
            let d = if greedy {
                let d = sample_argmax(q);
                if check_p_min {
                    softmax(q);
                    if q[d as usize] < self.settings.draft_p_min {
                        break;
                    }
                }
                d
            } else {
                sampling_distribution(
                    q,
                    self.settings.temperature,
                    self.settings.topp,
                    self.scratch,
                );
                if check_p_min
                    && q.iter().copied().fold(0.0f32, f32::max) < self.settings.draft_p_min
                {
                    break;
                }
                let coin = random_f32(&mut self.rng_state);
                sample_mult(q, coin)
            };
            self.proposed[i] = d;
            self.proposed_len = i + 1;
            if i + 1 < k {
                let at = pos + 1 + i;
                model.forward_parallel(state, &[d], at - offset, Logits::Last, self.par)?;
                self.stats.draft_forwards += 1;
                self.draft_valid = at + 1;
            }
        }
        Ok(())
    }

    /// Verifies the proposed tokens with one target forward pass and writes
    /// the emitted tokens to `out`: the second half of [`Speculator::step`].
    pub fn verify(&mut self, out: &mut [u32]) -> Result<Round, SpecError> {
        let k = self.proposed_len;
        if out.len() < k + 1 {
            return Err(SpecError::BufferTooSmall {
                buffer: "out",
                needed: k + 1,
                found: out.len(),
            });
        }
        if self.len == 0 {
            return Err(SpecError::NotStarted);
        }
        let pos = self.len - 1;
        let vocab = self.target.config.vocab_size();

        // One batch: the last committed token, then the drafts.
        let mut batch = [0u32; MAX_K + 1];
        batch[0] = self.tokens[pos];
        batch[1..=k].copy_from_slice(&self.proposed[..k]);
        let logits = self.target.forward_parallel(
            &mut self.target_state,
            &batch[..=k],
            pos,
            Logits::All,
            self.par,
        )?;
        self.stats.target_forwards += 1;

        let q = match self.draft {
            Draft::Lookup { .. } => DraftProbs::PointMass,
            Draft::Model { .. } => DraftProbs::Rows(&self.q[..k * vocab]),
        };
        let (accepted, last) = accept_drafts(
            &mut logits[..(k + 1) * vocab],
            &self.proposed[..k],
            q,
            self.settings.temperature,
            self.settings.topp,
            &mut self.rng_state,
            self.scratch,
        );

        out[..accepted].copy_from_slice(&self.proposed[..accepted]);
        out[accepted] = last;
        let emitted = accepted + 1;
        self.tokens[self.len..self.len + emitted].copy_from_slice(&out[..emitted]);
        self.len += emitted;
        // Draft entries for committed drafts stay valid; the rest roll back.
        if k > 0 {
            self.draft_valid = self.draft_valid.min(pos + 1 + accepted);
        }

        self.stats.rounds += 1;
        self.stats.accepted += accepted as u64;
        self.stats.emitted += emitted as u64;
        if self.settings.adaptive && k > 0 {
            if accepted == k {
                self.k_current = (self.k_current + 1).min(self.settings.k_max);
            } else if accepted == 0 {
                self.k_current = self.k_current.saturating_sub(1).max(1);
            }
        }
        self.proposed_len = 0;
        Ok(Round { emitted, accepted })
    }
}
