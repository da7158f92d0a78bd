//! `specdec gen`: writes a checkpoint with seeded random weights, for tests
//! and benchmarks at the shapes of models that are not at hand.

use std::io::Write;
use std::path::PathBuf;

use specdec_core::synthetic::write_checkpoint;
use specdec_core::{Config, Format};

/// The `specdec gen --help` text.
pub const HELP: &str = "\
Usage: specdec gen OUTPUT [options]

Writes a llama2.c checkpoint with seeded random weights. The text it generates
is meaningless; it is for timing and for exactness tests at any shape.

Options:
  --shape <name|list>  15M, 42M, 110M (the tinyllamas shapes), 260K, or
                       dim,hidden_dim,n_layers,n_heads,n_kv_heads,vocab_size,seq_len;
                       default 260K
  --format <v0|v1|v2>  legacy fp32 (v0), fp32 (v1) or Q8_0 (v2); default v1
  --group-size <int>   Q8_0 group size for v2; it must divide dim and
                       hidden_dim. Default: the largest of 64, 32, 16, ..., 1
                       that divides both
  --seed <int>         seed of the weights; default 1
  --unshared           store a separate classifier instead of reusing the
                       token embedding table
  -h, --help           print this help
";

/// Hyperparameters of a named shape: dim, hidden_dim, n_layers, n_heads,
/// n_kv_heads, vocab_size, seq_len.
fn named_shape(name: &str) -> Option<[usize; 7]> {
    match name {
        "15M" => Some([288, 768, 6, 6, 6, 32000, 256]),
        "42M" => Some([512, 1376, 8, 8, 8, 32000, 1024]),
        "110M" => Some([768, 2048, 12, 12, 12, 32000, 1024]),
        "260K" => Some([64, 172, 5, 8, 4, 512, 512]),
        _ => None,
    }
}

/// Parses a shape name or a comma-separated list of seven sizes.
pub fn parse_shape(value: &str) -> Result<[usize; 7], String> {
    if let Some(shape) = named_shape(value) {
        return Ok(shape);
    }
    let parts: Vec<&str> = value.split(',').collect();
    let invalid = || {
        format!(
            "invalid shape '{value}' for --shape; use 15M, 42M, 110M, 260K or seven comma-separated \
             sizes dim,hidden_dim,n_layers,n_heads,n_kv_heads,vocab_size,seq_len"
        )
    };
    if parts.len() != 7 {
        return Err(invalid());
    }
    let mut shape = [0usize; 7];
    for (slot, part) in shape.iter_mut().zip(parts) {
        *slot = part.trim().parse().map_err(|_| invalid())?;
    }
    Ok(shape)
}

/// The largest of 64, 32, 16, ..., 1 that divides both `dim` and
/// `hidden_dim`, as Q8_0 needs.
pub fn default_group_size(dim: usize, hidden_dim: usize) -> usize {
    let mut g = 64;
    while g > 1 && !(dim.is_multiple_of(g) && hidden_dim.is_multiple_of(g)) {
        g /= 2;
    }
    g
}

/// Builds a validated config from a shape and format settings.
pub fn config_for(shape: [usize; 7], format: Format, shared: bool) -> Result<Config, String> {
    let [dim, hidden, layers, heads, kv_heads, vocab, seq_len] = shape;
    Config::new(
        format, dim, hidden, layers, heads, kv_heads, vocab, seq_len, shared,
    )
    .map_err(|e| {
        format!(
            "invalid shape: {}",
            e.to_string().trim_start_matches("invalid header: ")
        )
    })
}

/// Writes a synthetic checkpoint for `config` into memory.
pub fn synthesize(config: &Config, seed: u64) -> Result<Vec<u8>, String> {
    let len = config
        .file_len()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or("checkpoint size overflows")?;
    let mut bytes = vec![0u8; len];
    write_checkpoint(config, seed, &mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Runs `specdec gen` with the arguments after `gen`.
pub fn main(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return crate::print_stdout(HELP);
    }
    let Some((output, rest)) = args.split_first() else {
        return Err(
            "missing OUTPUT; usage: specdec gen OUTPUT [options], or specdec gen --help".into(),
        );
    };
    let output = PathBuf::from(output);
    let mut shape = named_shape("260K").unwrap_or_default();
    let mut version = "v1".to_owned();
    let mut group_size = None;
    let mut seed = 1u64;
    let mut shared = true;
    let mut i = 0;
    while i < rest.len() {
        let flag = rest[i].as_str();
        if flag == "--unshared" {
            shared = false;
            i += 1;
            continue;
        }
        let value = rest
            .get(i + 1)
            .ok_or_else(|| format!("option '{flag}' needs a value; see specdec gen --help"))?;
        match flag {
            "--shape" => shape = parse_shape(value)?,
            "--format" => version = value.clone(),
            "--group-size" => {
                group_size = Some(value.parse().ok().filter(|&g: &usize| g > 0).ok_or_else(|| {
                    format!("invalid group size '{value}' for --group-size; use a positive whole number")
                })?)
            }
            "--seed" => {
                seed = value.parse().map_err(|_| format!("invalid seed '{value}' for --seed; use a whole number"))?
            }
            _ => return Err(format!("unknown option '{flag}'; see specdec gen --help")),
        }
        i += 2;
    }
    let format = match version.as_str() {
        "v0" => Format::Legacy,
        "v1" => Format::V1,
        "v2" => Format::V2 {
            group_size: group_size.unwrap_or_else(|| default_group_size(shape[0], shape[1])),
        },
        other => {
            return Err(format!(
                "unknown format '{other}' for --format; use v0, v1 or v2"
            ))
        }
    };
    let config = config_for(shape, format, shared)?;
    let bytes = synthesize(&config, seed)?;
    let mut file = std::fs::File::create(&output).map_err(|e| {
        format!(
            "{}: cannot create: {e}; give a file path in a writable directory as OUTPUT",
            output.display()
        )
    })?;
    file.write_all(&bytes)
        .map_err(|e| format!("{}: cannot write: {e}", output.display()))?;
    eprintln!("wrote {} ({} bytes)", output.display(), bytes.len());
    Ok(())
}
