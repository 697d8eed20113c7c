//! Seeded pseudo-random bytes (SplitMix64): the same seed gives the same bytes
//! on every machine and every version, and it runs at memory speed.

use std::io::{self, Read};

/// An endless reader of seeded pseudo-random bytes.
pub struct SeededBytes {
    state: u64,
    pending: [u8; 8],
    pending_len: usize,
}

impl SeededBytes {
    pub fn new(seed: u64) -> Self {
        Self { state: seed, pending: [0; 8], pending_len: 0 }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Read for SeededBytes {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() && self.pending_len > 0 {
            buf[filled] = self.pending[8 - self.pending_len];
            self.pending_len -= 1;
            filled += 1;
        }
        let mut chunks = buf[filled..].chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            self.pending = self.next_u64().to_le_bytes();
            let n = tail.len();
            tail.copy_from_slice(&self.pending[..n]);
            self.pending_len = 8 - n;
        }
        Ok(buf.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bytes(seed: u64, n: usize, read_size: usize) -> Vec<u8> {
        let mut reader = SeededBytes::new(seed);
        let mut out = Vec::new();
        while out.len() < n {
            let mut buf = vec![0; read_size.min(n - out.len())];
            reader.read_exact(&mut buf).unwrap();
            out.extend_from_slice(&buf);
        }
        out
    }

    #[test]
    fn same_seed_same_bytes_whatever_the_read_sizes() {
        let whole = bytes(42, 1000, 1000);
        assert_eq!(bytes(42, 1000, 3), whole);
        assert_eq!(bytes(42, 1000, 13), whole);
        assert_ne!(bytes(43, 1000, 1000), whole);
    }

    #[test]
    fn first_bytes_are_fixed_forever() {
        // SplitMix64(seed 0) first output: 0xE220A8397B1DCDAF.
        assert_eq!(bytes(0, 8, 8), 0xE220_A839_7B1D_CDAF_u64.to_le_bytes());
    }
}
