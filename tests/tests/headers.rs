//! Both headers compile under the strict flags, C++ programs can use them,
//! and the libraries export nothing but `specdec_` symbols, so programs with
//! run.c's function names link beside specdec.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use specdec_c_tests::{
    built, program, run, shared_library, stdout_of_success, Linkage, LIBRARY_DIR, PROGRAMS,
};

#[test]
fn every_program_compiles_strictly() {
    // C files with -std=c99 and C++ files with -std=c++11, both with
    // -Wall -Wextra -Werror -pedantic.
    let failures: Vec<String> = PROGRAMS
        .iter()
        .filter_map(|p| p.compile_error.map(|e| format!("{}:\n{e}", p.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "tests/c programs failed to compile:\n{}",
        failures.join("\n")
    );
}

#[test]
fn llama2c_header_compiles_alone_as_c99() {
    let header_alone = built("header_alone");
    assert_eq!(header_alone.objects.len(), 1);
}

#[test]
fn cpp_program_runs() {
    for linkage in Linkage::ALL {
        let label = format!("cpp_header ({linkage:?})");
        let stdout = stdout_of_success(&run::<&str>(&program("cpp_header", linkage), &[]), &label);
        assert_eq!(
            stdout,
            format!("specdec {}\n", env!("CARGO_PKG_VERSION")),
            "{label} stdout"
        );
    }
}

#[test]
fn runc_names_link_beside_specdec() {
    for linkage in Linkage::ALL {
        let label = format!("runc_names ({linkage:?})");
        let stdout = stdout_of_success(&run::<&str>(&program("runc_names", linkage), &[]), &label);
        assert_eq!(stdout, "runc_names: 0 failures\n", "{label} stdout");
    }
}

/// Returns the names of the functions that `include/specdec.h` declares.
fn declared_functions() -> BTreeSet<String> {
    let header_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/specdec.h");
    let header = std::fs::read_to_string(&header_path).expect("include/specdec.h is readable");
    let mut names = BTreeSet::new();
    for line in header.lines().map(str::trim_start) {
        if line.starts_with("//")
            || line.starts_with('#')
            || line.starts_with("/*")
            || line.starts_with('*')
        {
            continue;
        }
        // A declaration is the name directly followed by its parameter list.
        let mut rest = line;
        while let Some(start) = rest.find("specdec_") {
            let name_len = rest[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - start);
            let after = &rest[start + name_len..];
            if after.starts_with('(') {
                names.insert(rest[start..start + name_len].to_owned());
            }
            rest = after;
        }
    }
    names
}

#[test]
fn shared_library_exports_only_declared_functions() {
    let library = shared_library();
    let output = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&library)
        .output()
        .expect("failed to run nm; it comes with binutils");
    let listing = stdout_of_success(&output, "nm -D --defined-only libspecdec.so");
    let exported: BTreeSet<String> = listing
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(str::to_owned)
        .collect();
    let foreign: Vec<&String> = exported
        .iter()
        .filter(|name| !name.starts_with("specdec_"))
        .collect();
    assert!(
        foreign.is_empty(),
        "{} exports symbols without the specdec_ prefix: {foreign:?}",
        library.display()
    );
    let declared = declared_functions();
    assert!(
        declared.contains("specdec_version"),
        "found no declarations in specdec.h: {declared:?}"
    );
    assert_eq!(
        exported, declared,
        "exported symbols (left) differ from the functions in specdec.h (right)"
    );
}

/// Returns the shared libraries that an executable needs, and its run
/// paths, from `readelf -d`.
fn dynamic_section(executable: &Path) -> (Vec<String>, Vec<String>) {
    let output = Command::new("readelf")
        .arg("-d")
        .arg(executable)
        .output()
        .expect("failed to run readelf; it comes with binutils");
    let listing = stdout_of_success(&output, "readelf -d");
    let mut needed = Vec::new();
    let mut run_paths = Vec::new();
    for line in listing.lines() {
        let value = line
            .split_once('[')
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(value, _)| value.to_owned());
        if let Some(value) = value {
            if line.contains("(NEEDED)") {
                needed.push(value);
            } else if line.contains("(RUNPATH)") || line.contains("(RPATH)") {
                run_paths.extend(value.split(':').map(str::to_owned));
            }
        }
    }
    (needed, run_paths)
}

#[test]
fn shared_programs_load_library_through_rpath() {
    let (needed, run_paths) = dynamic_section(&program("cpp_header", Linkage::Shared));
    assert!(
        needed.contains(&"libspecdec.so".to_owned()),
        "NEEDED entries: {needed:?}"
    );
    assert!(
        run_paths.contains(&LIBRARY_DIR.to_owned()),
        "run paths: {run_paths:?}"
    );

    let (needed, _) = dynamic_section(&program("cpp_header", Linkage::Static));
    assert!(
        !needed.iter().any(|n| n.contains("specdec")),
        "a statically linked program needs {needed:?}"
    );
}
