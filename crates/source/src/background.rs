//! Reading on a thread of its own, so that reading and parsing a model overlap with the rest
//! of a sync.
//!
//! A producer thread hands items over in batches through a bounded channel (so the items in
//! transit are a small, fixed amount of memory) and ends with an explicit end marker: a
//! channel that closes without it means the producer died, which must never pass for the end
//! of the model (removed rows are decided from the end).

use std::fmt;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use kinesync_payload::Schema;

use crate::{Locator, RowSource, SourceError, SourceRow};

/// Items handed over per message: enough to make the channel's cost vanish, few enough that
/// the items in transit stay small.
const BATCH_ITEMS: usize = 256;
/// Batches the producer may be ahead of the consumer.
const BATCHES_AHEAD: usize = 16;

enum Message<T> {
    Items(Vec<T>),
    /// The producer got to the end.
    End,
}

/// The producing side: batches items for the consuming side.
pub(crate) struct Emitter<T> {
    batch: Vec<T>,
    sender: SyncSender<Message<T>>,
}

impl<T> Emitter<T> {
    /// Hands over an item; `false` once the consumer has gone (stop producing).
    pub(crate) fn emit(&mut self, item: T) -> bool {
        self.batch.push(item);
        if self.batch.len() < BATCH_ITEMS {
            return true;
        }
        let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_ITEMS));
        self.sender.send(Message::Items(full)).is_ok()
    }

    fn finish(mut self) {
        let last = std::mem::take(&mut self.batch);
        if !last.is_empty() && self.sender.send(Message::Items(last)).is_err() {
            return;
        }
        self.sender.send(Message::End).ok();
    }
}

/// The producer stopped before the end of its items (it panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderStopped;

impl fmt::Display for ReaderStopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the thread reading the model stopped before the end")
    }
}

impl std::error::Error for ReaderStopped {}

/// Items produced on another thread, in order; a producer that died ends them with
/// `Err(ReaderStopped)`.
pub struct ReadAhead<T> {
    messages: Receiver<Message<T>>,
    current: std::vec::IntoIter<T>,
    finished: bool,
}

impl<T> fmt::Debug for ReadAhead<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadAhead")
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<T> Iterator for ReadAhead<T> {
    type Item = Result<T, ReaderStopped>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(Ok(item));
            }
            if self.finished {
                return None;
            }
            match self.messages.recv() {
                Ok(Message::Items(items)) => self.current = items.into_iter(),
                Ok(Message::End) => self.finished = true,
                Err(_) => {
                    self.finished = true;
                    return Some(Err(ReaderStopped));
                }
            }
        }
    }
}

/// Runs `produce` on a thread named `name`, handing what it emits to the returned iterator,
/// [`BATCH_ITEMS`] at a time, up to [`BATCHES_AHEAD`] batches ahead.
pub(crate) fn produce<T: Send + 'static>(
    name: &str,
    produce: impl FnOnce(&mut Emitter<T>) + Send + 'static,
) -> std::io::Result<ReadAhead<T>> {
    let (sender, messages) = sync_channel(BATCHES_AHEAD);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut emitter = Emitter {
                batch: Vec::with_capacity(BATCH_ITEMS),
                sender,
            };
            produce(&mut emitter);
            // Not reached if `produce` panicked: the consumer then sees `ReaderStopped`.
            emitter.finish();
        })?;
    Ok(ReadAhead {
        messages,
        current: Vec::new().into_iter(),
        finished: false,
    })
}

/// Any iterator read ahead by a thread of its own, a few hundred items in advance (the sync
/// engine reads a model's rows this way). Fails only if no thread can be started.
pub fn read_ahead<I>(items: I) -> std::io::Result<ReadAhead<I::Item>>
where
    I: IntoIterator + Send + 'static,
    I::Item: Send + 'static,
{
    produce("kinesync-read-ahead", move |emitter| {
        for item in items {
            if !emitter.emit(item) {
                return;
            }
        }
    })
}

/// A source whose rows are read by a thread of its own (a SQLite query runs this way).
#[derive(Debug)]
pub struct BackgroundSource {
    schema: Arc<Schema>,
    locator: Locator,
    rows: ReadAhead<Result<SourceRow, SourceError>>,
}

impl BackgroundSource {
    pub(crate) fn new(
        schema: Arc<Schema>,
        locator: Locator,
        rows: ReadAhead<Result<SourceRow, SourceError>>,
    ) -> Self {
        Self {
            schema,
            locator,
            rows,
        }
    }
}

impl Iterator for BackgroundSource {
    type Item = Result<SourceRow, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.rows.next()? {
            Ok(item) => item,
            Err(stopped) => Err(SourceError::Read {
                path: self.locator.path().to_owned(),
                line: 0,
                source: std::io::Error::other(stopped),
            }),
        })
    }
}

impl RowSource for BackgroundSource {
    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    fn locator(&self) -> Locator {
        self.locator.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_ahead_keeps_order_across_batches() {
        let items: Vec<u32> = read_ahead(0..10_000u32)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(items, (0..10_000).collect::<Vec<_>>());
        let mut partial = read_ahead(0..10_000u32).unwrap();
        assert_eq!(
            partial.next(),
            Some(Ok(0)),
            "a reader may stop early; the thread then ends"
        );
    }

    #[test]
    fn a_producer_that_dies_is_an_error_not_the_end() {
        let items: Vec<_> = produce("test", |emitter: &mut Emitter<u32>| {
            for i in 0..300 {
                emitter.emit(i);
            }
            panic!("a bug in the reader");
        })
        .unwrap()
        .collect();
        assert_eq!(items.last(), Some(&Err(ReaderStopped)));
        assert!(items[..items.len() - 1].iter().all(Result::is_ok));

        let schema = Schema::new(["id"], "id").unwrap();
        let rows = produce("test", |_: &mut Emitter<Result<SourceRow, SourceError>>| {
            panic!("a bug in the reader")
        })
        .unwrap();
        let items: Vec<_> =
            BackgroundSource::new(schema, Locator::lines("m.ndjson"), rows).collect();
        assert_eq!(items.len(), 1);
        let err = items[0].as_ref().unwrap_err();
        assert!(err.to_string().contains("stopped before the end"), "{err}");
    }
}
