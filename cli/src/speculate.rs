//! `specdec MODEL -d DRAFT` and `--lookup N`: generation by speculative
//! decoding, with the same stdout rules as plain generation.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use specdec_core::ops::Math;
use specdec_core::parallel::Parallel;
use specdec_core::sampler::ProbIndex;
use specdec_core::speculative::{Buffers, Draft, Settings, SpecError, Speculator, Stats};
use specdec_core::tokenizer::BOS;
use specdec_core::{state_size, RunState, Tokenizer, Transformer};

use crate::args::{ColorChoice, DraftArg, RunArgs};
use crate::load::{AlignedBuf, MappedFile};
use crate::output::PieceWriter;
use crate::run::{print_prompt, PREFILL_BATCH};

/// ANSI colour of accepted draft tokens (green), and the reset.
const ACCEPTED_COLOR: &[u8] = b"\x1b[32m";
const RESET_COLOR: &[u8] = b"\x1b[0m";

/// Largest batch the draft model takes when it catches up or re-fills its
/// window; a draft with seq_len up to 256 re-fills in one call.
const DRAFT_BATCH: usize = 128;

/// Counts and timing of a speculative run.
pub struct SpecReport {
    /// Tokens in the prompt, BOS included.
    pub prompt_tokens: usize,
    /// Tokens printed after the prompt.
    pub generated: usize,
    /// The core's counts. Its accepted and emitted counts include tokens
    /// after a sampled BOS, which are not output.
    pub stats: Stats,
    /// Accepted draft tokens that were output.
    pub accepted: u64,
    /// Tokens output by rounds, the BOS that ended the run excluded.
    pub emitted: u64,
    /// Time spent drafting.
    pub draft_time: Duration,
    /// Time spent in target forward passes, prefill included.
    pub target_time: Duration,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

/// Whether to colour, given `--color` and the environment.
pub fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stdout().is_terminal()
        }
    }
}

/// The target model and what runs it.
pub struct Target<'a> {
    /// The target model.
    pub model: &'a Transformer<'a>,
    /// The tokenizer of its vocabulary.
    pub tokenizer: &'a Tokenizer<'a>,
    /// Threads for the forward passes of both models.
    pub par: &'a dyn Parallel,
}

/// Generates with speculative decoding and prints what plain generation
/// would print for the same `steps`, with accepted drafts coloured if asked.
pub fn generate<W: Write>(
    run: &RunArgs,
    target: &Target<'_>,
    prompt: &[u32],
    steps: usize,
    seed: u64,
    out: &mut PieceWriter<W>,
) -> Result<SpecReport, String> {
    let start = Instant::now();
    let Target {
        model: target,
        tokenizer,
        par,
    } = *target;
    let spec = run.speculative.as_ref().ok_or("no draft source")?;
    let config = target.config;
    let vocab = config.vocab_size();
    let io_error = crate::output::write_error;
    let color = use_color(run.color);
    let math = if run.fast_math {
        Math::Relaxed
    } else {
        Math::Exact
    };

    // Load the draft model first, so that a bad draft fails before any work.
    let draft_file;
    let draft_model;
    let mut draft_memory;
    let draft = match &spec.draft {
        DraftArg::Lookup(max_ngram) => Draft::Lookup {
            max_ngram: *max_ngram,
        },
        DraftArg::Model(path) => {
            draft_file = MappedFile::open(path).map_err(|e| format!("draft {e}"))?;
            draft_model = Transformer::new(draft_file.bytes())
                .map_err(|e| format!("draft {}: {e}", path.display()))?;
            let draft_config = draft_model.config;
            if draft_config.vocab_size() != vocab {
                return Err(format!(
                    "draft {}: vocabulary has {} tokens but the target's has {vocab}; use a draft trained with \
                     the target's tokenizer",
                    path.display(),
                    draft_config.vocab_size()
                ));
            }
            if spec.k >= draft_config.seq_len() / 2 {
                return Err(format!(
                    "-k {} is too long for the draft's context of {} tokens; use a K below {}",
                    spec.k,
                    draft_config.seq_len(),
                    draft_config.seq_len() / 2
                ));
            }
            let batch = (draft_config.seq_len() / 2).clamp(2, DRAFT_BATCH);
            draft_memory =
                AlignedBuf::zeroed(state_size(&draft_config, batch).map_err(|e| e.to_string())?);
            let mut state = RunState::new(&draft_config, batch, draft_memory.as_bytes_mut())
                .map_err(|e| e.to_string())?;
            state.set_math(math);
            Draft::Model {
                model: &draft_model,
                state,
            }
        }
    };

    let batch = PREFILL_BATCH.max(spec.k + 1);
    let mut target_memory =
        AlignedBuf::zeroed(state_size(&config, batch).map_err(|e| e.to_string())?);
    let mut target_state =
        RunState::new(&config, batch, target_memory.as_bytes_mut()).map_err(|e| e.to_string())?;
    target_state.set_math(math);

    let settings = Settings {
        k_max: spec.k,
        temperature: run.temperature,
        topp: run.topp,
        draft_p_min: spec.draft_p_min,
        adaptive: spec.adaptive,
        seed,
    };
    let (tokens_len, q_len, scratch_len) = Buffers::lengths(target, spec.k);
    let mut tokens = vec![0u32; tokens_len];
    let mut q = vec![0f32; q_len];
    let mut scratch = vec![ProbIndex::default(); scratch_len];
    let buffers = Buffers {
        tokens: &mut tokens,
        q: &mut q,
        scratch: &mut scratch,
    };
    let spec_error = |e: SpecError| e.to_string();
    let mut speculator =
        Speculator::new(target, target_state, draft, settings, buffers).map_err(spec_error)?;
    speculator.set_parallel(par);

    let mut report = SpecReport {
        prompt_tokens: prompt.len(),
        generated: 0,
        stats: Stats::default(),
        accepted: 0,
        emitted: 0,
        draft_time: Duration::ZERO,
        target_time: Duration::ZERO,
        elapsed: Duration::ZERO,
    };

    // The prompt prints exactly as in plain generation.
    let fed = prompt.len().min(steps);
    let prefill_start = Instant::now();
    speculator.prefill(prompt).map_err(spec_error)?;
    report.target_time += prefill_start.elapsed();
    let stopped = print_prompt(tokenizer, prompt, fed, out)?;

    // Plain generation samples one token at each position from the last
    // prompt token up to steps - 1.
    let budget = if stopped || fed < prompt.len() {
        0
    } else {
        steps + 1 - prompt.len()
    };
    let mut round_tokens = vec![0u32; spec.k + 1];
    let mut prev = prompt[prompt.len() - 1];
    'rounds: while report.generated < budget {
        let remaining = budget - report.generated;
        let t0 = Instant::now();
        speculator.propose(remaining).map_err(spec_error)?;
        let t1 = Instant::now();
        let round = speculator.verify(&mut round_tokens).map_err(spec_error)?;
        report.draft_time += t1 - t0;
        report.target_time += t1.elapsed();

        for (i, &token) in round_tokens[..round.emitted].iter().enumerate() {
            if token == BOS {
                // Tokens after a sampled BOS are never output, so they do not
                // count as accepted or emitted either.
                report.accepted += i.min(round.accepted) as u64;
                report.emitted += i as u64;
                break 'rounds;
            }
            let piece = tokenizer
                .decode(prev, token)
                .map_err(|e| format!("cannot decode token {token}: {e}"))?;
            let accepted = i < round.accepted;
            if color && accepted {
                out.write_control(ACCEPTED_COLOR).map_err(io_error)?;
            }
            out.write_piece(piece).map_err(io_error)?;
            if color && accepted {
                out.write_control(RESET_COLOR).map_err(io_error)?;
            }
            report.generated += 1;
            prev = token;
        }
        report.accepted += round.accepted as u64;
        report.emitted += round.emitted as u64;
        out.flush().map_err(io_error)?;
    }
    out.write_raw(b"\n").map_err(io_error)?;
    out.flush().map_err(io_error)?;
    report.stats = speculator.stats();
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Prints the statistics block on stderr.
pub fn print_report(report: &SpecReport) {
    let s = &report.stats;
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let seconds = report.elapsed.as_secs_f64();
    let draft = report.draft_time.as_secs_f64();
    let target = report.target_time.as_secs_f64();
    let busy = (draft + target).max(f64::MIN_POSITIVE);
    eprintln!("prompt tokens:           {}", report.prompt_tokens);
    eprintln!("generated tokens:        {}", report.generated);
    eprintln!("drafted tokens:          {}", s.drafted);
    eprintln!("accepted tokens:         {}", report.accepted);
    eprintln!(
        "acceptance rate:         {:.1}% (accepted / drafted)",
        100.0 * ratio(report.accepted, s.drafted)
    );
    eprintln!(
        "tokens per target pass:  {:.2} (emitted / verify passes)",
        ratio(report.emitted, s.rounds)
    );
    eprintln!(
        "target forward passes:   {} ({} verify, {} prefill)",
        s.target_forwards,
        s.rounds,
        s.target_forwards - s.rounds
    );
    eprintln!("draft forward passes:    {}", s.draft_forwards);
    eprintln!(
        "draft window re-fills:   {} (last draft token at position {})",
        s.draft_refills, s.max_draft_position
    );
    eprintln!(
        "tok/s:                   {:.2} (generated tokens over the whole run)",
        if seconds > 0.0 {
            report.generated as f64 / seconds
        } else {
            0.0
        }
    );
    eprintln!(
        "time:                    {:.3} s; draft {:.3} s ({:.0}%), target {:.3} s ({:.0}%)",
        seconds,
        draft,
        100.0 * draft / busy,
        target,
        100.0 * target / busy
    );
}
