//! Run state: activations, KV cache and logits, carved from one caller buffer.
//!
//! [`state_size`] is a pure function of the [`Config`] and the maximum number
//! of tokens one forward call may take; [`RunState::new`] checks the buffer
//! and splits it. Buffer names follow run.c's `RunState`.

use core::fmt;

use crate::checkpoint::Config;
use crate::ops::Math;

/// Reasons a state buffer is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// The maximum batch is 0; a forward call needs room for at least one token.
    ZeroBatch,
    /// The size does not fit in `usize`.
    SizeOverflow,
    /// The buffer is smaller than [`state_size`] returned.
    BufferTooSmall {
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// The buffer does not start at a 4-byte aligned address.
    Misaligned {
        /// The start address modulo 4.
        offset: usize,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StateError::ZeroBatch => write!(f, "maximum batch is 0; pass at least 1"),
            StateError::SizeOverflow => write!(f, "run state size overflows this target's address space"),
            StateError::BufferTooSmall { expected, found } => write!(
                f,
                "state buffer is {found} bytes but this model needs {expected}; size it with state_size"
            ),
            StateError::Misaligned { offset } => write!(
                f,
                "state buffer starts {offset} bytes past a 4-byte boundary; pass a 4-byte aligned buffer"
            ),
        }
    }
}

/// Tokens whose attention scores one head computes together: each key is
/// then read once for up to this many queries.
const ATTENTION_ROWS: usize = 8;

/// Rows of attention scores per head in a state for `max_batch` tokens.
pub(crate) fn attention_rows(max_batch: usize) -> usize {
    max_batch.min(ATTENTION_ROWS)
}

/// Lengths of every region, in elements.
struct Sizes {
    x: usize,
    hb: usize,
    att: usize,
    logits: usize,
    cache: usize,
    xq_scales: usize,
    hq_scales: usize,
    xq: usize,
    hq: usize,
}

impl Sizes {
    fn of(c: &Config, max_batch: usize) -> Option<Sizes> {
        let quantized = c.format.group_size();
        let x = max_batch.checked_mul(c.dim)?;
        let hb = max_batch.checked_mul(c.hidden_dim)?;
        let (xq_scales, hq_scales, xq, hq) = match quantized {
            Some(gs) => (x / gs, hb / gs, x, hb),
            None => (0, 0, 0, 0),
        };
        Some(Sizes {
            x,
            hb,
            att: c
                .n_heads
                .checked_mul(attention_rows(max_batch))?
                .checked_mul(c.seq_len)?,
            logits: max_batch.checked_mul(c.vocab_size)?,
            cache: c.n_layers.checked_mul(c.seq_len)?.checked_mul(c.kv_dim())?,
            xq_scales,
            hq_scales,
            xq,
            hq,
        })
    }

    fn f32_count(&self) -> Option<usize> {
        // x, xb, xb2, q; hb, hb2; att; logits; key and value caches; scales.
        let parts = [
            self.x.checked_mul(4)?,
            self.hb.checked_mul(2)?,
            self.att,
            self.logits,
            self.cache.checked_mul(2)?,
            self.xq_scales,
            self.hq_scales,
        ];
        parts.iter().try_fold(0usize, |acc, &p| acc.checked_add(p))
    }

    fn bytes(&self) -> Option<usize> {
        self.f32_count()?
            .checked_mul(4)?
            .checked_add(self.xq)?
            .checked_add(self.hq)
    }
}

/// Bytes of state needed for `config` when one forward call takes at most
/// `max_batch` tokens.
pub fn state_size(config: &Config, max_batch: usize) -> Result<usize, StateError> {
    if max_batch == 0 {
        return Err(StateError::ZeroBatch);
    }
    Sizes::of(config, max_batch)
        .and_then(|s| s.bytes())
        .ok_or(StateError::SizeOverflow)
}

/// Activations, KV cache and logits for one sequence, borrowed from the
/// caller's buffer. Row `b` of each batched buffer belongs to the `b`-th token
/// of the current forward call.
pub struct RunState<'a> {
    /// The config this state was sized for; `forward` rejects any other.
    pub(crate) config: Config,
    pub(crate) max_batch: usize,
    /// Kernels for fp32 matmuls.
    pub(crate) math: Math,
    /// Activation at the current time step, (max_batch, dim).
    pub(crate) x: &'a mut [f32],
    /// Activation inside a residual branch, (max_batch, dim).
    pub(crate) xb: &'a mut [f32],
    /// A second buffer for the residual branch, (max_batch, dim).
    pub(crate) xb2: &'a mut [f32],
    /// Feed-forward hidden activation, (max_batch, hidden_dim).
    pub(crate) hb: &'a mut [f32],
    /// Second feed-forward hidden activation, (max_batch, hidden_dim).
    pub(crate) hb2: &'a mut [f32],
    /// Queries, (max_batch, dim).
    pub(crate) q: &'a mut [f32],
    /// Attention scores of one token, (n_heads, seq_len).
    pub(crate) att: &'a mut [f32],
    /// Output logits, (max_batch, vocab_size).
    pub(crate) logits: &'a mut [f32],
    /// Keys, (n_layers, seq_len, kv_dim).
    pub(crate) key_cache: &'a mut [f32],
    /// Values, (n_layers, seq_len, kv_dim).
    pub(crate) value_cache: &'a mut [f32],
    /// Quantized `xb` or `x` for Q8_0 matmuls, (max_batch, dim), and its
    /// scales, (max_batch, dim / group_size). Empty for fp32 models.
    pub(crate) xq: &'a mut [i8],
    pub(crate) xq_scales: &'a mut [f32],
    /// Quantized `hb` for Q8_0 matmuls, (max_batch, hidden_dim), and its
    /// scales. Empty for fp32 models.
    pub(crate) hq: &'a mut [i8],
    pub(crate) hq_scales: &'a mut [f32],
}

impl<'a> RunState<'a> {
    /// Splits `memory` into run state for `config` and at most `max_batch`
    /// tokens per forward call.
    ///
    /// `memory` must be 4-byte aligned and at least
    /// `state_size(config, max_batch)` bytes; bytes past that stay unused.
    /// Activations are written before they are read, but the KV cache is not:
    /// a first forward call at a position after 0 attends to whatever the
    /// buffer held at the earlier positions, so start at 0 or pass zeroed
    /// memory.
    pub fn new(
        config: &Config,
        max_batch: usize,
        memory: &'a mut [u8],
    ) -> Result<RunState<'a>, StateError> {
        let expected = state_size(config, max_batch)?;
        let offset = memory.as_ptr() as usize % 4;
        if offset != 0 {
            return Err(StateError::Misaligned { offset });
        }
        if memory.len() < expected {
            return Err(StateError::BufferTooSmall {
                expected,
                found: memory.len(),
            });
        }
        let sizes = Sizes::of(config, max_batch).ok_or(StateError::SizeOverflow)?;
        let f32_bytes = sizes.f32_count().ok_or(StateError::SizeOverflow)? * 4;

        let (floats, rest) = memory.split_at_mut(f32_bytes);
        // SAFETY: `floats` starts at the 4-byte aligned start of `memory`
        // (checked above) and its length is a multiple of 4. Any bit pattern
        // is a valid f32. The new slice takes over the unique borrow of
        // `floats` for 'a.
        let floats: &'a mut [f32] = unsafe {
            core::slice::from_raw_parts_mut(floats.as_mut_ptr().cast::<f32>(), f32_bytes / 4)
        };
        let (xq_bytes, rest) = rest.split_at_mut(sizes.xq);
        let hq_bytes = &mut rest[..sizes.hq];

        let (x, floats) = floats.split_at_mut(sizes.x);
        let (xb, floats) = floats.split_at_mut(sizes.x);
        let (xb2, floats) = floats.split_at_mut(sizes.x);
        let (q, floats) = floats.split_at_mut(sizes.x);
        let (hb, floats) = floats.split_at_mut(sizes.hb);
        let (hb2, floats) = floats.split_at_mut(sizes.hb);
        let (att, floats) = floats.split_at_mut(sizes.att);
        let (logits, floats) = floats.split_at_mut(sizes.logits);
        let (key_cache, floats) = floats.split_at_mut(sizes.cache);
        let (value_cache, floats) = floats.split_at_mut(sizes.cache);
        let (xq_scales, hq_scales) = floats.split_at_mut(sizes.xq_scales);

        Ok(RunState {
            config: *config,
            max_batch,
            math: Math::Exact,
            x,
            xb,
            xb2,
            hb,
            hb2,
            q,
            att,
            logits,
            key_cache,
            value_cache,
            xq: cast_i8_mut(xq_bytes),
            xq_scales,
            hq: cast_i8_mut(hq_bytes),
            hq_scales,
        })
    }

    /// Chooses the fp32 matmul kernels of later forward calls: exact (the
    /// default, llama2.c's bits) or relaxed (faster, other bits).
    pub fn set_math(&mut self, math: Math) {
        self.math = math;
    }

    /// Maximum number of tokens one forward call may take.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Logits of the last forward call, (max_batch, vocab_size); only the
    /// rows that call computed are meaningful.
    pub fn logits(&self) -> &[f32] {
        self.logits
    }

    /// Mutable logits, for samplers that transform them in place.
    pub fn logits_mut(&mut self) -> &mut [f32] {
        self.logits
    }
}

fn cast_i8_mut(bytes: &mut [u8]) -> &mut [i8] {
    // SAFETY: i8 and u8 have the same size and alignment and every bit
    // pattern is valid for both; the new slice takes over the unique borrow.
    unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<i8>(), bytes.len()) }
}
