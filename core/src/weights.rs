//! Borrowed views of a checkpoint's weights. Nothing is copied: fp32 tensors
//! are the checkpoint bytes reinterpreted as `f32`, and Q8_0 tensors are the
//! int8 bytes plus their little-endian scale bytes.

use crate::checkpoint::{CheckpointError, Config, Format, Layout};

/// A Q8_0 tensor: int8 values with one f32 scale per `group_size` values.
#[derive(Clone, Copy, Debug)]
pub struct QTensor<'a> {
    /// Quantized values.
    pub q: &'a [i8],
    /// Scales as little-endian f32 bytes, 4 per group. They are read
    /// bytewise because runq.c's layout gives them no alignment guarantee.
    pub scales: &'a [u8],
    /// Values per scale.
    pub group_size: usize,
}

impl QTensor<'_> {
    /// The scale of group `g`.
    #[inline]
    pub fn scale(&self, g: usize) -> f32 {
        let b = &self.scales[4 * g..4 * g + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// One weight matrix of one layer.
#[derive(Clone, Copy, Debug)]
pub enum Matrix<'a> {
    /// fp32 values, row-major.
    F32(&'a [f32]),
    /// Q8_0 values, row-major.
    Q8(QTensor<'a>),
}

/// All layers of one weight kind, each `len` values long.
#[derive(Clone, Copy, Debug)]
pub struct Stack<'a> {
    bytes: &'a [u8],
    len: usize,
    group_size: Option<usize>,
}

impl<'a> Stack<'a> {
    /// Bytes one layer's tensor occupies in the file.
    fn stride(&self) -> usize {
        match self.group_size {
            None => 4 * self.len,
            Some(gs) => self.len + 4 * (self.len / gs),
        }
    }

    /// The tensor of layer `l`. The caller keeps `l` below the stack's layer
    /// count, which `Weights::new` fixed from the same `Config`.
    pub fn layer(&self, l: usize) -> Matrix<'a> {
        let stride = self.stride();
        let bytes = &self.bytes[l * stride..(l + 1) * stride];
        match self.group_size {
            None => Matrix::F32(cast_f32(bytes)),
            Some(group_size) => {
                let (q, scales) = bytes.split_at(self.len);
                Matrix::Q8(QTensor {
                    q: cast_i8(q),
                    scales,
                    group_size,
                })
            }
        }
    }
}

/// The weights of a transformer, named as in run.c's `TransformerWeights`.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    /// Token embeddings, (vocab_size, dim).
    pub token_embedding_table: Stack<'a>,
    /// Attention rmsnorm weights, (n_layers, dim), always fp32.
    pub rms_att_weight: &'a [f32],
    /// Feed-forward rmsnorm weights, (n_layers, dim), always fp32.
    pub rms_ffn_weight: &'a [f32],
    /// Final rmsnorm weights, (dim,), always fp32.
    pub rms_final_weight: &'a [f32],
    /// Query projections, (n_layers, dim, dim).
    pub wq: Stack<'a>,
    /// Key projections, (n_layers, kv_dim, dim).
    pub wk: Stack<'a>,
    /// Value projections, (n_layers, kv_dim, dim).
    pub wv: Stack<'a>,
    /// Attention output projections, (n_layers, dim, dim).
    pub wo: Stack<'a>,
    /// Feed-forward gate projections, (n_layers, hidden_dim, dim).
    pub w1: Stack<'a>,
    /// Feed-forward down projections, (n_layers, dim, hidden_dim).
    pub w2: Stack<'a>,
    /// Feed-forward up projections, (n_layers, hidden_dim, dim).
    pub w3: Stack<'a>,
    /// Classifier, (vocab_size, dim); the embedding table when shared.
    pub wcls: Stack<'a>,
}

impl<'a> Weights<'a> {
    /// Borrows the weights of a checkpoint whose header parsed to `config`.
    ///
    /// `bytes` must be the whole file, exactly `config.file_len()` bytes, and
    /// start at a 4-byte aligned address.
    pub fn new(config: &Config, bytes: &'a [u8]) -> Result<Weights<'a>, CheckpointError> {
        if cfg!(target_endian = "big") {
            return Err(CheckpointError::BigEndianTarget);
        }
        let offset = bytes.as_ptr() as usize % 4;
        if offset != 0 {
            return Err(CheckpointError::Misaligned { offset });
        }
        let layout = Layout::of(config).ok_or(CheckpointError::SizeOverflow)?;
        let found = bytes.len() as u64;
        if found != layout.end {
            return Err(if found < layout.end {
                CheckpointError::Truncated {
                    expected: layout.end,
                    found,
                }
            } else {
                CheckpointError::TrailingBytes {
                    expected: layout.end,
                    found,
                }
            });
        }

        let group_size = config.format.group_size();
        let dim = config.dim;
        let layers = config.n_layers;
        // Config::new checked that the file length fits in usize, so every
        // offset below does too.
        let stack = |start: u64, len: usize, count: usize| {
            let mut s = Stack {
                bytes: &[],
                len,
                group_size,
            };
            let start = start as usize;
            s.bytes = &bytes[start..start + s.stride() * count];
            s
        };
        let norms =
            |start: u64, len: usize| cast_f32(&bytes[start as usize..start as usize + 4 * len]);

        let embedding = stack(layout.token_embedding_table, config.vocab_size * dim, 1);
        Ok(Weights {
            token_embedding_table: embedding,
            rms_att_weight: norms(layout.rms_att_weight, layers * dim),
            rms_ffn_weight: norms(layout.rms_ffn_weight, layers * dim),
            rms_final_weight: norms(layout.rms_final_weight, dim),
            wq: stack(layout.wq, dim * dim, layers),
            wk: stack(layout.wk, config.kv_dim() * dim, layers),
            wv: stack(layout.wv, config.kv_dim() * dim, layers),
            wo: stack(layout.wo, dim * dim, layers),
            w1: stack(layout.w1, config.hidden_dim * dim, layers),
            w2: stack(layout.w2, dim * config.hidden_dim, layers),
            w3: stack(layout.w3, config.hidden_dim * dim, layers),
            wcls: stack(layout.wcls, config.vocab_size * dim, 1),
        })
    }

    /// Writes row `token` of the token embedding table into `out` (`dim`
    /// values). A Q8_0 row is dequantized as runq.c does: `q * scale`.
    pub fn embedding(&self, token: usize, out: &mut [f32]) {
        let dim = out.len();
        match self.token_embedding_table.layer(0) {
            Matrix::F32(table) => out.copy_from_slice(&table[token * dim..(token + 1) * dim]),
            Matrix::Q8(t) => {
                let start = token * dim;
                for (i, o) in out.iter_mut().enumerate() {
                    let j = start + i;
                    *o = f32::from(t.q[j]) * t.scale(j / t.group_size);
                }
            }
        }
    }
}

/// Whether `format` stores its matrices as Q8_0.
pub const fn is_quantized(format: Format) -> bool {
    matches!(format, Format::V2 { .. })
}

/// Reinterprets little-endian f32 bytes in place.
fn cast_f32(bytes: &[u8]) -> &[f32] {
    assert!(
        (bytes.as_ptr() as usize).is_multiple_of(core::mem::align_of::<f32>())
            && bytes.len().is_multiple_of(4)
    );
    // SAFETY: the pointer is aligned for f32 and the length is a multiple of 4
    // (asserted above; `Weights::new` checks the base address and every offset
    // from `Layout` is a multiple of 4 for fp32 tensors). Every bit pattern is
    // a valid f32, and `Weights::new` rejects big-endian targets, so the bytes
    // read as the file's little-endian values. The slice borrows `bytes`.
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), bytes.len() / 4) }
}

fn cast_i8(bytes: &[u8]) -> &[i8] {
    // SAFETY: i8 and u8 have the same size and alignment and every bit
    // pattern is valid for both; the slice borrows `bytes`.
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
}
