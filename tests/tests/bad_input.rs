//! `bad_input.c` and `session_memory.c`: every function of the C API returns
//! its documented status for invalid input and leaves its outputs alone, and
//! a session in caller memory computes the same bits as an allocated one.

use specdec_c_tests::{
    model_file, models_dir, program, run, stdout_of_success, Linkage, ScratchDir,
};

#[test]
fn bad_input_returns_documented_statuses() {
    let Some(models) = models_dir("bad_input_returns_documented_statuses") else {
        return;
    };
    for linkage in Linkage::ALL {
        let scratch = ScratchDir::new(&format!("bad-input-{linkage:?}"));
        let args = [
            model_file(&models, "stories260K.bin"),
            model_file(&models, "tok512.bin"),
            model_file(&models, "tokenizer.bin"),
            scratch.path().to_path_buf(),
        ];
        let label = format!("bad_input ({linkage:?})");
        let stdout = stdout_of_success(&run(&program("bad_input", linkage), &args), &label);
        assert!(
            stdout.contains("bad_input: "),
            "{label} printed no summary:\n{stdout}"
        );
        assert!(
            stdout.contains(", 0 failures\n"),
            "{label} reported failures:\n{stdout}"
        );
    }
}

#[test]
fn caller_memory_session_matches_allocated() {
    let Some(models) = models_dir("caller_memory_session_matches_allocated") else {
        return;
    };
    let args = [
        model_file(&models, "stories260K.bin"),
        model_file(&models, "tok512.bin"),
    ];
    for linkage in Linkage::ALL {
        let label = format!("session_memory ({linkage:?})");
        let stdout = stdout_of_success(&run(&program("session_memory", linkage), &args), &label);
        assert!(
            stdout.contains("session_memory: "),
            "{label} printed no summary:\n{stdout}"
        );
        assert!(
            stdout.contains(", 0 failures\n"),
            "{label} reported failures:\n{stdout}"
        );
    }
}

#[test]
fn caller_memory_session_starts_like_allocated() {
    let Some(models) = models_dir("caller_memory_session_starts_like_allocated") else {
        return;
    };
    let args = [
        "--fresh-start".into(),
        model_file(&models, "stories260K.bin").display().to_string(),
    ];
    let label = "session_memory --fresh-start";
    let stdout = stdout_of_success(
        &run(&program("session_memory", Linkage::Static), &args),
        label,
    );
    assert!(
        stdout.contains(", 0 failures\n"),
        "{label} reported failures:\n{stdout}"
    );
}
