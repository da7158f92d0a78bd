//! Plain generation with a per-token callback, as run.c's `generate`.

use std::ffi::{c_char, c_void};

use specdec_core::parallel::{Parallel, Serial};
use specdec_core::tokenizer::{encode_capacity, BOS};
use specdec_core::Logits;

use crate::sampler::specdec_sampler;
use crate::session::{forward_status, specdec_session};
use crate::specdec_status::{self, *};
use crate::tokenizer::{specdec_tokenizer, tokenizer_status};
use crate::{guard, non_null, try_vec};

/// Receives each piece of generated text: the token id and its decoded
/// bytes (not NUL-terminated). Returning nonzero stops generation.
pub type specdec_token_fn = Option<
    unsafe extern "C" fn(user: *mut c_void, token: i32, piece: *const u8, len: usize) -> i32,
>;

/// Generates text as llama2.c's `generate` does and passes every piece to
/// `callback`, prompt pieces included, so printing each piece with run.c's
/// `safe_printf` and a final newline reproduces run.c's stdout.
///
/// The prompt (`prompt_len` bytes of UTF-8, NULL allowed when 0) is encoded
/// with BOS. `steps` counts positions, prompt included: 0 or more than the
/// model's seq_len means seq_len, as in run.c. Generation stops at `steps`,
/// at a sampled BOS, or when the callback returns nonzero. A prompt longer
/// than seq_len returns `SPECDEC_ERR_CONTEXT_OVERFLOW` before any callback.
/// The session's maximum batch sets how many prompt tokens one forward call
/// takes. The tokenizer and sampler must match the model's vocabulary.
///
/// # Safety
/// `session`, `tokenizer` and `sampler` are live; `prompt` points to
/// `prompt_len` readable bytes; `callback` is safe to call with `user`.
#[no_mangle]
pub unsafe extern "C" fn specdec_generate(
    session: *mut specdec_session,
    tokenizer: *const specdec_tokenizer,
    sampler: *mut specdec_sampler,
    prompt: *const c_char,
    prompt_len: usize,
    steps: usize,
    callback: specdec_token_fn,
    user: *mut c_void,
) -> specdec_status {
    guard(|| {
        non_null(session)?;
        non_null(tokenizer)?;
        non_null(sampler)?;
        let Some(callback) = callback else {
            return Err(SPECDEC_ERR_NULL_POINTER);
        };
        if prompt_len > 0 {
            non_null(prompt)?;
        }
        // SAFETY: live handles and `prompt_len` readable bytes by contract.
        let (session, tokenizer, sampler, text) = unsafe {
            (
                &mut *session,
                &(*tokenizer).tokenizer,
                &mut *sampler,
                if prompt_len == 0 {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(prompt.cast::<u8>(), prompt_len)
                },
            )
        };
        // SAFETY: the model outlives the session by contract.
        let model = unsafe { &(*session.model).transformer };
        let config = model.config;
        if tokenizer.vocab_size() != config.vocab_size()
            || sampler.vocab_size != config.vocab_size()
        {
            return Err(SPECDEC_ERR_VOCAB_MISMATCH);
        }
        let seq_len = config.seq_len();
        let steps = if steps == 0 || steps > seq_len {
            seq_len
        } else {
            steps
        };

        // Reject a prompt that cannot fit before running the merge loop on it:
        // each token covers at most max_token_length bytes.
        let max_len = tokenizer.max_token_length().max(1);
        if prompt_len > 0 && 1 + (prompt_len + 1).div_ceil(max_len) > seq_len {
            return Err(SPECDEC_ERR_CONTEXT_OVERFLOW);
        }
        let capacity = encode_capacity(prompt_len);
        let mut tokens = try_vec(0u32, capacity)?;
        let mut scratch = try_vec(0u32, capacity)?;
        let n = tokenizer
            .encode(text, true, false, &mut tokens, &mut scratch)
            .map_err(tokenizer_status)?;
        let prompt = &tokens[..n];
        if n > seq_len {
            return Err(SPECDEC_ERR_CONTEXT_OVERFLOW);
        }

        let emit = |prev: u32, token: u32| -> Result<bool, specdec_status> {
            let piece = tokenizer.decode(prev, token).map_err(tokenizer_status)?;
            // SAFETY: the caller vouches for the callback and `user`.
            let stop = unsafe { callback(user, token as i32, piece.as_ptr(), piece.len()) };
            Ok(stop != 0)
        };

        let par: &dyn Parallel = match session.pool.as_deref() {
            Some(pool) => pool,
            None => &Serial,
        };

        // Prefill the prompt in batches; only the last row's logits matter.
        let fed = n.min(steps);
        let batch = session.state.max_batch();
        let mut start = 0;
        while start < fed {
            let end = (start + batch).min(fed);
            model
                .forward_parallel(
                    &mut session.state,
                    &prompt[start..end],
                    start,
                    Logits::Last,
                    par,
                )
                .map_err(forward_status)?;
            start = end;
        }
        for pos in 0..fed.min(n - 1) {
            let next = prompt[pos + 1];
            if next == BOS || emit(prompt[pos], next)? {
                return Ok(());
            }
        }
        if fed < n {
            return Ok(());
        }

        let vocab = config.vocab_size();
        let mut token = prompt[n - 1];
        let mut pos = n;
        loop {
            // The logits of the token at pos - 1 are in row 0.
            let next = sampler.sample(&mut session.state.logits_mut()[..vocab])?;
            if next == BOS || emit(token, next)? {
                return Ok(());
            }
            token = next;
            if pos >= steps {
                return Ok(());
            }
            model
                .forward_parallel(&mut session.state, &[token], pos, Logits::Last, par)
                .map_err(forward_status)?;
            pos += 1;
        }
    })
}
