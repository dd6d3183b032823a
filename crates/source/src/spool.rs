//! Bytes that one thread receives and another reads, the receiving side not waiting for the
//! reading side: up to a limit in memory, beyond it in a temporary file (up to a cap).
//!
//! Why: a Postgres model is read with one `COPY` statement. Were the server made to wait
//! until the sync is ready for more rows (a stream that takes 1,000 records a second per shard
//! makes a backfill last hours), the statement would last as long: its snapshot held on the
//! warehouse all that time (which keeps vacuum from cleaning up), and a statement timeout
//! counting the sync's waits instead of the server's work. Drained as fast as the server
//! sends, the statement ends when the server is done; the rows the sync has not reached wait
//! here, in the file once they outgrow memory (so memory stays flat). The file has a cap: a
//! backlog beyond it makes the receiving side wait after all (a disk is not filled, nor a
//! `TMPDIR` in memory, by a model larger than the cap).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

/// The most bytes read back from the file at once.
const FILE_READ: usize = 256 * 1024;

struct State<E> {
    /// Chunks in memory, oldest first; every one older than any unread byte of the file
    /// (a chunk goes to memory only while the file has nothing unread).
    chunks: VecDeque<Vec<u8>>,
    in_memory: usize,
    /// The overflow, created on first need.
    file: Option<File>,
    /// Bytes written to the file, and read back from it.
    written: u64,
    read: u64,
    /// How the writing side ended, once it has.
    end: Option<Result<(), E>>,
    /// The writing side is gone (ended or not).
    writer_gone: bool,
    /// The reading side is gone: nothing more is wanted.
    reader_gone: bool,
}

struct Shared<E> {
    state: Mutex<State<E>>,
    changed: Condvar,
}

impl<E> Shared<E> {
    fn lock(&self) -> MutexGuard<'_, State<E>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receiving side.
pub(crate) struct SpoolWriter<E> {
    shared: Arc<Shared<E>>,
    memory_limit: usize,
    file_limit: u64,
}

/// The reading side ([`Read`], and [`BufRead`] over its own chunks): the bytes in order, then
/// the end; [`end`](Self::end) then tells how the writing side ended.
pub(crate) struct SpoolReader<E> {
    shared: Arc<Shared<E>>,
    current: Vec<u8>,
    at: usize,
}

/// A spool keeping up to `memory_limit` bytes in memory, and up to `file_limit` more in its
/// file.
pub(crate) fn spool<E>(memory_limit: usize, file_limit: u64) -> (SpoolWriter<E>, SpoolReader<E>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            chunks: VecDeque::new(),
            in_memory: 0,
            file: None,
            written: 0,
            read: 0,
            end: None,
            writer_gone: false,
            reader_gone: false,
        }),
        changed: Condvar::new(),
    });
    (
        SpoolWriter {
            shared: shared.clone(),
            memory_limit,
            file_limit,
        },
        SpoolReader {
            shared,
            current: Vec::new(),
            at: 0,
        },
    )
}

impl<E> SpoolWriter<E> {
    /// Keeps `chunk` for the reader, waiting only while the file is full; `Ok(false)` once
    /// the reader has gone (stop receiving). An error is the file's (the disk full, say).
    pub(crate) fn write(&mut self, chunk: Vec<u8>) -> io::Result<bool> {
        if chunk.is_empty() {
            return Ok(true);
        }
        let mut state = self.shared.lock();
        loop {
            if state.reader_gone {
                return Ok(false);
            }
            let file_unread = state.written > state.read;
            if !file_unread && state.in_memory + chunk.len() <= self.memory_limit {
                state.in_memory += chunk.len();
                state.chunks.push_back(chunk);
                break;
            }
            // Always room for one chunk, however small the cap.
            if !file_unread || state.written - state.read + chunk.len() as u64 <= self.file_limit {
                let at = state.written;
                let file = match &mut state.file {
                    Some(file) => file,
                    none => none.insert(tempfile::tempfile()?),
                };
                file.seek(SeekFrom::Start(at))?;
                file.write_all(&chunk)?;
                state.written += chunk.len() as u64;
                break;
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.shared.changed.notify_all();
        Ok(true)
    }

    /// Ends the bytes, saying how.
    pub(crate) fn finish(self, end: Result<(), E>) {
        self.shared.lock().end = Some(end);
        // Dropping tells the reader.
    }
}

impl<E> Drop for SpoolWriter<E> {
    fn drop(&mut self) {
        self.shared.lock().writer_gone = true;
        self.shared.changed.notify_all();
    }
}

impl<E> SpoolReader<E> {
    /// How the writing side ended, once [`read`](Read::read) has given `Ok(0)`: `None` if it
    /// stopped without saying (its thread died).
    pub(crate) fn end(&mut self) -> Option<Result<(), E>> {
        self.shared.lock().end.take()
    }

    /// The next chunk into `current`; `false` at the end.
    fn refill(&mut self) -> io::Result<bool> {
        let mut state = self.shared.lock();
        loop {
            if let Some(chunk) = state.chunks.pop_front() {
                state.in_memory -= chunk.len();
                self.current = chunk;
                self.at = 0;
                return Ok(true);
            }
            if state.written > state.read {
                let unread = usize::try_from(state.written - state.read).unwrap_or(usize::MAX);
                let at = state.read;
                let file = state.file.as_mut().expect("bytes written to the file");
                let mut chunk = vec![0; unread.min(FILE_READ)];
                file.seek(SeekFrom::Start(at))?;
                file.read_exact(&mut chunk)?;
                state.read += chunk.len() as u64;
                if state.read == state.written {
                    // All read: the file is written again from its start.
                    state.read = 0;
                    state.written = 0;
                }
                self.current = chunk;
                self.at = 0;
                // The writer may be waiting for room in the file.
                self.shared.changed.notify_all();
                return Ok(true);
            }
            if state.writer_gone {
                return Ok(false);
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl<E> Read for SpoolReader<E> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// The reader's own chunk is its buffer: no second copy of the bytes.
impl<E> BufRead for SpoolReader<E> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at == self.current.len() && !self.refill()? {
            return Ok(&[]);
        }
        Ok(&self.current[self.at..])
    }

    fn consume(&mut self, amount: usize) {
        self.at = (self.at + amount).min(self.current.len());
    }
}

impl<E> Drop for SpoolReader<E> {
    fn drop(&mut self) {
        self.shared.lock().reader_gone = true;
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Writes `chunks` from a thread while this one reads: the bytes come back in order,
    /// whatever went to memory and whatever to the file (the writer waiting when it is full).
    fn round_trip(chunks: Vec<Vec<u8>>, memory_limit: usize, file_limit: u64) -> Vec<u8> {
        let (mut writer, mut reader) = spool::<String>(memory_limit, file_limit);
        let writing = std::thread::spawn(move || {
            for chunk in chunks {
                assert!(writer.write(chunk).unwrap());
            }
            writer.finish(Ok(()));
        });
        let mut read = Vec::new();
        reader.read_to_end(&mut read).unwrap();
        writing.join().unwrap();
        assert_eq!(reader.end(), Some(Ok(())));
        read
    }

    #[test]
    fn the_writer_does_not_wait_until_the_file_is_full_too() {
        let (mut writer, mut reader) = spool::<String>(10, 1000);
        // Nothing is read while 1,000 bytes are written: 10 stay in memory.
        for i in 0..100u8 {
            assert!(writer.write(vec![i; 10]).unwrap());
        }
        {
            let state = reader.shared.lock();
            assert_eq!(state.in_memory, 10);
            assert_eq!(state.written, 990);
        }
        writer.finish(Err("lost".to_owned()));
        let mut read = Vec::new();
        reader.read_to_end(&mut read).unwrap();
        let expected: Vec<u8> = (0..100u8).flat_map(|i| vec![i; 10]).collect();
        assert_eq!(read, expected);
        assert_eq!(
            reader.end(),
            Some(Err("lost".to_owned())),
            "the end as written"
        );
    }

    #[test]
    fn a_writer_gone_without_finishing_ends_the_bytes_without_an_end() {
        let (mut writer, mut reader) = spool::<String>(10, 10);
        writer.write(b"abc".to_vec()).unwrap();
        drop(writer);
        let mut read = Vec::new();
        reader.read_to_end(&mut read).unwrap();
        assert_eq!(read, b"abc");
        assert_eq!(reader.end(), None, "never taken for the end of the rows");
    }

    #[test]
    fn a_reader_gone_stops_the_writer_even_one_waiting_for_room() {
        let (mut writer, reader) = spool::<String>(1, 1);
        assert!(writer.write(b"a".to_vec()).unwrap(), "in memory");
        assert!(writer.write(b"b".to_vec()).unwrap(), "in the file");
        let waiting = std::thread::spawn(move || writer.write(b"c".to_vec()).unwrap());
        drop(reader);
        assert!(!waiting.join().unwrap(), "told to stop");
    }

    proptest! {
        #[test]
        fn bytes_come_back_in_order(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..60),
            memory_limit in 0usize..100,
            file_limit in 0u64..200,
        ) {
            let expected: Vec<u8> = chunks.concat();
            prop_assert_eq!(round_trip(chunks, memory_limit, file_limit), expected);
        }
    }
}
