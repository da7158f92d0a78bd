//! Seeded random checkpoints of any shape, in all three formats.
//!
//! Tests and benchmarks use these where no real checkpoint of the wanted shape
//! exists: timing at the stories15M/42M/110M shapes, and exactness tests that
//! compare formats or kernels on identical weights. The weights are noise, so
//! a model built from them generates no meaningful text.
//!
//! Values are uniform: token embeddings in [-1, 1], RMSNorm weights in
//! [0.8, 1.2], and a matrix with fan-in `n` in [-1/sqrt(n), 1/sqrt(n)]. That
//! fan-in scaling keeps each matmul output within a small factor of its input,
//! so activations neither vanish nor overflow through the layers.
//!
//! Every tensor draws from its own stream, seeded from `seed` and the tensor's
//! name, so its values depend on the seed and the shape but not on the format.
//! A legacy and a v1 checkpoint of one shape and seed contain bit-identical
//! fp32 weights, and the v2 checkpoint contains their Q8_0 quantization. The
//! same seed always gives the same bytes, on every target.

use core::fmt;

use crate::checkpoint::{Config, Format, Layout, HEADER_LEN, MAGIC};

/// Reasons [`write_checkpoint`] rejects its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyntheticError {
    /// The output buffer is not exactly `config.file_len()` bytes.
    WrongLength {
        /// Checkpoint length for the config, in bytes.
        expected: u64,
        /// Output buffer length, in bytes.
        found: u64,
    },
}

impl fmt::Display for SyntheticError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SyntheticError::WrongLength { expected, found } => write!(
                f,
                "output buffer is {found} bytes, but a checkpoint of this config is {expected} \
                 bytes; size the buffer with Config::file_len"
            ),
        }
    }
}

/// Writes a complete checkpoint for `config` (header and weights) into `out`,
/// which must be exactly `config.file_len()` bytes.
///
/// The result parses back to `config` with [`Config::parse`]. See the module
/// documentation for the values written.
pub fn write_checkpoint(config: &Config, seed: u64, out: &mut [u8]) -> Result<(), SyntheticError> {
    // Config::new has checked that the layout fits in u64 and usize, so the
    // `None` arm only keeps this function free of panics.
    let Some(layout) = Layout::of(config) else {
        return Err(SyntheticError::WrongLength {
            expected: u64::MAX,
            found: out.len() as u64,
        });
    };
    let found = out.len() as u64;
    if found != layout.end {
        return Err(SyntheticError::WrongLength {
            expected: layout.end,
            found,
        });
    }

    let mut writer = Writer { out, at: 0 };
    let tensors = Tensors { config, seed };
    match config.format {
        Format::Legacy => write_legacy(&mut writer, &tensors, &layout),
        Format::V1 | Format::V2 { .. } => write_versioned(&mut writer, &tensors, &layout),
    }
    debug_assert_eq!(
        writer.at as u64, layout.end,
        "writes must end at Layout::end"
    );
    Ok(())
}

/// Writes a legacy (v0) checkpoint in run.c's order.
fn write_legacy(writer: &mut Writer<'_>, tensors: &Tensors<'_>, layout: &Layout) {
    let config = tensors.config;
    for value in header_params(config) {
        writer.put_i32(value);
    }

    writer.expect_at(layout.token_embedding_table);
    writer.put_fp32(tensors.get(TensorId::TokenEmbedding));
    writer.expect_at(layout.rms_att_weight);
    writer.put_fp32(tensors.get(TensorId::RmsAtt));
    writer.expect_at(layout.wq);
    writer.put_fp32(tensors.get(TensorId::Wq));
    writer.expect_at(layout.wk);
    writer.put_fp32(tensors.get(TensorId::Wk));
    writer.expect_at(layout.wv);
    writer.put_fp32(tensors.get(TensorId::Wv));
    writer.expect_at(layout.wo);
    writer.put_fp32(tensors.get(TensorId::Wo));
    writer.expect_at(layout.rms_ffn_weight);
    writer.put_fp32(tensors.get(TensorId::RmsFfn));
    writer.expect_at(layout.w1);
    writer.put_fp32(tensors.get(TensorId::W1));
    writer.expect_at(layout.w2);
    writer.put_fp32(tensors.get(TensorId::W2));
    writer.expect_at(layout.w3);
    writer.put_fp32(tensors.get(TensorId::W3));
    writer.expect_at(layout.rms_final_weight);
    writer.put_fp32(tensors.get(TensorId::RmsFinal));

    // freq_cis_real and freq_cis_imag, seq_len * head_size / 2 floats each.
    // run.c skips them, so their contents do not matter.
    writer.put_zeros(4 * config.seq_len * config.head_size());

    if !config.shared_classifier {
        writer.expect_at(layout.wcls);
        writer.put_fp32(tensors.get(TensorId::Wcls));
    }
}

/// Writes a v1 (fp32) or v2 (Q8_0) checkpoint in the order of llama2.c's
/// export.py: norms first, then the token embedding and the matrices.
fn write_versioned(writer: &mut Writer<'_>, tensors: &Tensors<'_>, layout: &Layout) {
    let config = tensors.config;
    let (version, group_size) = match config.format {
        Format::V2 { group_size } => (2, Some(group_size)),
        Format::Legacy | Format::V1 => (1, None),
    };

    // Header: magic, version, the seven sizes, the shared-classifier byte at
    // offset 36, for v2 the group size at offset 37, then zeros up to 256.
    writer.put_zeros(HEADER_LEN);
    writer.at = 0;
    writer.put_bytes(&MAGIC.to_le_bytes());
    writer.put_i32(version);
    for value in header_params(config) {
        writer.put_i32(value);
    }
    writer.put_bytes(&[u8::from(config.shared_classifier)]);
    if let Some(group_size) = group_size {
        // The group size divides dim, which Config::new keeps at most i32::MAX.
        writer.put_i32(group_size as i32);
    }
    writer.at = HEADER_LEN;

    writer.expect_at(layout.rms_att_weight);
    writer.put_fp32(tensors.get(TensorId::RmsAtt));
    writer.expect_at(layout.rms_ffn_weight);
    writer.put_fp32(tensors.get(TensorId::RmsFfn));
    writer.expect_at(layout.rms_final_weight);
    writer.put_fp32(tensors.get(TensorId::RmsFinal));

    let put_matrix = |writer: &mut Writer<'_>, offset: u64, id: TensorId| {
        writer.expect_at(offset);
        match group_size {
            Some(group_size) => writer.put_q80(tensors.get(id), group_size),
            None => writer.put_fp32(tensors.get(id)),
        }
    };
    put_matrix(
        writer,
        layout.token_embedding_table,
        TensorId::TokenEmbedding,
    );
    put_matrix(writer, layout.wq, TensorId::Wq);
    put_matrix(writer, layout.wk, TensorId::Wk);
    put_matrix(writer, layout.wv, TensorId::Wv);
    put_matrix(writer, layout.wo, TensorId::Wo);
    put_matrix(writer, layout.w1, TensorId::W1);
    put_matrix(writer, layout.w2, TensorId::W2);
    put_matrix(writer, layout.w3, TensorId::W3);
    if !config.shared_classifier {
        put_matrix(writer, layout.wcls, TensorId::Wcls);
    }
}

/// Returns the seven header sizes in file order. Only legacy files mark an
/// unshared classifier with a negative vocab_size, because v1 and v2 have a
/// flag byte for it.
fn header_params(config: &Config) -> [i32; 7] {
    // Config::new keeps every size at most i32::MAX, so the casts are exact.
    let vocab_size = config.vocab_size as i32;
    let vocab_field = match config.format {
        Format::Legacy if !config.shared_classifier => -vocab_size,
        _ => vocab_size,
    };
    [
        config.dim as i32,
        config.hidden_dim as i32,
        config.n_layers as i32,
        config.n_heads as i32,
        config.n_kv_heads as i32,
        vocab_field,
        config.seq_len as i32,
    ]
}

/// Names of the checkpoint tensors. The discriminant seeds each tensor's
/// stream, so changing one changes the generated weights.
#[derive(Clone, Copy)]
enum TensorId {
    TokenEmbedding = 1,
    RmsAtt = 2,
    Wq = 3,
    Wk = 4,
    Wv = 5,
    Wo = 6,
    RmsFfn = 7,
    W1 = 8,
    W2 = 9,
    W3 = 10,
    RmsFinal = 11,
    Wcls = 12,
}

/// One tensor to generate: `layers` consecutive slices of `len` values each,
/// uniform over [low, high] and drawn in order from `rng`.
struct Tensor {
    rng: SplitMix64,
    layers: usize,
    len: usize,
    low: f32,
    high: f32,
}

/// Shapes and value ranges of every tensor of one checkpoint.
struct Tensors<'a> {
    config: &'a Config,
    seed: u64,
}

impl Tensors<'_> {
    fn get(&self, id: TensorId) -> Tensor {
        let c = self.config;
        let q_dim = c.n_heads * c.head_size();
        // A matrix of `rows` outputs over `fan_in` inputs per layer.
        let matrix = |layers: usize, rows: usize, fan_in: usize| {
            let bound = 1.0 / libm::sqrtf(fan_in as f32);
            (layers, rows * fan_in, -bound, bound)
        };
        let (layers, len, low, high) = match id {
            TensorId::TokenEmbedding => (1, c.vocab_size * c.dim, -1.0, 1.0),
            TensorId::RmsAtt | TensorId::RmsFfn => (c.n_layers, c.dim, 0.8, 1.2),
            TensorId::RmsFinal => (1, c.dim, 0.8, 1.2),
            TensorId::Wq => matrix(c.n_layers, q_dim, c.dim),
            TensorId::Wk | TensorId::Wv => matrix(c.n_layers, c.kv_dim(), c.dim),
            TensorId::Wo => matrix(c.n_layers, c.dim, q_dim),
            TensorId::W1 | TensorId::W3 => matrix(c.n_layers, c.hidden_dim, c.dim),
            TensorId::W2 => matrix(c.n_layers, c.dim, c.hidden_dim),
            TensorId::Wcls => matrix(1, c.vocab_size, c.dim),
        };
        // Hashing the seed with the tensor id gives each tensor an unrelated
        // starting point on splitmix64's cycle.
        let state = mix64(self.seed ^ mix64(id as u64));
        Tensor {
            rng: SplitMix64 { state },
            layers,
            len,
            low,
            high,
        }
    }
}

/// Sequential little-endian writer over the output buffer. A write past the
/// end panics on slice indexing, and would be a bug in this module, because
/// `write_checkpoint` has checked the buffer length against the layout.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn expect_at(&self, offset: u64) {
        debug_assert_eq!(
            self.at as u64, offset,
            "tensor must start where Layout puts it"
        );
    }

    fn put_bytes(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    fn put_i32(&mut self, value: i32) {
        self.put_bytes(&value.to_le_bytes());
    }

    fn put_zeros(&mut self, len: usize) {
        self.out[self.at..self.at + len].fill(0);
        self.at += len;
    }

    fn put_fp32(&mut self, mut tensor: Tensor) {
        let len = 4 * tensor.layers * tensor.len;
        for bytes in self.out[self.at..self.at + len].chunks_exact_mut(4) {
            let value = tensor.rng.uniform(tensor.low, tensor.high);
            bytes.copy_from_slice(&value.to_le_bytes());
        }
        self.at += len;
    }

    /// Writes `tensor` as Q8_0, one layer at a time: the layer's int8 values,
    /// then one f32 scale per `group_size` values.
    ///
    /// The arithmetic follows `quantize` in llama2.c's runq.c, with
    /// scale = max|w| / 127 and q = round(w / scale), rounding halves away
    /// from zero. An all-zero group gets scale 0 and q 0, where runq.c would
    /// divide 0 by 0.
    fn put_q80(&mut self, mut tensor: Tensor, group_size: usize) {
        let groups = tensor.len / group_size;
        for _ in 0..tensor.layers {
            let (values, rest) = self.out[self.at..].split_at_mut(tensor.len);
            let scales = &mut rest[..4 * groups];
            for (group, scale_bytes) in values
                .chunks_exact_mut(group_size)
                .zip(scales.chunks_exact_mut(4))
            {
                // The group is drawn twice from copies of one generator state,
                // first for its maximum and then for its values, so no buffer
                // of group_size floats is needed.
                let start = tensor.rng;
                let mut max_abs = 0.0f32;
                for _ in 0..group_size {
                    max_abs = max_abs.max(libm::fabsf(tensor.rng.uniform(tensor.low, tensor.high)));
                }
                let scale = max_abs / 127.0;

                tensor.rng = start;
                for q in group.iter_mut() {
                    let value = tensor.rng.uniform(tensor.low, tensor.high);
                    // |value / scale| <= 127 up to rounding, and `as`
                    // saturates, so the result is always in [-127, 127].
                    let quantized = if scale == 0.0 {
                        0
                    } else {
                        libm::roundf(value / scale) as i8
                    };
                    *q = quantized as u8;
                }
                scale_bytes.copy_from_slice(&scale.to_le_bytes());
            }
            self.at += tensor.len + 4 * groups;
        }
    }
}

/// splitmix64: a 64-bit counter stepped by the golden-ratio increment and
/// passed through `mix64`. Small, fast, and every seed works, including 0.
#[derive(Clone, Copy)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// Returns a value uniform over [low, high], from the top 24 bits of
    /// the next output, which an f32 in [0, 1) represents exactly.
    fn uniform(&mut self, low: f32, high: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32);
        low + (high - low) * unit
    }
}

/// splitmix64's output function, a bijection on u64 that spreads every input
/// bit over the whole word.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
