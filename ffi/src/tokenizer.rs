//! Tokenizers: llama2.c's `tokenizer.bin`, copied into the handle.

use std::ffi::c_char;

use specdec_core::tokenizer::{encode_capacity, index_len, Tokenizer, TokenizerError};

use crate::model::path_from_c;
use crate::specdec_status::{self, *};
use crate::{guard, non_null, try_vec, write_out};

/// A tokenizer for one vocabulary. Immutable and shareable across threads.
/// Create it with `specdec_tokenizer_from_memory` or
/// `specdec_tokenizer_from_file`, free it with `specdec_tokenizer_free`.
pub struct specdec_tokenizer {
    /// Borrows `_bytes` and `_index`, which live on the heap at stable
    /// addresses; declared first so it is dropped before them.
    pub(crate) tokenizer: Tokenizer<'static>,
    _bytes: Box<[u8]>,
    _index: Box<[u32]>,
}

pub(crate) fn tokenizer_status(e: TokenizerError) -> specdec_status {
    match e {
        TokenizerError::VocabSizeMismatch { .. } => SPECDEC_ERR_VOCAB_MISMATCH,
        TokenizerError::MissingHeader { .. } | TokenizerError::Truncated { .. } => {
            SPECDEC_ERR_TRUNCATED
        }
        TokenizerError::IndexTooSmall { .. } | TokenizerError::BufferTooSmall { .. } => {
            SPECDEC_ERR_BUFFER_TOO_SMALL
        }
        TokenizerError::TokenOutOfRange { .. } | TokenizerError::ByteFallbackOutOfRange { .. } => {
            SPECDEC_ERR_TOKEN_OUT_OF_RANGE
        }
        _ => SPECDEC_ERR_BAD_FORMAT,
    }
}

fn build(
    bytes: Vec<u8>,
    vocab_size: usize,
    out: *mut *mut specdec_tokenizer,
) -> Result<(), specdec_status> {
    if vocab_size == 0 || vocab_size > i32::MAX as usize {
        return Err(SPECDEC_ERR_INVALID_ARGUMENT);
    }
    let bytes = bytes.into_boxed_slice();
    let mut index = try_vec(0u32, index_len(vocab_size))?.into_boxed_slice();
    // SAFETY: both boxes are moved into the handle below and never touched
    // again except through `tokenizer`, which the handle drops first. Moving
    // a Box does not move its heap allocation, so the slices stay valid.
    let (bytes_ref, index_ref): (&'static [u8], &'static mut [u32]) = unsafe {
        (
            std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()),
            std::slice::from_raw_parts_mut(index.as_mut_ptr(), index.len()),
        )
    };
    let tokenizer = Tokenizer::new(bytes_ref, vocab_size, index_ref).map_err(tokenizer_status)?;
    let handle = Box::new(specdec_tokenizer {
        tokenizer,
        _bytes: bytes,
        _index: index,
    });
    // SAFETY: the caller checked `out` for NULL.
    unsafe { write_out(out, Box::into_raw(handle)) };
    Ok(())
}

/// Creates a tokenizer from the `len` bytes of a `tokenizer.bin` at `data`,
/// which are copied. `vocab_size` is the model's; a file with another number
/// of pieces returns `SPECDEC_ERR_VOCAB_MISMATCH`.
///
/// # Safety
/// `data` points to `len` readable bytes; `out` to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn specdec_tokenizer_from_memory(
    data: *const u8,
    len: usize,
    vocab_size: usize,
    out: *mut *mut specdec_tokenizer,
) -> specdec_status {
    guard(|| {
        non_null(data)?;
        non_null(out)?;
        // SAFETY: the caller guarantees `len` readable bytes at `data`.
        let bytes = unsafe { std::slice::from_raw_parts(data, len) };
        let mut copy = Vec::new();
        copy.try_reserve_exact(len)
            .map_err(|_| SPECDEC_ERR_OUT_OF_MEMORY)?;
        copy.extend_from_slice(bytes);
        build(copy, vocab_size, out)
    })
}

/// Reads a `tokenizer.bin` from the NUL-terminated UTF-8 `path`. See
/// `specdec_tokenizer_from_memory`.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` points to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn specdec_tokenizer_from_file(
    path: *const c_char,
    vocab_size: usize,
    out: *mut *mut specdec_tokenizer,
) -> specdec_status {
    guard(|| {
        non_null(out)?;
        let path = path_from_c(path)?;
        if path.is_dir() {
            return Err(SPECDEC_ERR_IO);
        }
        let bytes = std::fs::read(path).map_err(|_| SPECDEC_ERR_IO)?;
        build(bytes, vocab_size, out)
    })
}

/// Frees a tokenizer. NULL is ignored.
///
/// # Safety
/// `tokenizer` is NULL or a live pointer from a `specdec_tokenizer_from_*`
/// function.
#[no_mangle]
pub unsafe extern "C" fn specdec_tokenizer_free(tokenizer: *mut specdec_tokenizer) {
    if !tokenizer.is_null() {
        // SAFETY: from Box::into_raw in `build`, freed once by contract.
        drop(unsafe { Box::from_raw(tokenizer) });
    }
}

/// Encodes `text_len` bytes of UTF-8 text into token ids, with BOS (id 1)
/// first when `bos` is nonzero and EOS (id 2) last when `eos` is nonzero, as
/// llama2.c's `encode` does.
///
/// Length query: with `tokens` NULL, `*n_tokens` receives the capacity that
/// guarantees success for this text (`text_len + 3`). Otherwise `capacity`
/// must be at least that, else `SPECDEC_ERR_BUFFER_TOO_SMALL`; on success
/// `*n_tokens` receives the number of ids written.
///
/// # Safety
/// `tokenizer` is live; `text` points to `text_len` readable bytes (it may be
/// NULL when `text_len` is 0); `tokens`, if not NULL, to `capacity` writable
/// ids; `n_tokens` to a writable size.
#[no_mangle]
pub unsafe extern "C" fn specdec_tokenizer_encode(
    tokenizer: *const specdec_tokenizer,
    text: *const c_char,
    text_len: usize,
    bos: bool,
    eos: bool,
    tokens: *mut i32,
    capacity: usize,
    n_tokens: *mut usize,
) -> specdec_status {
    guard(|| {
        non_null(tokenizer)?;
        non_null(n_tokens)?;
        if text_len > 0 {
            non_null(text)?;
        }
        let needed = encode_capacity(text_len);
        if tokens.is_null() {
            // SAFETY: checked non-NULL above.
            unsafe { write_out(n_tokens, needed) };
            return Ok(());
        }
        if capacity < needed {
            return Err(SPECDEC_ERR_BUFFER_TOO_SMALL);
        }
        // SAFETY: live tokenizer by contract; `text` has `text_len` bytes.
        let (t, text) = unsafe {
            (
                &(*tokenizer).tokenizer,
                if text_len == 0 {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(text.cast::<u8>(), text_len)
                },
            )
        };
        let mut ids = try_vec(0u32, needed)?;
        let mut scratch = try_vec(0u32, needed)?;
        let n = t
            .encode(text, bos, eos, &mut ids, &mut scratch)
            .map_err(tokenizer_status)?;
        // SAFETY: `tokens` has `capacity >= needed >= n` writable ids.
        let out = unsafe { std::slice::from_raw_parts_mut(tokens, n) };
        for (o, &id) in out.iter_mut().zip(&ids[..n]) {
            *o = id as i32;
        }
        // SAFETY: checked non-NULL above.
        unsafe { write_out(n_tokens, n) };
        Ok(())
    })
}

/// Decodes `token` following `prev` into bytes, as llama2.c's `decode`: the
/// leading space after BOS is dropped and `<0xHH>` pieces become one raw
/// byte. Both ids must be below the vocabulary size. `*piece` receives a
/// pointer into the tokenizer, valid until it is freed and not
/// NUL-terminated; `*len` receives its length.
///
/// # Safety
/// `tokenizer` is live; `piece` and `len` point to writable storage.
#[no_mangle]
pub unsafe extern "C" fn specdec_tokenizer_decode(
    tokenizer: *const specdec_tokenizer,
    prev: i32,
    token: i32,
    piece: *mut *const u8,
    len: *mut usize,
) -> specdec_status {
    guard(|| {
        non_null(tokenizer)?;
        non_null(piece)?;
        non_null(len)?;
        let (Ok(prev), Ok(token)) = (u32::try_from(prev), u32::try_from(token)) else {
            return Err(SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
        };
        // SAFETY: live tokenizer by contract.
        let t = unsafe { &(*tokenizer).tokenizer };
        if prev as usize >= t.vocab_size() {
            return Err(SPECDEC_ERR_TOKEN_OUT_OF_RANGE);
        }
        let bytes = t.decode(prev, token).map_err(tokenizer_status)?;
        // SAFETY: both checked non-NULL above.
        unsafe {
            write_out(piece, bytes.as_ptr());
            write_out(len, bytes.len());
        }
        Ok(())
    })
}
