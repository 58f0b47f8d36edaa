//! Content-defined chunking: FastCDC 2020 with a per-account seeded gear
//! table, so chunk boundaries (and the sizes the server sees) do not
//! fingerprint well-known files across accounts.

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, StreamCDC};

use crate::keys::Keys;

/// Smallest chunk (except a file's last); files smaller than this are one chunk.
pub const MIN_CHUNK: usize = 128 * 1024;
/// Target average chunk size.
pub const AVG_CHUNK: usize = 512 * 1024;
/// Largest chunk.
pub const MAX_CHUNK: usize = 4 * 1024 * 1024;

/// Splits a stream into chunks. Memory use is one `MAX_CHUNK` buffer plus
/// the chunk being returned, whatever the size of the stream.
///
/// The first `MIN_CHUNK + 1` bytes are read before FastCDC starts: a stream
/// that ends by then is one chunk (FastCDC never cuts below `MIN_CHUNK`),
/// and small files then cost no `MAX_CHUNK` buffer. Longer streams go
/// through FastCDC from their first byte, so the boundaries are the same.
pub struct Chunker<R: Read> {
    state: State<R>,
    seed: u64,
    /// The expected length of the stream, if known: the head is read into a
    /// buffer of that size, in two reads for a small file instead of a
    /// dozen growing ones.
    hint: u64,
}

enum State<R: Read> {
    Start(R),
    Stream(Box<StreamCDC<io::Chain<io::Cursor<Vec<u8>>, R>>>),
    Done,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader` with this account's seed.
    pub fn new(reader: R, keys: &Keys) -> Self {
        Self::with_seed(reader, keys.chunker_seed)
    }

    /// A chunker with an explicit seed (tests and benchmarks).
    pub fn with_seed(reader: R, seed: u64) -> Self {
        Chunker {
            state: State::Start(reader),
            seed,
            hint: 8 << 10,
        }
    }

    /// Tells the chunker how long the stream should be (a file's size as
    /// stat saw it). Only a hint: a stream of another length chunks the
    /// same.
    pub fn expecting(mut self, len: u64) -> Self {
        self.hint = len;
        self
    }
}

/// Reads up to `limit` bytes, starting with a buffer one byte longer than
/// `hint` (so a stream of that length ends with the read that finds its
/// end) and doubling it as needed.
fn read_head(reader: &mut impl Read, hint: u64, limit: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; (hint.min(limit as u64) as usize + 1).min(limit)];
    let mut n = 0;
    loop {
        if n == head.len() {
            if n >= limit {
                break;
            }
            head.resize((n * 2).min(limit), 0);
        }
        match reader.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(n);
    Ok(head)
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if let State::Start(_) = self.state {
            let State::Start(mut reader) = std::mem::replace(&mut self.state, State::Done) else {
                return None;
            };
            let head = match read_head(&mut reader, self.hint, MIN_CHUNK + 1) {
                Ok(h) => h,
                Err(e) => return Some(Err(e)),
            };
            if head.len() <= MIN_CHUNK {
                return (!head.is_empty()).then_some(Ok(head));
            }
            self.state = State::Stream(Box::new(StreamCDC::with_level_and_seed(
                io::Cursor::new(head).chain(reader),
                MIN_CHUNK,
                AVG_CHUNK,
                MAX_CHUNK,
                Normalization::Level1,
                self.seed,
            )));
        }
        match &mut self.state {
            State::Stream(inner) => inner
                .next()
                .map(|r| r.map(|c| c.data).map_err(io::Error::from)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift64*).
    fn noise(len: usize, mut s: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            v.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        v.truncate(len);
        v
    }

    fn lengths(data: &[u8], seed: u64) -> Vec<usize> {
        Chunker::with_seed(data, seed)
            .map(|c| c.expect("in-memory read").len())
            .collect()
    }

    #[test]
    fn boundaries_are_pinned() {
        // Changing these numbers changes every stored chunk id: a format change.
        let data = noise(12 << 20, 42);
        assert_eq!(lengths(&data, 1), PINNED_SEED_1);
        assert_eq!(lengths(&data, 0xdead_beef), PINNED_SEED_BEEF);
    }

    const PINNED_SEED_1: &[usize] = &[
        1275975, 139182, 607552, 579652, 1068462, 435952, 469256, 546441, 167858, 257531, 586683,
        529549, 576588, 620629, 391335, 810695, 791299, 757268, 607182, 1234950, 128873,
    ];
    const PINNED_SEED_BEEF: &[usize] = &[
        1207177, 923499, 815129, 425261, 529480, 886420, 531858, 603272, 516468, 624741, 259991,
        406218, 300756, 860597, 206183, 540063, 554724, 775486, 378724, 629481, 607384,
    ];

    #[test]
    fn small_files_are_one_chunk_and_chunks_reassemble() {
        let small = noise(MIN_CHUNK - 1, 3);
        assert_eq!(lengths(&small, 9), vec![MIN_CHUNK - 1]);
        let data = noise(9 << 20, 5);
        let joined: Vec<u8> = Chunker::with_seed(&data[..], 9)
            .flat_map(|c| c.expect("read"))
            .collect();
        assert_eq!(joined, data);
        assert!(lengths(&data, 9).iter().all(|&l| l <= MAX_CHUNK));
    }

    /// A reader that hands out at most 1000 bytes per read.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_size_hint_never_changes_the_chunks() {
        for len in [0, 1, 4095, MIN_CHUNK - 1, MIN_CHUNK, MIN_CHUNK + 1, 3 << 20] {
            let data = noise(len, len as u64);
            let want: Vec<Vec<u8>> = Chunker::with_seed(&data[..], 4)
                .map(|c| c.expect("read"))
                .collect();
            assert_eq!(want.concat(), data);
            for hint in [0, 1, len as u64, len as u64 + 1, len as u64 / 2, 1 << 40] {
                let got: Vec<Vec<u8>> = Chunker::with_seed(Trickle(&data), 4)
                    .expecting(hint)
                    .map(|c| c.expect("read"))
                    .collect();
                assert_eq!(got, want, "length {len}, hint {hint}");
            }
        }
    }

    #[test]
    fn an_insert_only_moves_nearby_boundaries() {
        let data = noise(16 << 20, 11);
        let mut edited = data.clone();
        edited.splice(8 << 20..8 << 20, b"inserted text".iter().copied());
        let a: std::collections::HashSet<Vec<u8>> = Chunker::with_seed(&data[..], 7)
            .map(|c| c.expect("read"))
            .collect();
        let b: Vec<Vec<u8>> = Chunker::with_seed(&edited[..], 7)
            .map(|c| c.expect("read"))
            .collect();
        let new = b.iter().filter(|c| !a.contains(*c)).count();
        assert!(new <= 2, "{new} chunks changed after a small insert");
    }
}
