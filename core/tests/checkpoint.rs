//! Checkpoint header parsing and validation: round trips through synthetic
//! checkpoints of every format, the real stories260K and tinystories279K
//! files, and one test per rejection reason with the exact error value.

mod common;

use specdec_core::checkpoint::{Layout, HEADER_LEN, LEGACY_HEADER_LEN, MAGIC};
use specdec_core::synthetic::{write_checkpoint, SyntheticError};
use specdec_core::{CheckpointError, Config, Format};

/// Sizes in header order: dim, hidden_dim, n_layers, n_heads, n_kv_heads,
/// vocab_size, seq_len.
type Dims = [usize; 7];

/// stories260K: grouped-query attention, and a hidden_dim (172) that only
/// group sizes up to 4 divide.
const STORIES_260K: Dims = [64, 172, 5, 8, 4, 512, 512];
/// tinystories279K: hidden_dim 192, so Q8_0 group size 64 is valid.
const TINYSTORIES_279K: Dims = [64, 192, 5, 8, 4, 512, 256];
/// A small odd-vocabulary shape with one KV head per two query heads.
const SMALL: Dims = [32, 96, 2, 4, 2, 37, 16];

fn make_config(
    format: Format,
    dims: Dims,
    shared_classifier: bool,
) -> Result<Config, CheckpointError> {
    let [dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len] = dims;
    Config::new(
        format,
        dim,
        hidden_dim,
        n_layers,
        n_heads,
        n_kv_heads,
        vocab_size,
        seq_len,
        shared_classifier,
    )
}

/// Returns a complete synthetic checkpoint for `config`.
fn synthetic(config: &Config, seed: u64) -> Vec<u8> {
    let len = config
        .file_len()
        .expect("a validated config has a file length");
    let mut out = vec![0u8; usize::try_from(len).unwrap()];
    write_checkpoint(config, seed, &mut out).unwrap();
    out
}

/// Returns a 28-byte legacy header with the seven fields as given.
fn legacy_header(fields: [i32; 7]) -> Vec<u8> {
    fields
        .iter()
        .flat_map(|field| field.to_le_bytes())
        .collect()
}

/// Returns a 256-byte v1/v2 header: magic, `version`, the seven fields, the
/// shared-classifier byte at offset 36 and, when given, the group size at
/// offset 37.
fn versioned_header(
    version: i32,
    fields: [i32; 7],
    shared_classifier: bool,
    group_size: Option<i32>,
) -> Vec<u8> {
    let mut header = vec![0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    header[4..8].copy_from_slice(&version.to_le_bytes());
    for (i, field) in fields.iter().enumerate() {
        header[8 + 4 * i..12 + 4 * i].copy_from_slice(&field.to_le_bytes());
    }
    header[36] = u8::from(shared_classifier);
    if let Some(group_size) = group_size {
        header[37..41].copy_from_slice(&group_size.to_le_bytes());
    }
    header
}

fn fields(dims: Dims) -> [i32; 7] {
    dims.map(|d| i32::try_from(d).unwrap())
}

/// Returns the length of an fp32 checkpoint, counted tensor by tensor the way
/// llama2.c's run.c (legacy) and export.py (v1) lay the file out. This is an
/// independent check on `Layout`, so it shares no code with it.
fn fp32_file_len(legacy: bool, dims: Dims, shared_classifier: bool) -> u64 {
    let [dim, hidden, layers, heads, kv_heads, vocab, seq_len] = dims.map(|d| d as u64);
    let head_size = dim / heads;
    let kv_dim = head_size * kv_heads;
    let mut floats = vocab * dim // token_embedding_table
        + layers * dim // rms_att_weight
        + layers * dim * dim // wq
        + 2 * layers * kv_dim * dim // wk, wv
        + layers * dim * dim // wo
        + layers * dim // rms_ffn_weight
        + 3 * layers * hidden * dim // w1, w2, w3
        + dim; // rms_final_weight
    if legacy {
        // freq_cis_real and freq_cis_imag
        floats += 2 * (seq_len * head_size / 2);
    }
    if !shared_classifier {
        floats += vocab * dim;
    }
    let header = if legacy {
        LEGACY_HEADER_LEN
    } else {
        HEADER_LEN
    } as u64;
    header + 4 * floats
}

/// Returns `len` bytes from a 64-bit LCG (Knuth's MMIX constants), taking the
/// high half of each state. Independent of the synthetic module's generator.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(len + 4);
    while bytes.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        bytes.extend_from_slice(&((state >> 32) as u32).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn read_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

// ---------------------------------------------------------------------------
// Round trips

#[test]
fn round_trip_every_format() {
    let formats = [
        (Format::Legacy, true),
        (Format::Legacy, false),
        (Format::V1, true),
        (Format::V1, false),
        (Format::V2 { group_size: 4 }, true),
        (Format::V2 { group_size: 4 }, false),
        (Format::V2 { group_size: 64 }, true),
        (Format::V2 { group_size: 64 }, false),
    ];
    let mut round_trips = 0;
    for dims in [STORIES_260K, TINYSTORIES_279K, SMALL] {
        for (format, shared) in formats {
            let config = match make_config(format, dims, shared) {
                Ok(config) => config,
                Err(error) => {
                    // Only group size 64 is invalid here: 64 divides neither
                    // stories260K's hidden_dim 172 nor SMALL's dim 32.
                    let Format::V2 { group_size } = format else {
                        panic!("{format:?} {dims:?}: {error}")
                    };
                    let expected = CheckpointError::GroupSizeMismatch {
                        group_size,
                        dim: dims[0],
                        hidden_dim: dims[1],
                    };
                    assert_eq!(error, expected, "{dims:?}");
                    continue;
                }
            };
            let bytes = synthetic(&config, 7);
            assert_eq!(
                Config::parse(&bytes),
                Ok(config),
                "{format:?}, shared {shared}, {dims:?}"
            );
            round_trips += 1;
        }
    }
    // 3 shapes x 8 formats, minus group size 64 on stories260K and SMALL
    // (shared and unshared each).
    assert_eq!(round_trips, 20);
}

#[test]
fn benchmark_shapes_file_lengths() {
    // stories15M, 42M and 110M. Writing 60-440 MB per file would slow the test
    // run, so only headers are parsed, and each must return Truncated with the
    // config's full file length.
    let shapes: [Dims; 3] = [
        [288, 768, 6, 6, 6, 32000, 256],
        [512, 1376, 8, 8, 8, 32000, 1024],
        [768, 2048, 12, 12, 12, 32000, 1024],
    ];
    for dims in shapes {
        for format in [Format::Legacy, Format::V1, Format::V2 { group_size: 32 }] {
            let config = make_config(format, dims, true).unwrap();
            let header = match format {
                Format::Legacy => legacy_header(fields(dims)),
                Format::V1 => versioned_header(1, fields(dims), true, None),
                Format::V2 { .. } => versioned_header(2, fields(dims), true, Some(32)),
            };
            let expected = config.file_len().unwrap();
            let found = header.len() as u64;
            assert_eq!(
                Config::parse(&header),
                Err(CheckpointError::Truncated { expected, found }),
                "{dims:?}"
            );
        }
    }
    // Group size 64, export.py's default, does not divide stories42M's
    // hidden_dim 1376. runq.c would skip the last 32 hidden units in w2.
    assert_eq!(
        make_config(Format::V2 { group_size: 64 }, shapes[1], true),
        Err(CheckpointError::GroupSizeMismatch {
            group_size: 64,
            dim: 512,
            hidden_dim: 1376
        })
    );
    for dims in shapes {
        for format in [Format::Legacy, Format::V1] {
            let config = make_config(format, dims, true).unwrap();
            let legacy = format == Format::Legacy;
            assert_eq!(
                config.file_len(),
                Some(fp32_file_len(legacy, dims, true)),
                "{format:?} {dims:?}"
            );
        }
    }
}

#[test]
fn real_headers_match_readme() {
    let stories = |format| make_config(format, STORIES_260K, true).unwrap();
    let tinystories = |format| make_config(format, TINYSTORIES_279K, true).unwrap();
    let cases = [
        ("stories260K.bin", stories(Format::Legacy)),
        ("stories260K_v1.bin", stories(Format::V1)),
        ("stories260K_q80.bin", stories(Format::V2 { group_size: 4 })),
        ("tinystories279K.bin", tinystories(Format::Legacy)),
        (
            "tinystories279K_q80.bin",
            tinystories(Format::V2 { group_size: 64 }),
        ),
    ];
    for (file, expected) in cases {
        let Some(bytes) = common::read_model(file) else {
            return;
        };
        assert_eq!(Config::parse(&bytes), Ok(expected), "{file}");
    }
    let config = stories(Format::Legacy);
    assert_eq!(config.format(), Format::Legacy);
    assert_eq!(config.dim(), 64);
    assert_eq!(config.hidden_dim(), 172);
    assert_eq!(config.n_layers(), 5);
    assert_eq!(config.n_heads(), 8);
    assert_eq!(config.n_kv_heads(), 4);
    assert_eq!(config.vocab_size(), 512);
    assert_eq!(config.seq_len(), 512);
    assert!(config.shared_classifier());
}

// ---------------------------------------------------------------------------
// Layout on real files and synthetic weights

/// Byte ranges of every tensor group that fp32 formats share, in a fixed
/// order, with their lengths in bytes.
fn fp32_tensors(config: &Config) -> Vec<(&'static str, u64, u64)> {
    let layout = Layout::of(config).unwrap();
    let [dim, hidden, layers, vocab] = [
        config.dim(),
        config.hidden_dim(),
        config.n_layers(),
        config.vocab_size(),
    ]
    .map(|d| d as u64);
    let kv_dim = config.kv_dim() as u64;
    let mut tensors = vec![
        (
            "token_embedding_table",
            layout.token_embedding_table,
            4 * vocab * dim,
        ),
        ("rms_att_weight", layout.rms_att_weight, 4 * layers * dim),
        ("rms_ffn_weight", layout.rms_ffn_weight, 4 * layers * dim),
        ("rms_final_weight", layout.rms_final_weight, 4 * dim),
        ("wq", layout.wq, 4 * layers * dim * dim),
        ("wk", layout.wk, 4 * layers * kv_dim * dim),
        ("wv", layout.wv, 4 * layers * kv_dim * dim),
        ("wo", layout.wo, 4 * layers * dim * dim),
        ("w1", layout.w1, 4 * layers * hidden * dim),
        ("w2", layout.w2, 4 * layers * dim * hidden),
        ("w3", layout.w3, 4 * layers * hidden * dim),
    ];
    if !config.shared_classifier() {
        tensors.push(("wcls", layout.wcls, 4 * vocab * dim));
    }
    tensors
}

fn slice(bytes: &[u8], offset: u64, len: u64) -> &[u8] {
    &bytes[offset as usize..(offset + len) as usize]
}

#[test]
fn real_v0_and_v1_tensors_match() {
    let Some(v0) = common::read_model("stories260K.bin") else {
        return;
    };
    let Some(v1) = common::read_model("stories260K_v1.bin") else {
        return;
    };
    let v0_config = Config::parse(&v0).unwrap();
    let v1_config = Config::parse(&v1).unwrap();
    for (v0_tensor, v1_tensor) in fp32_tensors(&v0_config)
        .into_iter()
        .zip(fp32_tensors(&v1_config))
    {
        let (name, v0_offset, len) = v0_tensor;
        let (_, v1_offset, _) = v1_tensor;
        assert!(
            slice(&v0, v0_offset, len) == slice(&v1, v1_offset, len),
            "{name} differs"
        );
    }
}

#[test]
fn synthetic_legacy_and_v1_share_weights() {
    for shared in [true, false] {
        let legacy = make_config(Format::Legacy, SMALL, shared).unwrap();
        let v1 = make_config(Format::V1, SMALL, shared).unwrap();
        let legacy_bytes = synthetic(&legacy, 11);
        let v1_bytes = synthetic(&v1, 11);
        for (legacy_tensor, v1_tensor) in fp32_tensors(&legacy).into_iter().zip(fp32_tensors(&v1)) {
            let (name, legacy_offset, len) = legacy_tensor;
            let (_, v1_offset, _) = v1_tensor;
            let values = slice(&legacy_bytes, legacy_offset, len);
            assert!(
                values == slice(&v1_bytes, v1_offset, len),
                "{name} differs, shared {shared}"
            );
            assert!(values.iter().any(|&b| b != 0), "{name} is all zeros");
        }

        // The RoPE tables run.c skips sit between rms_final_weight and wcls.
        let layout = Layout::of(&legacy).unwrap();
        let rope_start = layout.rms_final_weight + 4 * SMALL[0] as u64;
        let rope_len = 4 * (SMALL[6] * SMALL[0] / SMALL[3]) as u64;
        assert!(slice(&legacy_bytes, rope_start, rope_len)
            .iter()
            .all(|&b| b == 0));
        let v1_padding = &v1_bytes[37..HEADER_LEN];
        assert!(v1_padding.iter().all(|&b| b == 0), "v1 header padding");
    }
}

#[test]
fn synthetic_values_in_documented_ranges() {
    let config = make_config(Format::V1, SMALL, false).unwrap();
    let bytes = synthetic(&config, 3);
    let [dim, hidden] = [SMALL[0], SMALL[1]].map(|d| d as f32);
    for (name, offset, len) in fp32_tensors(&config) {
        let values = read_f32s(slice(&bytes, offset, len));
        let (low, high) = match name {
            "token_embedding_table" => (-1.0, 1.0),
            "rms_att_weight" | "rms_ffn_weight" | "rms_final_weight" => (0.8, 1.2),
            "w2" => (-1.0 / hidden.sqrt(), 1.0 / hidden.sqrt()),
            _ => (-1.0 / dim.sqrt(), 1.0 / dim.sqrt()),
        };
        for value in &values {
            assert!(
                (low..=high).contains(value),
                "{name}: {value} outside [{low}, {high}]"
            );
        }
        // A uniform draw spreads over the range, so each half contains values.
        let middle = (low + high) / 2.0;
        assert!(
            values.iter().any(|&v| v < middle) && values.iter().any(|&v| v > middle),
            "{name}"
        );
    }
}

/// Quantizes `values` to Q8_0 as runq.c does, rounding halves away from zero.
fn quantize_q80(values: &[f32], group_size: usize) -> (Vec<i8>, Vec<f32>) {
    let mut quantized = Vec::new();
    let mut scales = Vec::new();
    for group in values.chunks(group_size) {
        let max = group.iter().fold(0.0f32, |max, v| max.max(v.abs()));
        let scale = max / 127.0;
        scales.push(scale);
        for v in group {
            quantized.push(if scale == 0.0 {
                0
            } else {
                (v / scale).round() as i8
            });
        }
    }
    (quantized, scales)
}

/// Checks that each layer of a v2 tensor contains the Q8_0 quantization of the
/// matching fp32 layer: its int8 values, then its scales.
fn compare_q80(name: &str, fp32: &[u8], q80: &[u8], layers: usize, group_size: usize) {
    let values = read_f32s(fp32);
    let layer_len = values.len() / layers;
    let layer_bytes = layer_len + 4 * (layer_len / group_size);
    assert_eq!(q80.len(), layers * layer_bytes, "{name} length");
    for (layer, (fp32_layer, q80_layer)) in values
        .chunks(layer_len)
        .zip(q80.chunks(layer_bytes))
        .enumerate()
    {
        let (expected_q, expected_scales) = quantize_q80(fp32_layer, group_size);
        let (q_bytes, scale_bytes) = q80_layer.split_at(layer_len);
        let q: Vec<i8> = q_bytes.iter().map(|&b| b as i8).collect();
        assert_eq!(q, expected_q, "{name} layer {layer} values");
        assert_eq!(
            read_f32s(scale_bytes),
            expected_scales,
            "{name} layer {layer} scales"
        );
    }
}

/// Compares every weight tensor of a v2 file with the matching fp32 file, and
/// the fp32 norms byte for byte.
fn compare_v2_with_fp32(fp32: &[u8], fp32_config: &Config, q80: &[u8], q80_config: &Config) {
    let Format::V2 { group_size } = q80_config.format() else {
        panic!("not v2: {q80_config:?}")
    };
    let q80_layout = Layout::of(q80_config).unwrap();
    let w3_end = if q80_config.shared_classifier() {
        q80_layout.end
    } else {
        q80_layout.wcls
    };
    // Name, start, end and number of layers of each quantized tensor.
    let q80_tensors = [
        (
            "token_embedding_table",
            q80_layout.token_embedding_table,
            q80_layout.wq,
            1,
        ),
        ("wq", q80_layout.wq, q80_layout.wk, q80_config.n_layers()),
        ("wk", q80_layout.wk, q80_layout.wv, q80_config.n_layers()),
        ("wv", q80_layout.wv, q80_layout.wo, q80_config.n_layers()),
        ("wo", q80_layout.wo, q80_layout.w1, q80_config.n_layers()),
        ("w1", q80_layout.w1, q80_layout.w2, q80_config.n_layers()),
        ("w2", q80_layout.w2, q80_layout.w3, q80_config.n_layers()),
        ("w3", q80_layout.w3, w3_end, q80_config.n_layers()),
        ("wcls", q80_layout.wcls, q80_layout.end, 1),
    ];
    for (name, fp32_offset, len) in fp32_tensors(fp32_config) {
        let fp32_bytes = slice(fp32, fp32_offset, len);
        let norm_offset = match name {
            "rms_att_weight" => Some(q80_layout.rms_att_weight),
            "rms_ffn_weight" => Some(q80_layout.rms_ffn_weight),
            "rms_final_weight" => Some(q80_layout.rms_final_weight),
            _ => None,
        };
        if let Some(offset) = norm_offset {
            assert!(fp32_bytes == slice(q80, offset, len), "{name} differs");
            continue;
        }
        let &(_, start, end, layers) = q80_tensors.iter().find(|entry| entry.0 == name).unwrap();
        compare_q80(
            name,
            fp32_bytes,
            &q80[start as usize..end as usize],
            layers,
            group_size,
        );
    }
}

#[test]
fn synthetic_v2_quantizes_v1_weights() {
    for (dims, group_size, shared) in [
        (SMALL, 4, false),
        (TINYSTORIES_279K, 64, true),
        (TINYSTORIES_279K, 32, false),
    ] {
        let v1 = make_config(Format::V1, dims, shared).unwrap();
        let v2 = make_config(Format::V2 { group_size }, dims, shared).unwrap();
        let v1_bytes = synthetic(&v1, 5);
        let v2_bytes = synthetic(&v2, 5);
        assert_eq!(
            &v2_bytes[37..41],
            &(group_size as i32).to_le_bytes(),
            "group size at offset 37"
        );
        assert!(
            v2_bytes[41..HEADER_LEN].iter().all(|&b| b == 0),
            "v2 header padding"
        );
        compare_v2_with_fp32(&v1_bytes, &v1, &v2_bytes, &v2);
    }
}

#[test]
fn real_q80_quantizes_real_v1() {
    let Some(v1) = common::read_model("stories260K_v1.bin") else {
        return;
    };
    let Some(q80) = common::read_model("stories260K_q80.bin") else {
        return;
    };
    let v1_config = Config::parse(&v1).unwrap();
    let q80_config = Config::parse(&q80).unwrap();
    // export.py rounds halves to even where runq.c and quantize_q80 round
    // them away from zero. No value of stories260K lies exactly halfway, so
    // the two agree on every byte.
    compare_v2_with_fp32(&v1, &v1_config, &q80, &q80_config);
}

#[test]
fn synthetic_same_seed_same_bytes() {
    let config = make_config(Format::V2 { group_size: 4 }, SMALL, false).unwrap();
    let first = synthetic(&config, 42);
    assert_eq!(first, synthetic(&config, 42));
    let other = synthetic(&config, 43);
    assert_eq!(
        first[..HEADER_LEN],
        other[..HEADER_LEN],
        "header depends only on the config"
    );
    assert_ne!(
        first[HEADER_LEN..],
        other[HEADER_LEN..],
        "weights depend on the seed"
    );
}

#[test]
fn synthetic_rejects_wrong_length() {
    let config = make_config(Format::V1, SMALL, true).unwrap();
    let expected = config.file_len().unwrap();
    for len in [0, expected - 1, expected + 1] {
        let mut out = vec![0u8; len as usize];
        let error = write_checkpoint(&config, 1, &mut out).unwrap_err();
        assert_eq!(
            error,
            SyntheticError::WrongLength {
                expected,
                found: len
            }
        );
    }
    let error = SyntheticError::WrongLength {
        expected: 1000,
        found: 999,
    };
    assert_eq!(
        error.to_string(),
        "output buffer is 999 bytes, but a checkpoint of this config is 1000 bytes; \
         size the buffer with Config::file_len"
    );
}

// ---------------------------------------------------------------------------
// Truncation

#[test]
fn header_truncated() {
    let legacy = legacy_header(fields(STORIES_260K));
    let v1 = versioned_header(1, fields(STORIES_260K), true, None);
    let cases = [
        (&legacy[..3], LEGACY_HEADER_LEN),
        (&legacy[..10], LEGACY_HEADER_LEN),
        (&legacy[..27], LEGACY_HEADER_LEN),
        // Under four bytes the magic is unreadable, so the legacy length applies.
        (&v1[..3], LEGACY_HEADER_LEN),
        (&v1[..4], HEADER_LEN),
        (&v1[..100], HEADER_LEN),
        (&v1[..255], HEADER_LEN),
    ];
    for (bytes, header_len) in cases {
        let expected = CheckpointError::HeaderTruncated {
            expected: header_len as u64,
            found: bytes.len() as u64,
        };
        assert_eq!(Config::parse(bytes), Err(expected), "{} bytes", bytes.len());
    }
    assert_eq!(
        Config::parse(&v1[..100]).unwrap_err().to_string(),
        "file is 100 bytes, shorter than the 256-byte checkpoint header"
    );
}

#[test]
fn empty_file_header_truncated() {
    let expected = CheckpointError::HeaderTruncated {
        expected: LEGACY_HEADER_LEN as u64,
        found: 0,
    };
    assert_eq!(Config::parse(&[]), Err(expected));
}

#[test]
fn half_real_file_truncated() {
    for file in [
        "stories260K.bin",
        "stories260K_v1.bin",
        "stories260K_q80.bin",
        "tinystories279K_q80.bin",
    ] {
        let Some(bytes) = common::read_model(file) else {
            return;
        };
        let full = bytes.len() as u64;
        let half = &bytes[..bytes.len() / 2];
        let expected = CheckpointError::Truncated {
            expected: full,
            found: full / 2,
        };
        assert_eq!(Config::parse(half), Err(expected), "{file}");
    }
}

#[test]
fn half_synthetic_file_truncated() {
    for format in [Format::Legacy, Format::V1, Format::V2 { group_size: 64 }] {
        let config = make_config(format, TINYSTORIES_279K, false).unwrap();
        let bytes = synthetic(&config, 9);
        let full = bytes.len() as u64;
        let expected = CheckpointError::Truncated {
            expected: full,
            found: full / 2,
        };
        assert_eq!(
            Config::parse(&bytes[..bytes.len() / 2]),
            Err(expected),
            "{format:?}"
        );
    }
    let error = CheckpointError::Truncated {
        expected: 1_056_540,
        found: 528_270,
    };
    assert_eq!(
        error.to_string(),
        "truncated: the header implies 1056540 bytes but the file has 528270; \
         the file is incomplete, so copy or download it again"
    );
}

/// Llama 2 13B's shape: a valid header whose fp32 file is about 51 GB, so its
/// length needs more than 32 bits.
const LLAMA2_13B: Dims = [5120, 13824, 40, 40, 40, 32000, 4096];

/// Returns a 4 KiB file that starts with `header`, zero-filled after it.
fn short_file(header: &[u8]) -> Vec<u8> {
    let mut bytes = header.to_vec();
    bytes.resize(4096, 0);
    bytes
}

/// Returns the error for a file of `found` bytes whose header implies
/// `expected` bytes. A length past `usize::MAX` is an overflow on this target.
fn truncated_or_overflow(expected: u64, found: usize) -> CheckpointError {
    match usize::try_from(expected) {
        Ok(_) => CheckpointError::Truncated {
            expected,
            found: found as u64,
        },
        Err(_) => CheckpointError::SizeOverflow,
    }
}

#[test]
fn huge_legacy_header_truncated() {
    for shared in [true, false] {
        let mut header_fields = fields(LLAMA2_13B);
        if !shared {
            header_fields[5] = -header_fields[5];
        }
        let expected = fp32_file_len(true, LLAMA2_13B, shared);
        assert!(expected > 4 << 30);
        let bytes = short_file(&legacy_header(header_fields));
        assert_eq!(
            Config::parse(&bytes),
            Err(truncated_or_overflow(expected, 4096)),
            "shared {shared}"
        );
    }
    // 28 + 4 * 12_852_548_608 floats, shared classifier.
    assert_eq!(fp32_file_len(true, LLAMA2_13B, true), 51_410_194_460);
}

#[test]
fn huge_v1_header_truncated() {
    for shared in [true, false] {
        let expected = fp32_file_len(false, LLAMA2_13B, shared);
        assert!(expected > 4 << 30);
        let bytes = short_file(&versioned_header(1, fields(LLAMA2_13B), shared, None));
        assert_eq!(
            Config::parse(&bytes),
            Err(truncated_or_overflow(expected, 4096)),
            "shared {shared}"
        );
    }
}

// ---------------------------------------------------------------------------
// Unknown formats

#[test]
fn wrong_magic_unknown_format() {
    // "ak43": the v1 magic plus one, followed by a valid v1 header. Read as a
    // legacy header it has dim 1634415667 and hidden_dim 1 (the version), which
    // no real model has, so naming a shape error here would mislead.
    let wrong_magic = MAGIC + 1;
    let mut bytes = versioned_header(1, fields(STORIES_260K), true, None);
    bytes[0..4].copy_from_slice(&wrong_magic.to_le_bytes());
    assert_eq!(
        Config::parse(&bytes),
        Err(CheckpointError::UnknownFormat { magic: wrong_magic })
    );
    assert_eq!(
        CheckpointError::UnknownFormat { magic: wrong_magic }.to_string(),
        "not a llama2.c checkpoint: first word 0x616b3433 is neither the \"ak42\" magic \
         (0x616b3432) nor a valid legacy header"
    );
}

#[test]
fn random_bytes_unknown_format() {
    let bytes = random_bytes(1, 4096);
    let words: Vec<i32> = bytes[..LEGACY_HEADER_LEN]
        .chunks(4)
        .map(|w| i32::from_le_bytes(w.try_into().unwrap()))
        .collect();
    // Seed 1 was chosen so that the first word is not the magic and some
    // legacy field is not positive, which the parser reads as "not a
    // checkpoint" instead of naming the field.
    assert_ne!(words[0] as u32, MAGIC);
    assert!(
        words.iter().any(|&w| w <= 0),
        "seed 1 gives a positive header: {words:?}"
    );
    let magic = words[0] as u32;
    assert_eq!(
        Config::parse(&bytes),
        Err(CheckpointError::UnknownFormat { magic })
    );
}

#[test]
fn legacy_non_positive_field_unknown_format() {
    for (field, value) in [(0, 0), (2, -5), (4, 0), (6, i32::MIN)] {
        let mut header_fields = fields(STORIES_260K);
        header_fields[field] = value;
        let bytes = short_file(&legacy_header(header_fields));
        let magic = header_fields[0] as u32;
        assert_eq!(
            Config::parse(&bytes),
            Err(CheckpointError::UnknownFormat { magic }),
            "field {field} = {value}"
        );
    }
    // vocab_size i32::MIN has no positive counterpart.
    let mut header_fields = fields(STORIES_260K);
    header_fields[5] = i32::MIN;
    let bytes = short_file(&legacy_header(header_fields));
    assert_eq!(
        Config::parse(&bytes),
        Err(CheckpointError::UnknownFormat { magic: 64 })
    );
}

// ---------------------------------------------------------------------------
// Invalid shapes

/// Parses `dims` as a legacy header and as a v1 header and checks that both
/// give `expected`. Validation runs before the length check, so a header
/// alone is enough.
fn assert_both_reject(dims: Dims, expected: CheckpointError) {
    let legacy = legacy_header(fields(dims));
    assert_eq!(Config::parse(&legacy), Err(expected), "legacy {dims:?}");
    let v1 = versioned_header(1, fields(dims), true, None);
    assert_eq!(Config::parse(&v1), Err(expected), "v1 {dims:?}");
    assert_eq!(
        make_config(Format::V1, dims, true),
        Err(expected),
        "Config::new {dims:?}"
    );
}

#[test]
fn heads_not_divisible_by_kv_heads() {
    assert_both_reject(
        [48, 128, 2, 6, 4, 64, 32],
        CheckpointError::HeadsNotDivisibleByKvHeads {
            n_heads: 6,
            n_kv_heads: 4,
        },
    );
    assert_eq!(
        CheckpointError::HeadsNotDivisibleByKvHeads {
            n_heads: 6,
            n_kv_heads: 4
        }
        .to_string(),
        "invalid header: n_heads 6 is not a multiple of n_kv_heads 4"
    );
}

#[test]
fn dim_not_divisible_by_heads() {
    assert_both_reject(
        [64, 128, 2, 6, 6, 64, 32],
        CheckpointError::DimNotDivisibleByHeads {
            dim: 64,
            n_heads: 6,
        },
    );
}

#[test]
fn odd_head_size() {
    assert_both_reject(
        [36, 128, 2, 4, 4, 64, 32],
        CheckpointError::OddHeadSize { head_size: 9 },
    );
}

#[test]
fn group_size_mismatch() {
    let bytes = versioned_header(2, fields(STORIES_260K), true, Some(64));
    let expected = CheckpointError::GroupSizeMismatch {
        group_size: 64,
        dim: 64,
        hidden_dim: 172,
    };
    assert_eq!(Config::parse(&bytes), Err(expected));
    // A group size that divides hidden_dim but not dim.
    let bytes = versioned_header(2, fields([32, 128, 2, 4, 4, 64, 32]), true, Some(64));
    let expected = CheckpointError::GroupSizeMismatch {
        group_size: 64,
        dim: 32,
        hidden_dim: 128,
    };
    assert_eq!(Config::parse(&bytes), Err(expected));
    assert_eq!(
        expected.to_string(),
        "invalid header: Q8_0 group size 64 must divide both dim 32 and hidden_dim 128"
    );
}

#[test]
fn group_size_not_positive() {
    for group_size in [0, -4, i32::MIN] {
        let bytes = versioned_header(2, fields(STORIES_260K), true, Some(group_size));
        let expected = CheckpointError::NonPositiveField {
            field: "group_size",
            found: group_size.into(),
        };
        assert_eq!(Config::parse(&bytes), Err(expected));
    }
}

#[test]
fn unsupported_version() {
    for version in [3, 0, -1] {
        let bytes = versioned_header(version, fields(STORIES_260K), true, None);
        assert_eq!(
            Config::parse(&bytes),
            Err(CheckpointError::UnsupportedVersion { found: version })
        );
    }
}

#[test]
fn v1_zero_and_negative_fields() {
    let names = [
        "dim",
        "hidden_dim",
        "n_layers",
        "n_heads",
        "n_kv_heads",
        "vocab_size",
        "seq_len",
    ];
    for (index, name) in names.into_iter().enumerate() {
        for value in [0, -1, -512, i32::MIN] {
            let mut header_fields = fields(STORIES_260K);
            header_fields[index] = value;
            let bytes = versioned_header(1, header_fields, true, None);
            let expected = CheckpointError::NonPositiveField {
                field: name,
                found: value.into(),
            };
            assert_eq!(Config::parse(&bytes), Err(expected), "{name} = {value}");
        }
    }
    let error = CheckpointError::NonPositiveField {
        field: "n_layers",
        found: 0,
    };
    assert_eq!(
        error.to_string(),
        "invalid header: n_layers is 0, expected a positive value"
    );
}

#[test]
fn trailing_bytes() {
    let config = make_config(Format::V1, SMALL, false).unwrap();
    let mut bytes = synthetic(&config, 2);
    let expected = bytes.len() as u64;
    bytes.push(0);
    assert_eq!(
        Config::parse(&bytes),
        Err(CheckpointError::TrailingBytes {
            expected,
            found: expected + 1
        })
    );

    let Some(mut real) = common::read_model("stories260K.bin") else {
        return;
    };
    let expected = real.len() as u64;
    real.extend_from_slice(&[0; 4]);
    assert_eq!(
        Config::parse(&real),
        Err(CheckpointError::TrailingBytes {
            expected,
            found: expected + 4
        })
    );
}

// ---------------------------------------------------------------------------
// Extreme values

#[test]
fn extreme_fields_rejected_without_panic() {
    let max = i32::MAX;
    // All seven at i32::MAX pass the divisibility checks, but the head size is
    // 1, which is odd.
    let all_max = [max; 7];
    let odd = CheckpointError::OddHeadSize { head_size: 1 };
    assert_eq!(Config::parse(&legacy_header(all_max)), Err(odd));
    assert_eq!(
        Config::parse(&versioned_header(1, all_max, false, None)),
        Err(odd)
    );
    assert_eq!(
        Config::parse(&versioned_header(2, all_max, true, Some(max))),
        Err(odd)
    );

    // One head of even size i32::MAX - 1: the shape is valid, and wq alone
    // (n_layers * dim * dim floats) overflows u64.
    let even = [max - 1, max, max, 1, 1, max, max];
    assert_eq!(
        Config::parse(&legacy_header(even)),
        Err(CheckpointError::SizeOverflow)
    );
    let mut unshared = even;
    unshared[5] = -max;
    assert_eq!(
        Config::parse(&legacy_header(unshared)),
        Err(CheckpointError::SizeOverflow)
    );
    assert_eq!(
        Config::parse(&versioned_header(1, even, false, None)),
        Err(CheckpointError::SizeOverflow)
    );
    assert_eq!(
        Config::parse(&versioned_header(2, even, true, Some(1))),
        Err(CheckpointError::SizeOverflow)
    );

    // One layer of a tiny width with huge vocab and seq_len: the size fits in
    // u64, so the file is merely truncated.
    let wide = [2, 2, 1, 1, 1, max, max];
    let expected = fp32_file_len(true, wide.map(|f| f as usize), true);
    assert_eq!(
        Config::parse(&legacy_header(wide)),
        Err(truncated_or_overflow(expected, LEGACY_HEADER_LEN))
    );
}
