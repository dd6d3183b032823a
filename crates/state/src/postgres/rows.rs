//! The state's rows as PostgreSQL holds them: how a stored row is read back, how a commit is
//! written (in one transaction, as the in-memory store applies it), and what marks earlier
//! runs left behind.

use postgres::Client;

use super::{error_message, marks};
use crate::memory::MemoryStore;
use crate::{Change, Doubt, Fingerprint, StateStore, StoredRow};

/// The columns a stored row is read with, in the order [`decoded`] reads them.
pub(super) const STORED_COLUMNS: &str = "key, fingerprint, row, doubt";

/// A stored row, read back; `Err` with its key for one kinesync did not write.
pub(super) fn decoded(row: &postgres::Row) -> Result<(String, StoredRow), String> {
    let key: String = row.get(0);
    let fingerprint: &[u8] = row.get(1);
    let doubt: Option<&[u8]> = row.get(3);
    let fingerprint = <[u8; 16]>::try_from(fingerprint).map(Fingerprint::from_be_bytes);
    let doubt = doubt.map(|blob| Doubt::from_blob(blob).ok_or(()));
    match (fingerprint, doubt.transpose()) {
        (Ok(fingerprint), Ok(doubt)) => Ok((
            key,
            StoredRow {
                fingerprint,
                row: row.get(2),
                doubt,
            },
        )),
        _ => Err(format!(
            "the stored row of key {key} is not one kinesync wrote"
        )),
    }
}

/// The marks a killed run left in `marks_table` (see the `marks` module), as the changes that
/// write them to their keys' rows, and the batches they came in.
pub(super) fn left_behind(
    client: &mut Client,
    marks_table: &str,
) -> Result<(Vec<Change>, Vec<i64>), String> {
    let batches = marks::read_batches(client, marks_table)?;
    let done: Vec<i64> = batches.iter().map(|(batch, _)| *batch).collect();
    Ok((marks::recovered(batches), done))
}

/// The statements that settle `keys` (clear their marks), in one round trip: a transaction
/// committed asynchronously (`synchronous_commit = off`: the server does not wait for its
/// disk). A settle lost to a crash of the server leaves its keys in doubt, and the next run
/// sends them again with the same ids, as it does for a commit still queued when kinesync is
/// killed; and the server writes its log in order, so the next mark (always committed
/// durably) makes every settle before it durable too. Measured with the server's `fsync` on,
/// a 1M backfill: see the README. The keys go as JSON in a dollar-quoted literal, whose tag
/// they cannot contain, so no key needs escaping.
fn settle_statement(rows_table: &str, keys: &[String]) -> String {
    let json = serde_json::to_string(keys).expect("strings serialize");
    let mut tag = String::from("$kinesync$");
    while json.contains(&tag) {
        tag.insert(tag.len() - 1, '_');
    }
    format!(
        "BEGIN; SET LOCAL synchronous_commit = off; \
         UPDATE {rows_table} SET doubt = NULL \
         WHERE key IN (SELECT jsonb_array_elements_text({tag}{json}{tag}::jsonb)); COMMIT;"
    )
}

/// Applies `changes` to the state in `rows_table`, in one transaction, as the in-memory store
/// applies them, and deletes the batches `done` of `marks_table` in it (their marks being
/// among the changes).
pub(super) fn apply(
    client: &mut Client,
    rows_table: &str,
    marks_table: &str,
    changes: Vec<Change>,
    done: &[i64],
) -> Result<(), String> {
    let mut keys: Vec<String> = changes.iter().map(|c| c.key().to_owned()).collect();
    keys.sort();
    keys.dedup();
    // The common commits need no stored row: acknowledgements of marked records (all
    // settles) clear the marks in place; marks and plain upserts and deletes overwrite
    // whatever is stored. Only a settle or a removal's mark mixed with other changes
    // needs the stored versions, to apply the changes to.
    if done.is_empty() && changes.iter().all(|c| matches!(c, Change::Settle { .. })) {
        let settled = client.batch_execute(&settle_statement(rows_table, &keys));
        if settled.is_err() {
            // The server skipped the rest, COMMIT too: the transaction must not stay open
            // (aborted) under the next job.
            client.batch_execute("ROLLBACK").ok();
        }
        return settled.map_err(|e| error_message(&e));
    }
    let needs_stored = changes.iter().any(|c| {
        matches!(
            c,
            Change::Settle { .. } | Change::InDoubt { sent: None, .. }
        )
    });
    let result: Result<Result<(), String>, postgres::Error> = (|| {
        let mut transaction = client.transaction()?;
        if !done.is_empty() {
            transaction.execute(
                &format!("DELETE FROM {marks_table} WHERE batch = ANY($1)"),
                &[&done],
            )?;
        }
        let select =
            format!("SELECT {STORED_COLUMNS} FROM {rows_table} WHERE key = ANY($1) FOR UPDATE");
        let stored = if needs_stored {
            transaction.query(&select, &[&keys])?
        } else {
            Vec::new()
        };
        let before = match stored.iter().map(decoded).collect() {
            Ok(before) => before,
            Err(message) => return Ok(Err(message)),
        };
        // The changes applied in order, exactly as the in-memory store applies them.
        let mut after = MemoryStore::from_rows(before);
        if let Err(e) = after.commit(changes) {
            return Ok(Err(e.to_string()));
        }
        let after = after.into_rows();
        let deleted: Vec<&String> = keys.iter().filter(|k| !after.contains_key(*k)).collect();
        if !deleted.is_empty() {
            transaction.execute(
                &format!("DELETE FROM {rows_table} WHERE key = ANY($1)"),
                &[&deleted],
            )?;
        }
        if !after.is_empty() {
            let mut upsert_keys = Vec::with_capacity(after.len());
            let mut fingerprints = Vec::with_capacity(after.len());
            let mut stored_rows = Vec::with_capacity(after.len());
            let mut doubts: Vec<Option<Vec<u8>>> = Vec::with_capacity(after.len());
            for (key, row) in after {
                upsert_keys.push(key);
                fingerprints.push(row.fingerprint.to_be_bytes().to_vec());
                stored_rows.push(row.row);
                doubts.push(row.doubt.map(|d| d.to_blob().to_vec()));
            }
            transaction.execute(
                &format!(
                    "INSERT INTO {rows_table} (key, fingerprint, row, doubt)
                     SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bytea[])
                     ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                       row = EXCLUDED.row, doubt = EXCLUDED.doubt"
                ),
                &[&upsert_keys, &fingerprints, &stored_rows, &doubts],
            )?;
        }
        transaction.commit()?;
        Ok(Ok(()))
    })();
    result.map_err(|e| error_message(&e))?
}
