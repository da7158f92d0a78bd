//! `specdec`: runs llama2.c checkpoints with run.c's interface and output.

mod args;
mod bench;
mod gen;
mod load;
mod output;
mod run;
mod speculate;

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;

use specdec_core::ops::Math;
use specdec_core::parallel::ThreadPool;
use specdec_core::sampler::ProbIndex;
use specdec_core::tokenizer::index_len;
use specdec_core::{state_size, RunState, Sampler, Tokenizer, Transformer};

use args::{Command, Mode, RunArgs};
use load::{read_file, AlignedBuf, MappedFile};
use output::PieceWriter;
use run::{RunStats, Session, PREFILL_BATCH};

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let result = match argv.first().and_then(|a| a.to_str()) {
        Some("bench") => utf8_args(&argv[1..]).and_then(|a| bench::main(&a)),
        Some("gen") => utf8_args(&argv[1..]).and_then(|a| gen::main(&a)),
        _ => match args::parse(&argv) {
            Ok(Command::Help) => print_stdout(args::HELP),
            Ok(Command::Run(run)) => run_model(&run),
            Err(e) => Err(e.to_string()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) if message == output::STDOUT_CLOSED => ExitCode::SUCCESS,
        Err(message) => {
            // stdout may hold a partial line of generated text.
            let _ = io::stdout().flush();
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Converts the arguments of a subcommand, which are all names, numbers or
/// paths that it prints back, to UTF-8.
fn utf8_args(args: &[OsString]) -> Result<Vec<String>, String> {
    args.iter()
        .map(|a| {
            a.clone().into_string().map_err(|a| {
                format!(
                    "argument '{}' is not valid UTF-8; pass it as UTF-8",
                    a.to_string_lossy()
                )
            })
        })
        .collect()
}

/// Writes help text to stdout, reporting a failed write instead of
/// panicking as `print!` would.
pub fn print_stdout(text: &str) -> Result<(), String> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) => Err(output::write_error(e)),
    }
}

/// Seeds from the clock when the seed is 0, as run.c does with
/// `(unsigned int)time(NULL)`.
fn effective_seed(seed: u64) -> u64 {
    if seed != 0 {
        return seed;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::from(now.as_secs() as u32)
}

fn run_model(run: &RunArgs) -> Result<(), String> {
    let model_file = MappedFile::open(&run.checkpoint)?;
    let model = Transformer::new(model_file.bytes())
        .map_err(|e| format!("{}: {e}", run.checkpoint.display()))?;
    let config = model.config;
    if run.fast_math && config.format().group_size().is_some() {
        eprintln!(
            "note: --fast-math changes only fp32 matmuls, and {} is Q8_0, so its output stays exact",
            run.checkpoint.display()
        );
    }

    // run.c runs seq_len positions for -n 0 and clamps larger values.
    let steps = if run.steps == 0 || run.steps > config.seq_len() {
        config.seq_len()
    } else {
        run.steps
    };

    let tokenizer_bytes = read_file(&run.tokenizer).map_err(|e| {
        if run.tokenizer_is_default {
            format!("{e}; pass the model's tokenizer with -z")
        } else {
            e
        }
    })?;
    let mut index = vec![0u32; index_len(config.vocab_size())];
    let tokenizer = Tokenizer::new(&tokenizer_bytes, config.vocab_size(), &mut index)
        .map_err(|e| format!("{}: {e}", run.tokenizer.display()))?;

    let mut scratch = vec![ProbIndex::default(); config.vocab_size()];
    let mut sampler = Sampler::new(
        config.vocab_size(),
        run.temperature,
        run.topp,
        effective_seed(run.seed),
        &mut scratch,
    )
    .map_err(|e| e.to_string())?;

    let size = state_size(&config, PREFILL_BATCH).map_err(|e| e.to_string())?;
    let mut memory = AlignedBuf::zeroed(size);
    let mut state =
        RunState::new(&config, PREFILL_BATCH, memory.as_bytes_mut()).map_err(|e| e.to_string())?;
    if run.fast_math {
        state.set_math(Math::Relaxed);
    }

    let threads = run
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool =
        ThreadPool::new(threads).map_err(|e| format!("cannot start {threads} threads: {e}"))?;

    let mut session = Session {
        model: &model,
        state: &mut state,
        tokenizer: &tokenizer,
        sampler: &mut sampler,
        par: &pool,
    };
    let stdout = io::stdout();
    let mut out = PieceWriter::new(stdout.lock());
    if run.speculative.is_some() {
        let prompt = run::encode_prompt(
            &tokenizer,
            run.prompt.as_deref().unwrap_or(b""),
            config.seq_len(),
        )?;
        let seed = effective_seed(run.seed);
        let target = speculate::Target {
            model: &model,
            tokenizer: &tokenizer,
            par: &pool,
        };
        let report = speculate::generate(run, &target, &prompt, steps, seed, &mut out)?;
        let _stdout = out.finish().map_err(crate::output::write_error)?;
        speculate::print_report(&report);
        return Ok(());
    }
    let stats = match run.mode {
        Mode::Generate => {
            let prompt = run::encode_prompt(
                &tokenizer,
                run.prompt.as_deref().unwrap_or(b""),
                config.seq_len(),
            )?;
            run::generate(&mut session, &prompt, steps, &mut out)?
        }
        Mode::Chat => {
            let stdin = io::stdin();
            run::chat(
                &mut session,
                run.prompt.as_deref(),
                run.system_prompt.as_deref(),
                steps,
                &mut stdin.lock(),
                &mut out,
            )?
        }
    };
    let _stdout = out.finish().map_err(crate::output::write_error)?;
    report(&stats);
    Ok(())
}

/// Prints run.c's throughput line on stderr.
fn report(stats: &RunStats) {
    let seconds = stats.elapsed.as_secs_f64();
    if stats.positions > 1 && seconds > 0.0 {
        eprintln!("achieved tok/s: {:.6}", stats.positions as f64 / seconds);
    }
}
