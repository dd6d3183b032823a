//! Reading on a thread of its own, so that reading and parsing a model overlap with rendering
//! and sending.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use kinesync_payload::Schema;

use crate::{Locator, RowSource, SourceError, SourceRow};

/// Rows handed over per message: enough to make the channel's cost vanish, few enough that
/// the rows in transit stay a small, fixed amount of memory.
const BATCH_ROWS: usize = 256;
/// Batches the reader may be ahead of the consumer.
const BATCHES_AHEAD: usize = 4;

pub(crate) enum Batch {
    Rows(Vec<Result<SourceRow, SourceError>>),
    /// The reader got to the end. Without it, a channel that closes means the reader died,
    /// which must not pass for the end of the model (removed keys are decided from the end).
    Done,
}

/// A source whose rows are read by a thread of its own (a SQLite query runs this way).
#[derive(Debug)]
pub struct BackgroundSource {
    schema: Arc<Schema>,
    locator: Locator,
    batches: Receiver<Batch>,
    current: std::vec::IntoIter<Result<SourceRow, SourceError>>,
    finished: bool,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Batch::Rows(rows) => write!(f, "Rows({})", rows.len()),
            Batch::Done => f.write_str("Done"),
        }
    }
}

impl BackgroundSource {
    /// Runs `read` on a new thread; it sends batches of rows, then [`Batch::Done`].
    pub(crate) fn spawn(
        schema: Arc<Schema>,
        locator: Locator,
        read: impl FnOnce(SyncSender<Batch>) + Send + 'static,
    ) -> Result<Self, SourceError> {
        let (sender, batches) = sync_channel(BATCHES_AHEAD);
        std::thread::Builder::new()
            .name("kinesync-source".into())
            .spawn(move || read(sender))
            .map_err(|source| SourceError::Read {
                path: locator.path().to_owned(),
                line: 0,
                source,
            })?;
        Ok(Self {
            schema,
            locator,
            batches,
            current: Vec::new().into_iter(),
            finished: false,
        })
    }
}

/// Any iterator read ahead by a thread of its own, a few batches in advance (the sync engine
/// reads and prepares a model's rows this way). It ends early, with no error, if the thread
/// dies: where the end of the items means something, end them with a marker and check for it.
/// Fails only if no thread can be started.
pub fn read_ahead<I>(items: I) -> std::io::Result<impl Iterator<Item = I::Item>>
where
    I: IntoIterator + Send + 'static,
    I::Item: Send + 'static,
{
    let (sender, batches) = sync_channel::<Vec<I::Item>>(BATCHES_AHEAD);
    std::thread::Builder::new()
        .name("kinesync-read-ahead".into())
        .spawn(move || {
            let mut batch = Vec::with_capacity(BATCH_ROWS);
            for item in items {
                batch.push(item);
                if batch.len() == BATCH_ROWS {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
                    if sender.send(full).is_err() {
                        return;
                    }
                }
            }
            sender.send(batch).ok();
        })?;
    Ok(batches.into_iter().flatten())
}

/// Sends `rows` in batches, then `Done`; stops early when the consumer has gone.
pub(crate) fn pump(
    rows: impl IntoIterator<Item = Result<SourceRow, SourceError>>,
    batches: &SyncSender<Batch>,
) {
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    for item in rows {
        batch.push(item);
        if batch.len() == BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_ROWS));
            if batches.send(Batch::Rows(full)).is_err() {
                return;
            }
        }
    }
    if !batch.is_empty() && batches.send(Batch::Rows(batch)).is_err() {
        return;
    }
    batches.send(Batch::Done).ok();
}

impl Iterator for BackgroundSource {
    type Item = Result<SourceRow, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            if self.finished {
                return None;
            }
            match self.batches.recv() {
                Ok(Batch::Rows(rows)) => self.current = rows.into_iter(),
                Ok(Batch::Done) => self.finished = true,
                Err(_) => {
                    self.finished = true;
                    return Some(Err(SourceError::Read {
                        path: self.locator.path().to_owned(),
                        line: 0,
                        source: std::io::Error::other(
                            "the thread reading the model stopped before the end",
                        ),
                    }));
                }
            }
        }
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
        let items: Vec<u32> = read_ahead(0..10_000u32).unwrap().collect();
        assert_eq!(items, (0..10_000).collect::<Vec<_>>());
        let mut partial = read_ahead(0..10_000u32).unwrap();
        assert_eq!(
            partial.next(),
            Some(0),
            "a reader may stop early; the thread then ends"
        );
    }

    #[test]
    fn a_reader_that_dies_is_an_error_not_the_end_of_the_model() {
        let schema = Schema::new(["id"], "id").unwrap();
        let source = BackgroundSource::spawn(schema, Locator::lines("m.ndjson"), |batches| {
            batches.send(Batch::Rows(Vec::new())).ok();
            // Dropped without `Done`, as when the reading thread panics.
        })
        .unwrap();
        let items: Vec<_> = source.collect();
        assert_eq!(items.len(), 1);
        let err = items[0].as_ref().unwrap_err();
        assert!(err.to_string().contains("stopped before the end"), "{err}");
    }
}
