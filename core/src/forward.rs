//! The transformer forward pass, over one or many consecutive tokens.
//!
//! It reads top to bottom like run.c's `forward` (and runq.c's for Q8_0
//! checkpoints), with one difference: a call takes `n` tokens at positions
//! `pos..pos + n`. Every weight matrix is streamed once per call, each token
//! is rotated at its own position and attends causally to the KV cache up to
//! its own position, and each token's logits are bit-identical to what `n`
//! single-token calls would produce.

use core::fmt;

use crate::checkpoint::{CheckpointError, Config};
use crate::math::{cosf, expf, powf, sinf, sqrtf};
use crate::ops::{matmul, matmul_q8, quantize, rmsnorm, rmsnorm_in_place, softmax};
use crate::state::RunState;
use crate::weights::{Matrix, Weights};

/// Which rows of logits a forward call computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// One row per input token, `(n, vocab_size)`: what verification needs.
    All,
    /// Only the last token's row, `(vocab_size,)`: enough for prompt prefill
    /// and plain decoding, and skips `n - 1` classifier matmuls.
    Last,
}

/// Reasons a forward call is rejected. The state is unchanged when one is
/// returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardError {
    /// No tokens were given.
    EmptyBatch,
    /// More tokens than the state was sized for.
    BatchTooLarge {
        /// Tokens given.
        found: usize,
        /// The state's maximum batch.
        max_batch: usize,
    },
    /// Positions `pos..pos + n` do not fit in the context.
    ContextOverflow {
        /// Position of the first token.
        pos: usize,
        /// Number of tokens.
        n: usize,
        /// The model's context length.
        seq_len: usize,
    },
    /// A token id is not below `vocab_size`.
    TokenOutOfRange {
        /// The token id.
        token: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// The state was sized for a different model config.
    StateMismatch,
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ForwardError::EmptyBatch => write!(f, "forward needs at least one token"),
            ForwardError::BatchTooLarge { found, max_batch } => write!(
                f,
                "{found} tokens in one forward call, but the state holds at most {max_batch}; \
                 split the call or size the state for more"
            ),
            ForwardError::ContextOverflow { pos, n, seq_len } => write!(
                f,
                "{n} tokens at position {pos} exceed the model's context of {seq_len} tokens"
            ),
            ForwardError::TokenOutOfRange { token, vocab_size } => {
                write!(
                    f,
                    "token id {token} is out of range for a vocabulary of {vocab_size}"
                )
            }
            ForwardError::StateMismatch => {
                write!(
                    f,
                    "run state was sized for a different model; create it from this model's config"
                )
            }
        }
    }
}

/// A model: its validated config and borrowed weights. Immutable, so one
/// `Transformer` may serve many [`RunState`]s on many threads.
#[derive(Clone, Copy, Debug)]
pub struct Transformer<'a> {
    /// Hyperparameters and format.
    pub config: Config,
    /// Weights borrowed from the checkpoint bytes.
    pub weights: Weights<'a>,
}

impl<'a> Transformer<'a> {
    /// Parses and validates a whole checkpoint file and borrows its weights.
    /// Nothing is copied, so this is cheap on a memory-mapped file.
    ///
    /// `bytes` must start at a 4-byte aligned address.
    pub fn new(bytes: &'a [u8]) -> Result<Transformer<'a>, CheckpointError> {
        let config = Config::parse(bytes)?;
        let weights = Weights::new(&config, bytes)?;
        Ok(Transformer { config, weights })
    }

    /// Runs `tokens` at positions `pos..pos + tokens.len()`, writes their keys
    /// and values into the KV cache, and returns the requested logits.
    ///
    /// Cache entries at positions `>= pos` are overwritten, so rolling a
    /// sequence back is calling `forward` again at an earlier position.
    pub fn forward<'s>(
        &self,
        s: &'s mut RunState<'_>,
        tokens: &[u32],
        pos: usize,
        rows: Logits,
    ) -> Result<&'s mut [f32], ForwardError> {
        let p = &self.config;
        let w = &self.weights;
        let n = tokens.len();
        if s.config != *p {
            return Err(ForwardError::StateMismatch);
        }
        if n == 0 {
            return Err(ForwardError::EmptyBatch);
        }
        if n > s.max_batch {
            return Err(ForwardError::BatchTooLarge {
                found: n,
                max_batch: s.max_batch,
            });
        }
        if pos.checked_add(n).is_none_or(|end| end > p.seq_len) {
            return Err(ForwardError::ContextOverflow {
                pos,
                n,
                seq_len: p.seq_len,
            });
        }
        if let Some(&token) = tokens.iter().find(|&&t| t as usize >= p.vocab_size) {
            return Err(ForwardError::TokenOutOfRange {
                token,
                vocab_size: p.vocab_size,
            });
        }

        let dim = p.dim;
        let kv_dim = p.kv_dim();
        let kv_mul = p.kv_mul();
        let hidden_dim = p.hidden_dim;
        let head_size = p.head_size();
        let group_size = p.format.group_size().unwrap_or(1);

        // Copy the token embeddings into x.
        for (b, &token) in tokens.iter().enumerate() {
            w.embedding(token as usize, &mut s.x[b * dim..(b + 1) * dim]);
        }

        for l in 0..p.n_layers {
            // Attention rmsnorm.
            let rms_att = &w.rms_att_weight[l * dim..(l + 1) * dim];
            for b in 0..n {
                rmsnorm(
                    &mut s.xb[b * dim..(b + 1) * dim],
                    &s.x[b * dim..(b + 1) * dim],
                    rms_att,
                );
            }

            // qkv matmuls for these positions. Keys and values are written
            // straight into the cache rows pos..pos + n.
            let loff = l * p.seq_len * kv_dim;
            let rows_kv = loff + pos * kv_dim..loff + (pos + n) * kv_dim;
            let xb = Input::new(
                &s.xb[..n * dim],
                s.xq,
                s.xq_scales,
                w.wq.layer(l),
                group_size,
            );
            xb.matmul(&mut s.q[..n * dim], w.wq.layer(l), dim, dim);
            xb.matmul(
                &mut s.key_cache[rows_kv.clone()],
                w.wk.layer(l),
                dim,
                kv_dim,
            );
            xb.matmul(&mut s.value_cache[rows_kv], w.wv.layer(l), dim, kv_dim);

            // RoPE: rotate consecutive pairs of q and k in each head, each
            // token at its own position. The frequency depends only on the
            // index within a head, so it is computed once per pair index and
            // applied to every head, with the same bits as run.c's loop.
            for b in 0..n {
                let position = pos + b;
                let q = &mut s.q[b * dim..(b + 1) * dim];
                let k_start = loff + position * kv_dim;
                let k = &mut s.key_cache[k_start..k_start + kv_dim];
                for head_dim in (0..head_size).step_by(2) {
                    let freq = 1.0 / powf(10000.0, head_dim as f32 / head_size as f32);
                    let val = position as f32 * freq;
                    let fcr = cosf(val);
                    let fci = sinf(val);
                    for head in q.chunks_exact_mut(head_size) {
                        rotate(&mut head[head_dim..head_dim + 2], fcr, fci);
                    }
                    for head in k.chunks_exact_mut(head_size) {
                        rotate(&mut head[head_dim..head_dim + 2], fcr, fci);
                    }
                }
            }

            // Multihead attention for each token over the cache up to its own
            // position. The result goes into xb.
            for b in 0..n {
                let position = pos + b;
                for h in 0..p.n_heads {
                    let q = &s.q[b * dim + h * head_size..b * dim + (h + 1) * head_size];
                    let att = &mut s.att[h * p.seq_len..h * p.seq_len + position + 1];
                    let kv_offset = (h / kv_mul) * head_size;
                    for (t, score_out) in att.iter_mut().enumerate() {
                        let k_start = loff + t * kv_dim + kv_offset;
                        let k = &s.key_cache[k_start..k_start + head_size];
                        let mut score = 0.0f32;
                        for (&qi, &ki) in q.iter().zip(k) {
                            score += qi * ki;
                        }
                        score /= sqrtf(head_size as f32);
                        *score_out = score;
                    }
                    softmax(att);

                    let xb = &mut s.xb[b * dim + h * head_size..b * dim + (h + 1) * head_size];
                    xb.fill(0.0);
                    for (t, &a) in att.iter().enumerate() {
                        let v_start = loff + t * kv_dim + kv_offset;
                        let v = &s.value_cache[v_start..v_start + head_size];
                        for (xi, &vi) in xb.iter_mut().zip(v) {
                            *xi += a * vi;
                        }
                    }
                }
            }

            // Output projection, then the residual connection back into x.
            let xb = Input::new(
                &s.xb[..n * dim],
                s.xq,
                s.xq_scales,
                w.wo.layer(l),
                group_size,
            );
            xb.matmul(&mut s.xb2[..n * dim], w.wo.layer(l), dim, dim);
            for (xi, &di) in s.x[..n * dim].iter_mut().zip(s.xb2.iter()) {
                *xi += di;
            }

            // Feed-forward rmsnorm.
            let rms_ffn = &w.rms_ffn_weight[l * dim..(l + 1) * dim];
            for b in 0..n {
                rmsnorm(
                    &mut s.xb[b * dim..(b + 1) * dim],
                    &s.x[b * dim..(b + 1) * dim],
                    rms_ffn,
                );
            }

            // Feed-forward: w2(silu(w1(x)) * w3(x)).
            let xb = Input::new(
                &s.xb[..n * dim],
                s.xq,
                s.xq_scales,
                w.w1.layer(l),
                group_size,
            );
            xb.matmul(&mut s.hb[..n * hidden_dim], w.w1.layer(l), dim, hidden_dim);
            xb.matmul(&mut s.hb2[..n * hidden_dim], w.w3.layer(l), dim, hidden_dim);

            // SwiGLU: silu(x) = x * sigmoid(x), times the w3 branch.
            for (h, &h2) in s.hb[..n * hidden_dim].iter_mut().zip(s.hb2.iter()) {
                let mut val = *h;
                val *= 1.0 / (1.0 + expf(-val));
                val *= h2;
                *h = val;
            }

            let hb = Input::new(
                &s.hb[..n * hidden_dim],
                s.hq,
                s.hq_scales,
                w.w2.layer(l),
                group_size,
            );
            hb.matmul(&mut s.xb[..n * dim], w.w2.layer(l), hidden_dim, dim);
            for (xi, &di) in s.x[..n * dim].iter_mut().zip(s.xb.iter()) {
                *xi += di;
            }
        }

        // Final rmsnorm and the classifier, for the requested rows.
        let first = match rows {
            Logits::All => 0,
            Logits::Last => n - 1,
        };
        let count = n - first;
        let x = &mut s.x[first * dim..n * dim];
        for row in x.chunks_exact_mut(dim) {
            rmsnorm_in_place(row, &w.rms_final_weight[..dim]);
        }
        let wcls = w.wcls.layer(0);
        let x = Input::new(x, s.xq, s.xq_scales, wcls, group_size);
        let logits = &mut s.logits[..count * p.vocab_size];
        x.matmul(logits, wcls, dim, p.vocab_size);
        Ok(logits)
    }
}

/// Rotates the pair `v = [v0, v1]` by the angle whose cosine is `fcr` and
/// sine is `fci`.
#[inline]
fn rotate(v: &mut [f32], fcr: f32, fci: f32) {
    let v0 = v[0];
    let v1 = v[1];
    v[0] = v0 * fcr - v1 * fci;
    v[1] = v0 * fci + v1 * fcr;
}

/// The input rows of a matmul, quantized once when the weights are Q8_0 so
/// that several matmuls can share them.
enum Input<'s> {
    F32(&'s [f32]),
    Q8 { q: &'s [i8], scales: &'s [f32] },
}

impl<'s> Input<'s> {
    /// Prepares `x` for matmuls against matrices of `kind`'s format,
    /// quantizing into `xq`/`xs` for Q8_0.
    fn new(
        x: &'s [f32],
        xq: &'s mut [i8],
        xs: &'s mut [f32],
        kind: Matrix<'_>,
        group_size: usize,
    ) -> Input<'s> {
        match kind {
            Matrix::F32(_) => Input::F32(x),
            Matrix::Q8(_) => {
                let q = &mut xq[..x.len()];
                let scales = &mut xs[..x.len() / group_size];
                quantize(q, scales, x, group_size);
                Input::Q8 { q, scales }
            }
        }
    }

    fn matmul(&self, out: &mut [f32], w: Matrix<'_>, n: usize, d: usize) {
        match (self, w) {
            (Input::F32(x), Matrix::F32(w)) => matmul(out, x, w, n, d),
            (Input::Q8 { q, scales }, Matrix::Q8(w)) => matmul_q8(out, q, scales, w, n, d),
            // Every matrix of a checkpoint has the same format, and the input
            // was prepared for that format.
            _ => unreachable!("matmul input and weights have different formats"),
        }
    }
}
