//! The C ABI of specdec. `include/specdec.h` is generated from this crate by
//! cbindgen; see `ffi/cbindgen.toml`.
//!
//! Conventions, for every function:
//! - every symbol carries the `specdec_` prefix;
//! - every pointer argument is checked for NULL, and NULL returns
//!   `SPECDEC_ERR_NULL_POINTER` unless the function documents it as optional;
//! - outputs are written only when the function returns `SPECDEC_OK`;
//! - a byte buffer is always followed by its length;
//! - no Rust panic crosses the boundary: one is caught and returned as
//!   `SPECDEC_ERR_INTERNAL`.
//!
//! Thread safety: a model and a tokenizer are immutable after creation and
//! may be used from many threads at once. A session, a sampler and a
//! speculative session belong to one thread at a time.

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(non_camel_case_types)]

mod generate;
mod model;
mod sampler;
mod session;
mod speculative;
mod tokenizer;

use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub use generate::*;
pub use model::*;
pub use sampler::*;
pub use session::*;
pub use speculative::*;
pub use tokenizer::*;

/// Major version of the library; see `specdec_version`.
pub const SPECDEC_VERSION_MAJOR: u32 = 0;
/// Minor version of the library.
pub const SPECDEC_VERSION_MINOR: u32 = 1;
/// Patch version of the library.
pub const SPECDEC_VERSION_PATCH: u32 = 0;

/// Result of every fallible function. The values are frozen: new codes are
/// only ever added at the end.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum specdec_status {
    /// Success.
    SPECDEC_OK = 0,
    /// A required pointer argument was NULL.
    SPECDEC_ERR_NULL_POINTER = 1,
    /// An argument is out of range (a temperature, a size, a mode).
    SPECDEC_ERR_INVALID_ARGUMENT = 2,
    /// A file could not be opened, read or mapped.
    SPECDEC_ERR_IO = 3,
    /// A checkpoint or tokenizer file is shorter than its header implies.
    SPECDEC_ERR_TRUNCATED = 4,
    /// Not a llama2.c checkpoint or tokenizer, or an unsupported version.
    SPECDEC_ERR_BAD_FORMAT = 5,
    /// A checkpoint header describes an invalid model shape.
    SPECDEC_ERR_INVALID_CONFIG = 6,
    /// Checkpoint bytes or session memory are not 4-byte aligned.
    SPECDEC_ERR_MISALIGNED = 7,
    /// Two vocabularies differ: tokenizer and model, or draft and target.
    SPECDEC_ERR_VOCAB_MISMATCH = 8,
    /// A caller buffer is too small.
    SPECDEC_ERR_BUFFER_TOO_SMALL = 9,
    /// Tokens would not fit in the model's context (seq_len).
    SPECDEC_ERR_CONTEXT_OVERFLOW = 10,
    /// A token id is not below the vocabulary size.
    SPECDEC_ERR_TOKEN_OUT_OF_RANGE = 11,
    /// A bug in specdec: a Rust panic was caught at the boundary.
    SPECDEC_ERR_INTERNAL = 12,
    /// Memory could not be allocated.
    SPECDEC_ERR_OUT_OF_MEMORY = 13,
}

use specdec_status::*;

/// Returns the library version as a NUL-terminated string, such as "0.1.0".
/// The string is static.
#[no_mangle]
pub extern "C" fn specdec_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Returns a static, NUL-terminated English message for a status value.
/// Unknown values get a message saying so. Takes an `int` rather than the
/// enum so that any value a C caller has is safe to pass.
#[no_mangle]
pub extern "C" fn specdec_status_message(status: i32) -> *const c_char {
    let message: &str = match status {
        0 => "success\0",
        1 => "a required pointer argument was NULL\0",
        2 => "an argument is out of range\0",
        3 => "a file could not be opened, read or mapped\0",
        4 => "the file is shorter than its header implies\0",
        5 => "not a llama2.c checkpoint or tokenizer, or an unsupported version\0",
        6 => "the checkpoint header describes an invalid model shape\0",
        7 => "checkpoint bytes or session memory are not 4-byte aligned\0",
        8 => "vocabulary sizes differ (tokenizer and model, or draft and target)\0",
        9 => "a caller buffer is too small\0",
        10 => "the tokens do not fit in the model's context (seq_len)\0",
        11 => "a token id is not below the vocabulary size\0",
        12 => "internal error in specdec (a caught panic); please report it\0",
        13 => "out of memory\0",
        _ => "unknown status value\0",
    };
    message.as_ptr().cast()
}

/// Runs `body`, turning a panic into `SPECDEC_ERR_INTERNAL`.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), specdec_status>) -> specdec_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => SPECDEC_OK,
        Ok(Err(status)) => status,
        Err(_) => SPECDEC_ERR_INTERNAL,
    }
}

/// Returns `Err(SPECDEC_ERR_NULL_POINTER)` when `p` is NULL.
pub(crate) fn non_null<T>(p: *const T) -> Result<(), specdec_status> {
    if p.is_null() {
        Err(SPECDEC_ERR_NULL_POINTER)
    } else {
        Ok(())
    }
}

/// Allocates a `Vec` of `len` copies of `value`, or reports out of memory
/// instead of aborting.
pub(crate) fn try_vec<T: Clone>(value: T, len: usize) -> Result<Vec<T>, specdec_status> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| SPECDEC_ERR_OUT_OF_MEMORY)?;
    v.resize(len, value);
    Ok(v)
}

/// Writes `value` through `out`.
///
/// # Safety
/// `out` is non-NULL and points to writable, aligned storage for a `T`, as
/// the C contract of every output parameter requires.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) {
    // SAFETY: guaranteed by the caller, see above.
    unsafe { out.write(value) }
}
