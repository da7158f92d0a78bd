//! Speculative decoding through the CLI (`-d DRAFT`, `--lookup N`): greedy
//! output identical to plain decoding, the statistics block, draft errors,
//! and colouring of accepted tokens.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::{model_path, specdec, stderr_failed, stdout_ok, GOLDEN};

const TARGET: &str = "stories260K.bin";
const TOKENIZER: &str = "tok512.bin";
/// Draft with seq_len 256, half the target's 512.
const DRAFT: &str = "tinystories279K.bin";
const DRAFT_Q80: &str = "tinystories279K_q80.bin";

/// The four draft sources that every greedy identity check covers.
const DRAFT_SOURCES: &[&[&str]] = &[
    &["-d", DRAFT],
    &["-d", DRAFT_Q80],
    &["-d", TARGET],
    &["--lookup", "3"],
];

const ACCEPTED_START: &str = "\x1b[32m";
const COLOR_RESET: &str = "\x1b[0m";

/// A per-test temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("specdec-speculative-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The folder of real models, or `None` (after a skip notice) when
/// `SPECDEC_MODELS` is unset.
struct Models {
    dir: PathBuf,
}

impl Models {
    fn get() -> Option<Models> {
        let target = model_path(TARGET)?;
        for file in [TOKENIZER, DRAFT, DRAFT_Q80] {
            model_path(file)?;
        }
        let dir = target.parent().unwrap().to_path_buf();
        Some(Models { dir })
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// Arguments of a target run with `extra` flags. A bare file name after
    /// `-d` names a file in the models folder; a path is passed unchanged.
    fn command(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec![self.file(TARGET), "-z".to_owned(), self.file(TOKENIZER)];
        let mut previous = "";
        for &arg in extra {
            if previous == "-d" && !arg.contains(std::path::MAIN_SEPARATOR) {
                args.push(self.file(arg));
            } else {
                args.push(arg.to_owned());
            }
            previous = arg;
        }
        args
    }

    fn run(&self, extra: &[&str]) -> Output {
        run_args(&self.command(extra))
    }
}

fn run_args(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    specdec(&refs, b"")
}

/// Runs every command, a few processes at a time, and returns the outputs in
/// the order of `commands`.
fn run_all(commands: &[Vec<String>]) -> Vec<Output> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4);
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Output>>> = commands.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(args) = commands.get(index) else {
                    break;
                };
                let output = run_args(args);
                *results[index].lock().unwrap() = Some(output);
            });
        }
    });
    results
        .into_iter()
        .map(|slot| slot.into_inner().unwrap().expect("every command ran"))
        .collect()
}

/// Describes where `actual` first departs from `expected`, for assert
/// messages.
fn first_difference(expected: &str, actual: &str) -> String {
    let (a, b) = (expected.as_bytes(), actual.as_bytes());
    let offset = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let excerpt = |bytes: &[u8]| {
        let start = offset.saturating_sub(20);
        let end = (offset + 40).min(bytes.len());
        String::from_utf8_lossy(&bytes[start.min(end)..end]).into_owned()
    };
    format!(
        "first difference at byte {offset} (lengths {} and {}): expected ...{:?}..., got ...{:?}...",
        a.len(),
        b.len(),
        excerpt(a),
        excerpt(b)
    )
}

/// Removes the SGR escape sequences (`ESC [ digits m`) that `--color` writes.
fn strip_colors(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('\x1b') {
        plain.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let code_len = after
            .strip_prefix('[')
            .and_then(|code| code.find('m').map(|m| m + 2))
            .unwrap_or_else(|| panic!("escape without an SGR code at {:?}", &rest[start..]));
        rest = &after[code_len..];
    }
    plain.push_str(rest);
    plain
}

/// The statistics block that a speculative run prints on stderr.
#[derive(Debug)]
struct SpecStats {
    prompt_tokens: u64,
    generated: u64,
    drafted: u64,
    accepted: u64,
    acceptance_percent: f64,
    tokens_per_pass: f64,
    target_passes: u64,
    verify_passes: u64,
    prefill_passes: u64,
    draft_passes: u64,
    refills: u64,
    last_draft_position: u64,
}

/// Splits the line of `stderr` that starts with `label:` into the words
/// after the label.
fn stat_words<'a>(stderr: &'a str, label: &str) -> Vec<&'a str> {
    let prefix = format!("{label}:");
    let line = stderr
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("statistics have no '{label}:' line; stderr:\n{stderr}"));
    line.split_whitespace().collect()
}

fn stat_number<T: std::str::FromStr>(word: &str, label: &str, stderr: &str) -> T {
    let digits = word.trim_matches(|c: char| "(),%".contains(c));
    digits.parse().unwrap_or_else(|_| {
        panic!("'{label}' has '{word}' where a number was expected; stderr:\n{stderr}")
    })
}

fn parse_stats(stderr: &str) -> SpecStats {
    let first = |label: &str| -> u64 { stat_number(stat_words(stderr, label)[0], label, stderr) };
    let passes = stat_words(stderr, "target forward passes");
    let refills = stat_words(stderr, "draft window re-fills");
    let label = "target forward passes";
    assert_eq!(
        passes.len(),
        5,
        "'{label}' line is not 'N (V verify, P prefill)'; stderr:\n{stderr}"
    );
    let label = "draft window re-fills";
    assert!(
        refills.len() >= 2,
        "'{label}' line has no last draft position; stderr:\n{stderr}"
    );
    SpecStats {
        prompt_tokens: first("prompt tokens"),
        generated: first("generated tokens"),
        drafted: first("drafted tokens"),
        accepted: first("accepted tokens"),
        acceptance_percent: stat_number(
            stat_words(stderr, "acceptance rate")[0],
            "acceptance rate",
            stderr,
        ),
        tokens_per_pass: stat_number(
            stat_words(stderr, "tokens per target pass")[0],
            "tokens per target pass",
            stderr,
        ),
        target_passes: stat_number(passes[0], "target forward passes", stderr),
        verify_passes: stat_number(passes[1], "target forward passes", stderr),
        prefill_passes: stat_number(passes[3], "target forward passes", stderr),
        draft_passes: first("draft forward passes"),
        refills: stat_number(refills[0], label, stderr),
        last_draft_position: stat_number(refills[refills.len() - 1], label, stderr),
    }
}

fn stats_of(output: &Output) -> SpecStats {
    parse_stats(&String::from_utf8_lossy(&output.stderr))
}

/// Asserts a failed run with one `error:` line on stderr and nothing on
/// stdout, and returns the line.
fn one_line_error(output: &Output, case: &str) -> String {
    let stderr = stderr_failed(output);
    assert!(
        output.stdout.is_empty(),
        "{case}: stdout is not empty: {:?}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{case}: expected one line on stderr, got:\n{stderr}"
    );
    assert!(
        stderr.starts_with("error: "),
        "{case}: stderr does not start with 'error: ': {stderr}"
    );
    stderr.trim_end().to_owned()
}

/// Writes a synthetic checkpoint with `specdec gen` and returns its path.
fn generate_checkpoint(dir: &TempDir, name: &str, shape: &str) -> String {
    let path = dir.path(name);
    let output = specdec(&["gen", &path, "--shape", shape, "--format", "v1"], b"");
    assert!(
        output.status.success(),
        "specdec gen --shape {shape} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    path
}

/// Returns the `-i` flags of a prompt, and none for the empty prompt, which
/// runs without `-i`.
fn prompt_flags(prompt: &str) -> Vec<&str> {
    if prompt.is_empty() {
        Vec::new()
    } else {
        vec!["-i", prompt]
    }
}

#[test]
fn greedy_matches_plain_for_all_drafts() {
    let Some(models) = Models::get() else {
        return;
    };
    let prompts = ["", "Once upon a time", "The dog"];
    let steps = ["1", "4", "100", "512"];
    let k_values: Vec<String> = (1..=8).map(|k| k.to_string()).collect();

    // Plain runs first, one per prompt and -n; then every speculative case.
    let mut plain_labels = Vec::new();
    let mut commands = Vec::new();
    for prompt in prompts {
        for n in steps {
            let mut extra = vec!["-t", "0", "-n", n];
            extra.extend(prompt_flags(prompt));
            plain_labels.push((prompt, n));
            commands.push(models.command(&extra));
        }
    }
    let mut spec_cases = Vec::new();
    for (plain_index, &(prompt, n)) in plain_labels.iter().enumerate() {
        for source in DRAFT_SOURCES {
            for k in &k_values {
                let mut extra = vec!["-t", "0", "-n", n, "-k", k.as_str()];
                extra.extend_from_slice(source);
                extra.extend(prompt_flags(prompt));
                spec_cases.push((plain_index, extra.join(" ")));
                commands.push(models.command(&extra));
            }
        }
    }
    let outputs = run_all(&commands);
    let (plain_outputs, spec_outputs) = outputs.split_at(plain_labels.len());

    let plain: Vec<String> = plain_outputs.iter().map(stdout_ok).collect();
    let mut failures = Vec::new();
    for ((plain_index, label), output) in spec_cases.iter().zip(spec_outputs) {
        if !output.status.success() {
            failures.push(format!(
                "{label}: exit {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim_end()
            ));
            continue;
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let expected = &plain[*plain_index];
        if stdout != *expected {
            failures.push(format!("{label}: {}", first_difference(expected, &stdout)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} greedy speculative runs differ from plain -t 0:\n{}",
        failures.len(),
        spec_cases.len(),
        failures.join("\n")
    );
}

#[test]
fn greedy_matches_golden_output() {
    let Some(models) = Models::get() else {
        return;
    };
    let golden = GOLDEN
        .iter()
        .find(|g| g.model == TARGET && g.args == ["-t", "0", "-n", "200"])
        .expect("GOLDEN has the stories260K -t 0 -n 200 entry");

    let plain = models.run(golden.args);
    assert_eq!(
        stdout_ok(&plain),
        golden.stdout,
        "plain -t 0 -n 200 differs from llama2.c's output"
    );

    let mut labels = Vec::new();
    let mut commands = Vec::new();
    for source in DRAFT_SOURCES {
        for k in ["1", "4", "8"] {
            let mut extra = golden.args.to_vec();
            extra.extend_from_slice(&["-k", k]);
            extra.extend_from_slice(source);
            labels.push(extra.join(" "));
            commands.push(models.command(&extra));
        }
    }
    for (label, output) in labels.iter().zip(run_all(&commands)) {
        let stdout = stdout_ok(&output);
        assert!(
            stdout == golden.stdout,
            "{label} differs from llama2.c's -t 0 -n 200 output: {}",
            first_difference(golden.stdout, &stdout)
        );
    }
}

#[test]
fn adaptive_k_keeps_greedy_output() {
    let Some(models) = Models::get() else {
        return;
    };
    for source in DRAFT_SOURCES {
        let base = ["-t", "0", "-n", "300", "-k", "8"];
        let plain = stdout_ok(&models.run(&base[..4]));
        let mut fixed_args = base.to_vec();
        fixed_args.extend_from_slice(source);
        let mut adaptive_args = fixed_args.clone();
        adaptive_args.push("--adaptive-k");
        let label = adaptive_args.join(" ");

        let adaptive = models.run(&adaptive_args);
        let stdout = stdout_ok(&adaptive);
        assert!(
            stdout == plain,
            "{label} differs from plain -t 0: {}",
            first_difference(&plain, &stdout)
        );

        // tinystories279K has about 30% of its K = 8 drafts accepted here, so
        // adapting must shorten some rounds.
        if source[1] == DRAFT {
            let fixed = stats_of(&models.run(&fixed_args));
            let adapted = stats_of(&adaptive);
            assert!(
                adapted.drafted < fixed.drafted,
                "{label} drafted {} tokens, not fewer than the {} of a fixed K = 8",
                adapted.drafted,
                fixed.drafted
            );
        }
    }
}

#[test]
fn draft_p_min_keeps_greedy_output() {
    let Some(models) = Models::get() else {
        return;
    };
    let plain = stdout_ok(&models.run(&["-t", "0", "-n", "300"]));
    for draft in [DRAFT, DRAFT_Q80] {
        let base = ["-t", "0", "-n", "300", "-k", "8", "-d", draft];
        let mut args = base.to_vec();
        args.extend_from_slice(&["--draft-p-min", "0.5"]);
        let label = args.join(" ");

        let limited = models.run(&args);
        let stdout = stdout_ok(&limited);
        assert!(
            stdout == plain,
            "{label} differs from plain -t 0: {}",
            first_difference(&plain, &stdout)
        );

        let unlimited = stats_of(&models.run(&base));
        let limited = stats_of(&limited);
        assert!(
            limited.drafted < unlimited.drafted,
            "{label} drafted {} tokens, not fewer than the {} without --draft-p-min",
            limited.drafted,
            unlimited.drafted
        );
    }
}

#[test]
fn target_as_draft_accepts_everything() {
    let Some(models) = Models::get() else {
        return;
    };
    let cases: &[&[&str]] = &[
        &["-t", "0", "-n", "200", "-k", "1"],
        &["-t", "0", "-n", "200", "-k", "4"],
        &["-t", "0", "-n", "512", "-k", "8", "-i", "Once upon a time"],
        &["-t", "0", "-n", "150", "-k", "5", "-i", "The dog"],
        // Sampling: with p = q every acceptance probability is 1.
        &["-t", "1", "-p", "0.9", "-s", "9", "-n", "200", "-k", "4"],
        &["-t", "0.8", "-p", "1", "-s", "21", "-n", "200", "-k", "6"],
    ];
    for case in cases {
        let mut args = case.to_vec();
        args.extend_from_slice(&["-d", TARGET]);
        let label = args.join(" ");
        let output = models.run(&args);
        stdout_ok(&output);
        let stats = stats_of(&output);
        assert!(stats.drafted > 0, "{label}: nothing was drafted: {stats:?}");
        assert_eq!(
            stats.accepted, stats.drafted,
            "{label}: the target as its own draft had drafts rejected: {stats:?}"
        );
    }
}

#[test]
fn draft_window_refill_keeps_greedy_output() {
    let Some(models) = Models::get() else {
        return;
    };
    let plain = stdout_ok(&models.run(&["-t", "0", "-n", "512"]));
    let args = ["-t", "0", "-n", "512", "-d", DRAFT];
    let output = models.run(&args);
    let stdout = stdout_ok(&output);
    assert!(
        stdout == plain,
        "-d {DRAFT} -t 0 -n 512 differs from plain -t 0 -n 512: {}",
        first_difference(&plain, &stdout)
    );

    let stats = stats_of(&output);
    assert!(
        stats.refills >= 1,
        "the draft (seq_len 256) never re-filled its window in 512 positions: {stats:?}"
    );
    assert!(
        stats.last_draft_position > 256,
        "no draft token past the draft's seq_len of 256: {stats:?}"
    );
}

#[test]
fn sampled_run_repeats_per_seed() {
    let Some(models) = Models::get() else {
        return;
    };
    let sources: &[&[&str]] = &[&["-d", DRAFT], &["--lookup", "2"]];
    for source in sources {
        let run_seed = |seed: &str| {
            let mut args = vec!["-t", "1", "-p", "0.9", "-s", seed, "-n", "150"];
            args.extend_from_slice(source);
            stdout_ok(&models.run(&args))
        };
        let label = source.join(" ");
        let first = run_seed("77");
        let second = run_seed("77");
        let other = run_seed("78");
        assert!(
            first == second,
            "{label} -s 77 printed different text on a second run: {}",
            first_difference(&first, &second)
        );
        assert_ne!(
            first, other,
            "{label}: -s 77 and -s 78 printed the same text"
        );
    }
}

#[test]
fn stats_block_adds_up() {
    let Some(models) = Models::get() else {
        return;
    };
    // (flags, prompt tokens, generated tokens). Greedy stories260K reaches no
    // BOS within these -n, so every position up to -n yields one token.
    let cases: &[(&[&str], u64, u64)] = &[
        (&["-t", "0", "-n", "100", "-d", DRAFT], 1, 100),
        (
            &["-t", "0", "-n", "100", "--lookup", "3", "-k", "6"],
            1,
            100,
        ),
        (
            &[
                "-t",
                "0",
                "-n",
                "100",
                "-d",
                DRAFT_Q80,
                "-i",
                "Once upon a time",
            ],
            5,
            96,
        ),
        (
            &[
                "-t",
                "0",
                "-n",
                "200",
                "-k",
                "7",
                "-d",
                DRAFT,
                "-i",
                "Once upon a time",
            ],
            5,
            196,
        ),
    ];
    for &(flags, prompt_tokens, generated) in cases {
        let label = flags.join(" ");
        let output = models.run(flags);
        stdout_ok(&output);
        let stats = stats_of(&output);
        let k: u64 = flags
            .iter()
            .position(|&f| f == "-k")
            .map_or(4, |i| flags[i + 1].parse().unwrap());

        assert_eq!(
            stats.prompt_tokens, prompt_tokens,
            "{label}: prompt token count"
        );
        assert_eq!(
            stats.generated, generated,
            "{label}: generated tokens differ from -n minus the prompt plus one"
        );
        assert!(
            stats.accepted <= stats.drafted,
            "{label}: more accepted than drafted: {stats:?}"
        );
        assert!(
            stats.drafted <= k * stats.verify_passes,
            "{label}: more than K = {k} drafts per verify pass: {stats:?}"
        );
        assert!(
            stats.tokens_per_pass >= 1.0,
            "{label}: fewer than 1 token per target pass: {stats:?}"
        );
        let per_pass = stats.generated as f64 / stats.verify_passes as f64;
        assert!(
            (stats.tokens_per_pass - per_pass).abs() <= 0.005,
            "{label}: tokens per target pass {} is not generated / verify passes = {per_pass:.4}",
            stats.tokens_per_pass
        );
        let rate = 100.0 * stats.accepted as f64 / stats.drafted as f64;
        assert!(
            (stats.acceptance_percent - rate).abs() <= 0.05,
            "{label}: acceptance rate {}% is not accepted / drafted = {rate:.3}%",
            stats.acceptance_percent
        );
        assert_eq!(
            stats.target_passes,
            stats.verify_passes + stats.prefill_passes,
            "{label}: target passes are not verify plus prefill passes"
        );
        if flags.contains(&"-d") {
            assert!(
                stats.draft_passes > 0,
                "{label}: a draft model ran no forward passes: {stats:?}"
            );
        } else {
            assert_eq!(
                stats.draft_passes, 0,
                "{label}: prompt lookup ran draft forward passes"
            );
        }
    }
}

#[test]
fn draft_vocab_mismatch_is_rejected() {
    let Some(models) = Models::get() else {
        return;
    };
    let dir = TempDir::new("vocab");
    let draft = generate_checkpoint(&dir, "vocab32000.bin", "64,128,1,2,2,32000,64");
    let output = models.run(&["-t", "0", "-n", "20", "-d", &draft]);
    let error = one_line_error(&output, "32000-token draft");
    assert!(
        error.contains("32000"),
        "error does not name the draft's vocabulary size 32000: {error}"
    );
    assert!(
        error.contains("512"),
        "error does not name the target's vocabulary size 512: {error}"
    );
    assert!(
        error.contains(&draft),
        "error does not name the draft path {draft}: {error}"
    );
}

#[test]
fn bad_draft_files_are_rejected() {
    let Some(models) = Models::get() else {
        return;
    };
    let dir = TempDir::new("bad-drafts");
    let missing = dir.path("missing.bin");
    let folder = dir.path("folder.bin");
    std::fs::create_dir(&folder).unwrap();
    let truncated = dir.path("truncated.bin");
    let full = std::fs::read(models.file(DRAFT)).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();

    let cases = [
        (&missing, "not found"),
        (&folder, "directory"),
        (&truncated, "truncated"),
    ];
    for (path, reason) in cases {
        let output = models.run(&["-t", "0", "-n", "20", "-d", path]);
        let error = one_line_error(&output, path);
        assert!(
            error.contains(path.as_str()),
            "error does not name the draft path {path}: {error}"
        );
        assert!(
            error.contains(reason),
            "error for {path} does not say '{reason}': {error}"
        );
    }
}

#[test]
fn color_always_marks_accepted_tokens() {
    let Some(models) = Models::get() else {
        return;
    };
    let cases: &[&[&str]] = &[
        &["-t", "0", "-n", "100", "-d", DRAFT],
        &[
            "-t",
            "0",
            "-n",
            "100",
            "--lookup",
            "2",
            "-i",
            "Once upon a time",
        ],
    ];
    for case in cases {
        let label = case.join(" ");
        let plain = stdout_ok(&models.run(&case[..4]));
        let mut args = case.to_vec();
        args.extend_from_slice(&["--color", "always"]);
        let output = models.run(&args);
        let colored = stdout_ok(&output);
        let stats = stats_of(&output);

        let spans = colored.matches(ACCEPTED_START).count() as u64;
        assert!(spans > 0, "{label} --color always printed no green span");
        assert_eq!(
            spans, stats.accepted,
            "{label}: green spans differ from the accepted token count"
        );
        for (i, span) in colored.split(ACCEPTED_START).skip(1).enumerate() {
            let reset = span.find(COLOR_RESET);
            assert!(
                reset.is_some_and(|end| !span[..end].contains('\x1b')),
                "{label}: green span {i} is not closed by a reset before the next escape: {span:?}"
            );
        }
        let stripped = strip_colors(&colored);
        assert!(
            stripped == plain,
            "{label}: --color always without escapes differs from plain -t 0: {}",
            first_difference(&plain, &stripped)
        );
        if let Some(prompt) = case.iter().position(|&f| f == "-i").map(|i| case[i + 1]) {
            assert!(
                colored.starts_with(prompt),
                "{label}: the prompt is coloured or missing: {colored:?}"
            );
        }
    }
}

#[test]
fn color_always_keeps_utf8_characters() {
    let Some(models) = Models::get() else {
        return;
    };
    // At -t 100 sampling is nearly uniform over the 512 tokens, half of which
    // are byte tokens, so some accepted byte pairs form UTF-8 characters.
    // With the target as draft every token is accepted and coloured, so the
    // colours must not split those characters.
    let base = ["-t", "100", "-p", "1", "-s", "1", "-n", "512", "-d", TARGET];
    let mut never = base.to_vec();
    never.extend_from_slice(&["--color", "never"]);
    let mut always = base.to_vec();
    always.extend_from_slice(&["--color", "always"]);

    let uncolored = stdout_ok(&models.run(&never));
    let colored = stdout_ok(&models.run(&always));
    assert!(
        uncolored.chars().any(|c| !c.is_ascii() && c != '\u{fffd}'),
        "the run printed no multi-byte character, so it checks nothing: {uncolored:?}"
    );
    let stripped = strip_colors(&colored);
    assert!(
        stripped == uncolored,
        "{} --color always without escapes differs from --color never: {}",
        base.join(" "),
        first_difference(&uncolored, &stripped)
    );
}

#[test]
fn color_never_and_auto_print_plain_text() {
    let Some(models) = Models::get() else {
        return;
    };
    let base = ["-t", "0", "-n", "100", "-d", DRAFT];
    let plain = stdout_ok(&models.run(&base[..4]));

    // The test harness pipes stdout, so `auto` must not colour.
    for choice in [Some("never"), Some("auto"), None] {
        let mut args = base.to_vec();
        if let Some(choice) = choice {
            args.extend_from_slice(&["--color", choice]);
        }
        let label = args.join(" ");
        let stdout = stdout_ok(&models.run(&args));
        assert!(
            !stdout.contains('\x1b'),
            "{label} on a pipe printed escape codes: {stdout:?}"
        );
        assert!(
            stdout == plain,
            "{label} differs from plain -t 0: {}",
            first_difference(&plain, &stdout)
        );
    }
}

#[test]
fn no_color_env_with_color_flags() {
    let Some(models) = Models::get() else {
        return;
    };
    let run_with_no_color = |choice: &str| {
        let args = models.command(&["-t", "0", "-n", "60", "-d", DRAFT, "--color", choice]);
        Command::new(env!("CARGO_BIN_EXE_specdec"))
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("failed to start specdec")
    };
    let auto = stdout_ok(&run_with_no_color("auto"));
    assert!(
        !auto.contains('\x1b'),
        "NO_COLOR=1 --color auto printed escape codes: {auto:?}"
    );
    // An explicit --color always outranks NO_COLOR.
    let always = stdout_ok(&run_with_no_color("always"));
    assert!(
        always.contains(ACCEPTED_START),
        "NO_COLOR=1 --color always printed no green span: {always:?}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn color_auto_on_terminal_obeys_no_color() {
    let Some(models) = Models::get() else {
        return;
    };
    let plain = stdout_ok(&models.run(&["-t", "0", "-n", "100"]));
    let args = models.command(&["-t", "0", "-n", "100", "-d", DRAFT, "--color", "auto"]);

    // Each case is a NO_COLOR value (None leaves it unset) and whether auto
    // colours. The CLI treats an empty NO_COLOR as unset.
    let cases = [(None, true), (Some(""), true), (Some("1"), false)];
    for (no_color, expect_color) in cases {
        let label = format!("--color auto on a terminal with NO_COLOR={no_color:?}");
        let stdout = terminal::run(&args, no_color);
        assert_eq!(
            stdout.contains(ACCEPTED_START),
            expect_color,
            "{label}: colouring differs from the expected {expect_color}: {stdout:?}"
        );
        let stripped = strip_colors(&stdout);
        assert!(
            stripped == plain,
            "{label}: text without escapes differs from plain -t 0: {}",
            first_difference(&plain, &stripped)
        );
    }
}

/// Runs the CLI with stdout on a pseudo-terminal, so that `--color auto`
/// finds a terminal there.
#[cfg(target_os = "linux")]
mod terminal {
    use std::ffi::CStr;
    use std::fs::{File, OpenOptions};
    use std::io::Read;
    use std::os::fd::FromRawFd;
    use std::os::raw::{c_char, c_int};
    use std::process::{Command, Stdio};

    // glibc and musl provide these; std already links the C library.
    extern "C" {
        fn posix_openpt(flags: c_int) -> c_int;
        fn grantpt(fd: c_int) -> c_int;
        fn unlockpt(fd: c_int) -> c_int;
        fn ptsname_r(fd: c_int, buf: *mut c_char, buflen: usize) -> c_int;
    }

    const O_RDWR: c_int = 0o2;
    const O_NOCTTY: c_int = 0o400;
    /// errno of a read from the master side after the last slave closed.
    const EIO: i32 = 5;

    /// Opens a pseudo-terminal pair: the master, and the slave as a file.
    fn open_pair() -> (File, File) {
        // SAFETY: plain C calls on a descriptor we own. `name` outlives the
        // ptsname_r call, which writes a NUL-terminated string within its
        // length.
        unsafe {
            let master = posix_openpt(O_RDWR | O_NOCTTY);
            assert!(
                master >= 0,
                "posix_openpt failed: {}",
                std::io::Error::last_os_error()
            );
            let master_file = File::from_raw_fd(master);
            assert_eq!(grantpt(master), 0, "grantpt failed");
            assert_eq!(unlockpt(master), 0, "unlockpt failed");
            let mut name = [0 as c_char; 128];
            assert_eq!(
                ptsname_r(master, name.as_mut_ptr(), name.len()),
                0,
                "ptsname_r failed"
            );
            let path = CStr::from_ptr(name.as_ptr()).to_str().unwrap().to_owned();
            let slave = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("cannot open terminal {path}: {e}"));
            (master_file, slave)
        }
    }

    /// Runs the CLI with `args`, stdout on a terminal and `NO_COLOR` set to
    /// `no_color` (unset for `None`), and returns what it wrote to the
    /// terminal, with the terminal's CR LF line ends turned back into LF.
    pub fn run(args: &[String], no_color: Option<&str>) -> String {
        let (mut master, slave) = open_pair();
        let child = {
            let mut command = Command::new(env!("CARGO_BIN_EXE_specdec"));
            command
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::from(slave))
                .stderr(Stdio::piped());
            match no_color {
                Some(value) => command.env("NO_COLOR", value),
                None => command.env_remove("NO_COLOR"),
            };
            // The command, and with it this process's slave handle, is
            // dropped here, so reads end when the child closes the terminal.
            command.spawn().expect("failed to start specdec")
        };
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match master.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buffer[..n]),
                Err(e) if e.raw_os_error() == Some(EIO) => break,
                Err(e) => panic!("reading the terminal failed: {e}"),
            }
        }
        let output = child
            .wait_with_output()
            .expect("failed to wait for specdec");
        assert!(
            output.status.success(),
            "specdec on a terminal failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(bytes)
            .expect("terminal output is UTF-8")
            .replace("\r\n", "\n")
    }
}

#[test]
fn k_above_limit_is_rejected() {
    let Some(models) = Models::get() else {
        return;
    };
    for k in ["200", "130"] {
        let output = models.run(&["-t", "0", "-n", "20", "-d", DRAFT, "-k", k]);
        let error = one_line_error(&output, &format!("-k {k}"));
        assert!(
            error.contains(&format!("'{k}'")),
            "error does not name the value {k}: {error}"
        );
        assert!(
            error.contains("from 1 to 64"),
            "error does not give the range 1 to 64: {error}"
        );
    }
}

#[test]
fn k_too_long_for_draft_window() {
    let Some(models) = Models::get() else {
        return;
    };
    // A random-weight draft with seq_len 64 takes K below 32, which the real
    // drafts (seq_len 256) cannot reach within -k's limit of 64.
    let dir = TempDir::new("short-window");
    let draft = generate_checkpoint(&dir, "window64.bin", "64,128,1,2,2,512,64");

    let output = models.run(&["-t", "0", "-n", "20", "-d", &draft, "-k", "32"]);
    let error = one_line_error(&output, "-k 32 with a 64-token draft");
    assert!(
        error.contains("64"),
        "error does not name the draft's context of 64: {error}"
    );
    assert!(error.contains("32"), "error does not name K = 32: {error}");

    // K = 31 fits, and the draft re-fills its short window many times. Its
    // guesses are random, yet greedy output must equal plain decoding.
    let plain = stdout_ok(&models.run(&["-t", "0", "-n", "512"]));
    let output = models.run(&["-t", "0", "-n", "512", "-d", &draft, "-k", "31"]);
    let stdout = stdout_ok(&output);
    assert!(
        stdout == plain,
        "-k 31 with a 64-token random draft differs from plain -t 0 -n 512: {}",
        first_difference(&plain, &stdout)
    );
    let stats = stats_of(&output);
    assert!(
        stats.refills >= 2,
        "a 64-token draft re-filled its window fewer than 2 times in 512 positions: {stats:?}"
    );
}
