//! Links and runs the C and C++ programs that `build.rs` compiled from
//! `tests/c/`, and contains what the tests share: where the models are and the
//! reference outputs of llama2.c.
//!
//! Each program is linked twice, against `libspecdec.a` and against
//! `libspecdec.so` (found through an rpath), when a test process first
//! requests it. See `build.rs` for why the tests link rather than the build
//! script, and how the libraries are found.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// One program that `build.rs` compiled.
#[derive(Debug)]
pub struct BuiltProgram {
    pub name: &'static str,
    /// The failed compiler commands and their diagnostics, if any.
    pub compile_error: Option<&'static str>,
    pub objects: &'static [&'static str],
    /// The compiler that links the program, then its arguments.
    pub linker: &'static [&'static str],
    /// False for a file that is only compiled, to check a header.
    pub links: bool,
}

include!(concat!(env!("OUT_DIR"), "/programs.rs"));

/// How a program is linked with specdec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linkage {
    /// Against `libspecdec.a`, with the system libraries that Rust's standard
    /// library needs.
    Static,
    /// Against `libspecdec.so`, found at run time through an rpath.
    Shared,
}

impl Linkage {
    pub const ALL: [Linkage; 2] = [Linkage::Static, Linkage::Shared];

    fn suffix(self) -> &'static str {
        match self {
            Linkage::Static => "static",
            Linkage::Shared => "shared",
        }
    }
}

pub fn static_library() -> PathBuf {
    Path::new(LIBRARY_DIR).join("libspecdec.a")
}

pub fn shared_library() -> PathBuf {
    Path::new(LIBRARY_DIR).join("libspecdec.so")
}

/// Returns the program that `build.rs` compiled under `name`, and panics
/// with the compiler's diagnostics when it failed to compile.
pub fn built(name: &str) -> &'static BuiltProgram {
    let program = PROGRAMS
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("build.rs compiles no program named {name}"));
    if let Some(diagnostics) = program.compile_error {
        panic!("tests/c: {name} failed to compile:\n{diagnostics}");
    }
    program
}

/// Returns the path of the executable `name` linked with `linkage`, linking
/// it on the first request in this process.
pub fn program(name: &str, linkage: Linkage) -> PathBuf {
    static LINKED: Mutex<Vec<(&'static str, Linkage, PathBuf)>> = Mutex::new(Vec::new());

    let program = built(name);
    assert!(program.links, "{name} is only compiled, not linked");
    // Holding the lock while linking makes concurrent tests wait for one link.
    let mut linked = LINKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, path)) = linked.iter().find(|(n, l, _)| *n == name && *l == linkage) {
        return path.clone();
    }
    let path = link(program, linkage);
    linked.push((program.name, linkage, path.clone()));
    path
}

fn link(program: &BuiltProgram, linkage: Linkage) -> PathBuf {
    let library = match linkage {
        Linkage::Static => static_library(),
        Linkage::Shared => shared_library(),
    };
    assert!(
        library.is_file(),
        "{} is missing: cargo builds it before the tests because specdec-ffi is a dependency of \
         specdec-c-tests, so cargo's target directory layout must have changed (see tests/build.rs)",
        library.display()
    );
    let sanitized = if SANITIZED { "-sanitized" } else { "" };
    let executable =
        Path::new(BIN_DIR).join(format!("{}-{}{sanitized}", program.name, linkage.suffix()));
    // Link to a name of this process and rename, so that another test process
    // never runs a half-written file.
    let partial = Path::new(BIN_DIR).join(format!(
        "{}-{}{sanitized}.partial-{}",
        program.name,
        linkage.suffix(),
        std::process::id()
    ));

    fs::create_dir_all(BIN_DIR).unwrap_or_else(|e| panic!("failed to create {BIN_DIR}: {e}"));
    let (compiler, arguments) = program
        .linker
        .split_first()
        .expect("build.rs names a linker");
    let mut command = Command::new(compiler);
    command.args(arguments).args(program.objects);
    match linkage {
        Linkage::Static => {
            command.arg(&library).args(["-lpthread", "-ldl", "-lm"]);
        }
        Linkage::Shared => {
            // -lspecdec picks libspecdec.so over libspecdec.a in the same
            // directory, and records the name without a path.
            command
                .arg(format!("-L{LIBRARY_DIR}"))
                .arg("-lspecdec")
                .arg(format!("-Wl,-rpath,{LIBRARY_DIR}"));
        }
    }
    command.arg("-o").arg(&partial);
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("failed to run the linker {compiler}: {e}"));
    assert!(
        output.status.success(),
        "linking {} against {} failed:\n$ {:?}\n{}{}",
        program.name,
        library.display(),
        command,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    fs::rename(&partial, &executable).unwrap_or_else(|e| {
        panic!(
            "failed to rename {} to {}: {e}",
            partial.display(),
            executable.display()
        )
    });
    executable
}

/// Runs `program` with `args`, and kills it and panics when it runs longer
/// than `timeout`. Standard input is empty.
pub fn run_with_timeout<S: AsRef<OsStr>>(program: &Path, args: &[S], timeout: Duration) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {}: {e}", program.display()));
    // Drain both pipes on threads so that a chatty program cannot block.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stdout_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).map(|_| bytes)
    });
    let stderr_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        stderr.read_to_end(&mut bytes).map(|_| bytes)
    });

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .expect("failed to wait for a child process")
        {
            break status;
        }
        if started.elapsed() > timeout {
            child.kill().ok();
            child.wait().ok();
            panic!(
                "{} ran longer than {timeout:?} and was killed",
                program.display()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout_reader
            .join()
            .unwrap()
            .expect("failed to read stdout"),
        stderr: stderr_reader
            .join()
            .unwrap()
            .expect("failed to read stderr"),
    }
}

/// Runs `program` with `args` and a timeout of two minutes.
pub fn run<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> Output {
    run_with_timeout(program, args, Duration::from_secs(120))
}

/// Returns stdout, after asserting that the program exited with status 0.
pub fn stdout_of_success(output: &Output, label: &str) -> String {
    assert!(
        output.status.success(),
        "{label} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap_or_else(|_| panic!("{label} printed invalid UTF-8"))
}

/// Returns the directory named by `SPECDEC_MODELS`, or `None` after printing
/// a skip notice when the variable is unset. `.ci/run` sets it and fails the
/// run when any test printed the notice.
pub fn models_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("SPECDEC_MODELS") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            println!("SKIPPED: SPECDEC_MODELS is unset, so {test} did not run");
            None
        }
    }
}

/// Returns the path of a model file in `dir`, asserting that it exists.
pub fn model_file(dir: &Path, file: &str) -> PathBuf {
    let path = dir.join(file);
    assert!(
        path.is_file(),
        "SPECDEC_MODELS is set but {} is missing",
        path.display()
    );
    path
}

/// A directory under the system's temporary directory, removed on drop.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(name: &str) -> ScratchDir {
        let path =
            std::env::temp_dir().join(format!("specdec-c-tests-{name}-{}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path)
                .unwrap_or_else(|e| panic!("failed to remove {}: {e}", path.display()));
        }
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("failed to create {}: {e}", path.display()));
        ScratchDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        fs::remove_dir_all(&self.path).ok();
    }
}

/// One reference output of llama2.c (`run` for fp32, `runq` for Q8_0),
/// built with `gcc -O3`, for the given arguments.
pub struct Golden {
    pub model: &'static str,
    pub tokenizer: &'static str,
    pub args: &'static [&'static str],
    pub stdout: &'static str,
}

impl Golden {
    /// Returns the command-line arguments of run.c for this case: the checkpoint,
    /// `-z TOKENIZER` and the case's flags.
    pub fn arguments(&self, models: &Path) -> Vec<String> {
        let mut arguments = vec![
            model_file(models, self.model).display().to_string(),
            "-z".to_owned(),
            model_file(models, self.tokenizer).display().to_string(),
        ];
        arguments.extend(self.args.iter().map(|a| a.to_string()));
        arguments
    }
}

pub const GOLDEN: &[Golden] = &[
    Golden {
        model: "stories260K.bin",
        tokenizer: "tok512.bin",
        args: &["-t", "0", "-n", "200"],
        stdout: "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I want to play with your ball, but I can't find it.\"\nLily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\nLily didn't want to help her mom, so she\n",
    },
    Golden {
        model: "stories260K.bin",
        tokenizer: "tok512.bin",
        args: &["-t", "1.0", "-p", "1.0", "-s", "42", "-n", "200"],
        stdout: "Once upon a time, there was a big roof. The fox was ready to look for people inside. He saw a big rock near a big tree. The roof was very small and fun! He ate the roof too. He got a shiny stool, so he sicked the roof with his friend, the girl named Mia.\n\"Help, Mia. Why are you sad, Mia?\" she asked.\n\"I want to try us,\" Mia said. \"It is cute. We have to find one of smells!\"\nMia felt proud of\n",
    },
    Golden {
        model: "stories260K.bin",
        tokenizer: "tok512.bin",
        args: &["-t", "1.0", "-p", "0.95", "-s", "42", "-n", "200"],
        stdout: "Once upon a time, there was a little boy named Timmy. Timmy loved going to the park with his mom. One day, Lily went outside to play outside in her pocket. He was scared and didn't know where to buy some colorful animals.\nLater that day, Timmy's mom came outside and saw Timmy just playing in the shore. She didn't see that made him happy, but Timmy's mom said he had to sort his cobwebs and write cold colors. Timmy asked his mom if he was amazed! His mom\n",
    },
    Golden {
        model: "stories260K.bin",
        tokenizer: "tok512.bin",
        args: &["-t", "1.0", "-p", "0.95", "-s", "42", "-n", "200", "-i", "There was a big"],
        stdout: "There was a big pretty grass. It was a long elephant. The cars wanted to tell him that as they spin before the amazing doll, just like it she was always okay.\nOne day, a little girl named Lucy found a ball and an axe. She wanted to race, but she didn't know what the ball was. The ball was determined to be a nice car for Lucy.\nLucy's friend, a little girl named Lily, said, \"Let's go to the store with my mom. I will s\n",
    },
    Golden {
        model: "tinystories279K.bin",
        tokenizer: "tok512.bin",
        args: &["-t", "0", "-n", "256", "-i", "Once upon a time"],
        stdout: "Once upon a time, there was a little girl named Lily. She loved to play outside and came to play with her friends. One day, she went to the park to play with her toys. She was very happy. He wanted to play with the ball.\nThey came to the park, but then she couldn't find it. The bird was very happy. The bird was very happy. The bird was very happy. The bird was very happy. The bird was very happy. The bird was very happy.\nThey came to the park and showed the bird. The bird was very happy. He said, \"I'm sorry, Lily. We can't be my toys.\"\nThey smiled and said, \"I'm sorry, Lily. It's always remember.\"\nThey smiled and said, \"\n",
    },
    Golden {
        model: "tinystories279K.bin",
        tokenizer: "tok512.bin",
        args: &["-t", "0.8", "-p", "0.9", "-s", "7", "-n", "150", "-i", "The dog"],
        stdout: "The dog said started to rain, but he wanted to score it. The dog saw a big garden. She was shiny best friend. She thought it was too good and said, \"I will slide them you.\"\nThe bug was sad and searched the funny. They all had a jar of the pretty rabbit to see all day. The birds did not sorry to their toy car. The bug\n",
    },
    Golden {
        model: "stories260K_q80.bin",
        tokenizer: "tok512.bin",
        args: &["-t", "0", "-n", "200"],
        stdout: "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.\nLily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I want to play with your ball, but I can't find it.\"\nLily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\nLily didn't want to help, but she did\n",
    },
    Golden {
        model: "tinystories279K_q80.bin",
        tokenizer: "tok512.bin",
        args: &["-t", "1.0", "-p", "0.9", "-s", "3", "-n", "120", "-i", "Lily"],
        stdout: "Lily can tree and play with Spot, and felt surprises. They run water wromed with its house. Lily felt both smiled and have a big trucky. Lily and her mommy pearged hard and came to see the powdause and started to get. \nThe rocket and thought it went\n",
    },
];
