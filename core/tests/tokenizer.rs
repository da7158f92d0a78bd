//! Tests of the llama2.c tokenizer: run.c's encodings of the real
//! tokenizer.bin (32000 pieces) and tok512.bin (512 pieces), round trips,
//! merge-order rules on small synthetic vocabularies, and rejected inputs.

mod common;

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use specdec_core::tokenizer::{encode_capacity, index_len, BOS, EOS};
use specdec_core::{Tokenizer, TokenizerError};

/// Real tokenizer files and their models' vocab_size.
const LLAMA2: (&str, usize) = ("tokenizer.bin", 32000);
const TOK512: (&str, usize) = ("tok512.bin", 512);

/// One prompt and the ids that llama2.c's run.c `encode(text, bos=1, eos=0)`
/// returns for it. They equal SentencePiece's ids for these strings.
struct Golden {
    file: &'static str,
    text: &'static str,
    ids: &'static [u32],
}

const GOLDEN: &[Golden] = &[
    Golden { file: "tokenizer.bin", text: "", ids: &[1] },
    Golden {
        file: "tokenizer.bin",
        text: "I believe the meaning of life is",
        ids: &[1, 306, 4658, 278, 6593, 310, 2834, 338],
    },
    Golden {
        file: "tokenizer.bin",
        text: "Simply put, the theory of relativity states that ",
        ids: &[1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871],
    },
    Golden {
        file: "tokenizer.bin",
        text: "A brief message congratulating the team on the launch:\n\n        Hi everyone,\n\n        I just ",
        ids: &[
            1, 319, 11473, 2643, 378, 629, 271, 18099, 278, 3815, 373, 278, 6826, 29901, 13, 13,
            4706, 6324, 14332, 29892, 13, 13, 4706, 306, 925, 29871,
        ],
    },
    Golden {
        file: "tokenizer.bin",
        text: "Translate English to French:\n\n        sea otter => loutre de mer\n        peppermint => menthe poivrée\n        plush girafe => girafe peluche\n        cheese =>",
        ids: &[
            1, 4103, 9632, 4223, 304, 5176, 29901, 13, 13, 4706, 7205, 4932, 357, 1149, 301, 449,
            276, 316, 2778, 13, 4706, 1236, 407, 837, 524, 1149, 6042, 354, 772, 440, 29878, 1318,
            13, 4706, 715, 1878, 330, 3055, 1725, 1149, 330, 3055, 1725, 4639, 28754, 13, 4706,
            923, 968, 1149,
        ],
    },
    Golden {
        file: "tokenizer.bin",
        text: "Lets try ö & 株式会社",
        ids: &[1, 365, 1691, 1018, 3963, 669, 29871, 31409, 30607, 30437, 30564],
    },
    Golden {
        file: "tokenizer.bin",
        text: "🙂👍🏽",
        ids: &[1, 29871, 243, 162, 156, 133, 243, 162, 148, 144, 243, 162, 146, 192],
    },
    Golden { file: "tok512.bin", text: "Once upon a time", ids: &[1, 403, 407, 261, 378] },
    Golden { file: "tok512.bin", text: "There was a big", ids: &[1, 291, 276, 286, 261, 370] },
];

/// Loads a real tokenizer for the rest of the test process, or returns
/// `None` (after a skip notice) when `SPECDEC_MODELS` is unset. The file and
/// index are leaked so that property-test cases can share one tokenizer.
fn load_real((file, vocab_size): (&str, usize)) -> Option<Tokenizer<'static>> {
    let bytes: &'static [u8] = common::read_model(file)?.leak();
    let index = vec![0u32; index_len(vocab_size)].leak();
    Some(Tokenizer::new(bytes, vocab_size, index).unwrap_or_else(|e| panic!("{file}: {e}")))
}

fn vocab_of(file: &str) -> (&'static str, usize) {
    match file {
        "tokenizer.bin" => LLAMA2,
        "tok512.bin" => TOK512,
        _ => panic!("no vocab_size known for {file}"),
    }
}

/// Encodes with buffers of exactly the documented capacity.
fn encode(tokenizer: &Tokenizer, text: &[u8], bos: bool, eos: bool) -> Vec<u32> {
    let capacity = encode_capacity(text.len());
    let mut tokens = vec![0u32; capacity];
    let mut scratch = vec![0u32; capacity];
    let len = tokenizer
        .encode(text, bos, eos, &mut tokens, &mut scratch)
        .unwrap_or_else(|e| panic!("encoding {:?}: {e}", String::from_utf8_lossy(text)));
    tokens.truncate(len);
    tokens
}

/// Encodes `text` with BOS and concatenates `decode(prev, token)` over the
/// tokens after BOS, which should give back `text`.
fn round_trip(tokenizer: &Tokenizer, text: &[u8]) -> Vec<u8> {
    let ids = encode(tokenizer, text, true, false);
    assert_eq!(ids.first(), Some(&BOS));
    let mut output = Vec::new();
    for pair in ids.windows(2) {
        output.extend_from_slice(tokenizer.decode(pair[0], pair[1]).unwrap());
    }
    output
}

/// Maps each piece to its lowest id.
fn ids_by_piece(tokenizer: &Tokenizer) -> HashMap<Vec<u8>, u32> {
    let mut ids = HashMap::new();
    for id in (0..tokenizer.vocab_size() as u32).rev() {
        ids.insert(tokenizer.piece(id).unwrap().to_vec(), id);
    }
    ids
}

/// Transcribes run.c's `encode` directly: a hash map instead of the sorted
/// index, and every pair looked up again in every merge round.
fn reference_encode(
    tokenizer: &Tokenizer,
    ids_by_piece: &HashMap<Vec<u8>, u32>,
    text: &[u8],
    bos: bool,
    eos: bool,
) -> Vec<u32> {
    let mut tokens = Vec::new();
    if bos {
        tokens.push(BOS);
    }
    if !text.is_empty() {
        tokens.push(ids_by_piece[b" ".as_slice()]);
    }
    let mut buffer = Vec::new();
    for (i, &byte) in text.iter().enumerate() {
        if byte & 0xC0 != 0x80 {
            buffer.clear();
        }
        buffer.push(byte);
        let next_continues = text.get(i + 1).is_some_and(|&next| next & 0xC0 == 0x80);
        if next_continues && buffer.len() < 4 {
            continue;
        }
        match ids_by_piece.get(&buffer) {
            Some(&id) => tokens.push(id),
            None => tokens.extend(buffer.iter().map(|&b| u32::from(b) + 3)),
        }
        buffer.clear();
    }

    loop {
        let mut best_score = -1e10f32;
        let mut best = None;
        for i in 0..tokens.len().saturating_sub(1) {
            let mut merged = tokenizer.piece(tokens[i]).unwrap().to_vec();
            merged.extend_from_slice(tokenizer.piece(tokens[i + 1]).unwrap());
            if let Some(&id) = ids_by_piece.get(&merged) {
                let score = tokenizer.score(id).unwrap();
                if score > best_score {
                    best_score = score;
                    best = Some((i, id));
                }
            }
        }
        let Some((i, id)) = best else { break };
        tokens[i] = id;
        tokens.remove(i + 1);
    }
    if eos {
        tokens.push(EOS);
    }
    tokens
}

/// Builds a tokenizer file: the max_token_length header, then a score,
/// length and bytes record per piece.
fn tokenizer_file(max_token_length: i32, pieces: &[(f32, &[u8])]) -> Vec<u8> {
    let mut file = max_token_length.to_le_bytes().to_vec();
    for &(score, piece) in pieces {
        file.extend_from_slice(&score.to_le_bytes());
        file.extend_from_slice(&(piece.len() as i32).to_le_bytes());
        file.extend_from_slice(piece);
    }
    file
}

/// Builds a vocabulary with llama2.c's special pieces at ids 0 to 2, the dummy
/// prefix at 3, "a" and "b" at 4 and 5, and "ab" and "ba" at 6 and 7 with the
/// given scores. It has no byte-fallback pieces.
fn ab_vocabulary(score_ab: f32, score_ba: f32) -> Vec<u8> {
    tokenizer_file(
        6,
        &[
            (0.0, b"<unk>"),
            (0.0, b"\n<s>\n"),
            (0.0, b"\n</s>\n"),
            (-1.0, b" "),
            (-2.0, b"a"),
            (-3.0, b"b"),
            (score_ab, b"ab"),
            (score_ba, b"ba"),
        ],
    )
}

/// Returns the byte offset of every piece record in a valid tokenizer file.
fn record_offsets(file: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut offset = 4;
    while offset < file.len() {
        offsets.push(offset);
        let len = i32::from_le_bytes(file[offset + 4..offset + 8].try_into().unwrap());
        offset += 8 + len as usize;
    }
    offsets
}

fn new_error(file: &[u8], vocab_size: usize) -> TokenizerError {
    let mut index = vec![0u32; index_len(vocab_size)];
    Tokenizer::new(file, vocab_size, &mut index).unwrap_err()
}

#[test]
fn buffer_sizes() {
    assert_eq!(index_len(512), 1024);
    assert_eq!(index_len(32000), 64000);
    assert_eq!(encode_capacity(0), 3);
    assert_eq!(encode_capacity(16000), 16003);
}

#[test]
fn golden_encodings_match_run_c() {
    for (file, vocab) in [LLAMA2, TOK512] {
        let Some(tokenizer) = load_real((file, vocab)) else {
            return;
        };
        for case in GOLDEN.iter().filter(|case| case.file == file) {
            let text = case.text.as_bytes();
            assert_eq!(
                encode(&tokenizer, text, true, false),
                case.ids,
                "{file}: {:?}",
                case.text
            );
            assert_eq!(
                encode(&tokenizer, text, false, false),
                &case.ids[1..],
                "{file} without BOS: {:?}",
                case.text
            );
            let mut with_eos = case.ids.to_vec();
            with_eos.push(EOS);
            assert_eq!(
                encode(&tokenizer, text, true, true),
                with_eos,
                "{file} with EOS: {:?}",
                case.text
            );
        }
    }
}

#[test]
fn golden_strings_round_trip() {
    for case in GOLDEN {
        let Some(tokenizer) = load_real(vocab_of(case.file)) else {
            return;
        };
        let text = case.text.as_bytes();
        assert_eq!(
            round_trip(&tokenizer, text),
            text,
            "{}: {:?}",
            case.file,
            case.text
        );
    }
}

#[test]
fn real_vocabularies_index_every_piece() {
    for ((file, vocab), max_token_length) in [(LLAMA2, 27), (TOK512, 7)] {
        let Some(tokenizer) = load_real((file, vocab)) else {
            return;
        };
        assert_eq!(tokenizer.vocab_size(), vocab, "{file}");
        assert_eq!(tokenizer.max_token_length(), max_token_length, "{file}");
        // Every piece is found under its own id, so neither file has
        // duplicate pieces.
        for id in 0..vocab as u32 {
            let piece = tokenizer.piece(id).unwrap();
            assert_eq!(tokenizer.lookup(piece), Some(id), "{file}: piece {piece:?}");
        }
        assert_eq!(tokenizer.piece(vocab as u32), None, "{file}");
        assert_eq!(tokenizer.score(vocab as u32), None, "{file}");
        assert_eq!(tokenizer.piece(BOS), Some(b"\n<s>\n".as_slice()), "{file}");
        assert_eq!(tokenizer.piece(3), Some(b"<0x00>".as_slice()), "{file}");
        assert_eq!(tokenizer.lookup(b"no such piece"), None, "{file}");
    }
}

#[test]
fn real_scores_match_file() {
    let Some(tokenizer) = load_real(LLAMA2) else {
        return;
    };
    let id = tokenizer.lookup(b"  ").unwrap();
    assert_eq!(id, 259);
    assert_eq!(tokenizer.score(id), Some(-1e9));
    assert_eq!(tokenizer.score(BOS), Some(0.0));
}

#[test]
fn arbitrary_strings_round_trip() {
    for vocab in [LLAMA2, TOK512] {
        let Some(tokenizer) = load_real(vocab) else {
            return;
        };
        let mut runner = TestRunner::new(Config {
            cases: 256,
            ..Config::default()
        });
        runner
            .run(&any::<String>(), |text| {
                prop_assert_eq!(round_trip(&tokenizer, text.as_bytes()), text.as_bytes());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", vocab.0));
    }
}

#[test]
fn ascii_word_strings_round_trip() {
    let words = "[ \n]{0,2}([A-Za-z]{1,10}[ ,.!?'\n]{0,3}){0,40}";
    for vocab in [LLAMA2, TOK512] {
        let Some(tokenizer) = load_real(vocab) else {
            return;
        };
        let mut runner = TestRunner::new(Config {
            cases: 256,
            ..Config::default()
        });
        runner
            .run(&words, |text| {
                prop_assert_eq!(round_trip(&tokenizer, text.as_bytes()), text.as_bytes());
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", vocab.0));
    }
}

#[test]
fn encode_matches_plain_run_c_loop() {
    let inputs = prop_oneof![
        any::<String>().prop_map(String::into_bytes),
        "([A-Za-z]{1,10}[ ,.\n]{0,3}){0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    for vocab in [LLAMA2, TOK512] {
        let Some(tokenizer) = load_real(vocab) else {
            return;
        };
        let ids = ids_by_piece(&tokenizer);
        let mut runner = TestRunner::new(Config {
            cases: 128,
            ..Config::default()
        });
        runner
            .run(
                &(inputs.clone(), any::<bool>(), any::<bool>()),
                |(text, bos, eos)| {
                    prop_assert_eq!(
                        encode(&tokenizer, &text, bos, eos),
                        reference_encode(&tokenizer, &ids, &text, bos, eos)
                    );
                    Ok(())
                },
            )
            .unwrap_or_else(|e| panic!("{}: {e}", vocab.0));
    }
}

#[test]
fn invalid_utf8_uses_byte_fallback() {
    let Some(tokenizer) = load_real(LLAMA2) else {
        return;
    };
    let dummy = tokenizer.lookup(b" ").unwrap();
    let cases: [(&[u8], &[u32]); 5] = [
        // A stray continuation byte.
        (b"\x80", &[BOS, dummy, 0x80 + 3]),
        // A lead byte without its continuation bytes.
        (b"\xE2", &[BOS, dummy, 0xE2 + 3]),
        // A lead byte and five continuation bytes: the fifth starts a new
        // character because a character holds at most 4 bytes.
        (
            b"\xF0\x80\x80\x80\x80",
            &[BOS, dummy, 0xF0 + 3, 0x83, 0x83, 0x83, 0x83],
        ),
        // The same limit keeps a stray continuation byte out of the 4-byte
        // piece "🌍" (id 31494).
        (b"\xF0\x9F\x8C\x8D\x80", &[BOS, dummy, 31494, 0x80 + 3]),
        // A NUL, which would end a C string, is encoded like any byte.
        (b"\0", &[BOS, dummy, 3]),
    ];
    for (text, ids) in cases {
        assert_eq!(encode(&tokenizer, text, true, false), ids, "{text:?}");
        assert_eq!(round_trip(&tokenizer, text), text, "{text:?}");
    }
}

#[test]
fn long_prompt_encodes() {
    let Some(tokenizer) = load_real(LLAMA2) else {
        return;
    };
    let mut text = String::new();
    while text.len() < 16_000 {
        for case in GOLDEN {
            text.push_str(case.text);
            text.push(' ');
        }
    }
    while text.len() > 16_000 {
        text.pop();
    }
    while text.len() < 16_000 {
        text.push('.');
    }
    assert_eq!(text.len(), 16_000);

    let ids = encode(&tokenizer, text.as_bytes(), true, false);
    assert!(
        ids.len() < text.len() / 2,
        "{} tokens for {} bytes",
        ids.len(),
        text.len()
    );
    assert_eq!(round_trip(&tokenizer, text.as_bytes()), text.as_bytes());
}

#[test]
fn merge_ties_pick_leftmost_pair() {
    let file = ab_vocabulary(1.0, 1.0);
    let mut index = vec![0u32; index_len(8)];
    let tokenizer = Tokenizer::new(&file, 8, &mut index).unwrap();
    // "ab" (ids 4, 5) and "ba" (5, 4) score the same, so the left one merges.
    assert_eq!(encode(&tokenizer, b"aba", true, false), [BOS, 3, 6, 4]);
}

#[test]
fn merge_needs_strictly_greater_score() {
    let file = ab_vocabulary(1.0, 1.5);
    let mut index = vec![0u32; index_len(8)];
    let tokenizer = Tokenizer::new(&file, 8, &mut index).unwrap();
    assert_eq!(encode(&tokenizer, b"aba", true, false), [BOS, 3, 4, 7]);
}

#[test]
fn merge_skips_scores_at_minus_1e10() {
    let file = ab_vocabulary(-1e10, -1e10);
    let mut index = vec![0u32; index_len(8)];
    let tokenizer = Tokenizer::new(&file, 8, &mut index).unwrap();
    assert_eq!(encode(&tokenizer, b"aba", true, false), [BOS, 3, 4, 5, 4]);

    let file = ab_vocabulary(-1e10, -9.9e9);
    let mut index = vec![0u32; index_len(8)];
    let tokenizer = Tokenizer::new(&file, 8, &mut index).unwrap();
    assert_eq!(encode(&tokenizer, b"aba", true, false), [BOS, 3, 4, 7]);
}

#[test]
fn merge_cascades_through_neighbours() {
    // "ab" merges first, which makes " ab" possible, then " ab" + "ab".
    let file = tokenizer_file(
        6,
        &[
            (0.0, b"<unk>"),
            (0.0, b"\n<s>\n"),
            (0.0, b"\n</s>\n"),
            (0.0, b" "),
            (0.0, b"a"),
            (0.0, b"b"),
            (3.0, b"ab"),
            (2.0, b" ab"),
            (1.0, b" abab"),
        ],
    );
    let mut index = vec![0u32; index_len(9)];
    let tokenizer = Tokenizer::new(&file, 9, &mut index).unwrap();
    assert_eq!(encode(&tokenizer, b"abab", true, true), [BOS, 8, EOS]);
    assert_eq!(encode(&tokenizer, b"ababa", false, false), [8, 4]);
}

#[test]
fn decode_strips_space_after_bos_only() {
    let Some(tokenizer) = load_real(LLAMA2) else {
        return;
    };
    let the = tokenizer.lookup(b" the").unwrap();
    assert_eq!(tokenizer.decode(BOS, the).unwrap(), b"the");
    assert_eq!(tokenizer.decode(EOS, the).unwrap(), b" the");
    assert_eq!(tokenizer.decode(the, the).unwrap(), b" the");
    let no_space = tokenizer.lookup(b"the").unwrap();
    assert_eq!(tokenizer.decode(BOS, no_space).unwrap(), b"the");
}

#[test]
fn decode_returns_raw_bytes_for_byte_pieces() {
    let Some(tokenizer) = load_real(TOK512) else {
        return;
    };
    for byte in 0..=255u8 {
        let id = u32::from(byte) + 3;
        assert_eq!(tokenizer.decode(BOS, id).unwrap(), [byte], "piece {id}");
        assert_eq!(tokenizer.decode(id, id).unwrap(), [byte], "piece {id}");
    }
    // Special pieces are returned as stored, newlines included.
    assert_eq!(tokenizer.decode(0, BOS).unwrap(), b"\n<s>\n");
}

#[test]
fn decode_byte_pieces_need_exact_form() {
    let file = tokenizer_file(
        7,
        &[
            (0.0, b"<unk>"),
            (0.0, b"\n<s>\n"),
            (0.0, b"\n</s>\n"),
            (0.0, b"<0x0a>"),
            (0.0, b"<0xfF>"),
            (0.0, b"<0xZZ>"),
            (0.0, b"<0x4>"),
            (0.0, b"<0x41>x"),
            (0.0, b" <0x41>"),
        ],
    );
    let mut index = vec![0u32; index_len(9)];
    let tokenizer = Tokenizer::new(&file, 9, &mut index).unwrap();
    assert_eq!(tokenizer.decode(0, 3).unwrap(), b"\n");
    assert_eq!(tokenizer.decode(0, 4).unwrap(), [0xFF]);
    assert_eq!(tokenizer.decode(0, 5).unwrap(), b"<0xZZ>");
    assert_eq!(tokenizer.decode(0, 6).unwrap(), b"<0x4>");
    assert_eq!(tokenizer.decode(0, 7).unwrap(), b"<0x41>x");
    assert_eq!(tokenizer.decode(0, 8).unwrap(), b" <0x41>");
    // After BOS the space goes first, as in run.c, and the rest is a byte.
    assert_eq!(tokenizer.decode(BOS, 8).unwrap(), b"A");
}

#[test]
fn decode_rejects_out_of_range_token() {
    let Some(tokenizer) = load_real(TOK512) else {
        return;
    };
    let error = tokenizer.decode(BOS, 512).unwrap_err();
    assert_eq!(
        error,
        TokenizerError::TokenOutOfRange {
            token: 512,
            vocab_size: 512
        }
    );
    assert_eq!(
        error.to_string(),
        "token 512 is out of range for vocab_size 512"
    );
    assert_eq!(
        tokenizer.decode(BOS, u32::MAX).unwrap_err(),
        TokenizerError::TokenOutOfRange {
            token: u32::MAX,
            vocab_size: 512
        }
    );
    assert!(tokenizer.decode(BOS, 511).is_ok());
}

#[test]
fn vocab_size_mismatch_names_both_counts() {
    if let Some(file) = common::read_model(LLAMA2.0) {
        let error = new_error(&file, 512);
        assert_eq!(
            error,
            TokenizerError::VocabSizeMismatch {
                pieces: 32000,
                vocab_size: 512
            }
        );
        assert_eq!(
            error.to_string(),
            "tokenizer has 32000 pieces but the model's vocab_size is 512; \
             use the tokenizer trained with this model"
        );
    }
    if let Some(file) = common::read_model(TOK512.0) {
        assert_eq!(
            new_error(&file, 32000),
            TokenizerError::VocabSizeMismatch {
                pieces: 512,
                vocab_size: 32000
            }
        );
    }
}

#[test]
fn truncated_record_names_piece_and_offset() {
    let Some(file) = common::read_model(TOK512.0) else {
        return;
    };
    let offsets = record_offsets(&file);
    assert_eq!(offsets.len(), 512);
    let record = offsets[100];
    let next = offsets[101];

    // Cut inside the score, inside the length and inside the piece bytes.
    for cut in [record + 2, record + 6, next - 1] {
        assert_eq!(
            new_error(&file[..cut], 512),
            TokenizerError::Truncated {
                piece: 100,
                offset: record,
                file_len: cut
            },
            "file cut at {cut}"
        );
    }

    let last = offsets[511];
    assert_eq!(
        new_error(&file[..file.len() - 1], 512),
        TokenizerError::Truncated {
            piece: 511,
            offset: last,
            file_len: file.len() - 1
        }
    );

    // A cut between records leaves a valid file with fewer pieces.
    assert_eq!(
        new_error(&file[..record], 512),
        TokenizerError::VocabSizeMismatch {
            pieces: 100,
            vocab_size: 512
        }
    );

    let error = new_error(&file[..next - 1], 512);
    assert_eq!(
        error.to_string(),
        format!(
            "truncated tokenizer file: piece 100 at byte offset {record} runs past the end \
             of the {}-byte file",
            next - 1
        )
    );
}

#[test]
fn empty_file_is_rejected() {
    assert_eq!(
        new_error(&[], 512),
        TokenizerError::MissingHeader { file_len: 0 }
    );
    assert_eq!(
        new_error(&[7, 0, 0], 512),
        TokenizerError::MissingHeader { file_len: 3 }
    );
    // A header without records is a valid, empty vocabulary.
    assert_eq!(
        new_error(&7i32.to_le_bytes(), 512),
        TokenizerError::VocabSizeMismatch {
            pieces: 0,
            vocab_size: 512
        }
    );
}

#[test]
fn negative_lengths_are_rejected() {
    let mut file = tokenizer_file(6, &[(0.0, b"<unk>"), (0.0, b"\n<s>\n")]);
    let offset = file.len();
    file.extend_from_slice(&0f32.to_le_bytes());
    file.extend_from_slice(&(-1i32).to_le_bytes());
    assert_eq!(
        new_error(&file, 3),
        TokenizerError::NegativePieceLength {
            piece: 2,
            offset,
            len: -1
        }
    );

    let file = tokenizer_file(-1, &[(0.0, b"<unk>")]);
    assert_eq!(
        new_error(&file, 1),
        TokenizerError::NegativeMaxTokenLength { found: -1 }
    );
}

#[test]
fn piece_longer_than_max_is_rejected() {
    let file = tokenizer_file(4, &[(0.0, b"<unk>")]);
    assert_eq!(
        new_error(&file, 1),
        TokenizerError::PieceTooLong {
            piece: 0,
            len: 5,
            max_token_length: 4
        }
    );
}

#[test]
fn small_index_is_rejected() {
    let Some(file) = common::read_model(TOK512.0) else {
        return;
    };
    let mut index = vec![0u32; 1023];
    let error = Tokenizer::new(&file, 512, &mut index).unwrap_err();
    assert_eq!(
        error,
        TokenizerError::IndexTooSmall {
            needed: 1024,
            given: 1023
        }
    );
    assert_eq!(
        error.to_string(),
        "tokenizer index has 1023 entries but this vocabulary needs 1024"
    );
}

#[test]
fn unaligned_file_bytes_parse() {
    let Some(file) = common::read_model(TOK512.0) else {
        return;
    };
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&file);
    let mut index = vec![0u32; index_len(512)];
    let tokenizer = Tokenizer::new(&shifted[1..], 512, &mut index).unwrap();
    assert_eq!(
        encode(&tokenizer, b"Once upon a time", true, false),
        [1, 403, 407, 261, 378]
    );
}

#[test]
fn small_encode_buffers_are_rejected() {
    let Some(tokenizer) = load_real(TOK512) else {
        return;
    };
    let text = b"Once upon a time";
    let needed = text.len() + 3;
    let mut tokens = vec![u32::MAX; needed - 1];
    let mut scratch = vec![u32::MAX; needed];
    let error = tokenizer
        .encode(text, true, false, &mut tokens, &mut scratch)
        .unwrap_err();
    assert_eq!(
        error,
        TokenizerError::BufferTooSmall {
            buffer: "tokens",
            needed,
            given: needed - 1
        }
    );
    assert_eq!(
        error.to_string(),
        format!(
            "encode buffer `tokens` has {} entries but this text needs {needed}",
            needed - 1
        )
    );
    assert!(
        tokens.iter().all(|&t| t == u32::MAX),
        "tokens written before the error"
    );

    let mut tokens = vec![u32::MAX; needed];
    let mut scratch = vec![u32::MAX; needed - 1];
    assert_eq!(
        tokenizer
            .encode(text, true, false, &mut tokens, &mut scratch)
            .unwrap_err(),
        TokenizerError::BufferTooSmall {
            buffer: "scratch",
            needed,
            given: needed - 1
        }
    );
    assert!(
        tokens.iter().all(|&t| t == u32::MAX),
        "tokens written before the error"
    );

    let mut scratch = vec![0; needed];
    assert_eq!(
        tokenizer.encode(text, true, true, &mut tokens, &mut scratch),
        Ok(6)
    );
}

#[test]
fn missing_dummy_prefix_is_rejected() {
    let file = tokenizer_file(6, &[(0.0, b"<unk>"), (0.0, b"\n<s>\n"), (0.0, b"\n</s>\n")]);
    let mut index = vec![0u32; index_len(3)];
    let tokenizer = Tokenizer::new(&file, 3, &mut index).unwrap();
    let mut tokens = [0u32; 4];
    let mut scratch = [0u32; 4];
    assert_eq!(
        tokenizer.encode(b"a", true, false, &mut tokens, &mut scratch),
        Err(TokenizerError::MissingDummyPrefix)
    );
    // An empty text needs no dummy prefix.
    assert_eq!(
        tokenizer.encode(b"", true, true, &mut tokens, &mut scratch),
        Ok(2)
    );
    assert_eq!(tokens[..2], [BOS, EOS]);
}

#[test]
fn byte_fallback_beyond_vocab_is_rejected() {
    let file = ab_vocabulary(0.0, 0.0);
    let mut index = vec![0u32; index_len(8)];
    let tokenizer = Tokenizer::new(&file, 8, &mut index).unwrap();
    let mut tokens = [0u32; 5];
    let mut scratch = [0u32; 5];
    assert_eq!(
        tokenizer.encode(b"az", true, false, &mut tokens, &mut scratch),
        Err(TokenizerError::ByteFallbackOutOfRange {
            byte: b'z',
            vocab_size: 8
        })
    );
}

#[test]
fn special_ids_beyond_vocab_are_rejected() {
    let file = tokenizer_file(1, &[(0.0, b" ")]);
    let mut index = vec![0u32; index_len(1)];
    let tokenizer = Tokenizer::new(&file, 1, &mut index).unwrap();
    let mut tokens = [0u32; 4];
    let mut scratch = [0u32; 4];
    assert_eq!(
        tokenizer.encode(b" ", true, false, &mut tokens, &mut scratch),
        Err(TokenizerError::TokenOutOfRange {
            token: BOS,
            vocab_size: 1
        })
    );
    assert_eq!(
        tokenizer.encode(b" ", false, true, &mut tokens, &mut scratch),
        Err(TokenizerError::TokenOutOfRange {
            token: EOS,
            vocab_size: 1
        })
    );
    // " " + " " is not a piece, so both stay.
    assert_eq!(
        tokenizer.encode(b" ", false, false, &mut tokens, &mut scratch),
        Ok(2)
    );
    assert_eq!(tokens[..2], [0, 0]);
}
