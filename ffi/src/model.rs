//! Models: a checkpoint borrowed from caller memory or memory-mapped from a
//! file, with its validated config.

use std::ffi::{c_char, CStr};
use std::path::Path;

use memmap2::Mmap;
use specdec_core::{CheckpointError, Format, Transformer};

use crate::specdec_status::{self, *};
use crate::{guard, non_null, write_out};

/// A model: an immutable checkpoint and its config. Shareable across
/// threads. Create it with `specdec_model_from_memory` or
/// `specdec_model_from_file`, free it with `specdec_model_free`.
pub struct specdec_model {
    /// Borrows `_map` or the caller's memory; declared first so it is dropped
    /// before the map it points into.
    pub(crate) transformer: Transformer<'static>,
    _map: Option<Mmap>,
}

/// Model hyperparameters, as in the checkpoint header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct specdec_config {
    /// Checkpoint version: 0 (legacy), 1 (fp32) or 2 (Q8_0).
    pub version: u32,
    /// Transformer width.
    pub dim: u32,
    /// Feed-forward hidden width.
    pub hidden_dim: u32,
    /// Number of layers.
    pub n_layers: u32,
    /// Number of query heads.
    pub n_heads: u32,
    /// Number of key/value heads.
    pub n_kv_heads: u32,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// Context length in tokens.
    pub seq_len: u32,
    /// Q8_0 group size for version 2, else 0.
    pub group_size: u32,
    /// 1 when the classifier shares the token embedding table.
    pub shared_classifier: u8,
}

/// Maps a checkpoint error to its status.
pub(crate) fn checkpoint_status(e: CheckpointError) -> specdec_status {
    match e {
        CheckpointError::HeaderTruncated { .. } | CheckpointError::Truncated { .. } => {
            SPECDEC_ERR_TRUNCATED
        }
        CheckpointError::UnknownFormat { .. }
        | CheckpointError::UnsupportedVersion { .. }
        | CheckpointError::TrailingBytes { .. }
        | CheckpointError::BigEndianTarget => SPECDEC_ERR_BAD_FORMAT,
        CheckpointError::Misaligned { .. } => SPECDEC_ERR_MISALIGNED,
        _ => SPECDEC_ERR_INVALID_CONFIG,
    }
}

/// Converts a NUL-terminated path.
pub(crate) fn path_from_c<'a>(path: *const c_char) -> Result<&'a Path, specdec_status> {
    non_null(path)?;
    // SAFETY: `path` is non-NULL and the C contract says it is a
    // NUL-terminated string that stays valid during the call.
    let bytes = unsafe { CStr::from_ptr(path) }.to_bytes();
    let text = std::str::from_utf8(bytes).map_err(|_| SPECDEC_ERR_INVALID_ARGUMENT)?;
    Ok(Path::new(text))
}

fn new_model(transformer: Transformer<'static>, map: Option<Mmap>, out: *mut *mut specdec_model) {
    let model = Box::new(specdec_model {
        transformer,
        _map: map,
    });
    // SAFETY: the caller checked `out` for NULL; it points to a pointer slot.
    unsafe { write_out(out, Box::into_raw(model)) };
}

/// Creates a model that borrows `len` bytes of checkpoint at `data` without
/// copying them.
///
/// `data` must be 4-byte aligned and stay valid and unchanged until
/// `specdec_model_free`. The caller keeps ownership of the bytes. On success
/// `*out` receives the model.
///
/// # Safety
/// `data` points to `len` readable bytes; `out` to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn specdec_model_from_memory(
    data: *const u8,
    len: usize,
    out: *mut *mut specdec_model,
) -> specdec_status {
    guard(|| {
        non_null(data)?;
        non_null(out)?;
        // SAFETY: the caller guarantees `len` readable bytes at `data` that
        // outlive the model, which is what the 'static lifetime stands for
        // here: the model never hands the slice out beyond its own life.
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(data, len) };
        let transformer = Transformer::new(bytes).map_err(checkpoint_status)?;
        new_model(transformer, None, out);
        Ok(())
    })
}

/// Memory-maps the checkpoint at the NUL-terminated UTF-8 `path` read-only
/// and creates a model from it. On success `*out` receives the model; free
/// it with `specdec_model_free`. The file must not change while mapped.
///
/// # Safety
/// `path` is a NUL-terminated string; `out` points to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn specdec_model_from_file(
    path: *const c_char,
    out: *mut *mut specdec_model,
) -> specdec_status {
    guard(|| {
        non_null(out)?;
        let path = path_from_c(path)?;
        let file = std::fs::File::open(path).map_err(|_| SPECDEC_ERR_IO)?;
        let metadata = file.metadata().map_err(|_| SPECDEC_ERR_IO)?;
        if metadata.is_dir() {
            return Err(SPECDEC_ERR_IO);
        }
        if metadata.len() == 0 {
            return Err(SPECDEC_ERR_TRUNCATED);
        }
        // SAFETY: the map is read-only and owned by the model, which drops the
        // transformer borrowing it first. Like any program that maps its
        // input, this relies on no other process truncating the file.
        let map = unsafe { Mmap::map(&file) }.map_err(|_| SPECDEC_ERR_IO)?;
        // SAFETY: the mapping's address is stable for its whole life, which
        // the model bounds, so the slice may be stored beside it.
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
        let transformer = Transformer::new(bytes).map_err(checkpoint_status)?;
        new_model(transformer, Some(map), out);
        Ok(())
    })
}

/// Frees a model. NULL is ignored. Every session, speculative session and
/// generation using the model must be finished first.
///
/// # Safety
/// `model` is NULL or a pointer from a `specdec_model_from_*` function that
/// has not been freed.
#[no_mangle]
pub unsafe extern "C" fn specdec_model_free(model: *mut specdec_model) {
    if !model.is_null() {
        // SAFETY: the pointer came from Box::into_raw in new_model and is
        // freed once, as the contract says.
        drop(unsafe { Box::from_raw(model) });
    }
}

/// Writes the model's hyperparameters to `*out`.
///
/// # Safety
/// `model` is a live model; `out` points to a writable `specdec_config`.
#[no_mangle]
pub unsafe extern "C" fn specdec_model_config(
    model: *const specdec_model,
    out: *mut specdec_config,
) -> specdec_status {
    guard(|| {
        non_null(model)?;
        non_null(out)?;
        // SAFETY: non-NULL and, by contract, a live model.
        let c = unsafe { &*model }.transformer.config;
        let (version, group_size) = match c.format() {
            Format::Legacy => (0, 0),
            Format::V1 => (1, 0),
            Format::V2 { group_size } => (2, group_size as u32),
        };
        // Config::new keeps every size at most i32::MAX, so the casts are exact.
        let config = specdec_config {
            version,
            dim: c.dim() as u32,
            hidden_dim: c.hidden_dim() as u32,
            n_layers: c.n_layers() as u32,
            n_heads: c.n_heads() as u32,
            n_kv_heads: c.n_kv_heads() as u32,
            vocab_size: c.vocab_size() as u32,
            seq_len: c.seq_len() as u32,
            group_size,
            shared_classifier: u8::from(c.shared_classifier()),
        };
        // SAFETY: `out` is non-NULL and writable by contract.
        unsafe { write_out(out, config) };
        Ok(())
    })
}
