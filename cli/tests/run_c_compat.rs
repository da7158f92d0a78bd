//! The CLI against llama2.c's reference outputs, and its handling of bad
//! input.

mod common;

use std::path::PathBuf;

use common::{model_path, run_real, specdec, stderr_failed, stdout_ok, GOLDEN};

/// A file in a per-test temporary directory, removed with the directory.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("specdec-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn golden_outputs_are_byte_identical() {
    for case in GOLDEN {
        let Some(output) = run_real(case.model, case.tokenizer, case.args) else {
            return;
        };
        let stdout = stdout_ok(&output);
        assert_eq!(stdout, case.stdout, "{} {:?}", case.model, case.args);
    }
}

#[test]
fn v1_file_prints_what_v0_prints() {
    let arg_sets: &[&[&str]] = &[
        &["-t", "0", "-n", "200"],
        &["-t", "1.0", "-p", "0.95", "-s", "42", "-n", "200"],
        &[
            "-t",
            "0.8",
            "-p",
            "0.9",
            "-s",
            "5",
            "-n",
            "100",
            "-i",
            "There was a big",
        ],
    ];
    for args in arg_sets {
        let Some(v0) = run_real("stories260K.bin", "tok512.bin", args) else {
            return;
        };
        let v1 = run_real("stories260K_v1.bin", "tok512.bin", args).unwrap();
        assert_eq!(stdout_ok(&v1), stdout_ok(&v0), "{args:?}");
    }
}

#[test]
fn steps_above_seq_len_are_clamped() {
    // stories260K has seq_len 512: -n 0 and -n 10000 both mean 512, as in run.c.
    let Some(full) = run_real("stories260K.bin", "tok512.bin", &["-t", "0", "-n", "512"]) else {
        return;
    };
    let full = stdout_ok(&full);
    let zero = run_real("stories260K.bin", "tok512.bin", &["-t", "0", "-n", "0"]).unwrap();
    let above = run_real("stories260K.bin", "tok512.bin", &["-t", "0", "-n", "10000"]).unwrap();
    assert_eq!(stdout_ok(&zero), full);
    assert_eq!(stdout_ok(&above), full);
    let shorter = run_real("stories260K.bin", "tok512.bin", &["-t", "0", "-n", "200"]).unwrap();
    assert!(full.len() > stdout_ok(&shorter).len());
}

#[test]
fn same_seed_repeats_and_other_seed_differs() {
    let args = ["-t", "1.0", "-p", "0.9", "-s", "1234", "-n", "100"];
    let Some(first) = run_real("stories260K.bin", "tok512.bin", &args) else {
        return;
    };
    let second = run_real("stories260K.bin", "tok512.bin", &args).unwrap();
    let other = run_real(
        "stories260K.bin",
        "tok512.bin",
        &["-t", "1.0", "-p", "0.9", "-s", "4321", "-n", "100"],
    )
    .unwrap();
    assert_eq!(stdout_ok(&first), stdout_ok(&second));
    assert_ne!(stdout_ok(&first), stdout_ok(&other));
}

#[test]
fn long_prompt_is_rejected_with_counts() {
    let words: Vec<&str> = ["the", "little", "dog", "ran", "to", "the", "park"]
        .iter()
        .cycle()
        .take(3000)
        .copied()
        .collect();
    let prompt = words.join(" ");
    let Some(output) = run_real("stories260K.bin", "tok512.bin", &["-i", &prompt]) else {
        return;
    };
    let stderr = stderr_failed(&output);
    assert!(stderr.starts_with("error: prompt is "), "{stderr}");
    assert!(stderr.contains("seq_len) is 512 tokens"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn prompt_just_over_context_names_token_count() {
    // Short enough to pass the byte-length bound, too long once encoded:
    // 600 words of one letter each are over 512 tokens.
    let prompt = vec!["a"; 600].join(" ");
    let Some(output) = run_real("stories260K.bin", "tok512.bin", &["-i", &prompt]) else {
        return;
    };
    let stderr = stderr_failed(&output);
    assert!(
        stderr.contains("tokens but the model's context (seq_len) is 512 tokens"),
        "{stderr}"
    );
}

#[test]
fn chat_with_huge_prompt_is_rejected() {
    let prompt = "x".repeat(5000);
    let Some(output) = run_real(
        "stories260K.bin",
        "tok512.bin",
        &["-m", "chat", "-y", "", "-i", &prompt],
    ) else {
        return;
    };
    let stderr = stderr_failed(&output);
    assert!(stderr.contains("seq_len) is 512 tokens"), "{stderr}");
}

#[test]
fn chat_runs_turns_from_stdin() {
    let (Some(model), Some(tokenizer)) = (model_path("stories260K.bin"), model_path("tok512.bin"))
    else {
        return;
    };
    let output = specdec(
        &[
            model.to_str().unwrap(),
            "-z",
            tokenizer.to_str().unwrap(),
            "-m",
            "chat",
            "-t",
            "0",
            "-n",
            "200",
        ],
        b"be nice\nTell me a story\n",
    );
    let stdout = stdout_ok(&output);
    assert!(
        stdout.starts_with("Enter system prompt (optional): User: Assistant: "),
        "{stdout}"
    );
    assert!(
        stdout.len() > "Enter system prompt (optional): User: Assistant: ".len() + 10,
        "{stdout}"
    );
}

#[test]
fn chat_ends_cleanly_at_end_of_input() {
    let (Some(model), Some(tokenizer)) = (model_path("stories260K.bin"), model_path("tok512.bin"))
    else {
        return;
    };
    let output = specdec(
        &[
            model.to_str().unwrap(),
            "-z",
            tokenizer.to_str().unwrap(),
            "-m",
            "chat",
        ],
        b"",
    );
    assert_eq!(
        stdout_ok(&output),
        "Enter system prompt (optional): User: \n"
    );
    // A prompt from -i is still answered when stdin is empty.
    let output = specdec(
        &[
            model.to_str().unwrap(),
            "-z",
            tokenizer.to_str().unwrap(),
            "-m",
            "chat",
            "-i",
            "Hi there",
            "-t",
            "0",
        ],
        b"",
    );
    let stdout = stdout_ok(&output);
    assert!(
        stdout.starts_with("Enter system prompt (optional): Assistant: "),
        "{stdout}"
    );
    assert!(
        stdout.len() > "Enter system prompt (optional): Assistant: ".len() + 5,
        "{stdout}"
    );
}

#[test]
fn directory_as_model_is_rejected() {
    let dir = TempDir::new("dir-model");
    let output = specdec(&[dir.0.to_str().unwrap()], b"");
    let stderr = stderr_failed(&output);
    assert!(
        stderr.contains("is a directory; pass the path of a checkpoint file"),
        "{stderr}"
    );
}

#[test]
fn missing_files_are_rejected() {
    let output = specdec(&["/nonexistent/model.bin"], b"");
    assert_eq!(
        stderr_failed(&output),
        "error: /nonexistent/model.bin: file not found; check the path\n"
    );
    let Some(model) = model_path("stories260K.bin") else {
        return;
    };
    let output = specdec(
        &[model.to_str().unwrap(), "-z", "/nonexistent/tok.bin"],
        b"",
    );
    assert_eq!(
        stderr_failed(&output),
        "error: /nonexistent/tok.bin: file not found; check the path\n"
    );
}

#[test]
fn truncated_and_empty_models_are_rejected() {
    let Some(bytes) = common::model_path("stories260K.bin").map(|p| std::fs::read(p).unwrap())
    else {
        return;
    };
    let dir = TempDir::new("truncated");
    let half = dir.file("half.bin", &bytes[..bytes.len() / 2]);
    let stderr = stderr_failed(&specdec(&[&half], b""));
    assert!(
        stderr.contains(&format!(
            "truncated: the header implies {} bytes but the file has {}; the file is incomplete",
            bytes.len(),
            bytes.len() / 2
        )),
        "{stderr}"
    );
    let empty = dir.file("empty.bin", b"");
    let stderr = stderr_failed(&specdec(&[&empty], b""));
    assert!(
        stderr.contains("file is 0 bytes, shorter than the 28-byte checkpoint header"),
        "{stderr}"
    );
}

#[test]
fn mismatched_tokenizer_is_rejected() {
    let Some(output) = run_real("stories260K.bin", "tokenizer.bin", &[]) else {
        return;
    };
    let stderr = stderr_failed(&output);
    assert!(stderr.contains("32000"), "{stderr}");
    assert!(stderr.contains("512"), "{stderr}");
}

#[test]
fn invalid_flags_are_rejected() {
    let Some(model) = model_path("stories260K.bin") else {
        return;
    };
    let model = model.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["-t", "-1"], "invalid temperature '-1'"),
        (&["-p", "2"], "invalid top-p '2'"),
        (&["-n", "-5"], "invalid step count '-5'"),
        (&["-x", "1"], "unknown option '-x'"),
        (&["--temperature", "1"], "unknown option '--temperature'"),
        (&["-m", "talk"], "unknown mode 'talk'"),
        (&["-n"], "option '-n' needs a value"),
    ];
    for (args, expected) in cases {
        let mut all = vec![model];
        all.extend_from_slice(args);
        let stderr = stderr_failed(&specdec(&all, b""));
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn help_lists_every_flag() {
    let output = specdec(&["--help"], b"");
    let stdout = stdout_ok(&output);
    for flag in ["-t", "-p", "-s", "-n", "-i", "-z", "-m", "-y"] {
        assert!(
            stdout.contains(&format!("  {flag} <")),
            "{flag} missing from help"
        );
    }
}

#[cfg(unix)]
#[test]
fn invalid_utf8_prompt_is_encoded() {
    use std::os::unix::ffi::OsStrExt;
    let (Some(model), Some(tokenizer)) = (model_path("stories260K.bin"), model_path("tok512.bin"))
    else {
        return;
    };
    // run.c takes any bytes; the tokenizer encodes 0xFF with byte fallback.
    let prompt = std::ffi::OsStr::from_bytes(b"a\xffb");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_specdec"))
        .arg(&model)
        .arg("-z")
        .arg(&tokenizer)
        .args(["-t", "0", "-n", "10", "-i"])
        .arg(prompt)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout.starts_with(b"a\xef\xbf\xbdb"),
        "{:?}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn closed_stdout_ends_quietly() {
    let (Some(model), Some(tokenizer)) = (model_path("stories260K.bin"), model_path("tok512.bin"))
    else {
        return;
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_specdec"))
        .arg(&model)
        .arg("-z")
        .arg(&tokenizer)
        .args(["-t", "0", "-n", "512"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the reading end at once, as `| head -c 0` would.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit status {:?}: {stderr}",
        output.status
    );
    assert!(!stderr.contains("error"), "{stderr}");
}

#[cfg(target_os = "linux")]
#[test]
fn model_from_a_pipe_runs() {
    let (Some(model), Some(tokenizer)) = (model_path("stories260K.bin"), model_path("tok512.bin"))
    else {
        return;
    };
    let expected = run_real("stories260K.bin", "tok512.bin", &["-t", "0", "-n", "30"]).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_specdec"))
        .arg("/dev/stdin")
        .arg("-z")
        .arg(&tokenizer)
        .args(["-t", "0", "-n", "30"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&model).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &bytes));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(stdout_ok(&output), stdout_ok(&expected));
}

#[cfg(target_os = "linux")]
#[test]
fn help_to_full_device_fails_cleanly() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_specdec"))
        .arg("--help")
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot write to stdout"),
        "{stderr}"
    );
}

#[test]
fn fast_math_on_q8_model_notes_no_effect() {
    let args = ["-t", "0", "-n", "40"];
    let Some(exact) = run_real("stories260K_q80.bin", "tok512.bin", &args) else {
        return;
    };
    let fast = run_real(
        "stories260K_q80.bin",
        "tok512.bin",
        &["-t", "0", "-n", "40", "--fast-math"],
    )
    .unwrap();
    assert_eq!(stdout_ok(&fast), stdout_ok(&exact));
    let stderr = String::from_utf8_lossy(&fast.stderr);
    assert!(
        stderr.contains("--fast-math changes only fp32 matmuls")
            && stderr.contains("stories260K_q80.bin is Q8_0"),
        "{stderr}"
    );
    let stderr = String::from_utf8_lossy(&exact.stderr);
    assert!(!stderr.contains("--fast-math"), "{stderr}");
}
