//! Checkpoint headers: llama2.c's legacy (v0), v1 (fp32) and v2 (Q8_0)
//! formats, parsed into a validated [`Config`].
//!
//! Layouts, all little-endian:
//! - v0: seven `i32` (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
//!   vocab_size, seq_len), then fp32 weights in run.c's order. A negative
//!   vocab_size means the classifier `wcls` is stored after the weights.
//! - v1/v2: `u32` magic `0x616b3432` ("ak42"), `i32` version, the seven
//!   `i32`, a `u8` shared-classifier flag, and for v2 an `i32` group size,
//!   zero-padded to 256 bytes.
//!
//! Every size is computed with checked 64-bit arithmetic, and the file length
//! must equal the length the header implies, before any weight is touched.

use core::fmt;

/// The v1/v2 magic number 0x616b3432, the first four bytes read as a
/// little-endian `u32`. The hex digits spell "ak42"; the bytes on disk are
/// "24ka".
pub const MAGIC: u32 = 0x616b_3432;
/// Header length of a legacy (v0) checkpoint in bytes.
pub const LEGACY_HEADER_LEN: usize = 28;
/// Header length of a v1 or v2 checkpoint in bytes.
pub const HEADER_LEN: usize = 256;

/// Checkpoint format, which fixes the weight layout and the arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Legacy (v0): fp32 weights in run.c's order, followed by two unused
    /// RoPE tables and, for an unshared classifier, `wcls`.
    Legacy,
    /// Version 1: fp32 norms, then fp32 weights.
    V1,
    /// Version 2: fp32 norms, then every weight tensor as int8 values followed
    /// by one f32 scale per `group_size` values (Q8_0).
    V2 {
        /// Number of consecutive values that share one scale.
        group_size: usize,
    },
}

impl Format {
    /// Header length in bytes.
    pub const fn header_len(self) -> usize {
        match self {
            Format::Legacy => LEGACY_HEADER_LEN,
            Format::V1 | Format::V2 { .. } => HEADER_LEN,
        }
    }

    /// Q8_0 group size, or `None` for fp32 formats.
    pub const fn group_size(self) -> Option<usize> {
        match self {
            Format::V2 { group_size } => Some(group_size),
            Format::Legacy | Format::V1 => None,
        }
    }
}

/// Validated model hyperparameters.
///
/// Only [`Config::new`] and [`Config::parse`] create one, and both enforce
/// the invariants documented on each field, so code holding a `Config` may
/// divide and index by these sizes without further checks. The fields are
/// read through the methods of the same names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Checkpoint format.
    pub(crate) format: Format,
    /// Transformer width. A multiple of `n_heads`.
    pub(crate) dim: usize,
    /// Width of the feed-forward hidden layer.
    pub(crate) hidden_dim: usize,
    /// Number of transformer layers.
    pub(crate) n_layers: usize,
    /// Number of query heads. A multiple of `n_kv_heads`.
    pub(crate) n_heads: usize,
    /// Number of key/value heads (fewer than `n_heads` for grouped-query
    /// attention).
    pub(crate) n_kv_heads: usize,
    /// Number of tokens in the vocabulary.
    pub(crate) vocab_size: usize,
    /// Maximum sequence length, the size of the KV cache in positions.
    pub(crate) seq_len: usize,
    /// Whether the classifier reuses the token embedding table.
    pub(crate) shared_classifier: bool,
}

/// Reasons a checkpoint header or file is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The file ends before its header does.
    HeaderTruncated {
        /// Header length in bytes.
        expected: u64,
        /// File length in bytes.
        found: u64,
    },
    /// The file starts with neither the "ak42" magic nor a plausible legacy
    /// header.
    UnknownFormat {
        /// The first four bytes as a little-endian `u32`.
        magic: u32,
    },
    /// The "ak42" magic is followed by a version other than 1 or 2.
    UnsupportedVersion {
        /// The version field.
        found: i32,
    },
    /// A header field is zero or negative.
    NonPositiveField {
        /// Field name, as in llama2.c's `Config`.
        field: &'static str,
        /// The value found.
        found: i64,
    },
    /// `dim` is not a multiple of `n_heads`.
    DimNotDivisibleByHeads {
        /// Transformer width.
        dim: usize,
        /// Number of query heads.
        n_heads: usize,
    },
    /// `n_heads` is not a multiple of `n_kv_heads`.
    HeadsNotDivisibleByKvHeads {
        /// Number of query heads.
        n_heads: usize,
        /// Number of key/value heads.
        n_kv_heads: usize,
    },
    /// `dim / n_heads` is odd, so RoPE cannot rotate pairs.
    OddHeadSize {
        /// `dim / n_heads`.
        head_size: usize,
    },
    /// A v2 group size does not divide both `dim` and `hidden_dim`.
    GroupSizeMismatch {
        /// The group size field.
        group_size: usize,
        /// Transformer width.
        dim: usize,
        /// Feed-forward width.
        hidden_dim: usize,
    },
    /// A size computed from the header does not fit in 64 bits or in this
    /// target's address space.
    SizeOverflow,
    /// The file is shorter than its header implies.
    Truncated {
        /// Length the header implies, in bytes.
        expected: u64,
        /// File length in bytes.
        found: u64,
    },
    /// The file is longer than its header implies.
    TrailingBytes {
        /// Length the header implies, in bytes.
        expected: u64,
        /// File length in bytes.
        found: u64,
    },
    /// The checkpoint bytes do not start at a 4-byte aligned address, so fp32
    /// weights cannot be borrowed in place.
    Misaligned {
        /// The start address modulo 4.
        offset: usize,
    },
    /// fp32 weights are borrowed in place, which needs a little-endian target.
    BigEndianTarget,
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CheckpointError::HeaderTruncated { expected, found } => write!(
                f,
                "file is {found} bytes, shorter than the {expected}-byte checkpoint header"
            ),
            CheckpointError::UnknownFormat { magic } => write!(
                f,
                "not a llama2.c checkpoint: first word 0x{magic:08x} is neither the \"ak42\" \
                 magic (0x{MAGIC:08x}) nor a valid legacy header"
            ),
            CheckpointError::UnsupportedVersion { found } => write!(
                f,
                "unsupported checkpoint version {found}; supported versions are 1 (fp32) and 2 (Q8_0)"
            ),
            CheckpointError::NonPositiveField { field, found } => {
                write!(f, "invalid header: {field} is {found}, expected a positive value")
            }
            CheckpointError::DimNotDivisibleByHeads { dim, n_heads } => write!(
                f,
                "invalid header: dim {dim} is not a multiple of n_heads {n_heads}"
            ),
            CheckpointError::HeadsNotDivisibleByKvHeads { n_heads, n_kv_heads } => write!(
                f,
                "invalid header: n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}"
            ),
            CheckpointError::OddHeadSize { head_size } => write!(
                f,
                "invalid header: head size {head_size} (dim / n_heads) is odd, but RoPE needs pairs"
            ),
            CheckpointError::GroupSizeMismatch { group_size, dim, hidden_dim } => write!(
                f,
                "invalid header: Q8_0 group size {group_size} must divide both dim {dim} and \
                 hidden_dim {hidden_dim}"
            ),
            CheckpointError::SizeOverflow => {
                write!(f, "invalid header: the implied file size overflows this target's address space")
            }
            CheckpointError::Truncated { expected, found } => write!(
                f,
                "truncated: the header implies {expected} bytes but the file has {found}; \
                 the file is incomplete, so copy or download it again"
            ),
            CheckpointError::TrailingBytes { expected, found } => write!(
                f,
                "the header implies {expected} bytes but the file has {found}; \
                 it is not a checkpoint of this shape"
            ),
            CheckpointError::Misaligned { offset } => write!(
                f,
                "checkpoint bytes start at an address {offset} bytes past a 4-byte boundary; \
                 pass a 4-byte aligned buffer"
            ),
            CheckpointError::BigEndianTarget => {
                write!(f, "checkpoints are little-endian and this target is big-endian")
            }
        }
    }
}

/// Read the little-endian `i32` at byte `offset`. The caller checks bounds.
fn read_i32(bytes: &[u8], offset: usize) -> i32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    i32::from_le_bytes(word)
}

/// Whether a first word that is not [`MAGIC`] is still a magic number rather
/// than a legacy `dim`: three of the four magic bytes match, or all four
/// bytes are printable ASCII. A legacy `dim` of that size (over 500 million)
/// is not a real model.
fn looks_like_magic(word: u32) -> bool {
    let bytes = word.to_le_bytes();
    let magic = MAGIC.to_le_bytes();
    let matching = bytes.iter().zip(magic).filter(|(a, b)| **a == *b).count();
    matching >= 3 || bytes.iter().all(|b| (0x20..0x7f).contains(b))
}

/// The seven `i32` hyperparameters in header order.
struct RawParams([i32; 7]);

const PARAM_NAMES: [&str; 7] = [
    "dim",
    "hidden_dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "vocab_size",
    "seq_len",
];

impl RawParams {
    fn read(bytes: &[u8], offset: usize) -> Self {
        let mut params = [0i32; 7];
        for (i, param) in params.iter_mut().enumerate() {
            *param = read_i32(bytes, offset + 4 * i);
        }
        RawParams(params)
    }
}

impl Config {
    /// Validates hyperparameters into a `Config`.
    ///
    /// Checks that every size is positive, that `dim` divides into `n_heads`
    /// heads of even size, that `n_heads` is a multiple of `n_kv_heads`, that a
    /// v2 group size divides `dim` and `hidden_dim`, and that the whole
    /// checkpoint size fits in 64 bits and in `usize`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        format: Format,
        dim: usize,
        hidden_dim: usize,
        n_layers: usize,
        n_heads: usize,
        n_kv_heads: usize,
        vocab_size: usize,
        seq_len: usize,
        shared_classifier: bool,
    ) -> Result<Config, CheckpointError> {
        let fields = [
            dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len,
        ];
        for (name, value) in PARAM_NAMES.iter().zip(fields) {
            if value == 0 {
                return Err(CheckpointError::NonPositiveField {
                    field: name,
                    found: 0,
                });
            }
            // Token ids and positions travel as u32 through the API and as
            // i32 in the file format.
            if value > i32::MAX as usize {
                return Err(CheckpointError::SizeOverflow);
            }
        }
        if let Format::V2 { group_size } = format {
            if group_size == 0 {
                return Err(CheckpointError::NonPositiveField {
                    field: "group_size",
                    found: 0,
                });
            }
            if !dim.is_multiple_of(group_size) || !hidden_dim.is_multiple_of(group_size) {
                return Err(CheckpointError::GroupSizeMismatch {
                    group_size,
                    dim,
                    hidden_dim,
                });
            }
        }
        if !dim.is_multiple_of(n_heads) {
            return Err(CheckpointError::DimNotDivisibleByHeads { dim, n_heads });
        }
        if !n_heads.is_multiple_of(n_kv_heads) {
            return Err(CheckpointError::HeadsNotDivisibleByKvHeads {
                n_heads,
                n_kv_heads,
            });
        }
        let head_size = dim / n_heads;
        if !head_size.is_multiple_of(2) {
            return Err(CheckpointError::OddHeadSize { head_size });
        }
        let config = Config {
            format,
            dim,
            hidden_dim,
            n_layers,
            n_heads,
            n_kv_heads,
            vocab_size,
            seq_len,
            shared_classifier,
        };
        let file_len = config.file_len().ok_or(CheckpointError::SizeOverflow)?;
        if usize::try_from(file_len).is_err() {
            return Err(CheckpointError::SizeOverflow);
        }
        Ok(config)
    }

    /// Parses and validates the header at the start of `bytes`, and checks
    /// that `bytes` is exactly as long as the header implies.
    ///
    /// A file that starts with the "ak42" magic is read as v1 or v2; any other
    /// file is read as a legacy (v0) header.
    pub fn parse(bytes: &[u8]) -> Result<Config, CheckpointError> {
        let found = bytes.len() as u64;
        if bytes.len() < 4 {
            return Err(CheckpointError::HeaderTruncated {
                expected: LEGACY_HEADER_LEN as u64,
                found,
            });
        }
        let magic = read_i32(bytes, 0) as u32;
        if magic != MAGIC && looks_like_magic(magic) {
            return Err(CheckpointError::UnknownFormat { magic });
        }
        let config = if magic == MAGIC {
            Self::parse_versioned(bytes)?
        } else {
            Self::parse_legacy(bytes, magic)?
        };
        let expected = config.file_len().ok_or(CheckpointError::SizeOverflow)?;
        if found < expected {
            return Err(CheckpointError::Truncated { expected, found });
        }
        if found > expected {
            return Err(CheckpointError::TrailingBytes { expected, found });
        }
        Ok(config)
    }

    fn parse_legacy(bytes: &[u8], magic: u32) -> Result<Config, CheckpointError> {
        if bytes.len() < LEGACY_HEADER_LEN {
            return Err(CheckpointError::HeaderTruncated {
                expected: LEGACY_HEADER_LEN as u64,
                found: bytes.len() as u64,
            });
        }
        let RawParams(mut params) = RawParams::read(bytes, 0);
        // A negative vocab_size flags an unshared classifier.
        let shared_classifier = params[5] > 0;
        params[5] = params[5].checked_abs().unwrap_or(0);
        // A header with a non-positive size is almost always some other kind
        // of file, so report that rather than naming one field.
        if params.iter().any(|&p| p <= 0) {
            return Err(CheckpointError::UnknownFormat { magic });
        }
        Self::from_raw(Format::Legacy, params, shared_classifier)
    }

    fn parse_versioned(bytes: &[u8]) -> Result<Config, CheckpointError> {
        if bytes.len() < HEADER_LEN {
            return Err(CheckpointError::HeaderTruncated {
                expected: HEADER_LEN as u64,
                found: bytes.len() as u64,
            });
        }
        let version = read_i32(bytes, 4);
        let RawParams(params) = RawParams::read(bytes, 8);
        let shared_classifier = bytes[36] != 0;
        let format = match version {
            1 => Format::V1,
            2 => {
                let group_size = read_i32(bytes, 37);
                if group_size <= 0 {
                    return Err(CheckpointError::NonPositiveField {
                        field: "group_size",
                        found: group_size.into(),
                    });
                }
                Format::V2 {
                    group_size: group_size as usize,
                }
            }
            found => return Err(CheckpointError::UnsupportedVersion { found }),
        };
        for (name, &value) in PARAM_NAMES.iter().zip(params.iter()) {
            if value <= 0 {
                return Err(CheckpointError::NonPositiveField {
                    field: name,
                    found: value.into(),
                });
            }
        }
        Self::from_raw(format, params, shared_classifier)
    }

    fn from_raw(
        format: Format,
        p: [i32; 7],
        shared_classifier: bool,
    ) -> Result<Config, CheckpointError> {
        let u = |i: usize| p[i] as usize;
        Config::new(
            format,
            u(0),
            u(1),
            u(2),
            u(3),
            u(4),
            u(5),
            u(6),
            shared_classifier,
        )
    }

    /// Checkpoint format.
    pub const fn format(&self) -> Format {
        self.format
    }

    /// Transformer width.
    pub const fn dim(&self) -> usize {
        self.dim
    }

    /// Width of the feed-forward hidden layer.
    pub const fn hidden_dim(&self) -> usize {
        self.hidden_dim
    }

    /// Number of transformer layers.
    pub const fn n_layers(&self) -> usize {
        self.n_layers
    }

    /// Number of query heads.
    pub const fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// Number of key/value heads.
    pub const fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// Number of tokens in the vocabulary.
    pub const fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Maximum sequence length, the size of the KV cache in positions.
    pub const fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Whether the classifier reuses the token embedding table.
    pub const fn shared_classifier(&self) -> bool {
        self.shared_classifier
    }

    /// Width of one attention head.
    pub const fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    /// Width of the key and value vectors of one token: `dim * n_kv_heads / n_heads`.
    pub const fn kv_dim(&self) -> usize {
        self.head_size() * self.n_kv_heads
    }

    /// Number of query heads that share one key/value head.
    pub const fn kv_mul(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Length of the whole checkpoint file in bytes, or `None` on overflow.
    pub fn file_len(&self) -> Option<u64> {
        let layout = Layout::of(self)?;
        Some(layout.end)
    }
}

/// Byte offsets of every tensor group in a checkpoint, computed from a
/// [`Config`] with checked 64-bit arithmetic.
///
/// For fp32 formats each range contains `n_layers` (or one) tensors back to back.
/// For v2 each layer's tensor is its int8 values followed by its f32 scales,
/// so a layer's stride is `n + 4 * n / group_size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `token_embedding_table`, (vocab_size, dim).
    pub token_embedding_table: u64,
    /// `rms_att_weight`, (n_layers, dim), always fp32.
    pub rms_att_weight: u64,
    /// `rms_ffn_weight`, (n_layers, dim), always fp32.
    pub rms_ffn_weight: u64,
    /// `rms_final_weight`, (dim,), always fp32.
    pub rms_final_weight: u64,
    /// `wq`, (n_layers, n_heads * head_size, dim).
    pub wq: u64,
    /// `wk`, (n_layers, kv_dim, dim).
    pub wk: u64,
    /// `wv`, (n_layers, kv_dim, dim).
    pub wv: u64,
    /// `wo`, (n_layers, dim, n_heads * head_size).
    pub wo: u64,
    /// `w1`, (n_layers, hidden_dim, dim).
    pub w1: u64,
    /// `w2`, (n_layers, dim, hidden_dim).
    pub w2: u64,
    /// `w3`, (n_layers, hidden_dim, dim).
    pub w3: u64,
    /// `wcls`, (vocab_size, dim); equal to `token_embedding_table` when the
    /// classifier is shared.
    pub wcls: u64,
    /// End of the file.
    pub end: u64,
}

impl Layout {
    /// Computes the layout, or `None` when a size overflows `u64`.
    pub fn of(c: &Config) -> Option<Layout> {
        let dim = c.dim as u64;
        let hidden = c.hidden_dim as u64;
        let layers = c.n_layers as u64;
        let vocab = c.vocab_size as u64;
        let kv_dim = c.kv_dim() as u64;
        let q_dim = (c.n_heads * c.head_size()) as u64;
        let f32_bytes = |n: u64| n.checked_mul(4);
        // Bytes of one tensor of n values in this format.
        let tensor = |n: u64| -> Option<u64> {
            match c.format.group_size() {
                None => f32_bytes(n),
                Some(gs) => n.checked_add(f32_bytes(n / gs as u64)?),
            }
        };
        let layered = |n: u64| tensor(n)?.checked_mul(layers);

        let embedding_len = tensor(vocab.checked_mul(dim)?)?;
        let wq_len = layered(q_dim.checked_mul(dim)?)?;
        let wk_len = layered(kv_dim.checked_mul(dim)?)?;
        let wo_len = layered(dim.checked_mul(q_dim)?)?;
        let ffn_len = layered(hidden.checked_mul(dim)?)?;
        let norm_len = f32_bytes(layers.checked_mul(dim)?)?;
        let final_norm_len = f32_bytes(dim)?;

        let mut at = c.format.header_len() as u64;
        let mut take = |len: u64| -> Option<u64> {
            let start = at;
            at = at.checked_add(len)?;
            Some(start)
        };
        let layout = match c.format {
            Format::Legacy => {
                let token_embedding_table = take(embedding_len)?;
                let rms_att_weight = take(norm_len)?;
                let wq = take(wq_len)?;
                let wk = take(wk_len)?;
                let wv = take(wk_len)?;
                let wo = take(wo_len)?;
                let rms_ffn_weight = take(norm_len)?;
                let w1 = take(ffn_len)?;
                let w2 = take(ffn_len)?;
                let w3 = take(ffn_len)?;
                let rms_final_weight = take(final_norm_len)?;
                // Two unused RoPE tables, freq_cis_real and freq_cis_imag,
                // each seq_len * head_size / 2 floats.
                let rope_len = f32_bytes((c.seq_len as u64).checked_mul(c.head_size() as u64)?)?;
                take(rope_len)?;
                let wcls = if c.shared_classifier {
                    token_embedding_table
                } else {
                    take(embedding_len)?
                };
                Layout {
                    token_embedding_table,
                    rms_att_weight,
                    rms_ffn_weight,
                    rms_final_weight,
                    wq,
                    wk,
                    wv,
                    wo,
                    w1,
                    w2,
                    w3,
                    wcls,
                    end: at,
                }
            }
            Format::V1 | Format::V2 { .. } => {
                let rms_att_weight = take(norm_len)?;
                let rms_ffn_weight = take(norm_len)?;
                let rms_final_weight = take(final_norm_len)?;
                let token_embedding_table = take(embedding_len)?;
                let wq = take(wq_len)?;
                let wk = take(wk_len)?;
                let wv = take(wk_len)?;
                let wo = take(wo_len)?;
                let w1 = take(ffn_len)?;
                let w2 = take(ffn_len)?;
                let w3 = take(ffn_len)?;
                let wcls = if c.shared_classifier {
                    token_embedding_table
                } else {
                    take(embedding_len)?
                };
                Layout {
                    token_embedding_table,
                    rms_att_weight,
                    rms_ffn_weight,
                    rms_final_weight,
                    wq,
                    wk,
                    wv,
                    wo,
                    w1,
                    w2,
                    w3,
                    wcls,
                    end: at,
                }
            }
        };
        Some(layout)
    }
}
