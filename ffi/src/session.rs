//! Sessions: the run state of one sequence (activations, KV cache, logits),
//! in caller memory or allocated.

use specdec_core::ops::Math;
use specdec_core::parallel::{Parallel, Serial, ThreadPool};
use specdec_core::{state_size, ForwardError, Logits, RunState, StateError};

use crate::model::specdec_model;
use crate::specdec_status::{self, *};
use crate::{guard, non_null, try_vec, write_out};

/// The state of one generation over one model. Used by one thread at a time.
pub struct specdec_session {
    pub(crate) model: *const specdec_model,
    /// Borrows `memory` or the caller's buffer.
    pub(crate) state: RunState<'static>,
    /// Owned arena of a session from `specdec_session_new`; `None` for one
    /// initialized in caller memory.
    memory: Option<Box<[u32]>>,
    /// Threads for forward passes; `None` runs on the calling thread.
    pub(crate) pool: Option<Box<ThreadPool>>,
}

/// Bytes the session header takes at the start of caller memory, rounded up
/// so that the state after it stays 16-byte aligned.
const HEADER_LEN: usize = std::mem::size_of::<specdec_session>().div_ceil(16) * 16;

pub(crate) fn forward_status(e: ForwardError) -> specdec_status {
    match e {
        ForwardError::ContextOverflow { .. } => SPECDEC_ERR_CONTEXT_OVERFLOW,
        ForwardError::TokenOutOfRange { .. } => SPECDEC_ERR_TOKEN_OUT_OF_RANGE,
        _ => SPECDEC_ERR_INVALID_ARGUMENT,
    }
}

fn state_status(e: StateError) -> specdec_status {
    match e {
        StateError::BufferTooSmall { .. } => SPECDEC_ERR_BUFFER_TOO_SMALL,
        StateError::Misaligned { .. } => SPECDEC_ERR_MISALIGNED,
        StateError::SizeOverflow => SPECDEC_ERR_OUT_OF_MEMORY,
        _ => SPECDEC_ERR_INVALID_ARGUMENT,
    }
}

/// Writes to `*bytes` the caller memory `specdec_session_init` needs for
/// `model` when one forward call takes at most `max_batch` tokens.
///
/// # Safety
/// `model` is live; `bytes` points to a writable size.
#[no_mangle]
pub unsafe extern "C" fn specdec_session_size(
    model: *const specdec_model,
    max_batch: usize,
    bytes: *mut usize,
) -> specdec_status {
    guard(|| {
        non_null(model)?;
        non_null(bytes)?;
        // SAFETY: live model by contract.
        let config = unsafe { &(*model).transformer.config };
        let size = state_size(config, max_batch).map_err(state_status)?;
        let total = size
            .checked_add(HEADER_LEN)
            .ok_or(SPECDEC_ERR_OUT_OF_MEMORY)?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(bytes, total) };
        Ok(())
    })
}

/// Initializes a session for `model` in `len` bytes of caller memory, which
/// must be 16-byte aligned and at least `specdec_session_size` bytes. No
/// allocation happens. `*out` receives the session, which lives in `memory`:
/// do not pass it to `specdec_session_free`; reuse or release the memory
/// once done. The model must outlive the session.
///
/// # Safety
/// `model` is live; `memory` points to `len` writable bytes that the caller
/// does not touch while the session is in use; `out` to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn specdec_session_init(
    model: *const specdec_model,
    max_batch: usize,
    memory: *mut u8,
    len: usize,
    out: *mut *mut specdec_session,
) -> specdec_status {
    guard(|| {
        non_null(model)?;
        non_null(memory)?;
        non_null(out)?;
        if !(memory as usize).is_multiple_of(16) {
            return Err(SPECDEC_ERR_MISALIGNED);
        }
        if len < HEADER_LEN {
            return Err(SPECDEC_ERR_BUFFER_TOO_SMALL);
        }
        // SAFETY: live model by contract.
        let config = unsafe { &(*model).transformer.config };
        // Zero the caller's bytes first: they may be uninitialized, which a
        // Rust slice must not be, and a zeroed KV cache makes a first call at
        // a later position read zeros rather than stale data.
        // SAFETY: `memory` has `len` writable bytes by contract.
        unsafe { std::ptr::write_bytes(memory, 0, len) };
        // SAFETY: `memory` has `len >= HEADER_LEN` writable bytes that the
        // caller lends to the session for its whole life.
        let arena: &'static mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(memory.add(HEADER_LEN), len - HEADER_LEN) };
        let state = RunState::new(config, max_batch, arena).map_err(state_status)?;
        let session = memory.cast::<specdec_session>();
        // SAFETY: `memory` is 16-byte aligned (checked), which covers the
        // session's alignment, and the first HEADER_LEN bytes are free.
        unsafe {
            session.write(specdec_session {
                model,
                state,
                memory: None,
                pool: None,
            })
        };
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, session) };
        Ok(())
    })
}

/// Allocates a session for `model` (see `specdec_session_size` for
/// `max_batch`). Free it with `specdec_session_free`. The model must outlive
/// the session.
///
/// # Safety
/// `model` is live; `out` points to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn specdec_session_new(
    model: *const specdec_model,
    max_batch: usize,
    out: *mut *mut specdec_session,
) -> specdec_status {
    guard(|| {
        non_null(model)?;
        non_null(out)?;
        // SAFETY: live model by contract.
        let config = unsafe { &(*model).transformer.config };
        let size = state_size(config, max_batch).map_err(state_status)?;
        let mut words = try_vec(0u32, size.div_ceil(4))?.into_boxed_slice();
        // SAFETY: the box moves into the session below and is never touched
        // except through `state`; its heap allocation does not move.
        let arena: &'static mut [u8] = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 4)
        };
        let state = RunState::new(config, max_batch, arena).map_err(state_status)?;
        let session = Box::new(specdec_session {
            model,
            state,
            memory: Some(words),
            pool: None,
        });
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out, Box::into_raw(session)) };
        Ok(())
    })
}

/// Runs the session's forward passes on `threads` threads: 0 means one per
/// available core, 1 (the default) runs on the calling thread only. The
/// pool's threads are started here and kept until the session is freed (for
/// a session in caller memory: until `specdec_session_set_threads(s, 1)`).
/// The output is the same for any count.
///
/// # Safety
/// `session` is live.
#[no_mangle]
pub unsafe extern "C" fn specdec_session_set_threads(
    session: *mut specdec_session,
    threads: usize,
) -> specdec_status {
    guard(|| {
        non_null(session)?;
        // SAFETY: live session by contract.
        let session = unsafe { &mut *session };
        session.pool = if threads == 1 {
            None
        } else {
            Some(Box::new(crate::speculative::new_pool(threads)?))
        };
        Ok(())
    })
}

/// Chooses the fp32 matmul kernels of the session's later forward calls.
/// With `fast_math` false (the default) they are the exact kernels, whose
/// output equals llama2.c's bit for bit. With it true they are the relaxed
/// kernels, which reorder and fuse for speed and so round differently.
/// Q8_0 models are not affected.
///
/// # Safety
/// `session` is live.
#[no_mangle]
pub unsafe extern "C" fn specdec_session_set_fast_math(
    session: *mut specdec_session,
    fast_math: bool,
) -> specdec_status {
    guard(|| {
        non_null(session)?;
        // SAFETY: live session by contract.
        let session = unsafe { &mut *session };
        session.state.set_math(if fast_math {
            Math::Relaxed
        } else {
            Math::Exact
        });
        Ok(())
    })
}

/// Frees a session from `specdec_session_new`. NULL is ignored. A session
/// from `specdec_session_init` lives in caller memory and is left alone,
/// apart from stopping the threads `specdec_session_set_threads` started.
///
/// # Safety
/// `session` is NULL or a live session.
#[no_mangle]
pub unsafe extern "C" fn specdec_session_free(session: *mut specdec_session) {
    if session.is_null() {
        return;
    }
    // SAFETY: a live session by contract.
    let owned = unsafe { (*session).memory.is_some() };
    if owned {
        // SAFETY: owned sessions come from Box::into_raw in
        // specdec_session_new and are freed once.
        drop(unsafe { Box::from_raw(session) });
    } else {
        // SAFETY: a live session in caller memory; only its pool is owned.
        drop(unsafe { (*session).pool.take() });
    }
}

/// Runs `n` tokens at positions `pos..pos + n` and points `*logits` at their
/// logits: `n` rows of `vocab_size` floats, valid until the next call on
/// this session. Cache entries at positions `>= pos` are overwritten, so a
/// sequence is rolled back by calling again at an earlier position.
///
/// # Safety
/// `session` is live; `tokens` points to `n` ids; `logits` to a writable
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn specdec_forward(
    session: *mut specdec_session,
    tokens: *const i32,
    n: usize,
    pos: usize,
    logits: *mut *const f32,
) -> specdec_status {
    guard(|| {
        non_null(session)?;
        non_null(tokens)?;
        non_null(logits)?;
        // SAFETY: live session and `n` readable ids by contract. i32 and u32
        // share size and alignment; a negative id reads as a value of at
        // least 2^31, which forward rejects as out of range.
        let (session, tokens) = unsafe {
            (
                &mut *session,
                std::slice::from_raw_parts(tokens.cast::<u32>(), n),
            )
        };
        // SAFETY: the model outlives the session by contract.
        let model = unsafe { &*session.model };
        let par: &dyn Parallel = match &session.pool {
            Some(pool) => &**pool,
            None => &Serial,
        };
        let rows = model
            .transformer
            .forward_parallel(&mut session.state, tokens, pos, Logits::All, par)
            .map_err(forward_status)?;
        // SAFETY: checked non-NULL above.
        unsafe { write_out(logits, rows.as_ptr()) };
        Ok(())
    })
}
