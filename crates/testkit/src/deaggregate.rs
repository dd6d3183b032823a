//! A reader of aggregated records written for the tests from the format's description (magic,
//! a proto2 `AggregatedRecord`, an MD5 trailer), sharing no code with kinesync's encoder: a
//! test that encodes with one and decodes with the other checks the format, not the code
//! against itself. The protobuf is parsed by hand, field by field.

use md5::{Digest, Md5};

/// The magic bytes that start an aggregated record.
const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// One user record found in an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its partition key, from the table.
    pub partition_key: String,
    /// Its explicit hash key, from the table, if it has one.
    pub explicit_hash_key: Option<String>,
    /// Its data.
    pub data: Vec<u8>,
}

/// Why bytes that start with the magic are not a well-formed aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// The user records in `data`: `Ok(None)` for a plain record (no magic, or too short to hold
/// one), `Err` for one that starts with the magic but whose digest or protobuf is wrong (a
/// consumer would take it as a plain record; a test wants to know).
pub fn deaggregate(data: &[u8]) -> Result<Option<Vec<UserRecord>>, Malformed> {
    if data.len() < MAGIC.len() + 16 || data[..4] != MAGIC {
        return Ok(None);
    }
    let (message, digest) = data[4..].split_at(data.len() - 4 - 16);
    if Md5::digest(message).as_slice() != digest {
        return Err(Malformed("the MD5 trailer does not match".into()));
    }
    let mut keys = Vec::new();
    let mut explicit = Vec::new();
    let mut records = Vec::new();
    for field in Fields(message) {
        match field? {
            (1, Value::Bytes(b)) => keys.push(text(b)?),
            (2, Value::Bytes(b)) => explicit.push(text(b)?),
            (3, Value::Bytes(b)) => records.push(b),
            (tag, _) => {
                return Err(Malformed(format!(
                    "unexpected field {tag} in the aggregate"
                )));
            }
        }
    }
    let mut users = Vec::new();
    for record in records {
        let (mut key_index, mut explicit_index, mut data) = (None, None, None);
        for field in Fields(record) {
            match field? {
                (1, Value::Varint(i)) => key_index = Some(i),
                (2, Value::Varint(i)) => explicit_index = Some(i),
                (3, Value::Bytes(b)) => data = Some(b.to_vec()),
                (4, Value::Bytes(_)) => {}
                (tag, _) => return Err(Malformed(format!("unexpected field {tag} in a record"))),
            }
        }
        let key_index =
            key_index.ok_or_else(|| Malformed("a record without a key index".into()))?;
        let partition_key = keys
            .get(key_index as usize)
            .ok_or_else(|| Malformed(format!("key index {key_index} out of the table")))?
            .clone();
        let explicit_hash_key = match explicit_index {
            None => None,
            Some(i) => Some(
                explicit
                    .get(i as usize)
                    .ok_or_else(|| Malformed(format!("explicit key index {i} out of the table")))?
                    .clone(),
            ),
        };
        users.push(UserRecord {
            partition_key,
            explicit_hash_key,
            data: data.ok_or_else(|| Malformed("a record without data".into()))?,
        });
    }
    Ok(Some(users))
}

fn text(bytes: &[u8]) -> Result<String, Malformed> {
    String::from_utf8(bytes.to_vec()).map_err(|_| Malformed("a key that is not UTF-8".into()))
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The fields of a protobuf message: (tag, value), for the two wire types the format uses.
struct Fields<'a>(&'a [u8]);

fn varint(bytes: &mut &[u8]) -> Result<u64, Malformed> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes
            .split_first()
            .ok_or_else(|| Malformed("a varint runs past the end".into()))?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Malformed("a varint longer than 10 bytes".into()))
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let mut field = || {
            let key = varint(&mut self.0)?;
            let (tag, wire) = (key >> 3, key & 7);
            match wire {
                0 => Ok((tag, Value::Varint(varint(&mut self.0)?))),
                2 => {
                    let len = varint(&mut self.0)? as usize;
                    if len > self.0.len() {
                        return Err(Malformed("a field runs past the end".into()));
                    }
                    let (value, rest) = self.0.split_at(len);
                    self.0 = rest;
                    Ok((tag, Value::Bytes(value)))
                }
                other => Err(Malformed(format!("wire type {other} is not in the format"))),
            }
        };
        let result = field();
        if result.is_err() {
            self.0 = &[];
        }
        Some(result)
    }
}
