//! The generate and chat loops, printing exactly what run.c prints.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use specdec_core::parallel::Parallel;
use specdec_core::tokenizer::{encode_capacity, BOS, EOS};
use specdec_core::{Logits, RunState, Sampler, Tokenizer, Transformer};

use crate::output::PieceWriter;

/// Largest number of prompt tokens one forward call takes while prefilling.
/// Batches give the same logits as single tokens; they only read each weight
/// once per batch instead of once per token.
pub const PREFILL_BATCH: usize = 32;

/// Counts and timing of one run, for the statistics on stderr.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Tokens in the prompt, BOS included.
    pub prompt_tokens: usize,
    /// Positions run through the model.
    pub positions: usize,
    /// Tokens sampled and printed.
    pub generated: usize,
    /// Wall-clock time of the whole run.
    pub elapsed: Duration,
}

/// Everything a loop needs: the model and its state, the tokenizer and the
/// sampler.
pub struct Session<'m, 's> {
    /// The model.
    pub model: &'m Transformer<'m>,
    /// Its run state.
    pub state: &'s mut RunState<'s>,
    /// The tokenizer for the model's vocabulary.
    pub tokenizer: &'m Tokenizer<'m>,
    /// The sampler.
    pub sampler: &'s mut Sampler<'s>,
    /// Threads for forward passes.
    pub par: &'m dyn Parallel,
}

/// Encodes `text` with BOS and checks that the tokens fit in the context.
pub fn encode_prompt(
    tokenizer: &Tokenizer<'_>,
    text: impl AsRef<[u8]>,
    seq_len: usize,
) -> Result<Vec<u32>, String> {
    let text = text.as_ref();
    // Every token covers at most max_token_length bytes of the text (plus the
    // dummy-prefix space), so a text too long for the context is rejected
    // before the quadratic merge loop runs on it.
    let max_len = tokenizer.max_token_length().max(1);
    let lower_bound = 1 + (text.len() + 1).div_ceil(max_len);
    if !text.is_empty() && lower_bound > seq_len {
        return Err(format!(
            "prompt is {} bytes, at least {lower_bound} tokens, but the model's context (seq_len) is \
             {seq_len} tokens; shorten the prompt",
            text.len()
        ));
    }
    let capacity = encode_capacity(text.len());
    let mut tokens = vec![0u32; capacity];
    let mut scratch = vec![0u32; capacity];
    let n = tokenizer
        .encode(text, true, false, &mut tokens, &mut scratch)
        .map_err(|e| format!("cannot encode the prompt: {e}"))?;
    tokens.truncate(n);
    if n > seq_len {
        return Err(format!(
            "prompt is {n} tokens but the model's context (seq_len) is {seq_len} tokens; shorten the prompt"
        ));
    }
    Ok(tokens)
}

/// Forwards `tokens` at positions `pos..` in batches of at most the state's
/// maximum batch and returns the logits of the last token.
fn prefill<'s>(
    model: &Transformer<'_>,
    state: &'s mut RunState<'_>,
    tokens: &[u32],
    pos: usize,
    par: &dyn Parallel,
) -> Result<&'s mut [f32], String> {
    let batch = state.max_batch();
    let mut at = 0;
    while tokens.len() - at > batch {
        model
            .forward_parallel(state, &tokens[at..at + batch], pos + at, Logits::Last, par)
            .map_err(|e| e.to_string())?;
        at += batch;
    }
    model
        .forward_parallel(state, &tokens[at..], pos + at, Logits::Last, par)
        .map_err(|e| e.to_string())
}

/// Continues `prompt` for up to `steps` positions (prompt included), as
/// run.c's `generate`: prompt tokens are printed as they are consumed, then
/// sampled tokens until `steps` or a sampled BOS.
pub fn generate<W: Write>(
    session: &mut Session<'_, '_>,
    prompt: &[u32],
    steps: usize,
    out: &mut PieceWriter<W>,
) -> Result<RunStats, String> {
    let start = Instant::now();
    let model = session.model;
    let tokenizer = session.tokenizer;
    let io_error = crate::output::write_error;
    let mut stats = RunStats {
        prompt_tokens: prompt.len(),
        ..RunStats::default()
    };

    // Run the prompt through the model in batches. Only the last prompt
    // token's logits are sampled from, and only if it is within `steps`.
    let fed = prompt.len().min(steps);
    let mut logits = if fed > 0 {
        Some(prefill(
            model,
            session.state,
            &prompt[..fed],
            0,
            session.par,
        )?)
    } else {
        None
    };
    stats.positions = fed;

    if print_prompt(tokenizer, prompt, fed, out)? {
        out.write_raw(b"\n").map_err(io_error)?;
        stats.elapsed = start.elapsed();
        return Ok(stats);
    }

    if fed == prompt.len() {
        let mut token = prompt[prompt.len() - 1];
        let mut pos = prompt.len();
        while let Some(row) = logits.take() {
            let next = session.sampler.sample(row).map_err(|e| e.to_string())?;
            if next == BOS {
                break;
            }
            out.write_piece(decode(tokenizer, token, next)?)
                .map_err(io_error)?;
            out.flush().map_err(io_error)?;
            stats.generated += 1;
            token = next;
            if pos >= steps {
                break;
            }
            logits = Some(
                model
                    .forward_parallel(session.state, &[token], pos, Logits::Last, session.par)
                    .map_err(|e| e.to_string())?,
            );
            pos += 1;
            stats.positions = pos;
        }
    }
    out.write_raw(b"\n").map_err(io_error)?;
    out.flush().map_err(io_error)?;
    stats.elapsed = start.elapsed();
    Ok(stats)
}

/// Prints the pieces of the prompt tokens that run.c forces within the first
/// `fed` positions. Returns true when a prompt token is BOS, where run.c
/// stops generating.
pub fn print_prompt<W: Write>(
    tokenizer: &Tokenizer<'_>,
    prompt: &[u32],
    fed: usize,
    out: &mut PieceWriter<W>,
) -> Result<bool, String> {
    let io_error = crate::output::write_error;
    for pos in 0..fed.min(prompt.len() - 1) {
        let next = prompt[pos + 1];
        if next == BOS {
            return Ok(true);
        }
        out.write_piece(decode(tokenizer, prompt[pos], next)?)
            .map_err(io_error)?;
    }
    out.flush().map_err(io_error)?;
    Ok(false)
}

fn decode<'t>(tokenizer: &Tokenizer<'t>, prev: u32, token: u32) -> Result<&'t [u8], String> {
    tokenizer
        .decode(prev, token)
        .map_err(|e| format!("cannot decode token {token}: {e}"))
}

/// Renders one user turn in the Llama 2 chat template, with the system
/// prompt on the first turn only. Prompts are bytes: run.c takes any.
pub fn render_chat_turn(system_prompt: Option<&[u8]>, user_prompt: &[u8]) -> Vec<u8> {
    let mut rendered = Vec::new();
    match system_prompt {
        Some(system) if !system.is_empty() => {
            rendered.extend_from_slice(b"[INST] <<SYS>>\n");
            rendered.extend_from_slice(system);
            rendered.extend_from_slice(b"\n<</SYS>>\n\n");
        }
        _ => rendered.extend_from_slice(b"[INST] "),
    }
    rendered.extend_from_slice(user_prompt);
    rendered.extend_from_slice(b" [/INST]");
    rendered
}

/// Reads one line from `input` after printing `guide`, without its line
/// ending. Returns `None` at the end of input. The line may be any bytes.
fn read_line<R: BufRead, W: Write>(
    guide: &str,
    input: &mut R,
    out: &mut PieceWriter<W>,
) -> Result<Option<Vec<u8>>, String> {
    out.write_raw(guide.as_bytes())
        .map_err(crate::output::write_error)?;
    out.flush().map_err(crate::output::write_error)?;
    let mut line = Vec::new();
    let n = input
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    if n == 0 {
        return Ok(None);
    }
    if line.ends_with(b"\n") {
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
    }
    Ok(Some(line))
}

/// Llama 2 chat, as run.c's `chat`: user turns come from `-i` and then from
/// `input`, the assistant replies until it samples EOS, and the run ends after
/// `steps` positions or at the end of input.
///
/// Unlike run.c, prompts have no length limit other than the model's
/// context. As in run.c the sampler draws once per position, prompt
/// positions included, so the random stream matches run.c's.
pub fn chat<R: BufRead, W: Write>(
    session: &mut Session<'_, '_>,
    user_prompt: Option<&[u8]>,
    system_prompt: Option<&[u8]>,
    steps: usize,
    input: &mut R,
    out: &mut PieceWriter<W>,
) -> Result<RunStats, String> {
    let start = Instant::now();
    let model = session.model;
    let seq_len = model.config.seq_len();
    let io_error = crate::output::write_error;
    let mut stats = RunStats::default();

    // At the end of input the system prompt is empty, and a user prompt
    // from -i still gets its answer.
    let system = match system_prompt {
        Some(s) => Some(s.to_owned()),
        None => read_line("Enter system prompt (optional): ", input, out)?,
    };

    let mut pos = 0;
    let mut first_turn = true;
    'turns: while pos < steps {
        let user = if first_turn && user_prompt.is_some() {
            user_prompt.unwrap_or_default().to_owned()
        } else {
            match read_line("User: ", input, out)? {
                Some(line) => line,
                None => break,
            }
        };
        let rendered = render_chat_turn(if first_turn { system.as_deref() } else { None }, &user);
        first_turn = false;
        let tokens = encode_prompt(session.tokenizer, &rendered, seq_len)?;
        if pos + tokens.len() > seq_len {
            return Err(format!(
                "the conversation needs {} positions but the model's context (seq_len) is {seq_len}; \
                 start a new chat or use shorter turns",
                pos + tokens.len()
            ));
        }
        stats.prompt_tokens += tokens.len();
        out.write_raw(b"Assistant: ").map_err(io_error)?;

        // The user's tokens, up to `steps`. run.c samples after every
        // position and discards the samples of all but the last prompt
        // token; one random draw per discarded sample keeps the stream equal.
        // NOTE: run.c also prints a newline when one of those discarded
        // samples is EOS; batched prefill has no logits for them, so this
        // loop does not.
        let fed = tokens.len().min(steps - pos);
        let logits = prefill(model, session.state, &tokens[..fed], pos, session.par)?;
        pos += fed;
        for _ in 1..fed {
            session.sampler.skip_draw();
        }
        if fed < tokens.len() {
            break 'turns;
        }
        let mut token = tokens[tokens.len() - 1];
        let mut next = session.sampler.sample(logits).map_err(|e| e.to_string())?;

        // The assistant's turn. As in run.c, a sampled EOS prints a newline,
        // is fed to the model once more, and the sample after it is printed
        // too before the turn goes back to the user.
        loop {
            if next == EOS {
                out.write_raw(b"\n").map_err(io_error)?;
            } else {
                out.write_piece(decode(session.tokenizer, token, next)?)
                    .map_err(io_error)?;
                stats.generated += 1;
            }
            out.flush().map_err(io_error)?;
            if token == EOS {
                break;
            }
            if pos >= steps {
                break 'turns;
            }
            token = next;
            let logits = model
                .forward_parallel(session.state, &[token], pos, Logits::Last, session.par)
                .map_err(|e| e.to_string())?;
            pos += 1;
            next = session.sampler.sample(logits).map_err(|e| e.to_string())?;
        }
    }
    stats.positions = pos;
    out.write_raw(b"\n").map_err(io_error)?;
    out.flush().map_err(io_error)?;
    stats.elapsed = start.elapsed();
    Ok(stats)
}
