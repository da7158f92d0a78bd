//! Speculative decoding: the accept/reject rule on hand-set distributions,
//! and the output distribution on the real model pair against target-only
//! sampling.

mod common;

use specdec_core::sampler::{ProbIndex, Sampler};
use specdec_core::speculative::{
    accept_drafts, acceptance_probability, residual_distribution, Buffers, Draft, DraftProbs,
    Settings, SpecError, Speculator,
};
use specdec_core::tokenizer::BOS;
use specdec_core::{state_size, Logits, RunState, Transformer};

/// Logits whose softmax is `probs` (temperature 1).
fn logits_of(probs: &[f32]) -> Vec<f32> {
    probs
        .iter()
        .map(|&p| if p > 0.0 { p.ln() } else { -1.0e4 })
        .collect()
}

#[test]
fn rule_gives_target_distribution_exactly() {
    // Draft q = [0.8, 0.2], target p = [0.6, 0.4]. The chance of emitting x
    // is sum over drafts d of q(d) * (accept(d) * [x == d] + (1 - accept(d)) * r(x)),
    // with r = norm(max(0, p - q)).
    let p = [0.6f32, 0.4];
    let q = [0.8f32, 0.2];
    let mut residual = p;
    let total = residual_distribution(&mut residual, |x| q[x]);
    assert!(
        (total - 0.2).abs() < 1e-6,
        "residual mass {total}, expected 0.2"
    );
    let mut emitted = [0.0f64; 2];
    for d in 0..2 {
        let accept = f64::from(acceptance_probability(p[d], q[d]));
        emitted[d] += f64::from(q[d]) * accept;
        for x in 0..2 {
            emitted[x] += f64::from(q[d]) * (1.0 - accept) * f64::from(residual[x] / total);
        }
    }
    assert!(
        (emitted[0] - 0.6).abs() < 1e-6,
        "P(token 0) = {}, expected 0.6",
        emitted[0]
    );
    assert!(
        (emitted[1] - 0.4).abs() < 1e-6,
        "P(token 1) = {}, expected 0.4",
        emitted[1]
    );
    assert_eq!(acceptance_probability(0.6, 0.8), 0.75);
    assert_eq!(acceptance_probability(0.4, 0.2), 1.0);
    assert_eq!(acceptance_probability(0.4, 0.0), 0.0);
}

#[test]
fn accept_walk_samples_target_distribution() {
    // The same pair through accept_drafts, drafting d from q with the same
    // random stream: the first emitted token must follow p = [0.6, 0.4].
    let p = [0.6f32, 0.4];
    let q = [0.8f32, 0.2];
    let trials = 400_000;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut scratch = vec![ProbIndex::default(); 2];
    let mut zeros = 0u32;
    for _ in 0..trials {
        let d = if specdec_core::sampler::random_f32(&mut rng) < q[0] {
            0
        } else {
            1
        };
        let mut rows = logits_of(&p);
        rows.extend_from_slice(&logits_of(&p));
        let (accepted, last) = accept_drafts(
            &mut rows,
            &[d],
            DraftProbs::Rows(&q),
            1.0,
            1.0,
            &mut rng,
            &mut scratch,
        );
        let first = if accepted == 1 { d } else { last };
        zeros += u32::from(first == 0);
    }
    let freq = f64::from(zeros) / f64::from(trials);
    // Standard deviation sqrt(0.24 / 400000) = 0.00077; 5 of them is 0.0039.
    assert!(
        (freq - 0.6).abs() < 0.0039,
        "token 0 emitted with frequency {freq}, expected 0.6"
    );
}

#[test]
fn accept_walk_stops_at_first_rejection() {
    // Greedy: rows 0 and 2 agree with the drafts, row 1 does not. The walk
    // accepts 1 and emits row 1's argmax, although draft 3 would match.
    let vocab = 4;
    let mut rows = vec![0.0f32; 4 * vocab];
    rows[2] = 5.0; // row 0 argmax 2
    rows[vocab + 3] = 5.0; // row 1 argmax 3
    rows[2 * vocab + 1] = 5.0; // row 2 argmax 1
    let drafts = [2, 0, 1];
    let mut rng = 1;
    let mut scratch = vec![ProbIndex::default(); vocab];
    let (accepted, last) = accept_drafts(
        &mut rows,
        &drafts,
        DraftProbs::PointMass,
        0.0,
        1.0,
        &mut rng,
        &mut scratch,
    );
    assert_eq!(
        accepted, 1,
        "greedy walk must stop at the rejected second draft"
    );
    assert_eq!(
        last, 3,
        "greedy walk must emit the argmax of the rejecting row"
    );

    // Sampled, with point-mass drafts: p(d) = 1 accepts surely, p(d) = 0
    // rejects surely.
    let mut rows = vec![-1.0e4f32; 4 * vocab];
    rows[2] = 0.0; // row 0: all mass on 2
    rows[vocab + 3] = 0.0; // row 1: all mass on 3, draft 0 has none
    rows[2 * vocab + 1] = 0.0; // row 2: all mass on 1
    let (accepted, last) = accept_drafts(
        &mut rows,
        &drafts,
        DraftProbs::PointMass,
        1.0,
        1.0,
        &mut rng,
        &mut scratch,
    );
    assert_eq!(
        accepted, 1,
        "sampled walk must stop at the rejected second draft"
    );
    assert_eq!(last, 3, "the residual of row 1 puts all mass on token 3");
}

#[test]
fn all_accepted_emits_bonus_from_last_row() {
    let vocab = 3;
    let mut rows = vec![0.0f32; 3 * vocab];
    rows[1] = 4.0;
    rows[vocab + 1] = 4.0;
    rows[2 * vocab + 2] = 4.0;
    let mut rng = 1;
    let mut scratch = vec![ProbIndex::default(); vocab];
    let result = accept_drafts(
        &mut rows,
        &[1, 1],
        DraftProbs::PointMass,
        0.0,
        1.0,
        &mut rng,
        &mut scratch,
    );
    assert_eq!(
        result,
        (2, 2),
        "two accepted drafts and the bonus argmax of row 2"
    );
}

/// Copies a file's bytes into 4-byte aligned storage.
fn aligned(bytes: &[u8]) -> Vec<u32> {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks(4)) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        *word = u32::from_ne_bytes(b);
    }
    words
}

fn as_bytes(words: &[u32], len: usize) -> &[u8] {
    // SAFETY: u32 storage viewed as bytes; `len` is at most the storage size.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), len) }
}

fn as_bytes_mut(words: &mut [u32]) -> &mut [u8] {
    // SAFETY: u32 storage viewed as bytes; the slice takes the unique borrow.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 4) }
}

/// Tokens per sample, and the category for "the run ended with BOS before".
const SAMPLE_LEN: usize = 5;
const ENDED: u32 = u32::MAX;

/// Samples the first tokens from the target alone, with run.c's sampler.
fn plain_samples(
    model: &Transformer<'_>,
    temperature: f32,
    topp: f32,
    seeds: std::ops::Range<u64>,
) -> Vec<[u32; 5]> {
    let config = model.config;
    let mut memory = vec![0u32; state_size(&config, 1).unwrap().div_ceil(4)];
    let mut state = RunState::new(&config, 1, as_bytes_mut(&mut memory)).unwrap();
    let mut scratch = vec![ProbIndex::default(); config.vocab_size()];
    let mut samples = Vec::new();
    for seed in seeds {
        let mut sampler =
            Sampler::new(config.vocab_size(), temperature, topp, seed, &mut scratch).unwrap();
        let mut sample = [ENDED; SAMPLE_LEN];
        let mut token = BOS;
        for (pos, slot) in sample.iter_mut().enumerate() {
            let logits = model
                .forward(&mut state, &[token], pos, Logits::Last)
                .unwrap();
            token = sampler.sample(logits).unwrap();
            if token == BOS {
                break;
            }
            *slot = token;
        }
        samples.push(sample);
    }
    samples
}

/// Samples the first tokens by speculative decoding with `draft` and K = 4.
fn speculative_samples(
    target: &Transformer<'_>,
    draft: &Transformer<'_>,
    temperature: f32,
    topp: f32,
    seeds: std::ops::Range<u64>,
) -> Vec<[u32; 5]> {
    let k = 4;
    let (config, draft_config) = (target.config, draft.config);
    let mut target_memory = vec![0u32; state_size(&config, k + 1).unwrap().div_ceil(4)];
    let mut draft_memory = vec![0u32; state_size(&draft_config, 8).unwrap().div_ceil(4)];
    let (tokens_len, q_len, scratch_len) = Buffers::lengths(target, k);
    let mut tokens = vec![0u32; tokens_len];
    let mut q = vec![0f32; q_len];
    let mut scratch = vec![ProbIndex::default(); scratch_len];
    let mut samples = Vec::new();
    let mut round = [0u32; 5];
    for seed in seeds {
        let target_state = RunState::new(&config, k + 1, as_bytes_mut(&mut target_memory)).unwrap();
        let draft_state = RunState::new(&draft_config, 8, as_bytes_mut(&mut draft_memory)).unwrap();
        let settings = Settings {
            k_max: k,
            temperature,
            topp,
            draft_p_min: 0.0,
            adaptive: false,
            seed,
        };
        let buffers = Buffers {
            tokens: &mut tokens,
            q: &mut q,
            scratch: &mut scratch,
        };
        let draft = Draft::Model {
            model: draft,
            state: draft_state,
        };
        let mut speculator =
            Speculator::new(target, target_state, draft, settings, buffers).unwrap();
        speculator.prefill(&[BOS]).unwrap();
        let mut sample = [ENDED; SAMPLE_LEN];
        let mut filled = 0;
        'run: while filled < SAMPLE_LEN {
            let result = speculator.step(SAMPLE_LEN - filled, &mut round).unwrap();
            for &token in &round[..result.emitted] {
                if token == BOS {
                    break 'run;
                }
                sample[filled] = token;
                filled += 1;
            }
        }
        samples.push(sample);
    }
    samples
}

/// Chi-square and total variation distance between two samples of the same
/// size at one position, with the thresholds they are held to.
struct Comparison {
    chi_square: f64,
    chi_square_limit: f64,
    tv: f64,
    tv_limit: f64,
}

/// Compares the token distributions at position `i` of two equal-size
/// samples.
///
/// Chi-square: for two samples of equal size N the homogeneity statistic is
/// sum over categories of (a - b)^2 / (a + b), with categories of fewer than
/// 20 pooled counts merged into one. Under equal distributions it follows
/// chi-square with C - 1 degrees of freedom; the limit is its upper 1e-5
/// quantile (Wilson-Hilferty with z = 4.265), so 15 comparisons give a false
/// failure about once in 7,000 runs.
///
/// Total variation: under equal distributions, a - b for a category of
/// probability p has standard deviation sqrt(2 N p), and its expected
/// absolute value is sqrt(2/pi) times that, so the expected TV is
/// 0.5 * sum sqrt(4 p / (pi N)). Its spread is small next to that sum over
/// hundreds of categories; the limit is 1.5 times the expectation.
fn compare(a: &[[u32; 5]], b: &[[u32; 5]], i: usize) -> Comparison {
    use std::collections::BTreeMap;
    assert_eq!(a.len(), b.len());
    let n = a.len() as f64;
    let mut counts: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
    for s in a {
        counts.entry(s[i]).or_default().0 += 1.0;
    }
    for s in b {
        counts.entry(s[i]).or_default().1 += 1.0;
    }
    let mut tv = 0.0;
    let mut expected_tv = 0.0;
    let mut chi_square = 0.0;
    let mut categories = 0;
    let (mut rare_a, mut rare_b) = (0.0, 0.0);
    for &(ca, cb) in counts.values() {
        tv += (ca - cb).abs();
        let p = (ca + cb) / (2.0 * n);
        expected_tv += (4.0 * p / (std::f64::consts::PI * n)).sqrt();
        if ca + cb < 20.0 {
            rare_a += ca;
            rare_b += cb;
        } else {
            chi_square += (ca - cb) * (ca - cb) / (ca + cb);
            categories += 1;
        }
    }
    if rare_a + rare_b > 0.0 {
        chi_square += (rare_a - rare_b) * (rare_a - rare_b) / (rare_a + rare_b);
        categories += 1;
    }
    let df = f64::from((categories - 1).max(1));
    let z = 4.265;
    let h = 2.0 / (9.0 * df);
    let chi_square_limit = df * (1.0 - h + z * h.sqrt()).powi(3);
    Comparison {
        chi_square,
        chi_square_limit,
        tv: 0.5 * tv / n,
        tv_limit: 1.5 * 0.5 * expected_tv,
    }
}

const SEEDS: u64 = 20_000;

/// Loads the real pair, or returns `None` when SPECDEC_MODELS is unset.
fn real_pair() -> Option<(Vec<u32>, usize, Vec<u32>, usize)> {
    let target = common::read_model("stories260K.bin")?;
    let draft = common::read_model("tinystories279K.bin")?;
    Some((aligned(&target), target.len(), aligned(&draft), draft.len()))
}

fn check_distribution(temperature: f32, topp: f32) {
    let Some((target, target_len, draft, draft_len)) = real_pair() else {
        return;
    };
    let target = Transformer::new(as_bytes(&target, target_len)).unwrap();
    let draft = Transformer::new(as_bytes(&draft, draft_len)).unwrap();
    let plain = plain_samples(&target, temperature, topp, 1_000_000..1_000_000 + SEEDS);
    let speculative = speculative_samples(&target, &draft, temperature, topp, 1..1 + SEEDS);
    for i in 0..SAMPLE_LEN {
        let c = compare(&plain, &speculative, i);
        println!(
            "T={temperature} top-p={topp} token {}: chi-square {:.1} (limit {:.1}), TV {:.4} (limit {:.4})",
            i + 1,
            c.chi_square,
            c.chi_square_limit,
            c.tv,
            c.tv_limit
        );
        assert!(
            c.chi_square < c.chi_square_limit,
            "token {}: chi-square {} over {}",
            i + 1,
            c.chi_square,
            c.chi_square_limit
        );
        assert!(
            c.tv < c.tv_limit,
            "token {}: TV {} over {}",
            i + 1,
            c.tv,
            c.tv_limit
        );
    }
}

#[test]
fn distribution_matches_target_t1() {
    check_distribution(1.0, 1.0);
}

#[test]
fn distribution_matches_target_t1_top_p() {
    check_distribution(1.0, 0.9);
}

#[test]
fn distribution_matches_target_t07() {
    check_distribution(0.7, 1.0);
}

#[test]
fn distribution_test_detects_draft_only_sampling() {
    // The negative control: sampling from the draft alone, which is what a
    // rule that accepted every draft would produce, must fail the same test.
    let Some((target, target_len, draft, draft_len)) = real_pair() else {
        return;
    };
    let target = Transformer::new(as_bytes(&target, target_len)).unwrap();
    let draft = Transformer::new(as_bytes(&draft, draft_len)).unwrap();
    let plain = plain_samples(&target, 1.0, 1.0, 1_000_000..1_000_000 + SEEDS);
    let wrong = plain_samples(&draft, 1.0, 1.0, 1..1 + SEEDS);
    let failures = (0..SAMPLE_LEN)
        .filter(|&i| {
            let c = compare(&plain, &wrong, i);
            c.chi_square >= c.chi_square_limit || c.tv >= c.tv_limit
        })
        .count();
    assert!(
        failures >= 3,
        "only {failures} of 5 positions told the draft's distribution from the target's"
    );
}

#[test]
fn prefill_keeps_prompt_tokens() {
    let Some((target, target_len, _, _)) = real_pair() else {
        return;
    };
    let target = Transformer::new(as_bytes(&target, target_len)).unwrap();
    let config = target.config;
    let mut memory = vec![0u32; state_size(&config, 5).unwrap().div_ceil(4)];
    let state = RunState::new(&config, 5, as_bytes_mut(&mut memory)).unwrap();
    let (tokens_len, q_len, scratch_len) = Buffers::lengths(&target, 4);
    let (mut tokens, mut q) = (vec![0u32; tokens_len], vec![0f32; q_len]);
    let mut scratch = vec![ProbIndex::default(); scratch_len];
    let settings = Settings {
        k_max: 4,
        temperature: 0.0,
        topp: 1.0,
        draft_p_min: 0.0,
        adaptive: false,
        seed: 1,
    };
    let buffers = Buffers {
        tokens: &mut tokens,
        q: &mut q,
        scratch: &mut scratch,
    };
    let mut speculator = Speculator::new(
        &target,
        state,
        Draft::Lookup { max_ngram: 2 },
        settings,
        buffers,
    )
    .unwrap();
    let prompt = [1, 403, 407, 261, 378];
    speculator.prefill(&prompt).unwrap();
    assert_eq!(speculator.tokens(), &prompt);
    assert_eq!(
        speculator.stats().target_forwards,
        1,
        "4 prompt tokens prefill in one batch"
    );
}

#[test]
fn invalid_settings_are_rejected() {
    let Some((target, target_len, draft, draft_len)) = real_pair() else {
        return;
    };
    let target = Transformer::new(as_bytes(&target, target_len)).unwrap();
    let draft = Transformer::new(as_bytes(&draft, draft_len)).unwrap();
    let config = target.config;
    let mut memory = vec![0u32; state_size(&config, 4).unwrap().div_ceil(4)];
    let mut draft_memory = vec![0u32; state_size(&draft.config, 2).unwrap().div_ceil(4)];
    let (tokens_len, q_len, scratch_len) = Buffers::lengths(&target, 8);
    let (mut tokens, mut q) = (vec![0u32; tokens_len], vec![0f32; q_len]);
    let mut scratch = vec![ProbIndex::default(); scratch_len];
    let base = Settings {
        k_max: 3,
        temperature: 1.0,
        topp: 1.0,
        draft_p_min: 0.0,
        adaptive: false,
        seed: 1,
    };

    let mut attempt = |settings: Settings, lookup: bool, short_tokens: bool| -> SpecError {
        let state = RunState::new(&config, 4, as_bytes_mut(&mut memory)).unwrap();
        let draft_source = if lookup {
            Draft::Lookup { max_ngram: 0 }
        } else {
            let draft_state =
                RunState::new(&draft.config, 2, as_bytes_mut(&mut draft_memory)).unwrap();
            Draft::Model {
                model: &draft,
                state: draft_state,
            }
        };
        let tokens_slice = if short_tokens {
            &mut tokens[..10]
        } else {
            &mut tokens[..]
        };
        let buffers = Buffers {
            tokens: tokens_slice,
            q: &mut q,
            scratch: &mut scratch,
        };
        Speculator::new(&target, state, draft_source, settings, buffers)
            .err()
            .expect("settings must be rejected")
    };
    assert_eq!(
        attempt(Settings { k_max: 0, ..base }, false, false),
        SpecError::ZeroDraftLength
    );
    assert_eq!(
        attempt(Settings { k_max: 4, ..base }, false, false),
        SpecError::TargetBatchTooSmall {
            needed: 5,
            max_batch: 4
        }
    );
    assert_eq!(
        attempt(
            Settings {
                temperature: -1.0,
                ..base
            },
            false,
            false
        ),
        SpecError::InvalidSampling
    );
    assert_eq!(
        attempt(Settings { topp: 1.5, ..base }, false, false),
        SpecError::InvalidSampling
    );
    assert_eq!(attempt(base, true, false), SpecError::ZeroNgram);
    assert_eq!(
        attempt(base, false, true),
        SpecError::BufferTooSmall {
            buffer: "tokens",
            needed: 513,
            found: 10
        }
    );
}

#[test]
fn tiny_temperature_falls_back_to_argmax() {
    // 1e-45 overflows every logit divided by it; the limit of the
    // distribution as the temperature goes to 0 is the argmax.
    let logits = [0.5f32, 3.0, -1.0, 2.0];
    let mut scratch = vec![ProbIndex::default(); 4];
    let mut sampler = Sampler::new(4, 1e-45, 1.0, 7, &mut scratch).unwrap();
    for _ in 0..10 {
        let mut row = logits;
        assert_eq!(
            sampler.sample(&mut row).unwrap(),
            1,
            "the sampler must pick the argmax"
        );
    }
    let mut row = logits;
    specdec_core::speculative::sampling_distribution(&mut row, 1e-45, 0.9, &mut scratch);
    assert_eq!(
        row,
        [0.0, 1.0, 0.0, 0.0],
        "the distribution must be the point mass on the argmax"
    );
}
