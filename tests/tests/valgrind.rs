//! Runs C programs under valgrind's memcheck: no invalid access, no use of
//! uninitialized memory, and no definite or indirect leak. `.ci/run` runs
//! this with `--ignored`; it needs valgrind and a build without
//! SPECDEC_C_SANITIZE.

use std::path::Path;
use std::time::Duration;

use specdec_c_tests::{models_dir, program, run_with_timeout, Linkage, GOLDEN, SANITIZED};

/// Runs `executable` under memcheck, asserts that memcheck found nothing and
/// the program succeeded, and returns its stdout.
fn memcheck(executable: &Path, args: &[String]) -> String {
    let mut command = vec![
        "--leak-check=full".to_owned(),
        "--error-exitcode=1".to_owned(),
        "--errors-for-leak-kinds=definite,indirect".to_owned(),
        executable.display().to_string(),
    ];
    command.extend_from_slice(args);
    let output = run_with_timeout(Path::new("valgrind"), &command, Duration::from_secs(600));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ERROR SUMMARY: 0 errors"),
        "valgrind {} reported errors:\n{stderr}",
        command.join(" ")
    );
    assert!(
        output.status.success(),
        "valgrind {} failed with {}:\n{stderr}",
        command.join(" "),
        output.status
    );
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

#[test]
#[ignore = "needs valgrind; .ci/run runs it with --ignored"]
fn programs_are_clean_under_valgrind() {
    if SANITIZED {
        panic!("valgrind cannot run programs built with SPECDEC_C_SANITIZE=1; rebuild without it");
    }
    let Some(models) = models_dir("programs_are_clean_under_valgrind") else {
        return;
    };
    let greedy = &GOLDEN[0];
    for linkage in Linkage::ALL {
        let stdout = memcheck(&program("generate", linkage), &greedy.arguments(&models));
        assert_eq!(
            stdout, greedy.stdout,
            "generate ({linkage:?}) under valgrind"
        );
    }
    let stdout = memcheck(
        &program("llama2c_main", Linkage::Static),
        &greedy.arguments(&models),
    );
    assert_eq!(stdout, greedy.stdout, "llama2c_main under valgrind");
}
