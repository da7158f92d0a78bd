//! `threads.c`: one model, tokenizer and draft model shared by two threads
//! that generate at the same time give each thread its single-threaded output.

use specdec_c_tests::{model_file, models_dir, program, run, stdout_of_success, Linkage};

fn check_threads(linkage: Linkage, test: &str) {
    let Some(models) = models_dir(test) else {
        return;
    };
    let args: Vec<_> = ["stories260K.bin", "tinystories279K.bin", "tok512.bin"]
        .iter()
        .map(|f| model_file(&models, f))
        .collect();
    let label = format!("threads ({linkage:?})");
    let stdout = stdout_of_success(&run(&program("threads", linkage), &args), &label);
    assert!(
        stdout.contains("threads: "),
        "{label} printed no summary:\n{stdout}"
    );
    assert!(
        stdout.contains(", 0 failures\n"),
        "{label} reported failures:\n{stdout}"
    );
}

// One test per linkage, so that the two run in parallel.
#[test]
fn threads_share_models_static() {
    check_threads(Linkage::Static, "threads_share_models_static");
}

#[test]
fn threads_share_models_shared() {
    check_threads(Linkage::Shared, "threads_share_models_shared");
}
