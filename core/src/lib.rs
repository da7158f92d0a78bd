//! specdec-core: llama2.c-compatible transformer inference and speculative
//! decoding for `no_std` targets.
//!
//! The crate never allocates. Every buffer comes from the caller and is sized
//! by a pure function of the model [`Config`](checkpoint::Config):
//! [`state::state_size`] for activations, KV cache and logits,
//! [`tokenizer::index_len`] for the tokenizer's piece index, and
//! [`sampler::Sampler::new`] takes a `vocab_size`-long scratch slice.
//!
//! Modules follow the data: a checkpoint header is parsed and validated
//! ([`checkpoint`]), weights are borrowed views into the checkpoint bytes
//! ([`weights`]), a caller arena is carved into run state ([`state`]), kernels
//! live in [`ops`], and [`forward`] reads top to bottom like llama2.c's
//! `run.c`.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod checkpoint;
pub mod forward;
pub mod math;
pub mod ops;
pub mod parallel;
pub mod sampler;
pub mod speculative;
pub mod state;
pub mod synthetic;
pub mod tokenizer;
pub mod weights;

pub use checkpoint::{CheckpointError, Config, Format};
pub use forward::{ForwardError, Logits, Transformer};
pub use sampler::Sampler;
pub use state::{state_size, RunState, StateError};
pub use tokenizer::{Tokenizer, TokenizerError};

/// With `std`, the error types implement `std::error::Error`, so `?` can
/// turn them into `Box<dyn Error>`.
#[cfg(feature = "std")]
mod std_errors {
    impl std::error::Error for crate::checkpoint::CheckpointError {}
    impl std::error::Error for crate::state::StateError {}
    impl std::error::Error for crate::forward::ForwardError {}
    impl std::error::Error for crate::tokenizer::TokenizerError {}
    impl std::error::Error for crate::sampler::SamplerError {}
    impl std::error::Error for crate::speculative::SpecError {}
    impl std::error::Error for crate::synthetic::SyntheticError {}
}
