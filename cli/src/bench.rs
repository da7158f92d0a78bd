//! `specdec bench`: times decoding, verify passes and prefill on synthetic
//! checkpoints, and the machine's memory read bandwidth, in one process.
//! The main tables are single-thread; decode and verify passes are also
//! timed at each `--threads` count. With `--speculative` it also times
//! speculative decoding on the real 260K/279K models against plain greedy
//! decoding.
//!
//! Every figure is the median of several timed repetitions that follow an
//! untimed warm-up, and every ratio divides two medians from the same run.
//! docs/BENCHMARKS.md describes the method and records one run.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use specdec_core::ops::Math;
use specdec_core::parallel::{Parallel, Serial, ThreadPool};
use specdec_core::sampler::{sample_argmax, ProbIndex};
use specdec_core::speculative::{Buffers, Draft, Settings, Speculator, Stats};
use specdec_core::synthetic::write_checkpoint;
use specdec_core::tokenizer::{index_len, BOS};
use specdec_core::{state_size, Config, Format, Logits, RunState, Tokenizer, Transformer};

use crate::gen::{config_for, parse_shape};
use crate::load::{read_file, AlignedBuf, MappedFile};
use crate::run::encode_prompt;

/// The `specdec bench --help` text.
pub const HELP: &str = "\
Usage: specdec bench [options]

Times the engine on synthetic checkpoints (seeded random weights, see
specdec gen) and prints one table row per shape and format: decode tok/s,
weight bytes per token and the read bandwidth they imply, the cost of one
verify pass of n = 2..9 tokens relative to 1 token, prefill tok/s in batches
of 32 and one token at a time, and the machine's memory read bandwidth for
comparison. These main tables use one thread. A second table gives decode
tok/s and the verify cost of 5 and 9 tokens at each thread count. Build with
--release, because debug builds are many times slower.

Options:
  --shapes <list>       comma-separated shape names from 15M, 42M, 110M, 260K,
                        or one shape as seven comma-separated sizes
                        dim,hidden_dim,n_layers,n_heads,n_kv_heads,vocab_size,seq_len,
                        or none to skip the synthetic checkpoints;
                        default 15M,42M,110M
  --formats <list>      comma-separated formats from v0 (legacy fp32), v1 (fp32)
                        and v2 (Q8_0); default v1,v2
  --tokens <int>        decode tokens per repetition, clamped to each shape's
                        seq_len; default 64, or 32 for shapes of 60M weights
                        or more such as 110M
  --group-size <int>    Q8_0 group size for v2; it must divide dim and
                        hidden_dim of every shape. Default: the largest of
                        64, 32, 16, ..., 1 that divides both, per shape
  --threads <list>      comma-separated thread counts for decode, verify and
                        memory bandwidth; 1 is always included because the
                        main tables are single-thread. Default: 1 and the
                        number of available cores
  --fast-math           also time decode with the relaxed fp32 kernels and
                        print relaxed over exact tok/s (fp32 formats only;
                        Q8_0 has no relaxed kernel)
  --speculative         also time greedy speculative decoding with the real
                        models stories260K.bin (target), tinystories279K.bin,
                        tinystories279K_q80.bin and tok512.bin against plain
                        greedy decoding, on one thread
  --models <dir>        directory of those models; default: the SPECDEC_MODELS
                        environment variable
  --markdown            print Markdown tables instead of plain text
  -h, --help            print this help
";

/// Seed of the synthetic weights. The kernels run the same operations
/// whatever the values are.
const SEED: u64 = 1;
/// Prompt length of the prefill measurement, before clamping to seq_len.
const PREFILL_TOKENS: usize = 256;
/// Tokens per forward call in batched prefill, the batch `specdec` uses for
/// prompts.
const PREFILL_BATCH: usize = crate::run::PREFILL_BATCH;
/// Largest verify pass measured, in tokens.
const MAX_VERIFY: usize = 9;
/// Position of the first token of every verify pass. The cache contains
/// positions 0..VERIFY_POS from a fill call before the timed calls.
const VERIFY_POS: usize = 16;
const MIB: usize = 1 << 20;
/// Bounds of the memory bandwidth buffer, in bytes.
const BANDWIDTH_MIN_BYTES: usize = 256 * MIB;
const BANDWIDTH_MAX_BYTES: usize = 512 * MIB;
/// Timed passes over the bandwidth buffer, after one untimed pass.
const BANDWIDTH_PASSES: usize = 7;

/// Command parsed from the arguments after `bench`.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Print the help text.
    Help,
    /// Run the benchmark.
    Run(BenchArgs),
}

/// A checkpoint format as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatName {
    /// Legacy fp32.
    V0,
    /// fp32.
    V1,
    /// Q8_0.
    V2,
}

/// Settings of a benchmark run.
#[derive(Debug, PartialEq, Eq)]
pub struct BenchArgs {
    /// Shapes as (label, hyperparameters in `gen::parse_shape` order).
    pub shapes: Vec<(String, [usize; 7])>,
    /// Formats, each measured at every shape.
    pub formats: Vec<FormatName>,
    /// Decode tokens per repetition; `None` picks a count per shape.
    pub tokens: Option<usize>,
    /// Q8_0 group size; `None` picks the largest power of two up to 64 that
    /// fits each shape.
    pub group_size: Option<usize>,
    /// Thread counts, ascending, always including 1.
    pub threads: Vec<usize>,
    /// Also time decode with the relaxed fp32 kernels.
    pub fast_math: bool,
    /// Also run the speculative decoding section on the real models.
    pub speculative: bool,
    /// Directory of the real models; `None` falls back to `SPECDEC_MODELS`.
    pub models: Option<PathBuf>,
    /// Print Markdown tables.
    pub markdown: bool,
}

/// Parses the arguments after `bench`.
pub fn parse(args: &[String]) -> Result<Command, String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    let mut parsed = BenchArgs {
        shapes: Vec::new(),
        formats: vec![FormatName::V1, FormatName::V2],
        tokens: None,
        group_size: None,
        threads: Vec::new(),
        fast_math: false,
        speculative: false,
        models: None,
        markdown: false,
    };
    let mut shapes = None;
    let mut threads = None;
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        let switch = match flag {
            "--markdown" => Some(&mut parsed.markdown),
            "--fast-math" => Some(&mut parsed.fast_math),
            "--speculative" => Some(&mut parsed.speculative),
            _ => None,
        };
        if let Some(switch) = switch {
            *switch = true;
            i += 1;
            continue;
        }
        const VALUE_FLAGS: [&str; 6] = [
            "--shapes",
            "--formats",
            "--tokens",
            "--group-size",
            "--threads",
            "--models",
        ];
        if !VALUE_FLAGS.contains(&flag) {
            return Err(format!("unknown option '{flag}'; see specdec bench --help"));
        }
        let value = args
            .get(i + 1)
            .ok_or_else(|| format!("option '{flag}' needs a value; see specdec bench --help"))?;
        match flag {
            "--shapes" => shapes = Some(parse_shapes(value)?),
            "--formats" => parsed.formats = parse_formats(value)?,
            "--tokens" => {
                parsed.tokens = Some(parse_positive(value).ok_or_else(|| {
                    format!(
                        "invalid token count '{value}' for --tokens; use a positive whole number"
                    )
                })?)
            }
            "--group-size" => {
                parsed.group_size = Some(parse_positive(value).ok_or_else(|| {
                    format!(
                        "invalid group size '{value}' for --group-size; use a positive whole number"
                    )
                })?)
            }
            "--threads" => threads = Some(parse_threads(value)?),
            "--models" => parsed.models = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option '{flag}'; see specdec bench --help")),
        }
        i += 2;
    }
    parsed.shapes = match shapes {
        Some(shapes) => shapes,
        None => parse_shapes("15M,42M,110M")?,
    };
    parsed.threads = match threads {
        Some(threads) => threads,
        None => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            with_one_thread(vec![cores])
        }
    };
    Ok(Command::Run(parsed))
}

/// Parses a comma-separated list of positive thread counts.
fn parse_threads(value: &str) -> Result<Vec<usize>, String> {
    let mut counts = Vec::new();
    for item in value.split(',').map(str::trim) {
        let count = parse_positive(item).ok_or_else(|| {
            format!(
                "invalid thread count '{item}' in --threads '{value}'; use positive whole numbers \
                 separated by commas"
            )
        })?;
        counts.push(count);
    }
    Ok(with_one_thread(counts))
}

/// Adds 1, which the single-thread tables need, then sorts and dedupes.
fn with_one_thread(mut counts: Vec<usize>) -> Vec<usize> {
    counts.push(1);
    counts.sort_unstable();
    counts.dedup();
    counts
}

fn parse_positive(value: &str) -> Option<usize> {
    value.parse().ok().filter(|&n| n > 0)
}

/// Parses a list of shape names, or one shape given as seven sizes.
fn parse_shapes(value: &str) -> Result<Vec<(String, [usize; 7])>, String> {
    if value.trim() == "none" {
        return Ok(Vec::new());
    }
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    let all_numbers = items
        .iter()
        .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    if items.len() == 7 && all_numbers {
        return Ok(vec![(value.to_owned(), parse_shape(value)?)]);
    }
    let unknown = |item: &str| {
        format!(
            "unknown shape '{item}' in --shapes '{value}'; use names from 15M, 42M, 110M, 260K \
             separated by commas, one shape as seven sizes \
             dim,hidden_dim,n_layers,n_heads,n_kv_heads,vocab_size,seq_len, or none"
        )
    };
    let mut shapes = Vec::new();
    for item in items {
        // A single item never contains a comma, so parse_shape accepts only
        // the shape names here.
        let shape = parse_shape(item).map_err(|_| unknown(item))?;
        shapes.push((item.to_owned(), shape));
    }
    Ok(shapes)
}

fn parse_formats(value: &str) -> Result<Vec<FormatName>, String> {
    let mut formats = Vec::new();
    for item in value.split(',').map(str::trim) {
        let format = match item {
            "v0" => FormatName::V0,
            "v1" => FormatName::V1,
            "v2" => FormatName::V2,
            _ => {
                return Err(format!(
                    "unknown format '{item}' in --formats '{value}'; use v0, v1 or v2, separated \
                     by commas"
                ))
            }
        };
        if !formats.contains(&format) {
            formats.push(format);
        }
    }
    Ok(formats)
}

/// Picks the Q8_0 group size for a shape. A requested size must divide
/// `dim` and `hidden_dim`. Without a request, the result is the largest
/// power of two from 64 down that divides both.
fn group_size_for(
    label: &str,
    shape: [usize; 7],
    requested: Option<usize>,
) -> Result<usize, String> {
    let [dim, hidden_dim, ..] = shape;
    let divides = |g: usize| dim % g == 0 && hidden_dim % g == 0;
    match requested {
        Some(g) if divides(g) => Ok(g),
        Some(g) => Err(format!(
            "group size {g} does not divide both dim {dim} and hidden_dim {hidden_dim} of shape \
             {label}; pass a common divisor to --group-size, or omit it to pick one per shape"
        )),
        None => Ok([64, 32, 16, 8, 4, 2, 1]
            .into_iter()
            .find(|&g| divides(g))
            .unwrap_or(1)),
    }
}

/// Repetition counts and sizes for one model.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Decode tokens per repetition, at positions 0.. .
    decode_tokens: usize,
    decode_reps: usize,
    /// Repetitions of the whole set of verify passes n = 1..=MAX_VERIFY.
    verify_reps: usize,
    /// Prompt length of the prefill measurement.
    prefill_tokens: usize,
    prefill_reps: usize,
}

impl Plan {
    /// Chooses counts for a default run of 15M, 42M and 110M in v1 and v2,
    /// which takes about 75 s at 1 and 2 threads on a shared 2-vCPU Zen 4
    /// virtual machine. Models of 60M weights or more decode 32 tokens per
    /// repetition instead of 64. Verify passes get 11 rounds, because
    /// with 5 the 110M Q8_0 ratio at n = 5 ranged from 1.49 to 1.77 over
    /// five runs.
    fn for_config(config: &Config, tokens: Option<usize>) -> Plan {
        let params = weight_count(config);
        let decode_tokens = if params < 60_000_000 { 64 } else { 32 };
        let seq_len = config.seq_len();
        Plan {
            decode_tokens: tokens.unwrap_or(decode_tokens).min(seq_len),
            decode_reps: 5,
            verify_reps: 11,
            prefill_tokens: PREFILL_TOKENS.min(seq_len),
            prefill_reps: 3,
        }
    }
}

/// Number of matrix and norm weights one decode step reads: every layer
/// matrix, the classifier and the rmsnorm weights. The single embedding row
/// a token copies is left out.
fn weight_count(c: &Config) -> u64 {
    let dim = c.dim() as u64;
    let hidden = c.hidden_dim() as u64;
    let kv_dim = c.kv_dim() as u64;
    let layers = c.n_layers() as u64;
    let per_layer = 2 * dim * dim + 2 * kv_dim * dim + 3 * hidden * dim;
    layers * per_layer + c.vocab_size() as u64 * dim + (2 * layers + 1) * dim
}

/// Bytes [`weight_count`]'s weights occupy in the checkpoint: 4 per fp32
/// value, or 1 per Q8_0 value plus a 4-byte scale per group. Norms are fp32
/// in every format.
fn weight_bytes(c: &Config) -> u64 {
    let dim = c.dim() as u64;
    let layers = c.n_layers() as u64;
    let norms = (2 * layers + 1) * dim;
    let matrices = weight_count(c) - norms;
    let matrix_bytes = match c.format().group_size() {
        None => 4 * matrices,
        Some(g) => matrices + 4 * (matrices / g as u64),
    };
    matrix_bytes + 4 * norms
}

/// Decode and verify figures of one shape and format at one thread count.
#[derive(Clone, Debug)]
struct ThreadReport {
    threads: usize,
    decode_tok_s: f64,
    /// Decode tok/s with the relaxed fp32 kernels, when measured.
    relaxed_tok_s: Option<f64>,
    /// Median time of one 1-token call at position VERIFY_POS.
    verify_base: Duration,
    /// Time of one call of n tokens over the 1-token time, for n = 2..=9.
    verify_ratios: [f64; MAX_VERIFY - 1],
}

/// Measurements of one shape in one format.
#[derive(Clone, Debug)]
struct ModelReport {
    shape: String,
    format: String,
    plan: Plan,
    weight_bytes: u64,
    /// Single-thread decode tok/s.
    decode_tok_s: f64,
    /// Single-thread median time of one 1-token call at position VERIFY_POS.
    verify_base: Duration,
    /// Single-thread time of one call of n tokens over the 1-token time, for
    /// n = 2..=9.
    verify_ratios: [f64; MAX_VERIFY - 1],
    /// Decode and verify at every thread count, 1 included.
    by_threads: Vec<ThreadReport>,
    prefill_batched_tok_s: f64,
    prefill_single_tok_s: f64,
}

impl ModelReport {
    /// Read bandwidth implied by single-thread decoding, in bytes per second.
    fn decode_bandwidth(&self) -> f64 {
        self.weight_bytes as f64 * self.decode_tok_s
    }
}

/// Builds a synthetic checkpoint for `config` in a 4-byte aligned buffer.
fn synthesize(config: &Config) -> Result<AlignedBuf, String> {
    let len = config
        .file_len()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("checkpoint size overflows this target's address space")?;
    let mut buf = AlignedBuf::zeroed(len);
    write_checkpoint(config, SEED, buf.as_bytes_mut()).map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Deterministic token ids spread over the vocabulary. Timing does not
/// depend on which ids they are.
fn tokens_for(config: &Config, count: usize) -> Vec<u32> {
    let vocab = config.vocab_size() as u64;
    (0..count as u64)
        .map(|i| ((i * 7919 + 1) % vocab) as u32)
        .collect()
}

/// Median of `samples`, which must not be empty.
fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2.0
    }
}

/// Runs `tokens` one per call at positions `start..`, as plain decoding
/// does, and returns the elapsed time.
fn run_single(
    model: &Transformer<'_>,
    state: &mut RunState<'_>,
    tokens: &[u32],
    start: usize,
    par: &dyn Parallel,
) -> Result<Duration, String> {
    let begin = Instant::now();
    for (i, &token) in tokens.iter().enumerate() {
        let logits = model
            .forward_parallel(state, &[token], start + i, Logits::Last, par)
            .map_err(|e| e.to_string())?;
        black_box(logits[0]);
    }
    Ok(begin.elapsed())
}

/// Runs `tokens` at positions `0..` in calls of `batch` tokens with only the
/// last row of logits, as prompt prefill does, and returns the elapsed time.
fn run_batched(
    model: &Transformer<'_>,
    state: &mut RunState<'_>,
    tokens: &[u32],
    batch: usize,
) -> Result<Duration, String> {
    let begin = Instant::now();
    for (i, chunk) in tokens.chunks(batch).enumerate() {
        let logits = model
            .forward(state, chunk, i * batch, Logits::Last)
            .map_err(|e| e.to_string())?;
        black_box(logits[0]);
    }
    Ok(begin.elapsed())
}

/// Times one verify pass of each length n = 1..=MAX_VERIFY at VERIFY_POS,
/// `reps` times on each pool, and returns each pool's median 1-token time
/// and ratios.
fn measure_verify(
    model: &Transformer<'_>,
    state: &mut RunState<'_>,
    reps: usize,
    pools: &[ThreadPool],
) -> Result<Vec<(Duration, [f64; MAX_VERIFY - 1])>, String> {
    let tokens = tokens_for(&model.config, VERIFY_POS + MAX_VERIFY);
    let (prefix, draft) = tokens.split_at(VERIFY_POS);
    run_batched(model, state, prefix, prefix.len())?;

    // One untimed call of the longest pass per pool touches every row of the
    // state that the timed calls use, and wakes the pool's workers.
    for pool in pools {
        model
            .forward_parallel(state, draft, VERIFY_POS, Logits::All, pool)
            .map_err(|e| e.to_string())?;
    }

    // Each round times every length at every thread count once, so a slow
    // spell on the machine affects all of them alike.
    let mut times = vec![vec![Vec::new(); MAX_VERIFY]; pools.len()];
    for _ in 0..reps {
        for (pool, pool_times) in pools.iter().zip(&mut times) {
            for n in 1..=MAX_VERIFY {
                let begin = Instant::now();
                let logits = model
                    .forward_parallel(state, &draft[..n], VERIFY_POS, Logits::All, pool)
                    .map_err(|e| e.to_string())?;
                black_box(logits[0]);
                pool_times[n - 1].push(begin.elapsed().as_secs_f64());
            }
        }
    }

    let mut results = Vec::with_capacity(pools.len());
    for pool_times in &mut times {
        let medians: Vec<f64> = pool_times.iter_mut().map(|t| median(t)).collect();
        let base = medians[0];
        let mut ratios = [0.0; MAX_VERIFY - 1];
        for (ratio, &time) in ratios.iter_mut().zip(&medians[1..]) {
            *ratio = time / base;
        }
        results.push((Duration::from_secs_f64(base), ratios));
    }
    Ok(results)
}

/// Times decoding on each pool, and with `relaxed` also with the relaxed
/// fp32 kernels right after each exact repetition. Returns each pool's
/// median exact and relaxed tok/s.
fn measure_decode(
    model: &Transformer<'_>,
    state: &mut RunState<'_>,
    plan: &Plan,
    pools: &[ThreadPool],
    relaxed: bool,
) -> Result<Vec<(f64, Option<f64>)>, String> {
    let decode = tokens_for(&model.config, plan.decode_tokens);
    let maths: &[Math] = if relaxed {
        &[Math::Exact, Math::Relaxed]
    } else {
        &[Math::Exact]
    };

    // An 8-token warm-up per pool and kernel set runs every kernel once.
    let warm_up = &decode[..decode.len().min(8)];
    for pool in pools {
        for &math in maths {
            state.set_math(math);
            run_single(model, state, warm_up, 0, pool)?;
        }
    }

    let mut rates = vec![vec![Vec::new(); maths.len()]; pools.len()];
    for _ in 0..plan.decode_reps {
        for (pool, pool_rates) in pools.iter().zip(&mut rates) {
            for (&math, math_rates) in maths.iter().zip(pool_rates.iter_mut()) {
                state.set_math(math);
                let elapsed = run_single(model, state, &decode, 0, pool)?;
                math_rates.push(decode.len() as f64 / elapsed.as_secs_f64());
            }
        }
    }
    state.set_math(Math::Exact);

    Ok(rates
        .iter_mut()
        .map(|pool_rates| {
            let exact = median(&mut pool_rates[0]);
            let relaxed = pool_rates.get_mut(1).map(|r| median(r));
            (exact, relaxed)
        })
        .collect())
}

/// Builds a synthetic checkpoint for `config` and measures it. `pools` must
/// start with a 1-thread pool, whose figures fill the single-thread fields.
fn measure_model(
    shape: &str,
    config: &Config,
    plan: &Plan,
    pools: &[ThreadPool],
    fast_math: bool,
) -> Result<ModelReport, String> {
    let mut checkpoint = synthesize(config)?;
    let model = Transformer::new(checkpoint.as_bytes_mut()).map_err(|e| e.to_string())?;
    let max_batch = PREFILL_BATCH.max(MAX_VERIFY);
    let size = state_size(config, max_batch).map_err(|e| e.to_string())?;
    let mut memory = AlignedBuf::zeroed(size);
    let mut state =
        RunState::new(config, max_batch, memory.as_bytes_mut()).map_err(|e| e.to_string())?;

    // Q8_0 matmuls have no relaxed kernel, so relaxed math would time the
    // same code as exact math there.
    let relaxed = fast_math && config.format().group_size().is_none();
    let decode = measure_decode(&model, &mut state, plan, pools, relaxed)?;
    let verify = measure_verify(&model, &mut state, plan.verify_reps, pools)?;
    let by_threads: Vec<ThreadReport> = pools
        .iter()
        .zip(decode.iter().zip(&verify))
        .map(
            |(pool, (&(exact, relaxed), &(base, ratios)))| ThreadReport {
                threads: pool.threads(),
                decode_tok_s: exact,
                relaxed_tok_s: relaxed,
                verify_base: base,
                verify_ratios: ratios,
            },
        )
        .collect();
    let single = by_threads
        .iter()
        .find(|r| r.threads == 1)
        .ok_or("no 1-thread measurement")?
        .clone();

    // Prefill on one thread, batched and one token at a time, alternating so
    // that both see the same machine state. Decoding above served as the
    // warm-up.
    let prompt = tokens_for(config, plan.prefill_tokens);
    let mut batched = Vec::with_capacity(plan.prefill_reps);
    let mut one_by_one = Vec::with_capacity(plan.prefill_reps);
    for _ in 0..plan.prefill_reps {
        let elapsed = run_batched(&model, &mut state, &prompt, PREFILL_BATCH)?;
        batched.push(prompt.len() as f64 / elapsed.as_secs_f64());
        let elapsed = run_single(&model, &mut state, &prompt, 0, &Serial)?;
        one_by_one.push(prompt.len() as f64 / elapsed.as_secs_f64());
    }

    Ok(ModelReport {
        shape: shape.to_owned(),
        format: format_label(config.format()),
        plan: *plan,
        weight_bytes: weight_bytes(config),
        decode_tok_s: single.decode_tok_s,
        verify_base: single.verify_base,
        verify_ratios: single.verify_ratios,
        by_threads,
        prefill_batched_tok_s: median(&mut batched),
        prefill_single_tok_s: median(&mut one_by_one),
    })
}

fn format_label(format: Format) -> String {
    match format {
        Format::Legacy => "v0 fp32".to_owned(),
        Format::V1 => "v1 fp32".to_owned(),
        Format::V2 { group_size } => format!("v2 Q8_0 g{group_size}"),
    }
}

/// Sums `data` with 32 independent accumulators, so that the loop is
/// limited by memory reads rather than by the latency of one addition chain.
fn sum_lanes(data: &[f32]) -> f32 {
    const LANES: usize = 32;
    let mut acc = [0.0f32; LANES];
    let chunks = data.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Measures memory read bandwidth in bytes per second at each pool's thread
/// count: the median of `passes` timed sums over a `bytes`-long f32 buffer,
/// which the pool's threads split into equal parts. The pools take turns
/// in every pass.
fn measure_bandwidth(bytes: usize, passes: usize, pools: &[ThreadPool]) -> Vec<f64> {
    // Writing every element commits the pages. A zeroed allocation could be
    // backed by one shared zero page and read at cache speed.
    let data: Vec<f32> = (0..bytes / 4).map(|i| (i % 7) as f32).collect();
    let sum_on = |pool: &ThreadPool| {
        let tasks = pool.threads();
        let part = data.len().div_ceil(tasks);
        pool.run(tasks, &|i| {
            let begin = (i * part).min(data.len());
            let end = (begin + part).min(data.len());
            black_box(sum_lanes(black_box(&data[begin..end])));
        });
    };
    for pool in pools {
        sum_on(pool);
    }
    let mut rates = vec![Vec::new(); pools.len()];
    for _ in 0..passes {
        for (pool, pool_rates) in pools.iter().zip(&mut rates) {
            let begin = Instant::now();
            sum_on(pool);
            pool_rates.push((data.len() * 4) as f64 / begin.elapsed().as_secs_f64());
        }
    }
    rates.iter_mut().map(|r| median(r)).collect()
}

/// Size of the bandwidth buffer: four times the largest weight size, within
/// 256 to 512 MiB, so that it is well beyond any cache.
fn bandwidth_buffer_bytes(largest_weights: u64) -> usize {
    let four_times = usize::try_from(largest_weights.saturating_mul(4)).unwrap_or(usize::MAX);
    four_times.clamp(BANDWIDTH_MIN_BYTES, BANDWIDTH_MAX_BYTES)
}

/// Config of every (shape, format) pair, in the order they are measured.
fn configs(args: &BenchArgs) -> Result<Vec<(String, Config)>, String> {
    let mut list = Vec::new();
    for (label, shape) in &args.shapes {
        for &name in &args.formats {
            let format = match name {
                FormatName::V0 => Format::Legacy,
                FormatName::V1 => Format::V1,
                FormatName::V2 => Format::V2 {
                    group_size: group_size_for(label, *shape, args.group_size)?,
                },
            };
            let config = config_for(*shape, format, true)?;
            if config.seq_len() < VERIFY_POS + MAX_VERIFY {
                return Err(format!(
                    "shape {label} has seq_len {}, but the verify measurement needs {} positions; \
                     use a shape with a longer seq_len",
                    config.seq_len(),
                    VERIFY_POS + MAX_VERIFY
                ));
            }
            list.push((label.clone(), config));
        }
    }
    Ok(list)
}

const GB: f64 = 1e9;
const MB: f64 = 1e6;

/// Formats the tables as aligned plain text, or as Markdown.
/// `bandwidths` pairs each thread count with its memory read bandwidth, and
/// the first pair is for 1 thread.
fn render(
    reports: &[ModelReport],
    bandwidths: &[(usize, f64)],
    fast_math: bool,
    markdown: bool,
) -> String {
    let memory_bandwidth = bandwidths[0].1;
    let mut main = vec![vec![
        "shape".to_owned(),
        "format".to_owned(),
        "weights MB".to_owned(),
        "decode tok/s".to_owned(),
        "decode GB/s".to_owned(),
        "of memory BW".to_owned(),
        "prefill tok/s (batch 32)".to_owned(),
        "prefill tok/s (1 token)".to_owned(),
        "batch speedup".to_owned(),
    ]];
    for r in reports {
        main.push(vec![
            r.shape.clone(),
            r.format.clone(),
            format!("{:.1}", r.weight_bytes as f64 / MB),
            format!("{:.1}", r.decode_tok_s),
            format!("{:.2}", r.decode_bandwidth() / GB),
            format!("{:.0}%", 100.0 * r.decode_bandwidth() / memory_bandwidth),
            format!("{:.1}", r.prefill_batched_tok_s),
            format!("{:.1}", r.prefill_single_tok_s),
            format!("{:.2}x", r.prefill_batched_tok_s / r.prefill_single_tok_s),
        ]);
    }

    let mut verify = vec![vec![
        "shape".to_owned(),
        "format".to_owned(),
        "1-token ms".to_owned(),
    ]];
    verify[0].extend((2..=MAX_VERIFY).map(|n| format!("n={n}")));
    for r in reports {
        let mut row = vec![
            r.shape.clone(),
            r.format.clone(),
            format!("{:.2}", r.verify_base.as_secs_f64() * 1e3),
        ];
        row.extend(r.verify_ratios.iter().map(|x| format!("{x:.2}")));
        verify.push(row);
    }

    let mut counts = vec![vec![
        "shape".to_owned(),
        "format".to_owned(),
        "decode tokens x reps".to_owned(),
        "verify reps".to_owned(),
        "prefill tokens x reps".to_owned(),
    ]];
    for r in reports {
        let p = &r.plan;
        counts.push(vec![
            r.shape.clone(),
            r.format.clone(),
            format!("{} x {}", p.decode_tokens, p.decode_reps),
            p.verify_reps.to_string(),
            format!("{} x {}", p.prefill_tokens, p.prefill_reps),
        ]);
    }

    let mut out = String::new();
    for &(threads, bandwidth) in bandwidths {
        let unit = if threads == 1 { "thread" } else { "threads" };
        out.push_str(&format!(
            "Memory read bandwidth, {threads} {unit}: {:.2} GB/s (1 GB = 10^9 bytes)\n",
            bandwidth / GB
        ));
    }
    out.push('\n');
    out.push_str(&render_table(&main, markdown));
    out.push_str(&format!(
        "\nVerify pass: time of one forward call of n tokens at position {VERIFY_POS}, all \
         logits, over the time of one 1-token call\n\n"
    ));
    out.push_str(&render_table(&verify, markdown));
    out.push_str("\nTokens and repetitions; each figure is the median over the repetitions\n\n");
    out.push_str(&render_table(&counts, markdown));
    out.push_str(&render_threads(reports, bandwidths, markdown));
    if fast_math {
        out.push_str(&render_fast_math(reports, markdown));
    }
    out
}

/// The table of decode and verify figures at each thread count.
fn render_threads(reports: &[ModelReport], bandwidths: &[(usize, f64)], markdown: bool) -> String {
    let mut table = vec![vec![
        "shape".to_owned(),
        "format".to_owned(),
        "threads".to_owned(),
        "decode tok/s".to_owned(),
        "vs 1 thread".to_owned(),
        "decode GB/s".to_owned(),
        "of memory BW".to_owned(),
        "1-token ms".to_owned(),
        "verify n=5".to_owned(),
        "verify n=9".to_owned(),
    ]];
    for r in reports {
        for t in &r.by_threads {
            let bandwidth = bandwidths
                .iter()
                .find(|&&(threads, _)| threads == t.threads)
                .map_or(f64::NAN, |&(_, b)| b);
            let decode_bytes = r.weight_bytes as f64 * t.decode_tok_s;
            table.push(vec![
                r.shape.clone(),
                r.format.clone(),
                t.threads.to_string(),
                format!("{:.1}", t.decode_tok_s),
                format!("{:.2}x", t.decode_tok_s / r.decode_tok_s),
                format!("{:.2}", decode_bytes / GB),
                format!("{:.0}%", 100.0 * decode_bytes / bandwidth),
                format!("{:.2}", t.verify_base.as_secs_f64() * 1e3),
                format!("{:.2}", t.verify_ratios[5 - 2]),
                format!("{:.2}", t.verify_ratios[9 - 2]),
            ]);
        }
    }
    let mut out = String::from(
        "\nThreads: decode tok/s, its speedup over 1 thread and the read bandwidth it implies \
         (of the memory bandwidth measured at the same thread count), and the verify pass of \
         n tokens over a 1-token pass at the same thread count\n\n",
    );
    out.push_str(&render_table(&table, markdown));
    out
}

/// The table of decode tok/s with exact and relaxed fp32 kernels.
fn render_fast_math(reports: &[ModelReport], markdown: bool) -> String {
    let mut table = vec![vec![
        "shape".to_owned(),
        "format".to_owned(),
        "threads".to_owned(),
        "exact tok/s".to_owned(),
        "relaxed tok/s".to_owned(),
        "relaxed / exact".to_owned(),
    ]];
    for r in reports {
        for t in &r.by_threads {
            let Some(relaxed) = t.relaxed_tok_s else {
                continue;
            };
            table.push(vec![
                r.shape.clone(),
                r.format.clone(),
                t.threads.to_string(),
                format!("{:.1}", t.decode_tok_s),
                format!("{relaxed:.1}"),
                format!("{:.2}x", relaxed / t.decode_tok_s),
            ]);
        }
    }
    let mut out = String::from(
        "\n--fast-math: decode tok/s with the exact and the relaxed fp32 kernels, timed in \
         alternation (fp32 formats only)\n\n",
    );
    out.push_str(&render_table(&table, markdown));
    out
}

fn render_table(rows: &[Vec<String>], markdown: bool) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        // Text columns are left-aligned and numbers right-aligned.
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                if c < 2 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        if markdown {
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
            if i == 0 {
                // A colon on the right of a rule right-aligns the column.
                let rule: Vec<String> = widths
                    .iter()
                    .enumerate()
                    .map(|(c, &w)| {
                        if c < 2 {
                            "-".repeat(w + 2)
                        } else {
                            format!("{}:", "-".repeat(w + 1))
                        }
                    })
                    .collect();
                out.push_str(&format!("|{}|\n", rule.join("|")));
            }
        } else {
            out.push_str(&format!("{}\n", cells.join("  ").trim_end()));
        }
    }
    out
}

/// Target model of the speculative section, in the models directory.
const TARGET_FILE: &str = "stories260K.bin";
/// Tokenizer of the 260K/279K models.
const TOKENIZER_FILE: &str = "tok512.bin";
/// Draft checkpoints with the target's vocabulary.
const DRAFT_FILES: [&str; 2] = ["tinystories279K.bin", "tinystories279K_q80.bin"];
/// Maximum n-gram length that prompt lookup matches.
const LOOKUP_NGRAM: usize = 3;
/// Draft lengths K of the speculative section.
const SPEC_KS: [usize; 4] = [1, 2, 4, 8];
/// Tokens generated per run, unless BOS comes first.
const SPEC_TOKENS: usize = 256;
/// Timed repetitions per configuration, after one untimed warm-up.
const SPEC_REPS: usize = 5;
/// Words of the target's own greedy output that form the repetitive prompt.
const REPEAT_WORDS: usize = 60;
/// Largest batch of the draft model's catch-up and re-fill calls, as in
/// `specdec -d`.
const DRAFT_BATCH: usize = 128;

/// Sizes of the speculative section.
#[derive(Clone, Debug)]
struct SpecPlan {
    /// Tokens generated per run, unless BOS comes first.
    tokens: usize,
    /// Draft lengths K.
    ks: Vec<usize>,
    /// Timed repetitions per configuration.
    reps: usize,
}

/// One configuration of the speculative section.
#[derive(Clone, Debug)]
struct SpecRow {
    prompt: String,
    draft: String,
    k: usize,
    /// Tokens generated, equal in the plain and the speculative run.
    generated: usize,
    /// Counts of the speculative run, which are the same in every
    /// repetition because decoding is greedy.
    stats: Stats,
    /// Median seconds of plain greedy decoding.
    plain_s: f64,
    /// Median seconds of speculative decoding.
    spec_s: f64,
}

/// Results of the speculative section.
#[derive(Debug)]
struct SpecReport {
    rows: Vec<SpecRow>,
    /// Text of the repetitive prompt and its length in tokens, BOS included.
    repeat_prompt: String,
    repeat_prompt_tokens: usize,
    plan: SpecPlan,
}

/// Directory of the real models: `--models`, else `SPECDEC_MODELS`.
fn models_dir(args: &BenchArgs) -> Result<PathBuf, String> {
    let dir = args
        .models
        .clone()
        .or_else(|| std::env::var_os("SPECDEC_MODELS").map(PathBuf::from))
        .ok_or(
            "--speculative needs the real models; pass --models DIR or set SPECDEC_MODELS to \
             the directory that contains stories260K.bin",
        )?;
    for file in [TARGET_FILE, TOKENIZER_FILE].iter().chain(&DRAFT_FILES) {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(format!(
                "model file {} not found; --speculative needs {TARGET_FILE}, {TOKENIZER_FILE}, \
                 {} and {} in one directory",
                path.display(),
                DRAFT_FILES[0],
                DRAFT_FILES[1]
            ));
        }
    }
    Ok(dir)
}

/// Decodes greedily after `prompt` (BOS included) on one thread: the prompt
/// in batches, then one forward call and one argmax per token. Stops after
/// `count` tokens or before a BOS token, as `specdec -t 0` does.
fn plain_greedy(
    model: &Transformer<'_>,
    state: &mut RunState<'_>,
    prompt: &[u32],
    count: usize,
) -> Result<Vec<u32>, String> {
    let vocab = model.config.vocab_size();
    let batch = state.max_batch();
    let mut next = 0;
    for (i, chunk) in prompt.chunks(batch).enumerate() {
        let logits = model
            .forward(state, chunk, i * batch, Logits::Last)
            .map_err(|e| e.to_string())?;
        next = sample_argmax(&logits[..vocab]);
    }
    let mut out = Vec::with_capacity(count);
    let mut pos = prompt.len();
    while next != BOS && out.len() < count {
        out.push(next);
        if out.len() == count {
            break;
        }
        let logits = model
            .forward(state, &[next], pos, Logits::Last)
            .map_err(|e| e.to_string())?;
        next = sample_argmax(&logits[..vocab]);
        pos += 1;
    }
    Ok(out)
}

/// Decodes greedily after `prompt` with speculative decoding on one thread,
/// with the same stopping rule as [`plain_greedy`]. Returns the tokens, the
/// counts, and the time from prefill to the last round. The buffers are
/// allocated before the clock starts.
fn speculative_greedy(
    target: &Transformer<'_>,
    target_memory: &mut AlignedBuf,
    draft: Option<(&Transformer<'_>, &mut AlignedBuf)>,
    k: usize,
    prompt: &[u32],
    count: usize,
) -> Result<(Vec<u32>, Stats, Duration), String> {
    let target_state = RunState::new(
        &target.config,
        PREFILL_BATCH.max(k + 1),
        target_memory.as_bytes_mut(),
    )
    .map_err(|e| e.to_string())?;
    let draft = match draft {
        None => Draft::Lookup {
            max_ngram: LOOKUP_NGRAM,
        },
        Some((model, memory)) => {
            let batch = (model.config.seq_len() / 2).clamp(2, DRAFT_BATCH);
            let state = RunState::new(&model.config, batch, memory.as_bytes_mut())
                .map_err(|e| e.to_string())?;
            Draft::Model { model, state }
        }
    };
    let settings = Settings {
        k_max: k,
        temperature: 0.0,
        topp: 0.9,
        draft_p_min: 0.0,
        adaptive: false,
        seed: 1,
    };
    let (tokens_len, q_len, scratch_len) = Buffers::lengths(target, k);
    let mut tokens = vec![0u32; tokens_len];
    let mut q = vec![0f32; q_len];
    let mut scratch = vec![ProbIndex::default(); scratch_len];
    let buffers = Buffers {
        tokens: &mut tokens,
        q: &mut q,
        scratch: &mut scratch,
    };
    let mut speculator = Speculator::new(target, target_state, draft, settings, buffers)
        .map_err(|e| e.to_string())?;
    let mut round = vec![0u32; k + 1];
    let mut out = Vec::with_capacity(count);

    let begin = Instant::now();
    speculator.prefill(prompt).map_err(|e| e.to_string())?;
    'rounds: while out.len() < count {
        let emitted = speculator
            .step(count - out.len(), &mut round)
            .map_err(|e| e.to_string())?
            .emitted;
        for &token in &round[..emitted] {
            if token == BOS {
                break 'rounds;
            }
            out.push(token);
        }
    }
    let elapsed = begin.elapsed();
    Ok((out, speculator.stats(), elapsed))
}

/// Times plain and speculative greedy decoding of one configuration,
/// alternating, after one untimed run of each. Returns an error when the
/// two emit different tokens.
#[allow(clippy::too_many_arguments)]
fn measure_spec_row(
    target: &Transformer<'_>,
    target_memory: &mut AlignedBuf,
    draft: Option<&Transformer<'_>>,
    draft_memory: &mut AlignedBuf,
    k: usize,
    (prompt_label, prompt): (&str, &[u32]),
    draft_label: &str,
    plan: &SpecPlan,
) -> Result<SpecRow, String> {
    let mut plain_times = Vec::with_capacity(plan.reps);
    let mut spec_times = Vec::with_capacity(plan.reps);
    let mut row = SpecRow {
        prompt: prompt_label.to_owned(),
        draft: draft_label.to_owned(),
        k,
        generated: 0,
        stats: Stats::default(),
        plain_s: 0.0,
        spec_s: 0.0,
    };
    for rep in 0..=plan.reps {
        let mut state = RunState::new(&target.config, PREFILL_BATCH, target_memory.as_bytes_mut())
            .map_err(|e| e.to_string())?;
        let begin = Instant::now();
        let plain = plain_greedy(target, &mut state, prompt, plan.tokens)?;
        let plain_time = begin.elapsed();

        let draft = draft.map(|model| (model, &mut *draft_memory));
        let (spec, stats, spec_time) =
            speculative_greedy(target, target_memory, draft, k, prompt, plan.tokens)?;
        if let Some(i) = (0..plain.len().max(spec.len())).find(|&i| plain.get(i) != spec.get(i)) {
            return Err(format!(
                "speculative decoding with draft {draft_label}, K = {k}, prompt {prompt_label} \
                 emitted {:?} at generated token {i} where plain greedy decoding emitted {:?}; \
                 greedy speculative decoding must reproduce plain decoding",
                spec.get(i),
                plain.get(i)
            ));
        }
        row.generated = plain.len();
        row.stats = stats;
        // Repetition 0 is the warm-up.
        if rep > 0 {
            plain_times.push(plain_time.as_secs_f64());
            spec_times.push(spec_time.as_secs_f64());
        }
    }
    row.plain_s = median(&mut plain_times);
    row.spec_s = median(&mut spec_times);
    Ok(row)
}

/// Returns the first `words` whitespace-separated words of the target's
/// greedy continuation of BOS, SPEC_TOKENS tokens long. The 260K model soon
/// repeats its own phrases, which makes this text a prompt that prompt
/// lookup can draft from.
fn repetitive_prompt(
    target: &Transformer<'_>,
    tokenizer: &Tokenizer<'_>,
    memory: &mut AlignedBuf,
    words: usize,
) -> Result<String, String> {
    let mut state = RunState::new(&target.config, PREFILL_BATCH, memory.as_bytes_mut())
        .map_err(|e| e.to_string())?;
    let tokens = plain_greedy(target, &mut state, &[BOS], SPEC_TOKENS)?;
    let mut text = Vec::new();
    let mut prev = BOS;
    for &token in &tokens {
        let piece = tokenizer
            .decode(prev, token)
            .map_err(|e| format!("cannot decode token {token}: {e}"))?;
        text.extend_from_slice(piece);
        prev = token;
    }
    let text = String::from_utf8_lossy(&text);
    Ok(text
        .split_whitespace()
        .take(words)
        .collect::<Vec<_>>()
        .join(" "))
}

fn open_model<'a>(file: &'a MappedFile, path: &Path) -> Result<Transformer<'a>, String> {
    Transformer::new(file.bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs the speculative section on the models in `dir`: every draft source
/// at every K on the empty prompt and on "Once upon a time", and prompt
/// lookup also on the repetitive prompt.
fn measure_speculative(dir: &Path, plan: &SpecPlan) -> Result<SpecReport, String> {
    let target_file = MappedFile::open(&dir.join(TARGET_FILE))?;
    let target = open_model(&target_file, &dir.join(TARGET_FILE))?;
    let config = target.config;
    let seq_len = config.seq_len();

    let tokenizer_bytes = read_file(&dir.join(TOKENIZER_FILE))?;
    let mut index = vec![0u32; index_len(config.vocab_size())];
    let tokenizer = Tokenizer::new(&tokenizer_bytes, config.vocab_size(), &mut index)
        .map_err(|e| format!("{}: {e}", dir.join(TOKENIZER_FILE).display()))?;

    let draft_files = DRAFT_FILES
        .iter()
        .map(|name| MappedFile::open(&dir.join(name)))
        .collect::<Result<Vec<_>, _>>()?;
    let draft_models = draft_files
        .iter()
        .zip(DRAFT_FILES)
        .map(|(file, name)| open_model(file, &dir.join(name)))
        .collect::<Result<Vec<_>, _>>()?;

    // Draft sources as (label, model); `None` is prompt lookup.
    let mut sources: Vec<(String, Option<&Transformer<'_>>)> = DRAFT_FILES
        .iter()
        .zip(&draft_models)
        .map(|(name, model)| (name.to_string(), Some(model)))
        .collect();
    sources.push((format!("{TARGET_FILE} (the target)"), Some(&target)));
    sources.push((format!("lookup, n-gram <= {LOOKUP_NGRAM}"), None));

    // One buffer per model, reused by every run, so that pages are already
    // mapped when the clock runs.
    let max_k = plan.ks.iter().copied().max().unwrap_or(1);
    let target_size =
        state_size(&config, PREFILL_BATCH.max(max_k + 1)).map_err(|e| e.to_string())?;
    let mut target_memory = AlignedBuf::zeroed(target_size);
    let mut draft_size = 0;
    for (_, model) in &sources {
        if let Some(model) = model {
            let batch = (model.config.seq_len() / 2).clamp(2, DRAFT_BATCH);
            draft_size =
                draft_size.max(state_size(&model.config, batch).map_err(|e| e.to_string())?);
        }
    }
    let mut draft_memory = AlignedBuf::zeroed(draft_size);

    let repeat_prompt = repetitive_prompt(&target, &tokenizer, &mut target_memory, REPEAT_WORDS)?;
    let prompts = [
        ("empty", encode_prompt(&tokenizer, "", seq_len)?, false),
        (
            "\"Once upon a time\"",
            encode_prompt(&tokenizer, "Once upon a time", seq_len)?,
            false,
        ),
        (
            "repetitive",
            encode_prompt(&tokenizer, &repeat_prompt, seq_len)?,
            true,
        ),
    ];

    let mut rows = Vec::new();
    for (label, prompt, lookup_only) in &prompts {
        if prompt.len() + plan.tokens > seq_len {
            return Err(format!(
                "prompt {label} of {} tokens plus {} generated tokens exceeds the target's \
                 seq_len of {seq_len}",
                prompt.len(),
                plan.tokens
            ));
        }
        for (draft_label, draft) in &sources {
            if *lookup_only && draft.is_some() {
                continue;
            }
            for &k in &plan.ks {
                eprintln!(
                    "measuring speculative decoding: prompt {label}, draft {draft_label}, K = {k}"
                );
                rows.push(measure_spec_row(
                    &target,
                    &mut target_memory,
                    *draft,
                    &mut draft_memory,
                    k,
                    (label, prompt),
                    draft_label,
                    plan,
                )?);
            }
        }
    }
    Ok(SpecReport {
        rows,
        repeat_prompt_tokens: prompts[2].1.len(),
        repeat_prompt,
        plan: plan.clone(),
    })
}

/// Formats the speculative section.
fn render_speculative(report: &SpecReport, markdown: bool) -> String {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut table = vec![vec![
        "prompt".to_owned(),
        "draft".to_owned(),
        "K".to_owned(),
        "tokens".to_owned(),
        "accepted / drafted".to_owned(),
        "acceptance".to_owned(),
        "tokens per target pass".to_owned(),
        "target passes".to_owned(),
        "draft passes".to_owned(),
        "plain ms".to_owned(),
        "speculative ms".to_owned(),
        "speedup".to_owned(),
    ]];
    for r in &report.rows {
        let s = &r.stats;
        table.push(vec![
            r.prompt.clone(),
            r.draft.clone(),
            r.k.to_string(),
            r.generated.to_string(),
            format!("{} / {}", s.accepted, s.drafted),
            format!("{:.1}%", 100.0 * ratio(s.accepted, s.drafted)),
            format!("{:.2}", ratio(s.emitted, s.rounds)),
            s.target_forwards.to_string(),
            s.draft_forwards.to_string(),
            format!("{:.2}", r.plain_s * 1e3),
            format!("{:.2}", r.spec_s * 1e3),
            format!("{:.2}x", r.plain_s / r.spec_s),
        ]);
    }
    let plan = &report.plan;
    let mut out = format!(
        "\nSpeculative decoding: target {TARGET_FILE}, greedy, {} generated tokens or until BOS, \
         one thread; median of {} timed repetitions after one warm-up, plain and speculative \
         alternating; speedup = plain time / speculative time. Target passes include prefill.\n\
         Repetitive prompt ({} tokens with BOS): {}\n\n",
        plan.tokens, plan.reps, report.repeat_prompt_tokens, report.repeat_prompt
    );
    out.push_str(&render_table(&table, markdown));
    out.push_str(&format!(
        "\nAll {} speculative runs emitted the same tokens as plain greedy decoding.\n",
        report.rows.len() * (plan.reps + 1)
    ));
    out
}

/// Prints the 1-minute load average on stderr where Linux provides it. A
/// value well above 1 means other processes competed for the CPU or memory
/// bus during the run, and the figures are low or noisy.
fn report_load(when: &str) {
    let Ok(text) = std::fs::read_to_string("/proc/loadavg") else {
        return;
    };
    if let Some(load) = text.split_whitespace().next() {
        eprintln!("load average (1 min) at {when}: {load}");
    }
}

/// Runs `specdec bench` with the arguments after `bench`.
pub fn main(args: &[String]) -> Result<(), String> {
    let args = match parse(args)? {
        Command::Help => {
            print!("{HELP}");
            return Ok(());
        }
        Command::Run(args) => args,
    };
    if cfg!(debug_assertions) {
        eprintln!("note: this is a debug build; build with --release for meaningful numbers");
    }
    let start = Instant::now();
    let configs = configs(&args)?;
    // Check for the real models before the long synthetic part starts.
    let models = if args.speculative {
        Some(models_dir(&args)?)
    } else {
        None
    };
    let pools = args
        .threads
        .iter()
        .map(|&t| ThreadPool::new(t).map_err(|e| format!("cannot start {t} threads: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    report_load("start");

    if !configs.is_empty() {
        let largest = configs.iter().map(|(_, c)| weight_bytes(c)).max();
        let buffer = bandwidth_buffer_bytes(largest.unwrap_or(0));
        eprintln!("measuring memory read bandwidth over {} MiB", buffer / MIB);
        let bandwidths: Vec<(usize, f64)> = args
            .threads
            .iter()
            .copied()
            .zip(measure_bandwidth(buffer, BANDWIDTH_PASSES, &pools))
            .collect();

        let mut reports = Vec::with_capacity(configs.len());
        for (label, config) in &configs {
            let plan = Plan::for_config(config, args.tokens);
            eprintln!(
                "measuring {label} {}: decode {} tokens x {}, verify x {}, prefill {} tokens x {}; \
                 threads {:?}",
                format_label(config.format()),
                plan.decode_tokens,
                plan.decode_reps,
                plan.verify_reps,
                plan.prefill_tokens,
                plan.prefill_reps,
                args.threads
            );
            reports.push(measure_model(label, config, &plan, &pools, args.fast_math)?);
        }
        print!(
            "{}",
            render(&reports, &bandwidths, args.fast_math, args.markdown)
        );
        eprintln!(
            "synthetic checkpoints finished after {:.0} s",
            start.elapsed().as_secs_f64()
        );
    }

    if let Some(dir) = models {
        let spec_start = Instant::now();
        let plan = SpecPlan {
            tokens: SPEC_TOKENS,
            ks: SPEC_KS.to_vec(),
            reps: SPEC_REPS,
        };
        let report = measure_speculative(&dir, &plan)?;
        print!("{}", render_speculative(&report, args.markdown));
        eprintln!(
            "speculative section took {:.0} s",
            spec_start.elapsed().as_secs_f64()
        );
    }

    report_load("end");
    eprintln!("finished in {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run_args(list: &[&str]) -> BenchArgs {
        match parse(&args(list)) {
            Ok(Command::Run(run)) => run,
            other => panic!("expected a run, got {other:?}"),
        }
    }

    fn error(list: &[&str]) -> String {
        match parse(&args(list)) {
            Err(message) => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_cover_three_shapes() {
        let run = run_args(&[]);
        let labels: Vec<&str> = run.shapes.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["15M", "42M", "110M"]);
        assert_eq!(run.formats, [FormatName::V1, FormatName::V2]);
        assert_eq!(run.tokens, None);
        assert_eq!(run.group_size, None);
        assert!(!run.markdown);
        assert!(!run.fast_math);
        assert!(!run.speculative);
        assert_eq!(run.models, None);
    }

    #[test]
    fn threads_default_to_one_and_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let run = run_args(&[]);
        assert_eq!(run.threads[0], 1);
        assert_eq!(run.threads.last(), Some(&cores));
        assert!(run.threads.len() <= 2, "{:?}", run.threads);
    }

    #[test]
    fn threads_are_sorted_deduped_with_one() {
        assert_eq!(run_args(&["--threads", "4,2,4"]).threads, [1, 2, 4]);
        assert_eq!(run_args(&["--threads", "1"]).threads, [1]);
        assert_eq!(run_args(&["--threads", " 3 , 1 "]).threads, [1, 3]);
    }

    #[test]
    fn speculative_flags_parse() {
        let run = run_args(&["--speculative", "--models", "/m", "--fast-math"]);
        assert!(run.speculative);
        assert!(run.fast_math);
        assert_eq!(run.models, Some(PathBuf::from("/m")));
    }

    #[test]
    fn shapes_none_is_empty() {
        assert!(run_args(&["--shapes", "none"]).shapes.is_empty());
    }

    #[test]
    fn speculative_without_models_is_error() {
        let run = run_args(&["--speculative"]);
        if std::env::var_os("SPECDEC_MODELS").is_none() {
            let err = models_dir(&run).unwrap_err();
            assert!(err.contains("--models DIR or set SPECDEC_MODELS"), "{err}");
        }
        let missing = run_args(&["--speculative", "--models", "/nonexistent-specdec-models"]);
        let err = models_dir(&missing).unwrap_err();
        assert!(err.contains("not found"), "{err}");
        assert!(err.contains("stories260K.bin"), "{err}");
    }

    #[test]
    fn all_flags_parse() {
        let run = run_args(&[
            "--shapes",
            "260K,15M",
            "--formats",
            "v2,v0,v2",
            "--tokens",
            "12",
            "--group-size",
            "4",
            "--markdown",
        ]);
        let labels: Vec<&str> = run.shapes.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["260K", "15M"]);
        assert_eq!(run.formats, [FormatName::V2, FormatName::V0]);
        assert_eq!(run.tokens, Some(12));
        assert_eq!(run.group_size, Some(4));
        assert!(run.markdown);
    }

    #[test]
    fn custom_shape_parses_as_one() {
        let run = run_args(&["--shapes", "64,128,2,4,4,256,64"]);
        assert_eq!(run.shapes.len(), 1);
        assert_eq!(run.shapes[0].1, [64, 128, 2, 4, 4, 256, 64]);
    }

    #[test]
    fn invalid_values_are_rejected() {
        assert!(error(&["--shapes", "15M,7B"]).contains("unknown shape '7B'"));
        assert!(error(&["--shapes", "15M,,42M"]).contains("unknown shape ''"));
        assert!(error(&["--formats", "v3"]).contains("unknown format 'v3'"));
        assert!(error(&["--tokens", "0"]).contains("invalid token count '0'"));
        assert!(error(&["--tokens", "x"]).contains("invalid token count 'x'"));
        assert!(error(&["--group-size", "-1"]).contains("invalid group size '-1'"));
        assert!(error(&["--tokens"]).contains("option '--tokens' needs a value"));
        assert!(error(&["--threads", "0"]).contains("invalid thread count '0'"));
        assert!(error(&["--threads", "2,x"]).contains("invalid thread count 'x'"));
        assert!(error(&["--threads", "2,,3"]).contains("invalid thread count ''"));
        assert!(error(&["--threads"]).contains("option '--threads' needs a value"));
        assert!(error(&["--models"]).contains("option '--models' needs a value"));
        assert!(error(&["--speed"]).contains("unknown option '--speed'"));
    }

    #[test]
    fn help_wins_anywhere() {
        assert_eq!(
            parse(&args(&["--tokens", "x", "--help"])),
            Ok(Command::Help)
        );
    }

    #[test]
    fn group_size_defaults_per_shape() {
        let shape = |name| parse_shape(name).unwrap();
        assert_eq!(group_size_for("15M", shape("15M"), None), Ok(32));
        assert_eq!(group_size_for("42M", shape("42M"), None), Ok(32));
        assert_eq!(group_size_for("110M", shape("110M"), None), Ok(64));
        assert_eq!(group_size_for("260K", shape("260K"), None), Ok(4));
        let err = group_size_for("42M", shape("42M"), Some(64)).unwrap_err();
        assert!(err.contains("group size 64 does not divide"), "{err}");
    }

    #[test]
    fn weight_bytes_match_checkpoint_size() {
        // A v1 or v2 file with a shared classifier contains only the header
        // and the weights that every decode step reads.
        let config = config_for(parse_shape("260K").unwrap(), Format::V1, true).unwrap();
        let header = config.format().header_len() as u64;
        assert_eq!(weight_bytes(&config), config.file_len().unwrap() - header);
        let q8 = config_for(
            parse_shape("260K").unwrap(),
            Format::V2 { group_size: 4 },
            true,
        )
        .unwrap();
        assert_eq!(
            weight_bytes(&q8),
            q8.file_len().unwrap() - q8.format().header_len() as u64
        );
    }

    #[test]
    fn smoke_260k_ratios_are_positive() {
        let plan = Plan {
            decode_tokens: 8,
            decode_reps: 2,
            verify_reps: 1,
            prefill_tokens: 40,
            prefill_reps: 1,
        };
        let shape = parse_shape("260K").unwrap();
        let pools = [ThreadPool::new(1).unwrap(), ThreadPool::new(2).unwrap()];
        let mut reports = Vec::new();
        for format in [Format::V1, Format::V2 { group_size: 4 }] {
            let config = config_for(shape, format, true).unwrap();
            let report = measure_model("260K", &config, &plan, &pools, true).unwrap();
            let values = [
                report.decode_tok_s,
                report.decode_bandwidth(),
                report.prefill_batched_tok_s,
                report.prefill_single_tok_s,
                report.verify_base.as_secs_f64(),
            ];
            for value in values.iter().chain(&report.verify_ratios) {
                assert!(value.is_finite(), "{report:?}");
                assert!(*value > 0.0, "{report:?}");
            }
            let threads: Vec<usize> = report.by_threads.iter().map(|t| t.threads).collect();
            assert_eq!(threads, [1, 2]);
            for t in &report.by_threads {
                assert!(t.decode_tok_s > 0.0, "{report:?}");
                assert!(t.verify_ratios.iter().all(|r| *r > 0.0), "{report:?}");
                // Only fp32 has relaxed kernels.
                let fp32 = config.format().group_size().is_none();
                assert_eq!(t.relaxed_tok_s.is_some(), fp32, "{report:?}");
            }
            reports.push(report);
        }
        let bandwidths = measure_bandwidth(MIB, 2, &pools);
        assert_eq!(bandwidths.len(), 2);
        for bandwidth in &bandwidths {
            assert!(bandwidth.is_finite(), "{bandwidth}");
            assert!(*bandwidth > 0.0, "{bandwidth}");
        }
        let pairs = [(1, bandwidths[0]), (2, bandwidths[1])];
        let table = render(&reports, &pairs, true, true);
        assert!(table.contains("| shape"), "{table}");
        assert!(table.contains("| verify n=9 |"), "{table}");
        assert!(table.contains("| relaxed / exact |"), "{table}");
        assert!(table.contains("2 threads"), "{table}");
    }

    #[test]
    fn speculative_smoke_on_real_models() {
        let Some(dir) = std::env::var_os("SPECDEC_MODELS") else {
            println!(
                "SKIPPED: SPECDEC_MODELS is unset, so the speculative bench smoke test did not run"
            );
            return;
        };
        let plan = SpecPlan {
            tokens: 12,
            ks: vec![2],
            reps: 1,
        };
        // measure_speculative returns an error when any speculative run's
        // tokens differ from plain greedy decoding.
        let report = measure_speculative(Path::new(&dir), &plan).unwrap();
        // Four draft sources on two prompts, and lookup on the third.
        assert_eq!(report.rows.len(), 9, "{report:?}");
        assert!(
            report.repeat_prompt.starts_with("Once upon a time"),
            "{report:?}"
        );
        for row in &report.rows {
            let s = &row.stats;
            assert_eq!(row.k, 2);
            assert!(row.generated <= plan.tokens, "{row:?}");
            assert!(s.accepted <= s.drafted, "{row:?}");
            assert!(s.drafted <= 2 * s.rounds, "{row:?}");
            assert_eq!(s.emitted, s.accepted + s.rounds, "{row:?}");
            assert!(s.emitted >= row.generated as u64, "{row:?}");
            assert!(s.target_forwards >= s.rounds, "{row:?}");
            if row.draft.starts_with("lookup") {
                assert_eq!(s.draft_forwards, 0, "{row:?}");
            } else {
                assert!(s.draft_forwards > 0, "{row:?}");
            }
            // Drafting the target with itself accepts every greedy draft.
            if row.draft.contains("(the target)") {
                assert_eq!(s.accepted, s.drafted, "{row:?}");
            }
            assert!(row.plain_s > 0.0, "{row:?}");
            assert!(row.spec_s > 0.0, "{row:?}");
        }
        let table = render_speculative(&report, true);
        assert!(table.contains("| prompt"), "{table}");
        assert!(table.contains("emitted the same tokens"), "{table}");
    }
}
