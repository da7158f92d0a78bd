//! Command-line parsing for `specdec MODEL [options]`, run.c's interface.
//!
//! run.c reads `-x value` pairs and silently clamps or ignores bad values;
//! here every invalid value is an error that names the flag, the value and
//! the accepted range.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::num::IntErrorKind;
use std::path::PathBuf;

/// The action a command line requests.
#[derive(Debug)]
pub enum Command {
    /// Print the help text.
    Help,
    /// Run a model, as run.c does.
    Run(RunArgs),
}

/// run.c's mode: `-m generate|chat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Continue a prompt.
    Generate,
    /// Llama 2 chat, reading user turns from stdin.
    Chat,
}

/// Settings of a run, with run.c's defaults.
#[derive(Debug)]
pub struct RunArgs {
    /// Checkpoint path.
    pub checkpoint: PathBuf,
    /// Tokenizer path (`-z`), default `tokenizer.bin` as in run.c.
    pub tokenizer: PathBuf,
    /// Whether `tokenizer` is the default, not given with `-z`.
    pub tokenizer_is_default: bool,
    /// Sampling temperature (`-t`), default 1.0; 0 is greedy.
    pub temperature: f32,
    /// Top-p (`-p`), default 0.9; 0 or 1 disables it.
    pub topp: f32,
    /// Random seed (`-s`); 0 or absent means the current time, as in run.c.
    pub seed: u64,
    /// Number of positions to run (`-n`), default 256; 0 means the model's
    /// seq_len, and larger values are clamped to it, as in run.c.
    pub steps: usize,
    /// Prompt (`-i`).
    pub prompt: Option<Vec<u8>>,
    /// Mode (`-m`).
    pub mode: Mode,
    /// System prompt for chat mode (`-y`).
    pub system_prompt: Option<Vec<u8>>,
    /// Speculative decoding settings; `None` for plain decoding.
    pub speculative: Option<SpecArgs>,
    /// When to colour accepted draft tokens (`--color`).
    pub color: ColorChoice,
    /// Worker threads (`-T`, `--threads`); `None` means one per available
    /// core.
    pub threads: Option<usize>,
    /// Use the relaxed fp32 kernels (`--fast-math`).
    pub fast_math: bool,
}

/// The source of draft tokens.
#[derive(Clone, Debug, PartialEq)]
pub enum DraftArg {
    /// A draft checkpoint (`-d`).
    Model(PathBuf),
    /// Prompt lookup with n-grams up to this length (`--lookup`).
    Lookup(usize),
}

/// Speculative decoding settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecArgs {
    /// The draft source.
    pub draft: DraftArg,
    /// Maximum draft tokens per round (`-k`), default 4.
    pub k: usize,
    /// Stop drafting when the draft's top probability is below this
    /// (`--draft-p-min`), default 0 (never).
    pub draft_p_min: f32,
    /// Adapt the draft length from recent acceptance (`--adaptive-k`).
    pub adaptive: bool,
}

/// `--color auto|always|never`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorChoice {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Largest `-k`: the core's limit on draft tokens per round.
pub const MAX_K: usize = specdec_core::speculative::MAX_K;

/// A command-line error: one line, naming the value and the fix.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The `--help` text.
pub const HELP: &str = "\
Usage: specdec MODEL [options]
       specdec gen OUTPUT [options]      (write a synthetic checkpoint; see specdec gen --help)
       specdec bench [options]           (time the engine; see specdec bench --help)

Runs a llama2.c checkpoint (legacy v0, v1, or Q8_0 v2) and prints the generated
text to stdout, as llama2.c's run.c does. Statistics go to stderr.

Example: specdec stories15M.bin -z tokenizer.bin -t 0.8 -n 256 -i \"Once upon a time\"

Options:
  -t <float>   temperature, 0 or a positive finite number, default 1.0; 0 picks
               the most likely token
  -p <float>   top-p (nucleus) threshold in [0, 1], default 0.9; 0 or 1 turns it off
  -s <int>     random seed, default 0, which seeds from the current time
  -n <int>     number of positions to run, prompt included, default 256;
               0 or more than the model's seq_len means seq_len
  -i <string>  input prompt
  -z <string>  tokenizer file, default tokenizer.bin
  -m <string>  mode: generate (default) or chat
  -y <string>  system prompt in chat mode
  -T, --threads <int>
               threads for the forward pass, 1 to 1024; default one per
               available core. The output is the same for any count.
  --fast-math  reorder and fuse fp32 dot products for speed; the output then
               differs from run.c's (see docs/BENCHMARKS.md for how much)
  -h, --help   print this help

Speculative decoding (generate mode):
  -d <string>          draft checkpoint with the same vocabulary as MODEL
  --lookup <int>       draft by prompt lookup with n-grams of up to this many
                       tokens, instead of a draft model
  -k <int>             maximum draft tokens per round, 1 to 64, default 4
  --draft-p-min <float>
                       stop drafting a round when the draft's most likely token
                       has a probability below this, in [0, 1]; default 0 (off)
  --adaptive-k         adapt the draft length within [1, K] from the last round
  --color <when>       colour accepted draft tokens: auto (default; when stdout
                       is a terminal and NO_COLOR is unset), always or never
  Statistics go to stderr. Greedy (-t 0) output is identical to plain decoding;
  sampled output follows the same distribution, but with its own random stream,
  so a seed gives different text than in plain mode.

Differences from run.c: invalid values are errors instead of being clamped or
ignored, byte tokens are reassembled into UTF-8 instead of dropping bytes of
0x80 and above, and a prompt longer than the model's context is an error.
";

/// Returns the bytes of an argument. Prompts may be any bytes, as in run.c, which
/// the tokenizer encodes with byte fallback.
fn arg_bytes(arg: &OsStr) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        arg.as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        arg.to_string_lossy().into_owned().into_bytes()
    }
}

/// Flags that take no value.
const SWITCHES: &[&str] = &["--adaptive-k", "--fast-math"];

/// Flags that take a value.
const OPTIONS: &[&str] = &[
    "-t",
    "-p",
    "-s",
    "-n",
    "-i",
    "-z",
    "-m",
    "-y",
    "-d",
    "--lookup",
    "-k",
    "--draft-p-min",
    "--color",
    "-T",
    "--threads",
];

/// Parses the arguments after the program name. Paths and prompts may be any
/// bytes; numbers and names must be UTF-8.
pub fn parse(args: &[OsString]) -> Result<Command, UsageError> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    let Some((checkpoint, rest)) = args.split_first() else {
        return Err(UsageError(
            "missing MODEL; usage: specdec MODEL [options], or specdec --help".into(),
        ));
    };
    if checkpoint.to_string_lossy().starts_with('-') {
        return Err(UsageError(format!(
            "expected a checkpoint path as the first argument, found option '{}'; \
             usage: specdec MODEL [options]",
            checkpoint.to_string_lossy()
        )));
    }
    let mut run = RunArgs {
        checkpoint: PathBuf::from(checkpoint),
        tokenizer: PathBuf::from("tokenizer.bin"),
        tokenizer_is_default: true,
        temperature: 1.0,
        topp: 0.9,
        seed: 0,
        steps: 256,
        prompt: None,
        mode: Mode::Generate,
        system_prompt: None,
        speculative: None,
        color: ColorChoice::Auto,
        threads: None,
        fast_math: false,
    };
    let mut draft = None;
    let mut k = None;
    let mut draft_p_min = None;
    let mut adaptive = false;
    let mut color_given = false;
    let mut i = 0;
    while i < rest.len() {
        let flag_lossy = rest[i].to_string_lossy();
        let flag: &str = &flag_lossy;
        if !SWITCHES.contains(&flag) && !OPTIONS.contains(&flag) {
            return Err(unknown_option(flag));
        }
        if SWITCHES.contains(&flag) {
            if flag == "--adaptive-k" {
                adaptive = true;
            } else {
                run.fast_math = true;
            }
            i += 1;
            continue;
        }
        let Some(raw_value) = rest.get(i + 1) else {
            return Err(UsageError(format!(
                "option '{flag}' needs a value; see specdec --help"
            )));
        };
        // Names and numbers are UTF-8; a value that is not reads with U+FFFD,
        // which every parser below rejects, showing the value.
        let value_lossy = raw_value.to_string_lossy();
        let value: &str = &value_lossy;
        match flag {
            "-t" => {
                let t = parse_float(flag, "temperature", value)?;
                if !t.is_finite() || t < 0.0 {
                    return Err(UsageError(format!(
                        "invalid temperature '{value}' for -t; use 0 for greedy or a positive number"
                    )));
                }
                run.temperature = t;
            }
            "-p" => {
                let p = parse_float(flag, "top-p", value)?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(UsageError(format!(
                        "invalid top-p '{value}' for -p; use a number in [0, 1] (1 turns top-p off)"
                    )));
                }
                run.topp = p;
            }
            "-s" => run.seed = parse_seed(value)?,
            "-n" => run.steps = parse_steps(value)?,
            "-i" => run.prompt = Some(arg_bytes(raw_value)),
            "-z" => {
                run.tokenizer = PathBuf::from(raw_value);
                run.tokenizer_is_default = false;
            }
            "-m" => {
                run.mode = match value {
                    "generate" => Mode::Generate,
                    "chat" => Mode::Chat,
                    _ => {
                        return Err(UsageError(format!(
                            "unknown mode '{value}' for -m; use generate or chat"
                        )))
                    }
                }
            }
            "-y" => run.system_prompt = Some(arg_bytes(raw_value)),
            "-d" | "--lookup" => {
                if draft.is_some() {
                    return Err(UsageError(
                        "-d and --lookup both choose the draft source; pass only one of them"
                            .into(),
                    ));
                }
                draft = Some(if flag == "-d" {
                    DraftArg::Model(PathBuf::from(raw_value))
                } else {
                    DraftArg::Lookup(parse_count(flag, "n-gram length", value, 1, usize::MAX)?)
                });
            }
            "-k" => k = Some(parse_count(flag, "draft length", value, 1, MAX_K)?),
            "-T" | "--threads" => {
                run.threads = Some(parse_count(flag, "thread count", value, 1, 1024)?)
            }
            "--draft-p-min" => {
                let p = parse_float(flag, "probability", value)?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(UsageError(format!(
                        "invalid probability '{value}' for --draft-p-min; use a number in [0, 1]"
                    )));
                }
                draft_p_min = Some(p);
            }
            "--color" => {
                color_given = true;
                run.color = match value {
                    "auto" => ColorChoice::Auto,
                    "always" => ColorChoice::Always,
                    "never" => ColorChoice::Never,
                    _ => {
                        return Err(UsageError(format!(
                            "invalid value '{value}' for --color; use auto, always or never"
                        )))
                    }
                }
            }
            _ => return Err(unknown_option(flag)),
        }
        i += 2;
    }
    match draft {
        Some(draft) => {
            if run.mode == Mode::Chat {
                return Err(UsageError(
                    "speculative decoding (-d or --lookup) works in -m generate only".into(),
                ));
            }
            run.speculative = Some(SpecArgs {
                draft,
                k: k.unwrap_or(4),
                draft_p_min: draft_p_min.unwrap_or(0.0),
                adaptive,
            });
        }
        None => {
            if k.is_some() || draft_p_min.is_some() || adaptive || color_given {
                return Err(UsageError(
                    "-k, --draft-p-min, --adaptive-k and --color need a draft source; add -d DRAFT or --lookup N"
                        .into(),
                ));
            }
        }
    }
    Ok(Command::Run(run))
}

/// Returns the error for a command-line word that is not an option, with a
/// hint for the two usual causes: a stray argument and `--option=value`.
fn unknown_option(flag: &str) -> UsageError {
    if !flag.starts_with('-') {
        return UsageError(format!(
            "unexpected argument '{flag}'; MODEL comes first and every other value follows its \
             option, as in -n 256 (see specdec --help)"
        ));
    }
    if let Some((name, value)) = flag.split_once('=') {
        if SWITCHES.contains(&name) || OPTIONS.contains(&name) {
            return UsageError(format!(
                "unknown option '{flag}'; give the value as a separate argument: {name} {value}"
            ));
        }
    }
    UsageError(format!(
        "unknown option '{flag}'; see specdec --help for the options"
    ))
}

/// Parses `-n`. A count beyond the model's seq_len means seq_len, so a
/// count too large for any integer type means that too.
fn parse_steps(value: &str) -> Result<usize, UsageError> {
    let v = value.trim();
    if let Ok(n) = v.parse::<usize>() {
        return Ok(n);
    }
    let digits = v.strip_prefix('+').unwrap_or(v);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(usize::MAX);
    }
    if v.parse::<i64>().is_ok()
        || (v.starts_with('-') && v[1..].bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(UsageError(format!(
            "invalid step count '{value}' for -n; use 0 (the model's seq_len) or a positive number"
        )));
    }
    Err(UsageError(format!(
        "invalid step count '{value}' for -n; use a whole number, 0 for the model's seq_len"
    )))
}

/// Parses a whole number in `min..=max`.
fn parse_count(
    flag: &str,
    name: &str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<usize, UsageError> {
    match value.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ if max == usize::MAX => Err(UsageError(format!(
            "invalid {name} '{value}' for {flag}; use a whole number of at least {min}"
        ))),
        _ => Err(UsageError(format!(
            "invalid {name} '{value}' for {flag}; use a whole number from {min} to {max}"
        ))),
    }
}

fn parse_float(flag: &str, name: &str, value: &str) -> Result<f32, UsageError> {
    value.trim().parse::<f32>().map_err(|_| {
        UsageError(format!(
            "invalid {name} '{value}' for {flag}; expected a number"
        ))
    })
}

/// Parses a seed. Negative values wrap to 64 bits as run.c's
/// `unsigned long long rng_seed = atoi(...)` does, so `-s -1` seeds the same
/// stream in both programs.
fn parse_seed(value: &str) -> Result<u64, UsageError> {
    let v = value.trim();
    if let Ok(seed) = v.parse::<u64>() {
        return Ok(seed);
    }
    match v.parse::<i64>() {
        Ok(seed) => Ok(seed as u64),
        Err(e)
            if matches!(
                e.kind(),
                IntErrorKind::PosOverflow | IntErrorKind::NegOverflow
            ) =>
        {
            Err(UsageError(format!(
                "seed '{value}' for -s is out of range; use a whole number from {} to {}",
                i64::MIN,
                u64::MAX
            )))
        }
        Err(_) => Err(UsageError(format!(
            "invalid seed '{value}' for -s; expected a whole number (0 seeds from the clock)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn run_args(list: &[&str]) -> RunArgs {
        match parse(&args(list)) {
            Ok(Command::Run(run)) => run,
            other => panic!("expected a run, got {other:?}"),
        }
    }

    fn error(list: &[&str]) -> String {
        match parse(&args(list)) {
            Err(UsageError(message)) => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_run_c() {
        let run = run_args(&["model.bin"]);
        assert_eq!(run.temperature, 1.0);
        assert_eq!(run.topp, 0.9);
        assert_eq!(run.steps, 256);
        assert_eq!(run.seed, 0);
        assert_eq!(run.tokenizer, PathBuf::from("tokenizer.bin"));
        assert_eq!(run.mode, Mode::Generate);
        assert!(run.prompt.is_none());
    }

    #[test]
    fn all_flags_parse() {
        let run = run_args(&[
            "m.bin", "-t", "0.5", "-p", "0.95", "-s", "42", "-n", "10", "-i", "hi", "-z", "t.bin",
            "-m", "chat", "-y", "sys",
        ]);
        assert_eq!(run.temperature, 0.5);
        assert_eq!(run.topp, 0.95);
        assert_eq!(run.seed, 42);
        assert_eq!(run.steps, 10);
        assert_eq!(run.prompt.as_deref(), Some(&b"hi"[..]));
        assert_eq!(run.tokenizer, PathBuf::from("t.bin"));
        assert_eq!(run.mode, Mode::Chat);
        assert_eq!(run.system_prompt.as_deref(), Some(&b"sys"[..]));
    }

    #[test]
    fn huge_step_count_means_seq_len() {
        let run = run_args(&["m.bin", "-n", "99999999999999999999"]);
        assert_eq!(run.steps, usize::MAX);
    }

    #[test]
    fn negative_seed_wraps_like_c() {
        assert_eq!(run_args(&["m.bin", "-s", "-1"]).seed, u64::MAX);
    }

    #[test]
    fn invalid_values_are_rejected() {
        assert!(error(&["m.bin", "-t", "-0.5"]).contains("invalid temperature '-0.5'"));
        assert!(error(&["m.bin", "-t", "abc"]).contains("invalid temperature 'abc'"));
        assert!(error(&["m.bin", "-t", "inf"]).contains("invalid temperature 'inf'"));
        assert!(error(&["m.bin", "--bogus"]).contains("unknown option '--bogus'"));
        assert!(error(&["m.bin", "-t", "1", "extra"]).contains("unexpected argument 'extra'"));
        assert!(error(&["m.bin", "--threads=2"])
            .contains("give the value as a separate argument: --threads 2"));
        assert!(error(&["m.bin", "-s", "99999999999999999999999"])
            .contains("out of range; use a whole number from -9223372036854775808"));
        assert!(error(&["m.bin", "-p", "1.5"]).contains("invalid top-p '1.5'"));
        assert!(error(&["m.bin", "-p", "-0.1"]).contains("invalid top-p '-0.1'"));
        assert!(error(&["m.bin", "-n", "-3"]).contains("invalid step count '-3'"));
        assert!(error(&["m.bin", "-n", "-99999999999999999999"]).contains("or a positive number"));
        assert!(error(&["m.bin", "-n", "ten"]).contains("use a whole number"));
        assert!(error(&["m.bin", "-s", "x"]).contains("invalid seed 'x'"));
        assert!(error(&["m.bin", "-m", "talk"]).contains("unknown mode 'talk'"));
        assert!(error(&["m.bin", "-q", "1"]).contains("unknown option '-q'"));
        assert!(error(&["m.bin", "-t"]).contains("option '-t' needs a value"));
        assert!(error(&[]).contains("missing MODEL"));
        assert!(error(&["-t", "1"]).contains("expected a checkpoint path"));
    }

    #[test]
    fn threads_flag_parses() {
        assert_eq!(run_args(&["m.bin", "-T", "3"]).threads, Some(3));
        assert_eq!(run_args(&["m.bin", "--threads", "1"]).threads, Some(1));
        assert_eq!(run_args(&["m.bin"]).threads, None);
        assert!(run_args(&["m.bin", "--fast-math", "-t", "0"]).fast_math);
        assert!(!run_args(&["m.bin"]).fast_math);
        assert!(error(&["m.bin", "-T", "0"]).contains("invalid thread count '0' for -T"));
    }

    #[test]
    fn speculative_flags_parse() {
        let run = run_args(&[
            "m.bin",
            "-d",
            "draft.bin",
            "-k",
            "6",
            "--draft-p-min",
            "0.3",
            "--adaptive-k",
        ]);
        let spec = run.speculative.unwrap();
        assert_eq!(spec.draft, DraftArg::Model(PathBuf::from("draft.bin")));
        assert_eq!(spec.k, 6);
        assert_eq!(spec.draft_p_min, 0.3);
        assert!(spec.adaptive);
        let run = run_args(&["m.bin", "--lookup", "3", "--color", "never"]);
        assert!(error(&["m.bin", "--color", "always"]).contains("need a draft source"));
        assert_eq!(run.speculative.unwrap().draft, DraftArg::Lookup(3));
        assert_eq!(run.color, ColorChoice::Never);
        assert_eq!(run_args(&["m.bin", "-d", "x"]).speculative.unwrap().k, 4);
    }

    #[test]
    fn invalid_speculative_flags_are_rejected() {
        assert!(error(&["m.bin", "-d", "a", "--lookup", "2"]).contains("pass only one of them"));
        assert!(error(&["m.bin", "-k", "3"]).contains("need a draft source"));
        assert!(error(&["m.bin", "-d", "a", "-k", "0"]).contains("invalid draft length '0' for -k"));
        assert!(error(&["m.bin", "-d", "a", "-k", "65"]).contains("from 1 to 64"));
        assert!(error(&["m.bin", "--lookup", "0"]).contains("invalid n-gram length '0'"));
        assert!(
            error(&["m.bin", "-d", "a", "--draft-p-min", "2"]).contains("invalid probability '2'")
        );
        assert!(error(&["m.bin", "--color", "blue"]).contains("invalid value 'blue' for --color"));
        assert!(error(&["m.bin", "-d", "a", "-m", "chat"]).contains("-m generate only"));
    }

    #[test]
    fn help_wins_anywhere() {
        assert!(matches!(
            parse(&args(&["m.bin", "--help"])),
            Ok(Command::Help)
        ));
        assert!(matches!(parse(&args(&["-h"])), Ok(Command::Help)));
    }
}
