//! Marks in doubt written a batch at a time: the commit that marks a call's records in doubt
//! writes one row of `kinesync_<name>_marks` (the batch's keys, and the versions and record
//! ids sent, as arrays) instead of one row of the state per record; the acknowledgement that
//! settles them writes each key's row once, as acknowledged, and deletes the batch's row once
//! every key of it is settled. So each record sent costs the state one row written, not two
//! (a backfill's state work is about 40% less: see the README).
//!
//! What the store answers is what it would be with every mark written to its key's row: the
//! batches not settled yet are kept in memory too, and lay over what lookups read. Any other
//! commit, and any walk or count of the keys, first writes the outstanding marks to their
//! rows, as one mark a row (the store's general path), in the same transaction as the batches'
//! rows are deleted.
//!
//! At a run's end the marks not settled (records pending) are written to their keys' rows as
//! doubts. A batch's row left behind (kinesync killed) is written to its keys' rows when the
//! store next opens: every key of it in doubt with the version the mark sent, the settled
//! ones too (a settle leaves no trace in the batch's row, and a key's row cannot tell it: a
//! resync sends the version already acknowledged), so the next run sends them again with
//! their ids.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use postgres::Client;
use postgres::error::SqlState;

use crate::{Change, Doubt, Fingerprint, StoredRow};

/// A batch's row as read back: its number, and each mark's key, record id and version sent.
pub(super) type Batch = (i64, Vec<(String, Doubt, Fingerprint, Vec<u8>)>);

/// A record marked in doubt and not settled yet.
#[derive(Debug, Clone)]
struct Mark {
    batch: i64,
    fingerprint: Fingerprint,
    /// Shared with the batch's write, and then its settle's: a row is copied once, when
    /// marked.
    row: Arc<[u8]>,
    doubt: Doubt,
}

impl Mark {
    fn stored(&self) -> StoredRow {
        StoredRow {
            fingerprint: self.fingerprint,
            row: self.row.to_vec(),
            doubt: Some(self.doubt),
        }
    }

    fn change(self, key: String) -> Change {
        Change::InDoubt {
            key,
            doubt: self.doubt,
            sent: Some((self.fingerprint, self.row.to_vec())),
        }
    }
}

/// The batches of marks written and not settled, by key.
#[derive(Debug, Default)]
pub(super) struct Outstanding {
    marks: HashMap<String, Mark>,
    /// Keys not settled yet, by batch.
    left: HashMap<i64, usize>,
    /// The last batch's number.
    last: i64,
}

/// Every this many batches, the marks table is vacuumed once their rows are deleted: a
/// batch's row is stored out of line, and deleted, pages of it at a time; unvacuumed (the
/// server's autovacuum comes about once a minute, and may be busy with the rows table), every
/// new batch extends the table's files. Over a 10M backfill, 1M dead pieces were left.
const VACUUM_EVERY_BATCHES: i64 = 128;

/// A batch of marks to write: one row of the marks table.
pub(super) struct MarkBatch {
    batch: i64,
    keys: Vec<String>,
    fingerprints: Vec<Vec<u8>>,
    rows: Vec<Arc<[u8]>>,
    doubts: Vec<Vec<u8>>,
}

/// Keys settled: their rows, written as acknowledged, and the batches all settled.
pub(super) struct Settled {
    keys: Vec<String>,
    fingerprints: Vec<Vec<u8>>,
    rows: Vec<Arc<[u8]>>,
    done: Vec<i64>,
}

impl Outstanding {
    /// `changes` as one batch, when each marks a version sent of a key not outstanding, no
    /// key twice; `None` otherwise (the store's general path then writes them).
    pub(super) fn mark(&mut self, changes: &[Change]) -> Option<MarkBatch> {
        let mut keys = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::InDoubt {
                    key, sent: Some(_), ..
                } if !self.marks.contains_key(key) => keys.push(key.as_str()),
                _ => return None,
            }
        }
        keys.sort_unstable();
        if keys.windows(2).any(|pair| pair[0] == pair[1]) {
            return None;
        }
        self.last += 1;
        let batch = self.last;
        let mut written = MarkBatch {
            batch,
            keys: Vec::with_capacity(changes.len()),
            fingerprints: Vec::with_capacity(changes.len()),
            rows: Vec::with_capacity(changes.len()),
            doubts: Vec::with_capacity(changes.len()),
        };
        for change in changes {
            if let Change::InDoubt {
                key,
                doubt,
                sent: Some((fingerprint, row)),
            } = change
            {
                written.keys.push(key.clone());
                written
                    .fingerprints
                    .push(fingerprint.to_be_bytes().to_vec());
                let row: Arc<[u8]> = Arc::from(row.as_slice());
                written.rows.push(row.clone());
                written.doubts.push(doubt.to_blob().to_vec());
                let mark = Mark {
                    batch,
                    fingerprint: *fingerprint,
                    row,
                    doubt: *doubt,
                };
                self.marks.insert(key.clone(), mark);
            }
        }
        self.left.insert(batch, changes.len());
        Some(written)
    }

    /// `changes` as settles of outstanding marks, when each settles one, no key twice;
    /// `None` otherwise.
    pub(super) fn settle(&mut self, changes: &[Change]) -> Option<Settled> {
        let mut keys = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Settle { key } if self.marks.contains_key(key) => keys.push(key.as_str()),
                _ => return None,
            }
        }
        keys.sort_unstable();
        if keys.windows(2).any(|pair| pair[0] == pair[1]) {
            return None;
        }
        let mut settled = Settled {
            keys: Vec::with_capacity(keys.len()),
            fingerprints: Vec::with_capacity(keys.len()),
            rows: Vec::with_capacity(keys.len()),
            done: Vec::new(),
        };
        for key in keys {
            let mark = self.marks.remove(key).expect("checked");
            let left = self
                .left
                .get_mut(&mark.batch)
                .expect("a mark's batch is counted");
            *left -= 1;
            if *left == 0 {
                self.left.remove(&mark.batch);
                settled.done.push(mark.batch);
            }
            settled.keys.push(key.to_owned());
            settled
                .fingerprints
                .push(mark.fingerprint.to_be_bytes().to_vec());
            settled.rows.push(mark.row);
        }
        Some(settled)
    }

    /// Every outstanding mark, as the changes that write it to its key's row, and the batches
    /// whose rows go with them; none is outstanding after.
    pub(super) fn drain(&mut self) -> (Vec<Change>, Vec<i64>) {
        let mut marks: Vec<(String, Mark)> = self.marks.drain().collect();
        marks.sort_by(|a, b| a.0.cmp(&b.0));
        let changes = marks
            .into_iter()
            .map(|(key, mark)| mark.change(key))
            .collect();
        let mut batches: Vec<i64> = self.left.drain().map(|(batch, _)| batch).collect();
        batches.sort_unstable();
        (changes, batches)
    }

    /// The outstanding keys after `after` (all with `None`).
    pub(super) fn keys_after<'a>(
        &'a self,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = String> + 'a {
        self.marks
            .keys()
            .filter(move |key| after.is_none_or(|after| key.as_str() > after))
            .cloned()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// The outstanding keys.
    pub(super) fn keys(&self) -> Vec<String> {
        self.marks.keys().cloned().collect()
    }

    /// Lays the outstanding marks of `keys` over their rows as read.
    pub(super) fn overlay(&self, keys: &[String], stored: &mut BTreeMap<String, StoredRow>) {
        for key in keys {
            if let Some(mark) = self.marks.get(key) {
                stored.insert(key.clone(), mark.stored());
            }
        }
    }

    /// Keeps the marks a store opened for a dry run found left behind (as [`recovered`] gives
    /// them): it writes nothing, so lays them over what it reads, as one batch never written.
    pub(super) fn keep_found(&mut self, found: Vec<Change>) {
        for change in found {
            if let Change::InDoubt {
                key,
                doubt,
                sent: Some((fingerprint, row)),
            } = change
            {
                let mark = Mark {
                    batch: 0,
                    fingerprint,
                    row: row.into(),
                    doubt,
                };
                if self.marks.insert(key, mark).is_none() {
                    *self.left.entry(0).or_default() += 1;
                }
            }
        }
    }
}

impl MarkBatch {
    /// Writes the batch's row (committed durably, as the session commits).
    pub(super) fn write(
        &self,
        client: &mut Client,
        marks_table: &str,
    ) -> Result<(), postgres::Error> {
        client.execute(
            &format!(
                "INSERT INTO {marks_table} (batch, keys, fingerprints, rows, doubts) VALUES ($1, $2, $3, $4, $5)"
            ),
            &[&self.batch, &self.keys, &self.fingerprints, &slices(&self.rows), &self.doubts],
        )?;
        Ok(())
    }
}

impl Settled {
    /// Writes the settled keys' rows as acknowledged and deletes the batches all settled, in
    /// one transaction committed asynchronously (see the store's settle): a settle lost to a
    /// crash of the server leaves its batch's row, which the next open writes as doubts.
    ///
    /// With `by_copy` set (the store believes none of the keys has a row yet: a backfill),
    /// the rows go in with one `COPY`, which costs the server about half an upsert's work:
    /// no probe of the key's index before each insert, and the rows written a page at a
    /// time. A key that has a row after all makes the `COPY` fail; its transaction is then
    /// rolled back, the upsert written instead, and `by_copy` cleared for the rest of the
    /// store's life.
    pub(super) fn write(
        &self,
        client: &mut Client,
        rows_table: &str,
        marks_table: &str,
        by_copy: &AtomicBool,
    ) -> Result<(), String> {
        let copied =
            by_copy.load(Ordering::Relaxed) && self.copy(client, rows_table, marks_table)?;
        if !copied {
            by_copy.store(false, Ordering::Relaxed);
            self.upsert(client, rows_table, marks_table)
                .map_err(|e| super::error_message(&e))?;
        }
        if self
            .done
            .iter()
            .any(|batch| batch % VACUUM_EVERY_BATCHES == 0)
        {
            // Only an optimization: an older server, or a vacuum already running, changes
            // nothing written.
            client
                .batch_execute(&format!("VACUUM (SKIP_LOCKED) {marks_table}"))
                .ok();
        }
        Ok(())
    }

    /// The settle as one statement (so one round trip): an upsert of each key's row.
    fn upsert(
        &self,
        client: &mut Client,
        rows_table: &str,
        marks_table: &str,
    ) -> Result<(), postgres::Error> {
        client.execute(
            &format!(
                "WITH done AS (DELETE FROM {marks_table} WHERE batch = ANY($4::int8[]))
                 INSERT INTO {rows_table} (key, fingerprint, row, doubt)
                 SELECT k, f, r, NULL FROM unnest($1::text[], $2::bytea[], $3::bytea[]) AS u(k, f, r)
                 WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL
                 ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                   row = EXCLUDED.row, doubt = NULL"
            ),
            &[&self.keys, &self.fingerprints, &slices(&self.rows), &self.done],
        )?;
        Ok(())
    }

    /// The settle with a `COPY` of the keys' rows: `Ok(false)`, and nothing written, when a
    /// key has a row already (or a row is too long for one).
    fn copy(
        &self,
        client: &mut Client,
        rows_table: &str,
        marks_table: &str,
    ) -> Result<bool, String> {
        let Some(data) = binary_copy(&self.keys, &self.fingerprints, &self.rows) else {
            return Ok(false);
        };
        let mut begin = String::from("BEGIN; SET LOCAL synchronous_commit = off;");
        if !self.done.is_empty() {
            let batches: Vec<String> = self.done.iter().map(i64::to_string).collect();
            begin.push_str(&format!(
                " DELETE FROM {marks_table} WHERE batch IN ({});",
                batches.join(", ")
            ));
        }
        let written = (|| {
            client.batch_execute(&begin)?;
            let mut sink = client.copy_in(&format!(
                "COPY {rows_table} (key, fingerprint, row) FROM STDIN (FORMAT binary)"
            ))?;
            // Into the writer's buffer whole, sent with `finish` (the crate's binary writer
            // sends every 4 KiB, and blocks on its runtime for every row: a second of
            // kinesync's CPU over a 1M backfill).
            if let Err(e) = sink.write_all(&data) {
                return Ok(Err(e.to_string()));
            }
            sink.finish()?;
            client.batch_execute("COMMIT").map(Ok)
        })();
        match written {
            Ok(Ok(())) => Ok(true),
            Ok(Err(message)) => {
                client.batch_execute("ROLLBACK").ok();
                Err(message)
            }
            Err(error) => {
                // The transaction must not stay open (aborted) under the next job; a lost
                // connection reports the first error.
                client.batch_execute("ROLLBACK").ok();
                if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    Ok(false)
                } else {
                    Err(super::error_message(&error))
                }
            }
        }
    }
}

/// The rows `(key, fingerprint, row)` in `COPY`'s binary format (PostgreSQL's documentation,
/// "COPY", "Binary Format": a signature, flags and an empty header extension; each row its
/// field count and each field its length and bytes, a `text` as its UTF-8 and a `bytea` as
/// itself; then -1). `None` when a field is too long for one.
fn binary_copy(keys: &[String], fingerprints: &[Vec<u8>], rows: &[Arc<[u8]>]) -> Option<Vec<u8>> {
    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
    let size = keys.len() * 14
        + keys.iter().map(String::len).sum::<usize>()
        + fingerprints.iter().map(Vec::len).sum::<usize>()
        + rows.iter().map(|row| row.len()).sum::<usize>();
    let mut data = Vec::with_capacity(SIGNATURE.len() + 8 + size + 2);
    data.extend_from_slice(SIGNATURE);
    data.extend_from_slice(&0i32.to_be_bytes());
    data.extend_from_slice(&0i32.to_be_bytes());
    for ((key, fingerprint), row) in keys.iter().zip(fingerprints).zip(rows) {
        data.extend_from_slice(&3i16.to_be_bytes());
        for field in [key.as_bytes(), fingerprint, row] {
            data.extend_from_slice(&i32::try_from(field.len()).ok()?.to_be_bytes());
            data.extend_from_slice(field);
        }
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    Some(data)
}

/// The rows shared, as the bytes a `bytea[]` parameter takes.
fn slices(rows: &[Arc<[u8]>]) -> Vec<&[u8]> {
    rows.iter().map(|row| &**row).collect()
}

/// The batches of marks in `marks_table`, oldest first, each mark with its key; `Err` with
/// what is wrong for a row kinesync did not write.
pub(super) fn read_batches(client: &mut Client, marks_table: &str) -> Result<Vec<Batch>, String> {
    let rows = client
        .query(
            &format!(
                "SELECT batch, keys, fingerprints, rows, doubts FROM {marks_table} ORDER BY batch"
            ),
            &[],
        )
        .map_err(|e| super::error_message(&e))?;
    let mut batches = Vec::with_capacity(rows.len());
    for row in rows {
        let batch: i64 = row.get(0);
        let keys: Vec<String> = row.get(1);
        let fingerprints: Vec<Vec<u8>> = row.get(2);
        let sent: Vec<Vec<u8>> = row.get(3);
        let doubts: Vec<Vec<u8>> = row.get(4);
        let bad = || format!("the marks of batch {batch} are not ones kinesync wrote");
        if [fingerprints.len(), sent.len(), doubts.len()] != [keys.len(); 3] {
            return Err(bad());
        }
        let mut marks = Vec::with_capacity(keys.len());
        for (((key, fingerprint), row), doubt) in
            keys.into_iter().zip(fingerprints).zip(sent).zip(doubts)
        {
            let fingerprint = <[u8; 16]>::try_from(fingerprint.as_slice())
                .map(Fingerprint::from_be_bytes)
                .map_err(|_| bad())?;
            let doubt = Doubt::from_blob(&doubt).ok_or_else(bad)?;
            marks.push((key, doubt, fingerprint, row));
        }
        batches.push((batch, marks));
    }
    Ok(batches)
}

/// The changes that write the marks `batches` left to their keys' rows: each key in doubt
/// with the version sent. Whether a key's settle was written cannot be told from its row (a
/// resync sends the version already acknowledged), so every key of a batch left behind goes
/// again, with its id: a kill resends the acknowledged part of the batches in flight too.
pub(super) fn recovered(batches: Vec<Batch>) -> Vec<Change> {
    batches
        .into_iter()
        .flat_map(|(_, marks)| marks)
        .map(|(key, doubt, fingerprint, row)| Change::InDoubt {
            key,
            doubt,
            sent: Some((fingerprint, row)),
        })
        .collect()
}
