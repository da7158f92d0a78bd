//! Opening checkpoints and tokenizers, and aligned buffers for the core.

use std::fs::File;
use std::io;
use std::path::Path;

use memmap2::Mmap;

/// A checkpoint file mapped into memory. An empty file has no mapping (Linux
/// refuses to map zero bytes) and reads as an empty slice, which the core
/// rejects as a truncated header.
pub struct MappedFile {
    map: Option<Mmap>,
    /// The bytes of a file that cannot be mapped, such as a pipe.
    read: Option<AlignedBuf>,
}

impl MappedFile {
    /// Memory-maps `path` read-only.
    pub fn open(path: &Path) -> Result<MappedFile, String> {
        let path_text = path.display();
        let metadata = std::fs::metadata(path).map_err(|e| open_error(path, &e))?;
        if metadata.is_dir() {
            return Err(format!(
                "{path_text}: is a directory; pass the path of a checkpoint file"
            ));
        }
        let mut file = File::open(path).map_err(|e| open_error(path, &e))?;
        if !metadata.is_file() {
            // A pipe or device: read it, into 4-byte aligned memory.
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut file, &mut bytes)
                .map_err(|e| format!("{path_text}: cannot read: {e}"))?;
            let mut buf = AlignedBuf::zeroed(bytes.len());
            buf.as_bytes_mut().copy_from_slice(&bytes);
            return Ok(MappedFile {
                map: None,
                read: Some(buf),
            });
        }
        if metadata.len() == 0 {
            return Ok(MappedFile {
                map: None,
                read: None,
            });
        }
        // SAFETY: the map is read-only and lives as long as every borrow of
        // its bytes. Like every program that maps its input, we rely on no
        // other process truncating or rewriting the file while it is mapped.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| format!("{path_text}: cannot memory-map: {e}"))?;
        Ok(MappedFile {
            map: Some(map),
            read: None,
        })
    }

    /// The file's bytes, starting at a page-aligned address.
    pub fn bytes(&self) -> &[u8] {
        match (&self.map, &self.read) {
            (Some(map), _) => map,
            (None, Some(read)) => read.as_bytes(),
            (None, None) => &[],
        }
    }
}

/// Reads a whole file, with the same messages as [`MappedFile::open`].
pub fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    if path.is_dir() {
        return Err(format!(
            "{}: is a directory; pass the path of a file",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| open_error(path, &e))
}

fn open_error(path: &Path, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => format!("{}: file not found; check the path", path.display()),
        io::ErrorKind::PermissionDenied => format!("{}: permission denied", path.display()),
        _ => format!("{}: cannot open: {e}", path.display()),
    }
}

/// A zeroed byte buffer that starts at a 4-byte aligned address, as the
/// core's run state needs.
pub struct AlignedBuf {
    words: Vec<u32>,
    len: usize,
}

impl AlignedBuf {
    /// Allocates `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBuf {
        AlignedBuf {
            words: vec![0; len.div_ceil(4)],
            len,
        }
    }

    /// The buffer as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the Vec<u32> owns at least `len` initialized bytes and u8
        // has alignment 1; the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    /// The buffer as mutable bytes.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the Vec<u32> owns at least `len` initialized bytes, u8 has
        // alignment 1, and the returned slice takes the unique borrow of the
        // Vec for its lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}
