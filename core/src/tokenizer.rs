//! llama2.c's byte-pair tokenizer, read in place from a `tokenizer.bin` file.
//!
//! File layout, all little-endian: an `i32` `max_token_length`, then one record
//! per piece until the end of the file: `f32` score, `i32` length, and that
//! many piece bytes. Piece ids are record positions. The file stores no
//! count, so [`Tokenizer::new`] counts the records and requires the count to
//! equal the model's `vocab_size`.
//!
//! [`Tokenizer::encode`] and [`Tokenizer::decode`] return exactly what
//! `encode` and `decode` in llama2.c's `run.c` return. The tokenizer borrows
//! the file bytes and a caller-provided index of [`index_len`] `u32`, and
//! encoding needs two caller buffers of [`encode_capacity`] `u32`, so nothing
//! is allocated.

use core::cmp::Ordering;
use core::fmt;

/// Id of the beginning-of-sequence token `<s>`.
pub const BOS: u32 = 1;
/// Id of the end-of-sequence token `</s>`.
pub const EOS: u32 = 2;

/// Length in bytes of the `i32` `max_token_length` header.
const HEADER_LEN: usize = 4;
/// Length in bytes of a record's `f32` score and `i32` length fields.
const RECORD_HEADER_LEN: usize = 8;
/// Marks a pair of adjacent tokens whose concatenation is not a piece.
const NO_MERGE: u32 = u32::MAX;
/// run.c's initial best score in the merge loop. A merge must score strictly
/// higher, so pieces scoring -1e10 or less (or NaN) are never merged.
const MIN_MERGE_SCORE: f32 = -1e10;

/// Every byte value in order, so that [`Tokenizer::decode`] can return a
/// one-byte `&'static [u8]` for a byte-fallback token.
static BYTE_VALUES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = i as u8;
        i += 1;
    }
    table
};

/// Returns the number of `u32` the caller must provide as the index for a
/// vocabulary of `vocab_size` pieces: `2 * vocab_size`, for the piece offsets
/// and the ids sorted by piece bytes.
pub const fn index_len(vocab_size: usize) -> usize {
    vocab_size.saturating_mul(2)
}

/// Returns the length that [`Tokenizer::encode`] needs for both its `tokens`
/// and its `scratch` buffer for a text of `text_len` bytes: `text_len + 3`.
///
/// A text yields at most one token per byte, plus BOS, the dummy-prefix
/// space and EOS.
pub const fn encode_capacity(text_len: usize) -> usize {
    text_len.saturating_add(3)
}

/// Reasons a tokenizer file or a tokenizer call is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The file is shorter than the 4-byte `max_token_length` header.
    MissingHeader {
        /// File length in bytes.
        file_len: usize,
    },
    /// The `max_token_length` header is negative.
    NegativeMaxTokenLength {
        /// The header value.
        found: i32,
    },
    /// The file is too large for the `u32` piece offsets in the index.
    FileTooLarge {
        /// File length in bytes.
        file_len: usize,
    },
    /// The file ends inside a piece record.
    Truncated {
        /// Index of the incomplete piece.
        piece: usize,
        /// Byte offset of the incomplete record.
        offset: usize,
        /// File length in bytes.
        file_len: usize,
    },
    /// A piece record has a negative length.
    NegativePieceLength {
        /// Index of the piece.
        piece: usize,
        /// Byte offset of the record.
        offset: usize,
        /// The length field.
        len: i32,
    },
    /// A piece is longer than the `max_token_length` header allows.
    PieceTooLong {
        /// Index of the piece.
        piece: usize,
        /// Piece length in bytes.
        len: usize,
        /// The `max_token_length` header.
        max_token_length: usize,
    },
    /// The file's piece count differs from the model's `vocab_size`, so the
    /// tokenizer was trained for another model.
    VocabSizeMismatch {
        /// Number of pieces in the file.
        pieces: usize,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// The caller's index is shorter than [`index_len`]`(vocab_size)`.
    IndexTooSmall {
        /// Required length in `u32`.
        needed: usize,
        /// Length of the index passed in.
        given: usize,
    },
    /// An `encode` buffer is shorter than [`encode_capacity`] of the text
    /// length.
    BufferTooSmall {
        /// Name of the buffer: `"tokens"` or `"scratch"`.
        buffer: &'static str,
        /// Required length in `u32`.
        needed: usize,
        /// Length of the buffer passed in.
        given: usize,
    },
    /// The vocabulary has no `" "` piece, which `encode` needs as the dummy
    /// prefix of a non-empty text.
    MissingDummyPrefix,
    /// A byte that is not part of any piece maps to the byte-fallback id
    /// `byte + 3`, which is outside the vocabulary.
    ByteFallbackOutOfRange {
        /// The byte.
        byte: u8,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A token id is not below the vocabulary size.
    TokenOutOfRange {
        /// The token id.
        token: u32,
        /// The vocabulary size.
        vocab_size: usize,
    },
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TokenizerError::MissingHeader { file_len } => write!(
                f,
                "tokenizer file is {file_len} bytes, shorter than the 4-byte max_token_length header"
            ),
            TokenizerError::NegativeMaxTokenLength { found } => {
                write!(f, "invalid tokenizer file: max_token_length is {found}, expected 0 or more")
            }
            TokenizerError::FileTooLarge { file_len } => write!(
                f,
                "tokenizer file is {file_len} bytes, larger than the supported 4 GiB - 1"
            ),
            TokenizerError::Truncated { piece, offset, file_len } => write!(
                f,
                "truncated tokenizer file: piece {piece} at byte offset {offset} runs past the end \
                 of the {file_len}-byte file"
            ),
            TokenizerError::NegativePieceLength { piece, offset, len } => write!(
                f,
                "invalid tokenizer file: piece {piece} at byte offset {offset} has length {len}"
            ),
            TokenizerError::PieceTooLong { piece, len, max_token_length } => write!(
                f,
                "invalid tokenizer file: piece {piece} is {len} bytes, longer than \
                 max_token_length {max_token_length}"
            ),
            TokenizerError::VocabSizeMismatch { pieces, vocab_size } => write!(
                f,
                "tokenizer has {pieces} pieces but the model's vocab_size is {vocab_size}; \
                 use the tokenizer trained with this model"
            ),
            TokenizerError::IndexTooSmall { needed, given } => write!(
                f,
                "tokenizer index has {given} entries but this vocabulary needs {needed}"
            ),
            TokenizerError::BufferTooSmall { buffer, needed, given } => write!(
                f,
                "encode buffer `{buffer}` has {given} entries but this text needs {needed}"
            ),
            TokenizerError::MissingDummyPrefix => write!(
                f,
                "tokenizer has no \" \" piece, which encoding needs as the dummy prefix"
            ),
            TokenizerError::ByteFallbackOutOfRange { byte, vocab_size } => write!(
                f,
                "byte 0x{byte:02x} has no piece and its fallback id {} is not below vocab_size \
                 {vocab_size}",
                u32::from(byte) + 3
            ),
            TokenizerError::TokenOutOfRange { token, vocab_size } => {
                write!(f, "token {token} is out of range for vocab_size {vocab_size}")
            }
        }
    }
}

/// A llama2.c tokenizer borrowing its file bytes and the caller's index.
///
/// The index holds, for each piece id, the byte offset of its record, then
/// all ids sorted by piece bytes for binary search.
#[derive(Clone, Copy)]
pub struct Tokenizer<'a> {
    bytes: &'a [u8],
    /// Byte offset of each piece's record, indexed by id.
    offsets: &'a [u32],
    /// Ids ordered by piece bytes (unsigned lexicographic, like C `strcmp`),
    /// equal pieces by id.
    sorted_ids: &'a [u32],
    max_token_length: usize,
}

impl fmt::Debug for Tokenizer<'_> {
    /// Formats the sizes only, because the file bytes and the index are large.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("max_token_length", &self.max_token_length)
            .finish_non_exhaustive()
    }
}

impl<'a> Tokenizer<'a> {
    /// Parses and validates a tokenizer file, and builds the piece index in
    /// `index`.
    ///
    /// `vocab_size` is the model's, and the file must contain exactly that
    /// many pieces. `index` must hold at least [`index_len`]`(vocab_size)`
    /// entries, and only that many are used. Rejects a short header, a
    /// negative `max_token_length`, a truncated record, a negative piece
    /// length, a piece longer than `max_token_length` and a file of 4 GiB or
    /// more.
    pub fn new(
        bytes: &'a [u8],
        vocab_size: usize,
        index: &'a mut [u32],
    ) -> Result<Self, TokenizerError> {
        let file_len = bytes.len();
        if file_len < HEADER_LEN {
            return Err(TokenizerError::MissingHeader { file_len });
        }
        if u32::try_from(file_len).is_err() {
            return Err(TokenizerError::FileTooLarge { file_len });
        }
        let header = read_i32(bytes, 0);
        let max_token_length = usize::try_from(header)
            .map_err(|_| TokenizerError::NegativeMaxTokenLength { found: header })?;

        // First pass: validate every record and count them, so that a
        // mismatched vocab_size is reported before the index is touched.
        let mut pieces = 0;
        let mut offset = HEADER_LEN;
        while offset < file_len {
            offset = next_record(bytes, pieces, offset, max_token_length)?;
            pieces += 1;
        }
        if pieces != vocab_size {
            return Err(TokenizerError::VocabSizeMismatch { pieces, vocab_size });
        }
        let needed = index_len(vocab_size);
        if index.len() < needed {
            return Err(TokenizerError::IndexTooSmall {
                needed,
                given: index.len(),
            });
        }

        let (offsets, rest) = index.split_at_mut(vocab_size);
        let sorted_ids = &mut rest[..vocab_size];

        // Second pass: the records are known to be well formed, and every
        // offset fits in u32 because the file length does.
        let mut offset = HEADER_LEN;
        for (id, entry) in offsets.iter_mut().enumerate() {
            *entry = offset as u32;
            offset = next_record(bytes, id, offset, max_token_length)?;
        }
        for (id, entry) in sorted_ids.iter_mut().enumerate() {
            *entry = id as u32;
        }
        sorted_ids.sort_unstable_by(|&a, &b| {
            let piece_a = piece_at(bytes, offsets, a);
            let piece_b = piece_at(bytes, offsets, b);
            piece_a.cmp(piece_b).then(a.cmp(&b))
        });

        Ok(Tokenizer {
            bytes,
            offsets,
            sorted_ids,
            max_token_length,
        })
    }

    /// Returns the number of pieces, which equals the model's `vocab_size`.
    pub fn vocab_size(&self) -> usize {
        self.offsets.len()
    }

    /// Returns the file's `max_token_length` header. No piece is longer.
    pub fn max_token_length(&self) -> usize {
        self.max_token_length
    }

    /// Returns the bytes of piece `id` as stored in the file, or `None` when
    /// `id` is out of range.
    ///
    /// Byte-fallback pieces are stored as text such as `<0x0A>`; use
    /// [`decode`](Self::decode) for the output bytes.
    pub fn piece(&self, id: u32) -> Option<&'a [u8]> {
        match self.check_id(id) {
            Ok(()) => Some(self.piece_unchecked(id)),
            Err(_) => None,
        }
    }

    /// Returns the merge score of piece `id`, or `None` when `id` is out of
    /// range. `encode` merges the highest-scoring pair first.
    pub fn score(&self, id: u32) -> Option<f32> {
        match self.check_id(id) {
            Ok(()) => Some(self.score_unchecked(id)),
            Err(_) => None,
        }
    }

    /// Returns the id of the piece whose bytes equal `piece`, or `None`.
    ///
    /// When a file contains the same piece more than once, returns the lowest
    /// of its ids. run.c's `bsearch` returns an unspecified one of them.
    pub fn lookup(&self, piece: &[u8]) -> Option<u32> {
        self.lookup_concat(piece, &[])
    }

    /// Encodes `text` into `tokens` and returns the number of tokens written
    /// to `tokens[..n]`.
    ///
    /// The ids equal those of `encode(t, text, bos, eos, ...)` in llama2.c's
    /// `run.c`. The steps are: BOS if `bos`, and a `" "` dummy prefix for a
    /// non-empty text. Then one token per UTF-8 character, or one per byte
    /// where the character is not a piece. Then the adjacent pair whose
    /// concatenation is the highest-scoring piece is merged, repeatedly, and
    /// EOS follows if `eos`. Unlike run.c, which reads a C string, a NUL byte
    /// in `text` is encoded like any other byte instead of ending the text.
    ///
    /// `tokens` and `scratch` must each hold [`encode_capacity`]`(text.len())`
    /// entries. `scratch` caches the merge candidate of each adjacent pair, so
    /// that a merge costs one scan over the cached candidates plus two
    /// lookups.
    ///
    /// # Errors
    ///
    /// [`TokenizerError::BufferTooSmall`] for a short buffer, and
    /// [`TokenizerError::TokenOutOfRange`] when `bos` or `eos` is set but the
    /// vocabulary has no id 1 or 2. Both are checked before anything is
    /// written. [`TokenizerError::MissingDummyPrefix`] and
    /// [`TokenizerError::ByteFallbackOutOfRange`] mean the vocabulary lacks
    /// pieces that run.c assumes, and `tokens` may then be partly written.
    pub fn encode(
        &self,
        text: &[u8],
        bos: bool,
        eos: bool,
        tokens: &mut [u32],
        scratch: &mut [u32],
    ) -> Result<usize, TokenizerError> {
        let needed = encode_capacity(text.len());
        if tokens.len() < needed {
            return Err(TokenizerError::BufferTooSmall {
                buffer: "tokens",
                needed,
                given: tokens.len(),
            });
        }
        if scratch.len() < needed {
            return Err(TokenizerError::BufferTooSmall {
                buffer: "scratch",
                needed,
                given: scratch.len(),
            });
        }
        if bos {
            self.check_id(BOS)?;
        }
        if eos {
            self.check_id(EOS)?;
        }

        let mut len = 0;
        if bos {
            tokens[len] = BOS;
            len += 1;
        }
        if !text.is_empty() {
            // SentencePiece's add_dummy_prefix, which run.c always applies.
            tokens[len] = self
                .lookup(b" ")
                .ok_or(TokenizerError::MissingDummyPrefix)?;
            len += 1;
        }
        len = self.push_characters(text, tokens, len)?;
        len = self.merge_pairs(tokens, scratch, len);
        if eos {
            tokens[len] = EOS;
            len += 1;
        }
        Ok(len)
    }

    /// Returns the bytes to output for `token` when it follows `prev`, as
    /// run.c's `decode` does.
    ///
    /// After BOS, a leading space (the dummy prefix) is dropped. A
    /// byte-fallback piece of the exact form `<0xHH>` (either case) becomes
    /// that single raw byte. All other pieces are returned as stored,
    /// including unprintable bytes, so callers that print should filter them.
    ///
    /// # Errors
    ///
    /// [`TokenizerError::TokenOutOfRange`] when `token` is not below
    /// `vocab_size`. `prev` is only compared with BOS and may be any value.
    pub fn decode(&self, prev: u32, token: u32) -> Result<&'a [u8], TokenizerError> {
        self.check_id(token)?;
        let mut piece = self.piece_unchecked(token);
        if prev == BOS {
            if let Some((b' ', rest)) = piece.split_first() {
                piece = rest;
            }
        }
        match parse_byte_piece(piece) {
            Some(byte) => Ok(core::slice::from_ref(&BYTE_VALUES[usize::from(byte)])),
            None => Ok(piece),
        }
    }

    /// Appends one token per UTF-8 character of `text` to `tokens[len..]`
    /// and returns the new length, like run.c's first loop in `encode`.
    ///
    /// A character is a non-continuation byte and the continuation bytes
    /// after it, up to 4 bytes in all, so malformed UTF-8 is split the same
    /// way run.c splits it. A character that is not a piece becomes one
    /// byte-fallback token (`byte + 3`) per byte.
    fn push_characters(
        &self,
        text: &[u8],
        tokens: &mut [u32],
        mut len: usize,
    ) -> Result<usize, TokenizerError> {
        let mut start = 0;
        while start < text.len() {
            let mut end = start + 1;
            while end < text.len() && is_continuation(text[end]) && end - start < 4 {
                end += 1;
            }
            let character = &text[start..end];
            if let Some(id) = self.lookup(character) {
                tokens[len] = id;
                len += 1;
            } else {
                for &byte in character {
                    let id = u32::from(byte) + 3;
                    if self.check_id(id).is_err() {
                        return Err(TokenizerError::ByteFallbackOutOfRange {
                            byte,
                            vocab_size: self.vocab_size(),
                        });
                    }
                    tokens[len] = id;
                    len += 1;
                }
            }
            start = end;
        }
        Ok(len)
    }

    /// Merges adjacent pairs in `tokens[..len]` until none merges, and
    /// returns the new length.
    ///
    /// Each round picks the pair whose concatenated piece has the strictly
    /// greatest score, the leftmost on ties, exactly as run.c's merge loop.
    /// run.c looks up every pair in every round, but only the pairs next to
    /// a merge change, so `scratch[i]` caches the merged id of pair
    /// `(i, i + 1)` (or [`NO_MERGE`]) and a merge refreshes two entries.
    fn merge_pairs(&self, tokens: &mut [u32], scratch: &mut [u32], mut len: usize) -> usize {
        if len < 2 {
            return len;
        }
        for i in 0..len - 1 {
            scratch[i] = self.merge_candidate(tokens[i], tokens[i + 1]);
        }

        loop {
            let pairs = len - 1;
            let mut best_score = MIN_MERGE_SCORE;
            let mut best_pair = None;
            for (i, &candidate) in scratch[..pairs].iter().enumerate() {
                if candidate != NO_MERGE {
                    let score = self.score_unchecked(candidate);
                    if score > best_score {
                        best_score = score;
                        best_pair = Some(i);
                    }
                }
            }
            let Some(i) = best_pair else {
                return len;
            };

            // Tokens i and i + 1 become one token at i, so every later token
            // and every later pair's cache entry moves one place left.
            tokens[i] = scratch[i];
            tokens.copy_within(i + 2..len, i + 1);
            if i + 2 < pairs {
                scratch.copy_within(i + 2..pairs, i + 1);
            }
            len -= 1;

            if i > 0 {
                scratch[i - 1] = self.merge_candidate(tokens[i - 1], tokens[i]);
            }
            if i + 1 < len {
                scratch[i] = self.merge_candidate(tokens[i], tokens[i + 1]);
            }
        }
    }

    /// Returns the id of the piece equal to the concatenation of pieces
    /// `left` and `right`, or [`NO_MERGE`].
    fn merge_candidate(&self, left: u32, right: u32) -> u32 {
        let left = self.piece_unchecked(left);
        let right = self.piece_unchecked(right);
        // No piece is longer than `max_token_length`, so skip the search.
        if left.len() + right.len() > self.max_token_length {
            return NO_MERGE;
        }
        self.lookup_concat(left, right).unwrap_or(NO_MERGE)
    }

    /// Returns the lowest id whose piece equals `head` followed by `tail`,
    /// found by binary search without building the concatenation.
    fn lookup_concat(&self, head: &[u8], tail: &[u8]) -> Option<u32> {
        let position = self.sorted_ids.partition_point(|&id| {
            compare_with_concat(self.piece_unchecked(id), head, tail) == Ordering::Less
        });
        let &id = self.sorted_ids.get(position)?;
        match compare_with_concat(self.piece_unchecked(id), head, tail) {
            Ordering::Equal => Some(id),
            _ => None,
        }
    }

    fn check_id(&self, id: u32) -> Result<(), TokenizerError> {
        if usize::try_from(id).is_ok_and(|id| id < self.vocab_size()) {
            Ok(())
        } else {
            Err(TokenizerError::TokenOutOfRange {
                token: id,
                vocab_size: self.vocab_size(),
            })
        }
    }

    /// Returns piece `id`'s bytes. `new` validated every record, so this
    /// panics only when `id` is out of range.
    fn piece_unchecked(&self, id: u32) -> &'a [u8] {
        piece_at(self.bytes, self.offsets, id)
    }

    /// Returns piece `id`'s score. Panics only when `id` is out of range.
    fn score_unchecked(&self, id: u32) -> f32 {
        let offset = self.offsets[id as usize] as usize;
        f32::from_le_bytes(read_word(self.bytes, offset))
    }
}

/// Validates the record of piece `piece` at byte `offset` and returns the
/// offset of the next record.
fn next_record(
    bytes: &[u8],
    piece: usize,
    offset: usize,
    max_token_length: usize,
) -> Result<usize, TokenizerError> {
    let file_len = bytes.len();
    let truncated = TokenizerError::Truncated {
        piece,
        offset,
        file_len,
    };
    if file_len - offset < RECORD_HEADER_LEN {
        return Err(truncated);
    }
    let len_field = read_i32(bytes, offset + 4);
    let len = usize::try_from(len_field).map_err(|_| TokenizerError::NegativePieceLength {
        piece,
        offset,
        len: len_field,
    })?;
    if len > max_token_length {
        return Err(TokenizerError::PieceTooLong {
            piece,
            len,
            max_token_length,
        });
    }
    let start = offset + RECORD_HEADER_LEN;
    if file_len - start < len {
        return Err(truncated);
    }
    Ok(start + len)
}

/// Returns the bytes of piece `id` from a validated file and its offsets.
fn piece_at<'a>(bytes: &'a [u8], offsets: &[u32], id: u32) -> &'a [u8] {
    let offset = offsets[id as usize] as usize;
    // The length is non-negative and in bounds because `new` checked it.
    let len = read_i32(bytes, offset + 4) as usize;
    let start = offset + RECORD_HEADER_LEN;
    &bytes[start..start + len]
}

/// Returns the 4 bytes at `offset`, for `from_le_bytes`, which makes no
/// alignment assumption. The caller checks bounds.
fn read_word(bytes: &[u8], offset: usize) -> [u8; 4] {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    word
}

/// Reads the little-endian `i32` at byte `offset`. The caller checks bounds.
fn read_i32(bytes: &[u8], offset: usize) -> i32 {
    i32::from_le_bytes(read_word(bytes, offset))
}

/// Compares `piece` with the concatenation of `head` and `tail`, in the
/// unsigned lexicographic order of C `strcmp`.
fn compare_with_concat(piece: &[u8], head: &[u8], tail: &[u8]) -> Ordering {
    let shared = piece.len().min(head.len());
    match piece[..shared].cmp(&head[..shared]) {
        Ordering::Equal => {}
        unequal => return unequal,
    }
    if piece.len() < head.len() {
        // `piece` is a proper prefix of `head`, so it sorts first.
        return Ordering::Less;
    }
    piece[head.len()..].cmp(tail)
}

/// Returns the byte that a piece of the exact form `<0xHH>` stands for.
///
/// run.c parses pieces with `sscanf(piece, "<0x%02hhX>", ...)`, which also
/// accepts looser forms such as `<0x4>`. Neither the Llama 2 tokenizer.bin
/// nor tok512.bin has such a piece, so only the exact form is converted.
fn parse_byte_piece(piece: &[u8]) -> Option<u8> {
    match *piece {
        [b'<', b'0', b'x', high, low, b'>'] => Some(hex_digit(high)? << 4 | hex_digit(low)?),
        _ => None,
    }
}

fn hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Reports whether `byte` continues a UTF-8 sequence (`10xxxxxx`).
fn is_continuation(byte: u8) -> bool {
    byte & 0xC0 == 0x80
}
