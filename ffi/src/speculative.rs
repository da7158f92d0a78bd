//! Speculative sessions: a target model with a draft model or prompt lookup.

use specdec_core::parallel::ThreadPool;
use specdec_core::sampler::ProbIndex;
use specdec_core::speculative::{Buffers, Draft, Settings, SpecError, Speculator, Stats, MAX_K};
use specdec_core::{state_size, RunState};

use crate::model::specdec_model;
use crate::session::forward_status;
use crate::specdec_status::{self, *};
use crate::{guard, non_null, try_vec, write_out};

/// Settings of a speculative session.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct specdec_spec_params {
    /// Maximum draft tokens per round, 1 to 64.
    pub k: usize,
    /// With no draft model: prompt lookup with n-grams up to this length
    /// (at least 1). Ignored when a draft model is given.
    pub lookup_ngram: usize,
    /// Sampling temperature; 0 is greedy, which gives exactly the output of
    /// plain greedy decoding.
    pub temperature: f32,
    /// Top-p in [0, 1]; 0 or 1 turns it off.
    pub topp: f32,
    /// Seed of the random stream.
    pub seed: u64,
    /// Stop drafting a round, after its first draft token, when the draft's
    /// top probability is below this; in [0, 1], and 0 turns it off.
    pub draft_p_min: f32,
    /// Nonzero to adapt the draft length within [1, k] from the last round.
    pub adaptive: u8,
    /// Threads for the forward passes: 0 means one per available core, 1
    /// runs on the calling thread only. The output is the same for any
    /// count.
    pub threads: usize,
}

/// Counts of a speculative session.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct specdec_spec_stats {
    /// Rounds (verify passes).
    pub rounds: u64,
    /// Draft tokens proposed.
    pub drafted: u64,
    /// Draft tokens accepted.
    pub accepted: u64,
    /// Target forward calls, prefill included.
    pub target_forwards: u64,
    /// Draft model forward calls.
    pub draft_forwards: u64,
    /// Tokens emitted by rounds: accepted drafts plus one per round.
    pub emitted: u64,
}

/// A speculative decoder over one sequence. Used by one thread at a time;
/// the target and draft models may be shared with other sessions.
pub struct specdec_spec {
    /// Borrows the buffers and the pool below and the models; declared
    /// first so it is dropped before them.
    speculator: Speculator<'static, 'static>,
    _pool: Box<ThreadPool>,
    _target_memory: Box<[u32]>,
    _draft_memory: Option<Box<[u32]>>,
    _tokens: Box<[u32]>,
    _q: Box<[f32]>,
    _scratch: Box<[ProbIndex]>,
    k: usize,
}

fn spec_status(e: SpecError) -> specdec_status {
    match e {
        SpecError::VocabMismatch { .. } => SPECDEC_ERR_VOCAB_MISMATCH,
        SpecError::BufferTooSmall { .. } => SPECDEC_ERR_BUFFER_TOO_SMALL,
        SpecError::InvalidPrompt { len: 0, .. } | SpecError::NotStarted => {
            SPECDEC_ERR_INVALID_ARGUMENT
        }
        SpecError::InvalidPrompt { .. } | SpecError::ContextFull => SPECDEC_ERR_CONTEXT_OVERFLOW,
        SpecError::Forward(e) => forward_status(e),
        _ => SPECDEC_ERR_INVALID_ARGUMENT,
    }
}

/// Hands out a `'static` mutable view of a boxed slice that the session
/// owns. The heap allocation does not move when the box does.
///
/// # Safety
/// The box must outlive every use of the view and not be accessed otherwise.
unsafe fn extend<T>(b: &mut [T]) -> &'static mut [T] {
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr(), b.len()) }
}

/// Starts a thread pool of `threads` threads, 0 meaning one per available
/// core.
pub(crate) fn new_pool(threads: usize) -> Result<ThreadPool, specdec_status> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    if threads > 1024 {
        return Err(SPECDEC_ERR_INVALID_ARGUMENT);
    }
    ThreadPool::new(threads).map_err(|_| SPECDEC_ERR_OUT_OF_MEMORY)
}

/// Creates a speculative session for `target`, drafting with `draft`, or by
/// prompt lookup when `draft` is NULL. Both models must outlive the session.
/// A draft whose vocabulary differs from the target's returns
/// `SPECDEC_ERR_VOCAB_MISMATCH`. Free the session with `specdec_spec_free`.
///
/// # Safety
/// `target` is live; `draft` is NULL or live; `params` points to readable
/// settings; `out` to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn specdec_spec_new(
    target: *const specdec_model,
    draft: *const specdec_model,
    params: *const specdec_spec_params,
    out: *mut *mut specdec_spec,
) -> specdec_status {
    guard(|| {
        non_null(target)?;
        non_null(params)?;
        non_null(out)?;
        // SAFETY: live model and readable params by contract.
        let (target, params) = unsafe { (&(*target).transformer, *params) };
        if params.k == 0 || params.k > MAX_K {
            return Err(SPECDEC_ERR_INVALID_ARGUMENT);
        }
        let k = params.k;
        let config = target.config;
        let target_batch = k + 1;
        let mut target_memory = try_vec(
            0u32,
            state_size(&config, target_batch)
                .map_err(|_| SPECDEC_ERR_OUT_OF_MEMORY)?
                .div_ceil(4),
        )?
        .into_boxed_slice();
        // SAFETY: the box moves into the session, which drops the speculator
        // borrowing it first; the u32 storage is 4-byte aligned.
        let target_bytes = unsafe { extend(&mut target_memory) };
        // SAFETY: same storage viewed as bytes, with the unique borrow above.
        let target_bytes: &'static mut [u8] = unsafe {
            std::slice::from_raw_parts_mut(
                target_bytes.as_mut_ptr().cast::<u8>(),
                target_bytes.len() * 4,
            )
        };
        let target_state =
            RunState::new(&config, target_batch, target_bytes).map_err(|_| SPECDEC_ERR_INTERNAL)?;

        let mut draft_memory = None;
        let draft_source = if draft.is_null() {
            if params.lookup_ngram == 0 {
                return Err(SPECDEC_ERR_INVALID_ARGUMENT);
            }
            Draft::Lookup {
                max_ngram: params.lookup_ngram,
            }
        } else {
            // SAFETY: live model by contract; it outlives the session.
            let draft_model: &'static specdec_core::Transformer<'static> =
                unsafe { &(*draft).transformer };
            let draft_config = draft_model.config;
            if draft_config.vocab_size() != config.vocab_size() {
                return Err(SPECDEC_ERR_VOCAB_MISMATCH);
            }
            let batch = (draft_config.seq_len() / 2).clamp(2, 128);
            let size = state_size(&draft_config, batch).map_err(|_| SPECDEC_ERR_OUT_OF_MEMORY)?;
            let mut memory = try_vec(0u32, size.div_ceil(4))?.into_boxed_slice();
            // SAFETY: as for the target memory above.
            let words = unsafe { extend(&mut memory) };
            // SAFETY: same storage viewed as bytes.
            let bytes: &'static mut [u8] = unsafe {
                std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 4)
            };
            let state =
                RunState::new(&draft_config, batch, bytes).map_err(|_| SPECDEC_ERR_INTERNAL)?;
            draft_memory = Some(memory);
            Draft::Model {
                model: draft_model,
                state,
            }
        };

        // SAFETY: the target model outlives the session by contract.
        let target: &'static specdec_core::Transformer<'static> = unsafe { &*(target as *const _) };
        let (tokens_len, q_len, scratch_len) = Buffers::lengths(target, k);
        let mut tokens = try_vec(0u32, tokens_len)?.into_boxed_slice();
        let mut q = try_vec(0f32, q_len)?.into_boxed_slice();
        let mut scratch = try_vec(ProbIndex::default(), scratch_len)?.into_boxed_slice();
        // SAFETY: the boxes move into the session below, which outlives the
        // speculator's borrows.
        let buffers = unsafe {
            Buffers {
                tokens: extend(&mut tokens),
                q: extend(&mut q),
                scratch: extend(&mut scratch),
            }
        };
        let settings = Settings {
            k_max: k,
            temperature: params.temperature,
            topp: params.topp,
            draft_p_min: params.draft_p_min,
            adaptive: params.adaptive != 0,
            seed: params.seed,
        };
        let mut speculator = Speculator::new(target, target_state, draft_source, settings, buffers)
            .map_err(spec_status)?;
        let pool = Box::new(new_pool(params.threads)?);
        // SAFETY: the pool is boxed (stable address) and moves into the
        // session, which drops the speculator first.
        let pool_ref: &'static ThreadPool = unsafe { &*(&*pool as *const ThreadPool) };
        speculator.set_parallel(pool_ref);
        let session = Box::new(specdec_spec {
            speculator,
            _pool: pool,
            _target_memory: target_memory,
            _draft_memory: draft_memory,
            _tokens: tokens,
            _q: q,
            _scratch: scratch,
            k,
        });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, Box::into_raw(session)) };
        Ok(())
    })
}

/// Frees a speculative session. NULL is ignored.
///
/// # Safety
/// `spec` is NULL or a live pointer from `specdec_spec_new`.
#[no_mangle]
pub unsafe extern "C" fn specdec_spec_free(spec: *mut specdec_spec) {
    if !spec.is_null() {
        // SAFETY: from Box::into_raw in specdec_spec_new, freed once.
        drop(unsafe { Box::from_raw(spec) });
    }
}

/// Starts the sequence with `n` prompt tokens (BOS first, as
/// `specdec_tokenizer_encode` gives with `bos` set), 1 to seq_len of them.
///
/// # Safety
/// `spec` is live; `prompt` points to `n` ids.
#[no_mangle]
pub unsafe extern "C" fn specdec_spec_prefill(
    spec: *mut specdec_spec,
    prompt: *const i32,
    n: usize,
) -> specdec_status {
    guard(|| {
        non_null(spec)?;
        non_null(prompt)?;
        // SAFETY: live session; `n` readable ids; i32 and u32 share layout,
        // and a negative id reads as at least 2^31, which forward rejects.
        let (spec, prompt) = unsafe {
            (
                &mut *spec,
                std::slice::from_raw_parts(prompt.cast::<u32>(), n),
            )
        };
        spec.speculator.prefill(prompt).map_err(spec_status)
    })
}

/// Runs one round: drafts up to k tokens, verifies them in one target pass,
/// and writes the emitted tokens (at least 1, at most `max_emit` and k + 1)
/// to `tokens`. When `accepted` is not NULL, `accepted[i]` is set to 1 for
/// tokens that were accepted drafts and 0 for the one the target added.
/// `*n_emitted` receives the count. `capacity` must be at least k + 1.
/// Returns `SPECDEC_ERR_CONTEXT_OVERFLOW` when the context is full and
/// `SPECDEC_ERR_INVALID_ARGUMENT` before `specdec_spec_prefill`.
///
/// # Safety
/// `spec` is live; `tokens` and `accepted` (if not NULL) point to
/// `capacity` writable elements; `n_emitted` to a writable size.
#[no_mangle]
pub unsafe extern "C" fn specdec_spec_step(
    spec: *mut specdec_spec,
    max_emit: usize,
    tokens: *mut i32,
    accepted: *mut u8,
    capacity: usize,
    n_emitted: *mut usize,
) -> specdec_status {
    guard(|| {
        non_null(spec)?;
        non_null(tokens)?;
        non_null(n_emitted)?;
        // SAFETY: live session by contract.
        let spec = unsafe { &mut *spec };
        if capacity < spec.k + 1 {
            return Err(SPECDEC_ERR_BUFFER_TOO_SMALL);
        }
        if max_emit == 0 {
            return Err(SPECDEC_ERR_INVALID_ARGUMENT);
        }
        let mut round_tokens = [0u32; MAX_K + 1];
        let round = spec
            .speculator
            .step(max_emit, &mut round_tokens)
            .map_err(spec_status)?;
        // SAFETY: `tokens` has `capacity >= k + 1 >= emitted` writable ids.
        let out = unsafe { std::slice::from_raw_parts_mut(tokens, round.emitted) };
        for (o, &t) in out.iter_mut().zip(&round_tokens[..round.emitted]) {
            *o = t as i32;
        }
        if !accepted.is_null() {
            // SAFETY: as for `tokens`.
            let flags = unsafe { std::slice::from_raw_parts_mut(accepted, round.emitted) };
            for (i, f) in flags.iter_mut().enumerate() {
                *f = u8::from(i < round.accepted);
            }
        }
        // SAFETY: checked non-NULL above.
        unsafe { write_out(n_emitted, round.emitted) };
        Ok(())
    })
}

/// Writes the session's counts to `*out`.
///
/// # Safety
/// `spec` is live; `out` points to a writable `specdec_spec_stats`.
#[no_mangle]
pub unsafe extern "C" fn specdec_spec_get_stats(
    spec: *const specdec_spec,
    out: *mut specdec_spec_stats,
) -> specdec_status {
    guard(|| {
        non_null(spec)?;
        non_null(out)?;
        // SAFETY: live session by contract.
        let s: Stats = unsafe { &*spec }.speculator.stats();
        let stats = specdec_spec_stats {
            rounds: s.rounds,
            drafted: s.drafted,
            accepted: s.accepted,
            target_forwards: s.target_forwards,
            draft_forwards: s.draft_forwards,
            emitted: s.emitted,
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, stats) };
        Ok(())
    })
}
