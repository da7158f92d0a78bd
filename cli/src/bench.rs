//! `specdec bench`: times decoding, verify passes and prefill on synthetic
//! checkpoints, and the machine's memory read bandwidth, in one process on
//! one thread.
//!
//! Every figure is the median of several timed repetitions that follow an
//! untimed warm-up, and every ratio divides two medians from the same run.
//! docs/BENCHMARKS.md describes the method and records one run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use specdec_core::synthetic::write_checkpoint;
use specdec_core::{state_size, Config, Format, Logits, RunState, Transformer};

use crate::gen::{config_for, parse_shape};
use crate::load::AlignedBuf;

/// The `specdec bench --help` text.
pub const HELP: &str = "\
Usage: specdec bench [options]

Times the engine on synthetic checkpoints (seeded random weights, see
specdec gen) on one thread, and prints one table row per shape and format:
decode tok/s, weight bytes per token and the read bandwidth they imply, the
cost of one verify pass of n = 2..9 tokens relative to 1 token, prefill tok/s
in batches of 32 and one token at a time, and the machine's memory read
bandwidth for comparison. Build with --release, because debug builds are many
times slower.

Options:
  --shapes <list>       comma-separated shape names from 15M, 42M, 110M, 260K,
                        or one shape as seven comma-separated sizes
                        dim,hidden_dim,n_layers,n_heads,n_kv_heads,vocab_size,seq_len;
                        default 15M,42M,110M
  --formats <list>      comma-separated formats from v0 (legacy fp32), v1 (fp32)
                        and v2 (Q8_0); default v1,v2
  --tokens <int>        decode tokens per repetition, clamped to each shape's
                        seq_len; default 64, or 32 for shapes of 60M weights
                        or more such as 110M
  --group-size <int>    Q8_0 group size for v2; it must divide dim and
                        hidden_dim of every shape. Default: the largest of
                        64, 32, 16, ..., 1 that divides both, per shape
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
        markdown: false,
    };
    let mut shapes = None;
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        if flag == "--markdown" {
            parsed.markdown = true;
            i += 1;
            continue;
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
            _ => return Err(format!("unknown option '{flag}'; see specdec bench --help")),
        }
        i += 2;
    }
    parsed.shapes = match shapes {
        Some(shapes) => shapes,
        None => parse_shapes("15M,42M,110M")?,
    };
    Ok(Command::Run(parsed))
}

fn parse_positive(value: &str) -> Option<usize> {
    value.parse().ok().filter(|&n| n > 0)
}

/// Parses a list of shape names, or one shape given as seven sizes.
fn parse_shapes(value: &str) -> Result<Vec<(String, [usize; 7])>, String> {
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
             separated by commas, or one shape as seven sizes \
             dim,hidden_dim,n_layers,n_heads,n_kv_heads,vocab_size,seq_len"
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
    /// Chooses counts so that a default run of 15M, 42M and 110M in v1 and
    /// v2 takes about three minutes with the scalar kernels, and under one
    /// with the AVX2 kernels, on one Zen 4 core. Bigger models get fewer
    /// tokens and repetitions. Prefill runs once above 30M weights, because
    /// each repetition forwards the 256-token prompt twice.
    fn for_config(config: &Config, tokens: Option<usize>) -> Plan {
        let params = weight_count(config);
        let (decode_tokens, decode_reps, prefill_reps) = if params < 30_000_000 {
            (64, 5, 3)
        } else if params < 60_000_000 {
            (64, 3, 1)
        } else {
            (32, 3, 1)
        };
        let seq_len = config.seq_len();
        Plan {
            decode_tokens: tokens.unwrap_or(decode_tokens).min(seq_len),
            decode_reps,
            verify_reps: 5,
            prefill_tokens: PREFILL_TOKENS.min(seq_len),
            prefill_reps,
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

/// Measurements of one shape in one format.
#[derive(Clone, Debug)]
struct ModelReport {
    shape: String,
    format: String,
    plan: Plan,
    weight_bytes: u64,
    decode_tok_s: f64,
    /// Median time of one 1-token call at position VERIFY_POS.
    verify_base: Duration,
    /// Time of one call of n tokens over the 1-token time, for n = 2..=9.
    verify_ratios: [f64; MAX_VERIFY - 1],
    prefill_batched_tok_s: f64,
    prefill_single_tok_s: f64,
}

impl ModelReport {
    /// Read bandwidth implied by decoding, in bytes per second.
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
) -> Result<Duration, String> {
    let begin = Instant::now();
    for (i, &token) in tokens.iter().enumerate() {
        let logits = model
            .forward(state, &[token], start + i, Logits::Last)
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
/// `reps` times, and returns the median 1-token time and the ratios.
fn measure_verify(
    model: &Transformer<'_>,
    state: &mut RunState<'_>,
    reps: usize,
) -> Result<(Duration, [f64; MAX_VERIFY - 1]), String> {
    let tokens = tokens_for(&model.config, VERIFY_POS + MAX_VERIFY);
    let (prefix, draft) = tokens.split_at(VERIFY_POS);
    run_batched(model, state, prefix, prefix.len())?;

    // One untimed call of the longest pass touches every row of the state
    // that the timed calls use.
    model
        .forward(state, draft, VERIFY_POS, Logits::All)
        .map_err(|e| e.to_string())?;

    // Each round times every length once, so a slow spell on the machine
    // affects all lengths alike.
    let mut times: Vec<Vec<f64>> = (0..MAX_VERIFY).map(|_| Vec::with_capacity(reps)).collect();
    for _ in 0..reps {
        for n in 1..=MAX_VERIFY {
            let begin = Instant::now();
            let logits = model
                .forward(state, &draft[..n], VERIFY_POS, Logits::All)
                .map_err(|e| e.to_string())?;
            black_box(logits[0]);
            times[n - 1].push(begin.elapsed().as_secs_f64());
        }
    }

    let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    let base = medians[0];
    let mut ratios = [0.0; MAX_VERIFY - 1];
    for (ratio, &time) in ratios.iter_mut().zip(&medians[1..]) {
        *ratio = time / base;
    }
    Ok((Duration::from_secs_f64(base), ratios))
}

/// Builds a synthetic checkpoint for `config` and measures it.
fn measure_model(shape: &str, config: &Config, plan: &Plan) -> Result<ModelReport, String> {
    let mut checkpoint = synthesize(config)?;
    let model = Transformer::new(checkpoint.as_bytes_mut()).map_err(|e| e.to_string())?;
    let max_batch = PREFILL_BATCH.max(MAX_VERIFY);
    let size = state_size(config, max_batch).map_err(|e| e.to_string())?;
    let mut memory = AlignedBuf::zeroed(size);
    let mut state =
        RunState::new(config, max_batch, memory.as_bytes_mut()).map_err(|e| e.to_string())?;

    // Decode, after an 8-token warm-up that runs every kernel once.
    let decode = tokens_for(config, plan.decode_tokens);
    run_single(&model, &mut state, &decode[..decode.len().min(8)], 0)?;
    let mut rates = Vec::with_capacity(plan.decode_reps);
    for _ in 0..plan.decode_reps {
        let elapsed = run_single(&model, &mut state, &decode, 0)?;
        rates.push(decode.len() as f64 / elapsed.as_secs_f64());
    }
    let decode_tok_s = median(&mut rates);

    let (verify_base, verify_ratios) = measure_verify(&model, &mut state, plan.verify_reps)?;

    // Prefill, batched and one token at a time, alternating so that both
    // see the same machine state. Decoding above served as the warm-up.
    let prompt = tokens_for(config, plan.prefill_tokens);
    let mut batched = Vec::with_capacity(plan.prefill_reps);
    let mut single = Vec::with_capacity(plan.prefill_reps);
    for _ in 0..plan.prefill_reps {
        let elapsed = run_batched(&model, &mut state, &prompt, PREFILL_BATCH)?;
        batched.push(prompt.len() as f64 / elapsed.as_secs_f64());
        let elapsed = run_single(&model, &mut state, &prompt, 0)?;
        single.push(prompt.len() as f64 / elapsed.as_secs_f64());
    }

    Ok(ModelReport {
        shape: shape.to_owned(),
        format: format_label(config.format()),
        plan: *plan,
        weight_bytes: weight_bytes(config),
        decode_tok_s,
        verify_base,
        verify_ratios,
        prefill_batched_tok_s: median(&mut batched),
        prefill_single_tok_s: median(&mut single),
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

/// Measures single-thread memory read bandwidth in bytes per second: the
/// median of BANDWIDTH_PASSES timed sums over a `bytes`-long f32 buffer.
fn measure_bandwidth(bytes: usize, passes: usize) -> f64 {
    // Writing every element commits the pages. A zeroed allocation could be
    // backed by one shared zero page and read at cache speed.
    let data: Vec<f32> = (0..bytes / 4).map(|i| (i % 7) as f32).collect();
    black_box(sum_lanes(black_box(&data)));
    let mut rates = Vec::with_capacity(passes);
    for _ in 0..passes {
        let begin = Instant::now();
        black_box(sum_lanes(black_box(&data)));
        rates.push((data.len() * 4) as f64 / begin.elapsed().as_secs_f64());
    }
    median(&mut rates)
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
fn render(reports: &[ModelReport], memory_bandwidth: f64, markdown: bool) -> String {
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

    let mut out = format!(
        "Memory read bandwidth, 1 thread: {:.2} GB/s (1 GB = 10^9 bytes)\n\n",
        memory_bandwidth / GB
    );
    out.push_str(&render_table(&main, markdown));
    out.push_str(&format!(
        "\nVerify pass: time of one forward call of n tokens at position {VERIFY_POS}, all \
         logits, over the time of one 1-token call\n\n"
    ));
    out.push_str(&render_table(&verify, markdown));
    out.push_str("\nTokens and repetitions; each figure is the median over the repetitions\n\n");
    out.push_str(&render_table(&counts, markdown));
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
    report_load("start");

    let largest = configs.iter().map(|(_, c)| weight_bytes(c)).max();
    let buffer = bandwidth_buffer_bytes(largest.unwrap_or(0));
    eprintln!("measuring memory read bandwidth over {} MiB", buffer / MIB);
    let memory_bandwidth = measure_bandwidth(buffer, BANDWIDTH_PASSES);

    let mut reports = Vec::with_capacity(configs.len());
    for (label, config) in &configs {
        let plan = Plan::for_config(config, args.tokens);
        eprintln!(
            "measuring {label} {}: decode {} tokens x {}, verify x {}, prefill {} tokens x {}",
            format_label(config.format()),
            plan.decode_tokens,
            plan.decode_reps,
            plan.verify_reps,
            plan.prefill_tokens,
            plan.prefill_reps
        );
        reports.push(measure_model(label, config, &plan)?);
    }

    print!("{}", render(&reports, memory_bandwidth, args.markdown));
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
        assert!(error(&["--threads", "2"]).contains("unknown option '--threads'"));
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
        for format in [Format::V1, Format::V2 { group_size: 4 }] {
            let config = config_for(shape, format, true).unwrap();
            let report = measure_model("260K", &config, &plan).unwrap();
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
        }
        let bandwidth = measure_bandwidth(MIB, 2);
        assert!(bandwidth.is_finite(), "{bandwidth}");
        assert!(bandwidth > 0.0, "{bandwidth}");
        let table = render(&[], bandwidth, true);
        assert!(table.contains("| shape"), "{table}");
    }
}
