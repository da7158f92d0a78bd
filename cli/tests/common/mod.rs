//! Helpers shared by the CLI integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Path of a real model file in the directory named by `SPECDEC_MODELS`, or
/// `None` after printing a skip notice when the variable is unset. `.ci/run`
/// sets it and fails the run when any test printed the notice.
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

/// Runs the `specdec` binary with `args` and `stdin`.
pub fn specdec(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_specdec"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start specdec");
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin).expect("failed to write stdin");
    drop(input);
    child
        .wait_with_output()
        .expect("failed to wait for specdec")
}

/// Runs `specdec MODEL -z TOKENIZER ARGS...` on real files, or returns `None`
/// when they are unavailable.
pub fn run_real(model: &str, tokenizer: &str, args: &[&str]) -> Option<Output> {
    let model = model_path(model)?;
    let tokenizer = model_path(tokenizer)?;
    let mut all = vec![model.to_str().unwrap(), "-z", tokenizer.to_str().unwrap()];
    all.extend_from_slice(args);
    Some(specdec(&all, b""))
}

/// stdout as text, asserting a successful exit.
pub fn stdout_ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "specdec failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

/// stderr as text, asserting a failed exit with nothing on stdout.
pub fn stderr_failed(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "specdec succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// One reference output of llama2.c (`run` for fp32, `runq` for Q8_0), built
/// with `gcc -O3`, for the given arguments.
pub struct Golden {
    pub model: &'static str,
    pub tokenizer: &'static str,
    pub args: &'static [&'static str],
    pub stdout: &'static str,
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
