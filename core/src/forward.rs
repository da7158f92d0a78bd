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
use crate::ops::{
    matmul, matmul_q8, matmul_strided, quantize, relaxed, rmsnorm, rmsnorm_in_place, softmax,
    weighted_sum, Math, Strided,
};
use crate::parallel::{Parallel, Serial};
use crate::state::{attention_rows, RunState};
use crate::weights::{Matrix, QTensor, Weights};

/// The rows of logits a forward call computes.
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
        self.forward_parallel(s, tokens, pos, rows, &Serial)
    }

    /// [`Transformer::forward`], with matmul rows and attention heads spread
    /// over `par`'s threads. The result has the same bits for any `par`.
    pub fn forward_parallel<'s>(
        &self,
        s: &'s mut RunState<'_>,
        tokens: &[u32],
        pos: usize,
        rows: Logits,
        par: &dyn Parallel,
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
                s.math,
                &s.xb[..n * dim],
                s.xq,
                s.xq_scales,
                w.wq.layer(l),
                group_size,
            );
            xb.matmul(par, &mut s.q[..n * dim], w.wq.layer(l), dim, dim);
            xb.matmul(
                par,
                &mut s.key_cache[rows_kv.clone()],
                w.wk.layer(l),
                dim,
                kv_dim,
            );
            xb.matmul(par, &mut s.value_cache[rows_kv], w.wv.layer(l), dim, kv_dim);

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
            // position, one task per head. The result goes into xb.
            let heads = AttentionHeads {
                q: &s.q[..n * dim],
                key_cache: &s.key_cache[loff..loff + p.seq_len * kv_dim],
                value_cache: &s.value_cache[loff..loff + p.seq_len * kv_dim],
                att: SharedOut::new(s.att),
                xb: SharedOut::new(&mut s.xb[..n * dim]),
                dim,
                head_size,
                kv_dim,
                kv_mul,
                seq_len: p.seq_len,
                att_rows: attention_rows(s.max_batch),
                pos,
                n,
            };
            let work = p.n_heads * n * (pos + n) * head_size * 2;
            if work >= MIN_TASK_WORK && par.threads() > 1 {
                par.run(p.n_heads, &|h| heads.run(h));
            } else {
                (0..p.n_heads).for_each(|h| heads.run(h));
            }

            // Output projection, then the residual connection back into x.
            let xb = Input::new(
                s.math,
                &s.xb[..n * dim],
                s.xq,
                s.xq_scales,
                w.wo.layer(l),
                group_size,
            );
            xb.matmul(par, &mut s.xb2[..n * dim], w.wo.layer(l), dim, dim);
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
                s.math,
                &s.xb[..n * dim],
                s.xq,
                s.xq_scales,
                w.w1.layer(l),
                group_size,
            );
            xb.matmul(
                par,
                &mut s.hb[..n * hidden_dim],
                w.w1.layer(l),
                dim,
                hidden_dim,
            );
            xb.matmul(
                par,
                &mut s.hb2[..n * hidden_dim],
                w.w3.layer(l),
                dim,
                hidden_dim,
            );

            // SwiGLU: silu(x) = x * sigmoid(x), times the w3 branch.
            for (h, &h2) in s.hb[..n * hidden_dim].iter_mut().zip(s.hb2.iter()) {
                let mut val = *h;
                val *= 1.0 / (1.0 + expf(-val));
                val *= h2;
                *h = val;
            }

            let hb = Input::new(
                s.math,
                &s.hb[..n * hidden_dim],
                s.hq,
                s.hq_scales,
                w.w2.layer(l),
                group_size,
            );
            hb.matmul(par, &mut s.xb[..n * dim], w.w2.layer(l), hidden_dim, dim);
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
        let x = Input::new(s.math, x, s.xq, s.xq_scales, wcls, group_size);
        let logits = &mut s.logits[..count * p.vocab_size];
        x.matmul(par, logits, wcls, dim, p.vocab_size);
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
    F32(&'s [f32], Math),
    Q8 { q: &'s [i8], scales: &'s [f32] },
}

impl<'s> Input<'s> {
    /// Prepares `x` for matmuls against matrices of `kind`'s format,
    /// quantizing into `xq`/`xs` for Q8_0.
    fn new(
        math: Math,
        x: &'s [f32],
        xq: &'s mut [i8],
        xs: &'s mut [f32],
        kind: Matrix<'_>,
        group_size: usize,
    ) -> Input<'s> {
        match kind {
            Matrix::F32(_) => Input::F32(x, math),
            Matrix::Q8(_) => {
                let q = &mut xq[..x.len()];
                let scales = &mut xs[..x.len() / group_size];
                quantize(q, scales, x, group_size);
                Input::Q8 { q, scales }
            }
        }
    }

    fn matmul(&self, par: &dyn Parallel, out: &mut [f32], w: Matrix<'_>, n: usize, d: usize) {
        let batch = out.len() / d;
        let tasks = task_count(par, batch * n * d, d);
        if tasks <= 1 {
            self.matmul_rows(out, w, n, d);
            return;
        }
        // Split the output rows into `tasks` ranges of whole 32-row blocks.
        let rows_per_task = d.div_ceil(tasks).div_ceil(32) * 32;
        let tasks = d.div_ceil(rows_per_task);
        let shared = SharedOut::new(out);
        par.run(tasks, &|t| {
            let r0 = t * rows_per_task;
            let r1 = (r0 + rows_per_task).min(d);
            let sub = w.rows(r0, r1, n);
            if batch == 1 {
                // SAFETY: tasks own disjoint row ranges of the output.
                let out = unsafe { shared.slice(r0, r1 - r0) };
                self.matmul_rows(out, sub, n, r1 - r0);
                return;
            }
            // Rows of several batch tokens are not contiguous in `out`, so
            // compute a few rows at a time on the stack, then copy them out.
            let mut local = [0.0f32; LOCAL_OUT];
            let step = (LOCAL_OUT / batch).max(1);
            let mut r = r0;
            while r < r1 {
                let end = (r + step).min(r1);
                let rows = end - r;
                let part = &mut local[..batch * rows];
                self.matmul_rows(part, w.rows(r, end, n), n, rows);
                for b in 0..batch {
                    // SAFETY: this task owns output rows r0..r1 of every
                    // batch token, and r..end lies inside them.
                    let dst = unsafe { shared.slice(b * d + r, rows) };
                    dst.copy_from_slice(&part[b * rows..(b + 1) * rows]);
                }
                r = end;
            }
        });
    }

    fn matmul_rows(&self, out: &mut [f32], w: Matrix<'_>, n: usize, d: usize) {
        match (self, w) {
            (Input::F32(x, Math::Exact), Matrix::F32(w)) => matmul(out, x, w, n, d),
            (Input::F32(x, Math::Relaxed), Matrix::F32(w)) => relaxed::matmul(out, x, w, n, d),
            (Input::Q8 { q, scales }, Matrix::Q8(w)) => matmul_q8(out, q, scales, w, n, d),
            // Every matrix of a checkpoint has the same format, and the input
            // was prepared for that format.
            _ => unreachable!("matmul input and weights have different formats"),
        }
    }
}

/// Multiply-adds below which a matmul or attention step runs on one thread:
/// waking workers costs more than it saves there.
const MIN_TASK_WORK: usize = 1 << 17;

/// Floats of the per-task stack buffer for batched output rows.
const LOCAL_OUT: usize = 2048;

/// Number of tasks for a matmul of `work` multiply-adds over `d` rows.
fn task_count(par: &dyn Parallel, work: usize, d: usize) -> usize {
    let threads = par.threads();
    if threads <= 1 || work < MIN_TASK_WORK || d < 64 {
        return 1;
    }
    threads.min(work / MIN_TASK_WORK).max(1)
}

/// An output buffer that parallel tasks write through, each to its own
/// elements.
struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks only write disjoint elements (see `SharedOut::slice`).
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn new(out: &mut [f32]) -> SharedOut {
        SharedOut {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// The `len` elements from `start`.
    ///
    /// # Safety
    /// No other live slice from this `SharedOut` overlaps the range, which
    /// the callers ensure by giving each task its own rows or head.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "SharedOut range out of bounds");
        // SAFETY: in bounds (asserted) and unaliased (the caller's promise).
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Attention of the tokens of one forward call, one task per head.
struct AttentionHeads<'a> {
    /// The tokens' queries, (n, dim): head h of token b at b * dim + h * head_size.
    q: &'a [f32],
    /// This layer's caches, (seq_len, kv_dim).
    key_cache: &'a [f32],
    value_cache: &'a [f32],
    /// Scores, (n_heads, att_rows, seq_len); head h uses block h.
    att: SharedOut,
    /// Output, (n, dim), laid out as `q`; each head writes its own parts.
    xb: SharedOut,
    dim: usize,
    head_size: usize,
    kv_dim: usize,
    kv_mul: usize,
    seq_len: usize,
    /// Tokens whose scores are computed together.
    att_rows: usize,
    /// Position of the first token; token b is at pos + b.
    pos: usize,
    n: usize,
}

impl AttentionHeads<'_> {
    /// Computes head `h` for every token, with run.c's attention arithmetic.
    fn run(&self, h: usize) {
        let (head_size, seq_len) = (self.head_size, self.seq_len);
        let kv_offset = (h / self.kv_mul) * head_size;
        let divisor = sqrtf(head_size as f32);
        // SAFETY: head h alone uses att block h.
        let att = unsafe {
            self.att
                .slice(h * self.att_rows * seq_len, self.att_rows * seq_len)
        };
        let mut b0 = 0;
        while b0 < self.n {
            let b1 = (b0 + self.att_rows).min(self.n);
            // Scores q_b . k_t, each summed in index order, for tokens b0..b1
            // and the positions that the last of them attends to. Each key
            // is read once for all these tokens; earlier tokens ignore the
            // positions after their own.
            let queries = Strided {
                values: &self.q[b0 * self.dim + h * head_size..],
                rows: b1 - b0,
                len: head_size,
                stride: self.dim,
            };
            let keys = Strided {
                values: &self.key_cache[kv_offset..],
                rows: self.pos + b1,
                len: head_size,
                stride: self.kv_dim,
            };
            matmul_strided(att, seq_len, queries, keys);

            for b in b0..b1 {
                let scores = &mut att[(b - b0) * seq_len..(b - b0) * seq_len + self.pos + b + 1];
                for score in scores.iter_mut() {
                    *score /= divisor;
                }
                softmax(scores);
                // SAFETY: head h alone writes part h of each token's xb.
                let xb = unsafe { self.xb.slice(b * self.dim + h * head_size, head_size) };
                // xb = sum over t of scores[t] * v_t, added in order of t.
                weighted_sum(xb, scores, &self.value_cache[kv_offset..], self.kv_dim);
            }
            b0 = b1;
        }
    }
}

impl<'a> Matrix<'a> {
    /// Rows `r0..r1` of a `(d, n)` matrix.
    fn rows(self, r0: usize, r1: usize, n: usize) -> Matrix<'a> {
        match self {
            Matrix::F32(w) => Matrix::F32(&w[r0 * n..r1 * n]),
            Matrix::Q8(t) => {
                let gs = t.group_size;
                Matrix::Q8(QTensor {
                    q: &t.q[r0 * n..r1 * n],
                    scales: &t.scales[4 * (r0 * n / gs)..4 * (r1 * n / gs)],
                    group_size: gs,
                })
            }
        }
    }
}
