//! Compiles the C and C++ programs under `tests/c/` against `include/` with
//! the compiler and flags that the `cc` crate picks. Then writes
//! `OUT_DIR/programs.rs`, which `src/lib.rs` includes. For each program it
//! lists the objects (or the compiler's diagnostics when a source failed to
//! compile) and the command that links them.
//!
//! The tests link the executables, not this script. Cargo runs a build
//! script before it compiles the package's normal dependencies, so
//! `libspecdec.a` and `libspecdec.so` from `specdec-ffi` may not exist yet
//! while this script runs. A test binary is compiled after every normal
//! dependency, so the libraries exist when a test links a program.
//!
//! The libraries are found in `<target-dir>/[<triple>/]<profile>/deps/`.
//! `OUT_DIR` is `<profile dir>/build/specdec-c-tests-<hash>/out`, and cargo
//! writes the cdylib and staticlib of `specdec-ffi` to `deps/` under their
//! plain names (no hash) each time it builds them. Cargo copies them into the
//! profile directory itself only when `specdec-ffi` is a requested package,
//! so copies there can be stale, while the ones in `deps/` are current.
//! NOTE: this layout is how cargo 1.95 behaves, not a stable interface. When
//! it changes, the tests fail and name the path they looked for.
//!
//! A compile error does not fail the build: it is recorded, and each test of
//! that program fails with the diagnostics, so that the rest of the workspace
//! still builds and tests.
//!
//! `SPECDEC_C_SANITIZE=1` compiles and links the programs with
//! AddressSanitizer and UndefinedBehaviorSanitizer.
//!
//! NOTE: the tests run the programs on the build machine, so a build for
//! another `--target` compiles them but cannot run them.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

const SANITIZER_FLAGS: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-omit-frame-pointer",
    "-fno-sanitize-recover=all",
];

#[derive(Clone, Copy, PartialEq)]
enum Language {
    C,
    Cpp,
}

struct Program {
    name: &'static str,
    sources: &'static [&'static str],
    language: Language,
    /// Extra flags for compiling and linking.
    flags: &'static [&'static str],
    /// False for a file that is only compiled, to check a header.
    links: bool,
}

const fn c_program(name: &'static str, sources: &'static [&'static str]) -> Program {
    Program {
        name,
        sources,
        language: Language::C,
        flags: &[],
        links: true,
    }
}

const PROGRAMS: &[Program] = &[
    c_program("generate", &["generate.c", "harness.c"]),
    c_program("llama2c_main", &["llama2c_main.c"]),
    c_program("speculative", &["speculative.c", "harness.c"]),
    Program {
        name: "threads",
        sources: &["threads.c", "harness.c"],
        language: Language::C,
        flags: &["-D_POSIX_C_SOURCE=200809L", "-pthread"],
        links: true,
    },
    c_program("bad_input", &["bad_input.c", "harness.c"]),
    c_program("session_memory", &["session_memory.c", "harness.c"]),
    c_program("runc_names", &["runc_names.c"]),
    Program {
        name: "cpp_header",
        sources: &["cpp_header.cpp"],
        language: Language::Cpp,
        flags: &[],
        links: true,
    },
    Program {
        name: "header_alone",
        sources: &["header_alone.c"],
        language: Language::C,
        flags: &[],
        links: false,
    },
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let include_dir = manifest_dir.join("..").join("include");
    let source_dir = manifest_dir.join("c");
    println!("cargo:rerun-if-changed={}", source_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        include_dir.join("specdec.h").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        include_dir.join("specdec_llama2c.h").display()
    );
    println!("cargo:rerun-if-env-changed=SPECDEC_C_SANITIZE");

    let sanitize = match env::var("SPECDEC_C_SANITIZE").as_deref() {
        Err(_) | Ok("") | Ok("0") => false,
        Ok("1") => true,
        Ok(other) => panic!(
            "SPECDEC_C_SANITIZE is {other:?}, expected 1 (build the C tests with sanitizers) or 0"
        ),
    };
    let library_dir = profile_dir(&out_dir).join("deps");
    let bin_dir = out_dir.join("bin");
    fs::create_dir_all(&bin_dir).expect("failed to create OUT_DIR/bin");

    let mut table = String::new();
    for program in PROGRAMS {
        let object_dir = out_dir.join("obj").join(program.name);
        fs::create_dir_all(&object_dir).expect("failed to create an object directory in OUT_DIR");
        let compiled = compile(program, &source_dir, &include_dir, &object_dir, sanitize);
        if let Err(diagnostics) = &compiled {
            println!(
                "cargo:warning=tests/c: {} failed to compile; its tests fail with the compiler's message",
                program.name
            );
            // Keep the full text in the build log as well.
            for line in diagnostics.lines() {
                println!("cargo:warning=  {line}");
            }
        }
        let linker = linker_command(program, sanitize);
        write_entry(&mut table, program, &compiled, &linker);
    }

    let mut generated = String::from("// Generated by build.rs.\n\n");
    writeln!(
        generated,
        "pub const LIBRARY_DIR: &str = {:?};",
        utf8(&library_dir)
    )
    .unwrap();
    writeln!(generated, "pub const BIN_DIR: &str = {:?};", utf8(&bin_dir)).unwrap();
    writeln!(generated, "pub const SANITIZED: bool = {sanitize};").unwrap();
    writeln!(
        generated,
        "pub const PROGRAMS: &[BuiltProgram] = &[\n{table}];"
    )
    .unwrap();
    fs::write(out_dir.join("programs.rs"), generated).expect("failed to write OUT_DIR/programs.rs");
}

/// Returns `<target-dir>/[<triple>/]<profile>`, the directory that contains
/// `build/` and `deps/`.
fn profile_dir(out_dir: &Path) -> PathBuf {
    let package_dir = out_dir.parent();
    let build_dir = package_dir.and_then(Path::parent);
    match (out_dir.file_name(), build_dir) {
        (Some(name), Some(build)) if name == "out" && build.file_name().is_some_and(|b| b == "build") => {
            build.parent().expect("the build directory has a parent").to_path_buf()
        }
        _ => panic!(
            "OUT_DIR {} is not <profile dir>/build/<package>/out, so the specdec-ffi libraries cannot be found",
            out_dir.display()
        ),
    }
}

/// Compiles the program's sources into `object_dir` and returns the object
/// paths, or the failed commands and their output.
fn compile(
    program: &Program,
    source_dir: &Path,
    include_dir: &Path,
    object_dir: &Path,
    sanitize: bool,
) -> Result<Vec<PathBuf>, String> {
    let mut build = cc::Build::new();
    // The cc crate prints the rerun-if-env-changed lines for CC, CFLAGS and
    // the like; it prints link lines only from compile(), which is not used.
    build
        .include(include_dir)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .flag("-pedantic");
    // The strict standards that the headers promise to compile under.
    match program.language {
        Language::C => build.std("c99"),
        Language::Cpp => build.cpp(true).std("c++11"),
    };
    build.flags(program.flags);
    if sanitize {
        build.flags(SANITIZER_FLAGS);
    }
    let compiler = build.get_compiler();

    let mut objects = Vec::new();
    let mut failures = String::new();
    for source in program.sources {
        let source_path = source_dir.join(source);
        let object = object_dir.join(format!("{source}.o"));
        let mut command = compiler.to_command();
        command.arg("-c").arg(&source_path).arg("-o").arg(&object);
        let output = command.output().unwrap_or_else(|e| {
            panic!(
                "failed to run the C compiler {}: {e}",
                compiler.path().display()
            )
        });
        if output.status.success() {
            objects.push(object);
        } else {
            let arguments: Vec<String> = command
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            writeln!(
                failures,
                "$ {} {}\n{}{}",
                compiler.path().display(),
                arguments.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
            .unwrap();
        }
    }
    if failures.is_empty() {
        Ok(objects)
    } else {
        Err(failures)
    }
}

/// Returns the compiler that links the program, then its arguments: the `cc`
/// crate's defaults for the target (such as `-m64`) and the program's and
/// sanitizer flags, but not `-Werror` and the include directory, which only
/// matter when compiling.
fn linker_command(program: &Program, sanitize: bool) -> Vec<String> {
    let mut build = cc::Build::new();
    build.cpp(program.language == Language::Cpp);
    build.flags(program.flags);
    if sanitize {
        build.flags(SANITIZER_FLAGS);
    }
    let linker = build.get_compiler();
    let mut command = vec![utf8(linker.path())];
    command.extend(linker.args().iter().map(|a| {
        a.to_str()
            .unwrap_or_else(|| panic!("compiler argument {a:?} is not UTF-8"))
            .to_owned()
    }));
    command
}

fn write_entry(
    table: &mut String,
    program: &Program,
    compiled: &Result<Vec<PathBuf>, String>,
    linker: &[String],
) {
    let (objects, error) = match compiled {
        Ok(objects) => (objects.iter().map(|o| utf8(o)).collect(), None),
        Err(diagnostics) => (Vec::new(), Some(diagnostics.as_str())),
    };
    writeln!(
        table,
        "    BuiltProgram {{\n        name: {:?},\n        compile_error: {:?},\n        objects: &{:?},\n        \
         linker: &{:?},\n        links: {},\n    }},",
        program.name, error, objects, linker, program.links
    )
    .unwrap();
}

fn utf8(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("path {} is not UTF-8", path.display()))
        .to_owned()
}
