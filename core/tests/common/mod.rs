//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Returns the path of a real checkpoint or tokenizer in the directory named
/// by `SPECDEC_MODELS`, or `None` after printing a skip notice when the
/// variable is unset. `.ci/run` sets the variable and fails the run when any
/// test printed the notice.
pub fn model_path(file: &str) -> Option<PathBuf> {
    match std::env::var_os("SPECDEC_MODELS") {
        Some(dir) => {
            let path = PathBuf::from(dir).join(file);
            assert!(
                path.is_file(),
                "SPECDEC_MODELS is set but {} is missing",
                path.display()
            );
            Some(path)
        }
        None => {
            println!("SKIPPED: SPECDEC_MODELS is unset, so the test needing {file} did not run");
            None
        }
    }
}

/// Reads a real model file, or returns `None` (with a skip notice) when
/// `SPECDEC_MODELS` is unset.
pub fn read_model(file: &str) -> Option<Vec<u8>> {
    model_path(file)
        .map(|path| std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}
