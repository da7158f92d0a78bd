//! The C programs print llama2.c's exact stdout for the reference cases:
//! `generate.c` through `specdec_generate`, and `llama2c_main.c`, a run.c-style
//! program built only on `specdec_llama2c.h`.

use specdec_c_tests::{models_dir, program, run, stdout_of_success, Linkage, GOLDEN};

fn check_golden(name: &str, extra_args: &[&str], test: &str) {
    let Some(models) = models_dir(test) else {
        return;
    };
    for linkage in Linkage::ALL {
        let executable = program(name, linkage);
        for case in GOLDEN {
            let mut args = case.arguments(&models);
            args.extend(extra_args.iter().map(|a| a.to_string()));
            let label = format!("{name} ({linkage:?}) {}", args.join(" "));
            let stdout = stdout_of_success(&run(&executable, &args), &label);
            assert_eq!(
                stdout, case.stdout,
                "{label} differs from llama2.c's output"
            );
        }
    }
}

#[test]
fn generate_matches_llama2c() {
    check_golden("generate", &[], "generate_matches_llama2c");
}

#[test]
fn generate_batched_prompt_matches_llama2c() {
    // Prompt tokens go through forward calls of up to 7 tokens; the output
    // must not change.
    check_golden(
        "generate",
        &["-b", "7"],
        "generate_batched_prompt_matches_llama2c",
    );
}

#[test]
fn generate_threaded_matches_llama2c() {
    // Forward passes on a pool of 3 threads; the output must not change.
    check_golden(
        "generate",
        &["-T", "3"],
        "generate_threaded_matches_llama2c",
    );
}

#[test]
fn llama2c_main_matches_llama2c() {
    check_golden("llama2c_main", &[], "llama2c_main_matches_llama2c");
}

#[test]
fn llama2c_main_reports_missing_checkpoint() {
    for linkage in Linkage::ALL {
        let executable = program("llama2c_main", linkage);
        let output = run(&executable, &["/nonexistent/specdec/model.bin", "-t", "0"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "exit status for a missing checkpoint, stderr: {stderr}"
        );
        assert!(
            output.stdout.is_empty(),
            "stdout for a missing checkpoint is not empty"
        );
        assert!(
            stderr.contains("build_transformer: cannot load /nonexistent/specdec/model.bin: "),
            "unexpected stderr: {stderr}"
        );
    }
}

#[test]
fn llama2c_main_reports_vocab_mismatch() {
    let Some(models) = models_dir("llama2c_main_reports_vocab_mismatch") else {
        return;
    };
    let model = specdec_c_tests::model_file(&models, "stories260K.bin");
    let tokenizer = specdec_c_tests::model_file(&models, "tokenizer.bin");
    let executable = program("llama2c_main", Linkage::Static);
    let output = run(
        &executable,
        &[
            model.to_str().unwrap(),
            "-z",
            tokenizer.to_str().unwrap(),
            "-t",
            "0",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit status for a 32000-piece tokenizer, stderr: {stderr}"
    );
    assert!(
        stderr.contains("build_tokenizer: cannot load"),
        "unexpected stderr: {stderr}"
    );
    assert!(
        stderr.contains("vocabulary sizes differ"),
        "unexpected stderr: {stderr}"
    );
}
