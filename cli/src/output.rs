//! Writing decoded pieces to stdout as run.c's `safe_printf` does, except
//! that byte tokens of 0x80 and above are reassembled into UTF-8.

use std::io::{self, Write};

/// Writes token pieces, dropping unprintable ASCII control bytes and
/// reassembling UTF-8 characters that arrive one byte token at a time.
pub struct PieceWriter<W: Write> {
    out: W,
    /// Bytes of an incomplete UTF-8 character.
    pending: [u8; 4],
    pending_len: usize,
    /// Total length of the character `pending` starts.
    expected_len: usize,
}

/// The error of a write to stdout after the reader went away (`| head`):
/// `main` ends quietly on it, with success, as command-line filters do.
pub const STDOUT_CLOSED: &str = "stdout was closed";

/// Turns a failed write to stdout into an error message, or into
/// [`STDOUT_CLOSED`] when the reader closed the pipe.
pub fn write_error(e: io::Error) -> String {
    if e.kind() == io::ErrorKind::BrokenPipe {
        STDOUT_CLOSED.to_owned()
    } else {
        format!("cannot write to stdout: {e}")
    }
}

/// U+FFFD, written in place of an invalid or unfinished UTF-8 sequence.
const REPLACEMENT: &[u8] = "\u{fffd}".as_bytes();

impl<W: Write> PieceWriter<W> {
    /// Wraps `out`.
    pub fn new(out: W) -> Self {
        PieceWriter {
            out,
            pending: [0; 4],
            pending_len: 0,
            expected_len: 0,
        }
    }

    /// Writes one decoded piece.
    ///
    /// A one-byte piece below 0x80 is written only if it is printable or
    /// whitespace, as run.c's `safe_printf` does. A one-byte piece of 0x80 or
    /// above is held until its UTF-8 character is complete; run.c drops such
    /// bytes instead. Longer pieces are written as they are.
    pub fn write_piece(&mut self, piece: &[u8]) -> io::Result<()> {
        match piece {
            [] => Ok(()),
            [byte] if *byte < 0x80 => {
                self.flush_pending()?;
                if is_print(*byte) || is_space(*byte) {
                    self.out.write_all(piece)?;
                }
                Ok(())
            }
            [byte] => self.push_byte(*byte),
            _ => {
                self.flush_pending()?;
                self.out.write_all(piece)
            }
        }
    }

    fn push_byte(&mut self, byte: u8) -> io::Result<()> {
        let is_continuation = byte & 0xC0 == 0x80;
        if is_continuation && self.pending_len > 0 {
            self.pending[self.pending_len] = byte;
            self.pending_len += 1;
            if self.pending_len == self.expected_len {
                let bytes = &self.pending[..self.pending_len];
                let valid = std::str::from_utf8(bytes).is_ok();
                self.out
                    .write_all(if valid { bytes } else { REPLACEMENT })?;
                self.pending_len = 0;
            }
            return Ok(());
        }
        self.flush_pending()?;
        let expected_len = match byte {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            // A stray continuation byte or a byte that never starts UTF-8.
            _ => return self.out.write_all(REPLACEMENT),
        };
        self.pending[0] = byte;
        self.pending_len = 1;
        self.expected_len = expected_len;
        Ok(())
    }

    /// Writes U+FFFD for an unfinished character, if any.
    fn flush_pending(&mut self) -> io::Result<()> {
        if self.pending_len > 0 {
            self.pending_len = 0;
            self.out.write_all(REPLACEMENT)?;
        }
        Ok(())
    }

    /// Writes raw bytes (newlines, prompts) after finishing any pending
    /// character.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.flush_pending()?;
        self.out.write_all(bytes)
    }

    /// Writes terminal control bytes (colour codes) straight through. An
    /// unfinished UTF-8 character stays pending, so a colour change between
    /// its bytes cannot break it; its bytes follow the codes once complete.
    pub fn write_control(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }

    /// Flushes the underlying writer. A pending partial character stays
    /// pending, because its next byte may still come.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Finishes any pending character and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_pending()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// C's `isprint` in the "C" locale.
fn is_print(byte: u8) -> bool {
    (0x20..0x7F).contains(&byte)
}

/// C's `isspace` in the "C" locale.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(pieces: &[&[u8]]) -> Vec<u8> {
        let mut w = PieceWriter::new(Vec::new());
        for piece in pieces {
            w.write_piece(piece).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn control_bytes_are_dropped() {
        assert_eq!(written(&[b"a", &[0x07], b"\n", &[0x00], b"b"]), b"a\nb");
    }

    #[test]
    fn byte_tokens_reassemble_utf8() {
        // "é" is C3 A9; "😀" is F0 9F 98 80.
        assert_eq!(written(&[&[0xC3], &[0xA9]]), "é".as_bytes());
        assert_eq!(
            written(&[b" x", &[0xF0], &[0x9F], &[0x98], &[0x80], b"!"]),
            " x😀!".as_bytes()
        );
    }

    #[test]
    fn control_bytes_keep_pending_character() {
        let mut w = PieceWriter::new(Vec::new());
        w.write_control(b"<g>").unwrap();
        w.write_piece(&[0xCF]).unwrap();
        w.write_control(b"</g>").unwrap();
        w.write_piece(&[0x98]).unwrap();
        assert_eq!(w.finish().unwrap(), "<g></g>\u{3d8}".as_bytes());
    }

    #[test]
    fn broken_sequences_become_replacement() {
        assert_eq!(written(&[&[0xC3], b"ab"]), "\u{fffd}ab".as_bytes());
        assert_eq!(written(&[&[0xA9]]), "\u{fffd}".as_bytes());
        assert_eq!(written(&[&[0xE2], &[0x82]]), "\u{fffd}".as_bytes());
        // An overlong encoding of '/' is not valid UTF-8.
        assert_eq!(written(&[&[0xE0], &[0x80], &[0xAF]]), "\u{fffd}".as_bytes());
    }
}
