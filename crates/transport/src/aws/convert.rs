//! Our types to and from the SDK's shapes: a [`PutRecord`] as a request entry, a `PutRecords`
//! answer as one [`RecordOutcome`] per record, and the stream description.
//!
//! Pure functions: no calls, no observer. They are what keeps SDK types on this side of the
//! [`KinesisSink`](crate::KinesisSink) seam.

use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    EncryptionType, PutRecordsRequestEntry, Shard, StreamDescriptionSummary, StreamMode,
};
use kinesync_keys::{ShardMap, ShardRange};

use crate::{
    CapacityMode, DEFAULT_MAX_RECORD_BYTES, Encryption, PutRecord, RecordFailure, RecordOutcome,
    StreamDescription, StreamStatus,
};

/// One record of a `PutRecords` request.
pub(super) fn entry(record: &PutRecord) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(record.data.to_vec()))
        .partition_key(record.partition_key.as_str())
        .set_explicit_hash_key(record.explicit_hash_key.map(|k| k.to_string()))
        .build()
        .expect("data and partition key are set")
}

/// The outcomes of a successful `PutRecords` answer, in input order.
///
/// `Err` (a message) when the answer does not have one result per record sent: the results
/// are matched to records by position, so a short answer cannot be read at all.
pub(super) fn outcomes_of(
    output: &PutRecordsOutput,
    sent: usize,
) -> Result<Vec<RecordOutcome>, String> {
    let records = output.records();
    if records.len() != sent {
        return Err(format!(
            "the answer has {} results for {sent} records",
            records.len()
        ));
    }
    Ok(records
        .iter()
        .map(
            // A record counts as accepted only with both its shard and its sequence number;
            // anything less is a failure the caller may retry, never a silent loss.
            |r| match (r.error_code(), r.shard_id(), r.sequence_number()) {
                (None, Some(shard_id), Some(sequence_number)) => RecordOutcome::Accepted {
                    shard_id: shard_id.to_owned(),
                    sequence_number: sequence_number.to_owned(),
                },
                (code, _, _) => RecordOutcome::Failed {
                    failure: RecordFailure::from_code(code.unwrap_or("MissingResult")),
                    message: r.error_message().unwrap_or_default().to_owned(),
                },
            },
        )
        .collect())
}

/// A `DescribeStreamSummary` answer, with the stream's open shards, as our description.
pub(super) fn description(
    summary: &StreamDescriptionSummary,
    shards: ShardMap,
) -> StreamDescription {
    StreamDescription {
        name: summary.stream_name().to_owned(),
        arn: Some(summary.stream_arn().to_owned()),
        status: status_of(summary.stream_status()),
        shards,
        max_record_bytes: summary
            .max_record_size_in_kib()
            .and_then(|kib| usize::try_from(kib).ok())
            .map_or(DEFAULT_MAX_RECORD_BYTES, |kib| kib * 1024),
        encryption: match summary.encryption_type() {
            Some(EncryptionType::Kms) => Encryption::Kms {
                key_id: summary.key_id().map(str::to_owned),
            },
            _ => Encryption::None,
        },
        capacity_mode: match summary.stream_mode_details().map(|d| d.stream_mode()) {
            Some(StreamMode::OnDemand) => CapacityMode::OnDemand,
            Some(StreamMode::Provisioned) | None => CapacityMode::Provisioned,
            Some(other) => CapacityMode::Other(other.as_str().to_owned()),
        },
    }
}

fn status_of(status: &aws_sdk_kinesis::types::StreamStatus) -> StreamStatus {
    use aws_sdk_kinesis::types::StreamStatus as S;
    match status {
        S::Active => StreamStatus::Active,
        S::Creating => StreamStatus::Creating,
        S::Deleting => StreamStatus::Deleting,
        S::Updating => StreamStatus::Updating,
        other => StreamStatus::Other(other.as_str().to_owned()),
    }
}

/// A shard of a `ListShards` answer as its hash key range, when it is open (it has no ending
/// sequence number); `None` for a closed shard or one without a range.
///
/// `Err` (a message) when the range is not two 128-bit numbers, whether the shard is open or
/// not.
pub(super) fn open_shard(shard: &Shard) -> Result<Option<ShardRange>, String> {
    let open = shard
        .sequence_number_range()
        .is_none_or(|r| r.ending_sequence_number().is_none());
    let Some(range) = shard.hash_key_range() else {
        return Ok(None);
    };
    let (Ok(start), Ok(end)) = (
        range.starting_hash_key().parse::<u128>(),
        range.ending_hash_key().parse::<u128>(),
    ) else {
        return Err(format!(
            "shard {} has a hash key range that is not a 128-bit number",
            shard.shard_id()
        ));
    };
    Ok(open.then(|| ShardRange::new(shard.shard_id(), start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_put_records_answers_map_per_index() {
        use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
        use aws_sdk_kinesis::types::PutRecordsResultEntry;
        let output = PutRecordsOutput::builder()
            .failed_record_count(2)
            .records(
                PutRecordsResultEntry::builder()
                    .shard_id("shardId-000000000001")
                    .sequence_number("49")
                    .build(),
            )
            .records(
                PutRecordsResultEntry::builder()
                    .error_code("ProvisionedThroughputExceededException")
                    .error_message("Rate exceeded for shard shardId-000000000001")
                    .build(),
            )
            .records(
                PutRecordsResultEntry::builder()
                    .error_code("InternalFailure")
                    .error_message("Internal service failure.")
                    .build(),
            )
            .build()
            .unwrap();
        let outcomes = outcomes_of(&output, 3).unwrap();
        assert_eq!(
            outcomes[0],
            RecordOutcome::Accepted {
                shard_id: "shardId-000000000001".into(),
                sequence_number: "49".into()
            }
        );
        assert!(
            matches!(&outcomes[1], RecordOutcome::Failed { failure: RecordFailure::Throttled, message } if message.contains("Rate exceeded"))
        );
        assert!(matches!(
            &outcomes[2],
            RecordOutcome::Failed {
                failure: RecordFailure::InternalFailure,
                ..
            }
        ));
        assert!(
            outcomes_of(&output, 4).is_err(),
            "a short answer is an error, not a silent loss"
        );
    }
}
