//! The forward pass: batches against single tokens, bit for bit, on real and
//! synthetic checkpoints in every format, and rejected calls.

mod common;

use specdec_core::synthetic::write_checkpoint;
use specdec_core::{state_size, Config, Format, ForwardError, Logits, RunState, Transformer};

/// A 4-byte aligned copy of checkpoint bytes.
struct Aligned(Vec<u32>, usize);

impl Aligned {
    fn new(bytes: &[u8]) -> Aligned {
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks(4)) {
            let mut b = [0u8; 4];
            b[..chunk.len()].copy_from_slice(chunk);
            *word = u32::from_ne_bytes(b);
        }
        Aligned(words, bytes.len())
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the Vec owns at least `self.1` initialized bytes and u8 has
        // alignment 1; the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.1) }
    }
}

fn synthetic(format: Format, shape: [usize; 7], shared: bool, seed: u64) -> Aligned {
    let [dim, hidden, layers, heads, kv_heads, vocab, seq_len] = shape;
    let config = Config::new(
        format, dim, hidden, layers, heads, kv_heads, vocab, seq_len, shared,
    )
    .unwrap();
    let mut bytes = vec![0u8; config.file_len().unwrap() as usize];
    write_checkpoint(&config, seed, &mut bytes).unwrap();
    Aligned::new(&bytes)
}

/// A deterministic token sequence that covers the vocabulary.
fn tokens(vocab_size: usize, len: usize) -> Vec<u32> {
    (0..len)
        .map(|i| ((i * 7919 + 13) % vocab_size) as u32)
        .collect()
}

/// Feeds `sequence` one token at a time and returns every row of logits.
fn single_token_logits(model: &Transformer<'_>, sequence: &[u32]) -> Vec<Vec<f32>> {
    let config = model.config;
    let mut memory = vec![0u32; state_size(&config, 1).unwrap().div_ceil(4)];
    let bytes = bytemuck_bytes(&mut memory);
    let mut state = RunState::new(&config, 1, bytes).unwrap();
    sequence
        .iter()
        .enumerate()
        .map(|(pos, &token)| {
            model
                .forward(&mut state, &[token], pos, Logits::All)
                .unwrap()
                .to_vec()
        })
        .collect()
}

fn bytemuck_bytes(words: &mut [u32]) -> &mut [u8] {
    // SAFETY: u32 storage viewed as bytes: same memory, alignment 1 for u8,
    // and the slice holds the unique borrow of `words`.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 4) }
}

/// Checks that batches of n = 1..=16 tokens starting at several positions
/// give the same logits bits as single-token calls, for every row.
fn check_batches_match_single(model: &Transformer<'_>, label: &str) {
    let config = model.config;
    let len = config.seq_len().min(64);
    let sequence = tokens(config.vocab_size(), len);
    let expected = single_token_logits(model, &sequence);

    let mut memory = vec![0u32; state_size(&config, 16).unwrap().div_ceil(4)];
    let mut state = RunState::new(&config, 16, bytemuck_bytes(&mut memory)).unwrap();
    for n in 1..=16usize {
        for start in [0usize, 1, 5, 17, len - n] {
            if start + n > len {
                continue;
            }
            // Fill the cache up to `start` with single-token calls, then run
            // the batch.
            for (pos, &token) in sequence[..start].iter().enumerate() {
                model
                    .forward(&mut state, &[token], pos, Logits::Last)
                    .unwrap();
            }
            let logits = model
                .forward(&mut state, &sequence[start..start + n], start, Logits::All)
                .unwrap();
            for b in 0..n {
                let row = &logits[b * config.vocab_size()..(b + 1) * config.vocab_size()];
                let want = &expected[start + b];
                let same = row
                    .iter()
                    .zip(want)
                    .all(|(a, e)| a.to_bits() == e.to_bits());
                assert!(same, "{label}: batch of {n} at {start}, row {b} differs from the single-token logits");
            }
            // The last-row variant returns the same bits as the last row.
            for (pos, &token) in sequence[..start].iter().enumerate() {
                model
                    .forward(&mut state, &[token], pos, Logits::Last)
                    .unwrap();
            }
            let last = model
                .forward(&mut state, &sequence[start..start + n], start, Logits::Last)
                .unwrap();
            let want = &expected[start + n - 1];
            assert!(
                last.iter()
                    .zip(want)
                    .all(|(a, e)| a.to_bits() == e.to_bits()),
                "{label}: Logits::Last of a batch of {n} at {start} differs"
            );
        }
    }
}

#[test]
fn batches_match_single_tokens_on_real_models() {
    for file in [
        "stories260K.bin",
        "stories260K_q80.bin",
        "tinystories279K.bin",
        "tinystories279K_q80.bin",
    ] {
        let Some(bytes) = common::read_model(file) else {
            return;
        };
        let aligned = Aligned::new(&bytes);
        let model = Transformer::new(aligned.bytes()).unwrap();
        check_batches_match_single(&model, file);
    }
}

#[test]
fn batches_match_single_tokens_on_synthetic_models() {
    // GQA, an unshared classifier, and Q8_0 with small and large groups.
    let shape = [64, 96, 2, 8, 2, 300, 64];
    let cases = [
        (Format::Legacy, true),
        (Format::Legacy, false),
        (Format::V1, false),
        (Format::V2 { group_size: 32 }, true),
        (Format::V2 { group_size: 8 }, false),
    ];
    for (format, shared) in cases {
        let file = synthetic(format, shape, shared, 7);
        let model = Transformer::new(file.bytes()).unwrap();
        check_batches_match_single(&model, &format!("{format:?} shared={shared}"));
    }
}

#[test]
fn v1_and_legacy_give_identical_logits() {
    let (Some(v0), Some(v1)) = (
        common::read_model("stories260K.bin"),
        common::read_model("stories260K_v1.bin"),
    ) else {
        return;
    };
    let (v0, v1) = (Aligned::new(&v0), Aligned::new(&v1));
    let (m0, m1) = (
        Transformer::new(v0.bytes()).unwrap(),
        Transformer::new(v1.bytes()).unwrap(),
    );
    let sequence = tokens(512, 40);
    let a = single_token_logits(&m0, &sequence);
    let b = single_token_logits(&m1, &sequence);
    assert!(a == b, "v0 and v1 logits differ");
}

#[test]
fn bad_calls_are_rejected() {
    let file = synthetic(Format::V1, [16, 32, 1, 2, 2, 40, 8], true, 1);
    let model = Transformer::new(file.bytes()).unwrap();
    let config = model.config;
    let mut memory = vec![0u32; state_size(&config, 4).unwrap().div_ceil(4)];
    let mut state = RunState::new(&config, 4, bytemuck_bytes(&mut memory)).unwrap();

    assert_eq!(
        model.forward(&mut state, &[], 0, Logits::All).unwrap_err(),
        ForwardError::EmptyBatch
    );
    assert_eq!(
        model
            .forward(&mut state, &[1; 5], 0, Logits::All)
            .unwrap_err(),
        ForwardError::BatchTooLarge {
            found: 5,
            max_batch: 4
        }
    );
    assert_eq!(
        model
            .forward(&mut state, &[1, 2], 7, Logits::All)
            .unwrap_err(),
        ForwardError::ContextOverflow {
            pos: 7,
            n: 2,
            seq_len: 8
        }
    );
    assert_eq!(
        model
            .forward(&mut state, &[1], usize::MAX, Logits::All)
            .unwrap_err(),
        ForwardError::ContextOverflow {
            pos: usize::MAX,
            n: 1,
            seq_len: 8
        }
    );
    assert_eq!(
        model
            .forward(&mut state, &[3, 40], 0, Logits::All)
            .unwrap_err(),
        ForwardError::TokenOutOfRange {
            token: 40,
            vocab_size: 40
        }
    );
    // The last position is usable.
    assert_eq!(
        model
            .forward(&mut state, &[1], 7, Logits::All)
            .unwrap()
            .len(),
        40
    );

    // A state sized for another model is rejected rather than indexed.
    let other = synthetic(Format::V1, [16, 32, 2, 2, 2, 40, 8], true, 1);
    let other = Transformer::new(other.bytes()).unwrap();
    assert_eq!(
        other.forward(&mut state, &[1], 0, Logits::All).unwrap_err(),
        ForwardError::StateMismatch
    );
}

#[test]
fn misaligned_buffers_are_rejected() {
    use specdec_core::{CheckpointError, StateError};
    let file = synthetic(Format::V1, [16, 32, 1, 2, 2, 40, 8], true, 1);
    let mut shifted = vec![0u8; file.bytes().len() + 1];
    shifted[1..].copy_from_slice(file.bytes());
    // Find an odd address inside a u32-aligned allocation.
    let aligned = Aligned::new(&shifted);
    let unaligned = &aligned.bytes()[1..];
    assert_eq!(
        Transformer::new(unaligned).unwrap_err(),
        CheckpointError::Misaligned { offset: 1 }
    );

    let config = Transformer::new(file.bytes()).unwrap().config;
    let size = state_size(&config, 1).unwrap();
    let mut memory = vec![0u32; size.div_ceil(4) + 1];
    let bytes = bytemuck_bytes(&mut memory);
    assert!(matches!(
        RunState::new(&config, 1, &mut bytes[1..]),
        Err(StateError::Misaligned { offset: 1 })
    ));
    assert_eq!(
        RunState::new(&config, 1, &mut bytes[..size - 1]).err(),
        Some(StateError::BufferTooSmall {
            expected: size,
            found: size - 1
        })
    );
    assert_eq!(state_size(&config, 0), Err(StateError::ZeroBatch));
}

/// Runs `sequence` in batches of `batch` on `par` and returns all logits.
#[cfg(feature = "std")]
fn logits_with(
    model: &Transformer<'_>,
    sequence: &[u32],
    batch: usize,
    par: &dyn specdec_core::parallel::Parallel,
) -> Vec<f32> {
    let config = model.config;
    let mut memory = vec![0u32; state_size(&config, batch).unwrap().div_ceil(4)];
    let mut state = RunState::new(&config, batch, bytemuck_bytes(&mut memory)).unwrap();
    let mut all = Vec::new();
    for (i, chunk) in sequence.chunks(batch).enumerate() {
        let logits = model
            .forward_parallel(&mut state, chunk, i * batch, Logits::All, par)
            .unwrap();
        all.extend_from_slice(logits);
    }
    all
}

#[cfg(feature = "std")]
#[test]
fn thread_count_does_not_change_bits() {
    use specdec_core::parallel::{Serial, ThreadPool};
    // Wide enough that the larger matmuls are split across threads, and
    // with heads of 128 so that attention is split from position 128 on.
    let shapes = [
        (Format::V1, [512, 512, 1, 4, 2, 1000, 320]),
        (
            Format::V2 { group_size: 32 },
            [512, 512, 1, 4, 2, 1000, 320],
        ),
    ];
    for (format, shape) in shapes {
        let file = synthetic(format, shape, true, 3);
        let model = Transformer::new(file.bytes()).unwrap();
        let sequence = tokens(1000, 300);
        for batch in [1, 5] {
            let serial = logits_with(&model, &sequence, batch, &Serial);
            for threads in [2, 3, 4] {
                let pool = ThreadPool::new(threads).unwrap();
                let parallel = logits_with(&model, &sequence, batch, &pool);
                let same = serial
                    .iter()
                    .zip(&parallel)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{format:?}: batch {batch} on {threads} threads differs from one thread"
                );
            }
        }
    }
}

/// Runs greedy decoding for `steps` positions with `math` and returns the
/// tokens and every row of logits.
fn greedy_run(
    model: &Transformer<'_>,
    math: specdec_core::ops::Math,
    steps: usize,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let config = model.config;
    let mut memory = vec![0u32; state_size(&config, 1).unwrap().div_ceil(4)];
    let mut state = RunState::new(&config, 1, bytemuck_bytes(&mut memory)).unwrap();
    state.set_math(math);
    let mut token = 1;
    let (mut tokens, mut rows) = (Vec::new(), Vec::new());
    for pos in 0..steps {
        let logits = model
            .forward(&mut state, &[token], pos, Logits::Last)
            .unwrap();
        token = specdec_core::sampler::sample_argmax(logits);
        rows.push(logits.to_vec());
        tokens.push(token);
    }
    (tokens, rows)
}

#[test]
fn relaxed_math_stays_close_to_exact() {
    use specdec_core::ops::Math;
    for file in ["stories260K.bin", "tinystories279K.bin"] {
        let Some(bytes) = common::read_model(file) else {
            return;
        };
        let aligned = Aligned::new(&bytes);
        let model = Transformer::new(aligned.bytes()).unwrap();
        let (exact_tokens, exact_rows) = greedy_run(&model, Math::Exact, 200);
        // Feed the exact run's tokens to the relaxed kernels, so that both
        // see the same inputs and only rounding differs.
        let config = model.config;
        let mut memory = vec![0u32; state_size(&config, 1).unwrap().div_ceil(4)];
        let mut state = RunState::new(&config, 1, bytemuck_bytes(&mut memory)).unwrap();
        state.set_math(Math::Relaxed);
        let mut max_diff = 0.0f32;
        let mut argmax_agree = 0;
        let mut token = 1;
        for (pos, exact) in exact_rows.iter().enumerate() {
            let relaxed = model
                .forward(&mut state, &[token], pos, Logits::Last)
                .unwrap();
            for (a, b) in relaxed.iter().zip(exact) {
                max_diff = max_diff.max((a - b).abs());
            }
            argmax_agree +=
                usize::from(specdec_core::sampler::sample_argmax(relaxed) == exact_tokens[pos]);
            token = exact_tokens[pos];
        }
        println!("{file}: relaxed vs exact over 200 positions: max |logit difference| {max_diff:e}, argmax agrees at {argmax_agree} of 200");
        // Logits here are of order 10; float32 rounding of dot products of
        // length 64 to 192 moves them by about 1e-6 per layer.
        assert!(
            max_diff < 1e-3,
            "{file}: relaxed logits differ by {max_diff}"
        );
        assert!(
            argmax_agree >= 198,
            "{file}: argmax agrees at only {argmax_agree} of 200 positions"
        );
    }
}
