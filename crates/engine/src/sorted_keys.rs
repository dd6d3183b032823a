//! Sorting more entries than memory should hold: sorted runs spilled to temporary files, then
//! merged. A run uses it for the primary keys it has seen (to find duplicate keys, and the
//! keys the state has that the model no longer does) so that its memory stays the same
//! whatever the model's size: a few hundred thousand entries in memory, the rest on disk.
//!
//! Entries are ordered by a 128-bit hash first. Two streams sorted that way (the model's keys
//! and the state's keys) can then be compared in one pass, with no index and no hash set.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

/// A primary key, with its hash and the line (or row) it was read from (0 for a key of the
/// state store). Ordered by hash, then line: a key read twice comes out at its first line
/// first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) hash: u128,
    pub(crate) line: u64,
    pub(crate) key: String,
}

impl Key {
    /// Appends the key to a run file.
    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let len = u32::try_from(self.key.len()).map_err(io::Error::other)?;
        out.write_all(&self.hash.to_le_bytes())?;
        out.write_all(&self.line.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        out.write_all(self.key.as_bytes())
    }

    /// Reads the next key's hash from a run file, skipping the rest of the key; `None` at its
    /// end.
    fn read_hash_from(input: &mut BufReader<&File>) -> io::Result<Option<u128>> {
        let mut head = [0u8; 28];
        if !read_exact_or_end(input, &mut head)? {
            return Ok(None);
        }
        let hash = u128::from_le_bytes(head[0..16].try_into().expect("16 bytes"));
        let len = u32::from_le_bytes(head[24..28].try_into().expect("4 bytes"));
        input.seek_relative(i64::from(len))?;
        Ok(Some(hash))
    }

    /// Reads the next key of a run file; `None` at its end.
    fn read_from(input: &mut impl Read) -> io::Result<Option<Self>> {
        let mut head = [0u8; 28];
        if !read_exact_or_end(input, &mut head)? {
            return Ok(None);
        }
        let field = |range: std::ops::Range<usize>| &head[range];
        let hash = u128::from_le_bytes(field(0..16).try_into().expect("16 bytes"));
        let line = u64::from_le_bytes(field(16..24).try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(field(24..28).try_into().expect("4 bytes")) as usize;
        let mut key = vec![0u8; len];
        input.read_exact(&mut key)?;
        Ok(Some(Self {
            hash,
            line,
            key: String::from_utf8(key).map_err(io::Error::other)?,
        }))
    }
}

/// Fills `buf`, or reports a clean end of input before its first byte.
fn read_exact_or_end(input: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Keys gathered in any order, kept at most `limit` at a time in memory (plus one run being
/// spilled).
pub(crate) struct Sorter {
    buffer: Vec<Key>,
    limit: usize,
    runs: Vec<File>,
    /// The run being sorted and written on a thread of its own, so that the thread pushing
    /// keys (the sync's own) does not stop for it.
    spilling: Option<std::thread::JoinHandle<io::Result<File>>>,
}

impl Sorter {
    /// A sorter that spills a sorted run to disk each time `limit` entries are in memory.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            buffer: Vec::new(),
            limit: limit.max(1),
            runs: Vec::new(),
            spilling: None,
        }
    }

    /// Adds an entry.
    pub(crate) fn push(&mut self, entry: Key) -> io::Result<()> {
        self.buffer.push(entry);
        if self.buffer.len() >= self.limit {
            self.spill()?;
        }
        Ok(())
    }

    /// Hands the entries in memory to a thread that writes them to a temporary file, sorted,
    /// once the previous run is written.
    fn spill(&mut self) -> io::Result<()> {
        self.finish_spilling()?;
        let entries = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.limit));
        let spilling = std::thread::Builder::new()
            .name("kinesync-spill".into())
            .spawn(move || write_run(entries))?;
        self.spilling = Some(spilling);
        Ok(())
    }

    /// Waits for the run being spilled, if any.
    fn finish_spilling(&mut self) -> io::Result<()> {
        if let Some(spilling) = self.spilling.take() {
            let file = spilling
                .join()
                .map_err(|_| io::Error::other("the thread spilling sorted keys panicked"))??;
            self.runs.push(file);
        }
        Ok(())
    }

    /// Whether two entries so far share a hash (the cheap pass a run makes to rule
    /// duplicate keys out).
    pub(crate) fn has_equal_hashes(&mut self) -> io::Result<bool> {
        let mut previous = None;
        for hash in self.hashes()? {
            let hash = hash?;
            if previous == Some(hash) {
                return Ok(true);
            }
            previous = Some(hash);
        }
        Ok(false)
    }

    /// The hashes of every entry so far, in order: a merge that reads no key text.
    pub(crate) fn hashes(&mut self) -> io::Result<Hashes<'_>> {
        self.finish_spilling()?;
        self.buffer.sort_unstable();
        let mut files = Vec::with_capacity(self.runs.len());
        for file in &mut self.runs {
            file.seek(SeekFrom::Start(0))?;
            files.push(BufReader::with_capacity(1 << 16, &*file));
        }
        let mut hashes = Hashes {
            files,
            memory: self.buffer.iter(),
            heap: BinaryHeap::new(),
        };
        for index in 0..=hashes.files.len() {
            if let Some(hash) = hashes.next_of(index)? {
                hashes.heap.push(Reverse((hash, index)));
            }
        }
        Ok(hashes)
    }

    /// Every entry so far, in order. Can be called again for another pass.
    pub(crate) fn sorted(&mut self) -> io::Result<Merged<'_>> {
        self.finish_spilling()?;
        self.buffer.sort_unstable();
        let mut sources = Vec::with_capacity(self.runs.len() + 1);
        for file in &mut self.runs {
            file.seek(SeekFrom::Start(0))?;
            sources.push(SortedRun::File(BufReader::with_capacity(1 << 16, &*file)));
        }
        sources.push(SortedRun::Memory(self.buffer.iter()));
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (index, source) in sources.iter_mut().enumerate() {
            if let Some(entry) = source.next_entry()? {
                heap.push(Reverse((entry, index)));
            }
        }
        Ok(Merged { sources, heap })
    }
}

/// Sorts `entries` and writes them to a temporary file, rewound for reading.
fn write_run(mut entries: Vec<Key>) -> io::Result<File> {
    entries.sort_unstable();
    let mut file = BufWriter::with_capacity(1 << 16, tempfile::tempfile()?);
    for entry in &entries {
        entry.write_to(&mut file)?;
    }
    let mut file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

enum SortedRun<'a> {
    File(BufReader<&'a File>),
    Memory(std::slice::Iter<'a, Key>),
}

impl SortedRun<'_> {
    fn next_entry(&mut self) -> io::Result<Option<Key>> {
        match self {
            SortedRun::File(file) => Key::read_from(file),
            SortedRun::Memory(entries) => Ok(entries.next().cloned()),
        }
    }
}

/// The hashes of the sorted runs, merged into one ordered stream.
pub(crate) struct Hashes<'a> {
    files: Vec<BufReader<&'a File>>,
    /// The entries still in memory, the source after the files.
    memory: std::slice::Iter<'a, Key>,
    heap: BinaryHeap<Reverse<(u128, usize)>>,
}

impl Hashes<'_> {
    /// The next hash of source `index`.
    fn next_of(&mut self, index: usize) -> io::Result<Option<u128>> {
        match self.files.get_mut(index) {
            Some(file) => Key::read_hash_from(file),
            None => Ok(self.memory.next().map(|entry| entry.hash)),
        }
    }
}

impl Iterator for Hashes<'_> {
    type Item = io::Result<u128>;

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((hash, index)) = self.heap.pop()?;
        match self.next_of(index) {
            Ok(Some(next)) => self.heap.push(Reverse((next, index))),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(hash))
    }
}

/// The sorted runs merged into one ordered stream.
pub(crate) struct Merged<'a> {
    sources: Vec<SortedRun<'a>>,
    heap: BinaryHeap<Reverse<(Key, usize)>>,
}

impl Iterator for Merged<'_> {
    type Item = io::Result<Key>;

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse((entry, index)) = self.heap.pop()?;
        match self.sources[index].next_entry() {
            Ok(Some(next)) => self.heap.push(Reverse((next, index))),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the spill limit, the merged stream is every entry, sorted, and a second
        /// pass gives the same.
        #[test]
        fn merged_runs_are_every_entry_in_order(
            keys in prop::collection::vec("[a-c]{0,3}|\\PC{0,12}", 0..300),
            limit in 1usize..40,
        ) {
            let mut sorter = Sorter::new(limit);
            let mut expected = Vec::new();
            for (line, key) in keys.into_iter().enumerate() {
                let entry = Key { hash: xxhash_rust::xxh3::xxh3_128(key.as_bytes()), line: line as u64, key };
                sorter.push(entry.clone()).unwrap();
                expected.push(entry);
            }
            expected.sort();
            let first: Vec<Key> = sorter.sorted().unwrap().map(Result::unwrap).collect();
            prop_assert_eq!(&first, &expected);
            let second: Vec<Key> = sorter.sorted().unwrap().map(Result::unwrap).collect();
            let shared = second.windows(2).any(|w| w[0].hash == w[1].hash);
            prop_assert_eq!(&second, &expected);
            prop_assert_eq!(sorter.has_equal_hashes().unwrap(), shared);
            let hashes: Vec<u128> = sorter.hashes().unwrap().map(Result::unwrap).collect();
            prop_assert_eq!(hashes, expected.iter().map(|e| e.hash).collect::<Vec<_>>());
        }
    }
}
