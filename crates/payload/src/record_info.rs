//! What a message may say about its Kinesis record, as opposed to its row: the record's id
//! (the same for every resend of the same event, another for the row's next change, so that a
//! consumer can drop copies and stale versions), the run that sent it and when.
//!
//! Where it sits: the engine gives it with each row to render ([`RenderInput::with_record`]);
//! templates read it as `record`, and the other modes can write the id into their object
//! ([`Payload::with_record_id_field`]).
//!
//! [`RenderInput::with_record`]: crate::RenderInput::with_record
//! [`Payload::with_record_id_field`]: crate::Payload::with_record_id_field

use liquid_core::model::{KStringCow, ObjectView, ValueView};

use crate::json::write_str;
use crate::view::object_value_view;

/// The record a message goes out in. Templates see it as `record`: `record.id`,
/// `record.run_id`, `record.sent_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordInfo<'a> {
    /// The record's id: a UUIDv7 text, ordered by when the event was first sent. The same for
    /// every resend of the same event (a retry, or the next run after a crash or a lost
    /// answer), another for the row's next change.
    pub id: &'a str,
    /// The run that sends it.
    pub run_id: &'a str,
    /// When it was built to be sent (RFC 3339, UTC, milliseconds).
    pub sent_at: &'a str,
}

impl RecordInfo<'_> {
    /// The names a template can read.
    pub const FIELDS: [&'static str; 3] = ["id", "run_id", "sent_at"];

    fn value(&self, key: &str) -> Option<&dyn ValueView> {
        match key {
            "id" => Some(&self.id),
            "run_id" => Some(&self.run_id),
            "sent_at" => Some(&self.sent_at),
            _ => None,
        }
    }
}

object_value_view!(RecordInfo<'_>);

impl ObjectView for RecordInfo<'_> {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        Self::FIELDS.len() as i64
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        Box::new(Self::FIELDS.iter().map(|k| KStringCow::from_static(k)))
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        Box::new(Self::FIELDS.iter().filter_map(|k| self.value(k)))
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        Box::new(
            Self::FIELDS
                .iter()
                .filter_map(|k| Some((KStringCow::from_static(k), self.value(k)?))),
        )
    }
    fn contains_key(&self, index: &str) -> bool {
        Self::FIELDS.contains(&index)
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        self.value(index)
    }
}

/// Adds `"field":"id"` as the last member of the JSON object in `message` (compact, valid
/// JSON). `Err` when the message is not an object.
pub(crate) fn add_id_field(message: &mut Vec<u8>, field: &str, id: &str) -> Result<(), ()> {
    if message.first() != Some(&b'{') || message.last() != Some(&b'}') {
        return Err(());
    }
    let empty = message.len() == 2;
    message.pop();
    if !empty {
        message.push(b',');
    }
    write_str(field, message);
    message.push(b':');
    write_str(id, message);
    message.push(b'}');
    Ok(())
}
