//! `speculative.c`: through the C API, speculative decoding at temperature 0
//! emits exactly the target's greedy tokens, and its statistics add up.

use specdec_c_tests::{model_file, models_dir, program, run, stdout_of_success, Linkage};

fn check_speculative(linkage: Linkage, test: &str) {
    let Some(models) = models_dir(test) else {
        return;
    };
    let files = [
        "stories260K.bin",
        "tinystories279K.bin",
        "tok512.bin",
        "stories260K_q80.bin",
        "tinystories279K_q80.bin",
    ];
    let args: Vec<_> = files.iter().map(|f| model_file(&models, f)).collect();
    let label = format!("speculative ({linkage:?})");
    let stdout = stdout_of_success(&run(&program("speculative", linkage), &args), &label);
    assert!(
        stdout.contains("speculative: "),
        "{label} printed no summary:\n{stdout}"
    );
    assert!(
        stdout.contains(", 0 failures\n"),
        "{label} reported failures:\n{stdout}"
    );
}

// One test per linkage, so that the two run in parallel.
#[test]
fn speculative_matches_greedy_static() {
    check_speculative(Linkage::Static, "speculative_matches_greedy_static");
}

#[test]
fn speculative_matches_greedy_shared() {
    check_speculative(Linkage::Shared, "speculative_matches_greedy_shared");
}
