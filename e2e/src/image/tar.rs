//! A minimal deterministic ustar writer: fixed mtime, owner 0:0, fixed modes,
//! so the same entries always give the same bytes (and digests).

use std::io::{self, Read, Write};

const BLOCK: usize = 512;
/// 2023-11-14T22:13:20Z, for every entry.
pub const MTIME: u64 = 1_700_000_000;

/// Writes tar entries to `out`.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// A directory entry (`path` ends with `/`).
    pub fn append_dir(&mut self, path: &str) -> io::Result<()> {
        self.out.write_all(&header(path, 0, b'5', 0o755)?)
    }

    /// A regular file of exactly `size` bytes read from `content`.
    pub fn append_file(&mut self, path: &str, size: u64, content: &mut impl Read) -> io::Result<()> {
        self.out.write_all(&header(path, size, b'0', 0o644)?)?;
        let copied = io::copy(&mut content.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{path}: {copied} of {size} bytes")));
        }
        self.pad(size)
    }

    /// A regular file with `data` as contents.
    pub fn append_bytes(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.append_file(path, data.len() as u64, &mut &data[..])
    }

    /// Writes the two end-of-archive blocks and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0; 2 * BLOCK])?;
        Ok(self.out)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }
}

/// The archive size of one file entry of `size` bytes (header + padded data).
pub fn file_entry_len(size: u64) -> u64 {
    BLOCK as u64 + size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// The end-of-archive marker length.
pub const END_LEN: u64 = 2 * BLOCK as u64;
/// A directory entry's length.
pub const DIR_ENTRY_LEN: u64 = BLOCK as u64;

fn header(path: &str, size: u64, kind: u8, mode: u32) -> io::Result<[u8; BLOCK]> {
    if path.len() >= 100 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("tar path too long: {path}")));
    }
    let mut h = [0u8; BLOCK];
    h[..path.len()].copy_from_slice(path.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], MTIME);
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let checksum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    octal(&mut h[148..155], checksum);
    h[155] = b' ';
    Ok(h)
}

/// Zero-padded octal digits followed by a NUL, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn entry_lengths_match_what_is_written() {
        let mut tar = TarWriter::new(Vec::new());
        tar.append_dir("data/").unwrap();
        tar.append_bytes("data/a", &[7; 700]).unwrap();
        let bytes = tar.finish().unwrap();
        assert_eq!(bytes.len() as u64, DIR_ENTRY_LEN + file_entry_len(700) + END_LEN);
        assert_eq!(&bytes[512 + 257..512 + 262], b"ustar");
        assert_eq!(&bytes[512 + 124..512 + 135], b"00000001274"); // 700 in octal
    }

    #[test]
    fn checksum_is_the_sum_of_header_bytes() {
        let h = header("x", 5, b'0', 0o644).unwrap();
        let stored = u64::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut copy = h;
        copy[148..156].fill(b' ');
        assert_eq!(stored, copy.iter().map(|b| u64::from(*b)).sum::<u64>());
    }

    #[test]
    fn short_content_is_an_error() {
        let mut tar = TarWriter::new(Vec::new());
        assert!(tar.append_file("a", 10, &mut &[1u8; 3][..]).is_err());
    }
}
